"""GradCache (losses/cached.py): the same loss and the same gradients as the uncached loss."""

from __future__ import annotations

import pytest
import torch
from _training_helpers import (
    one_thread,  # noqa: F401  (autouse fixture)
    records,
    tiny,
)

from inf_embed.data import build_text_batch
from inf_embed.losses import get_loss
from inf_embed.losses.cached import CachedLoss, split_features
from inf_embed.training.trainer import _Encoder, make_head, plan_batch


def _loss_and_grads(model, loss, chunk_size):
    text = build_text_batch(records(6), num_instruction_variants=3, generator=torch.Generator().manual_seed(0))
    plan = plan_batch(model, text, loss)
    head = make_head(model, plan, loss)
    encoder = _Encoder(model)
    model.zero_grad(set_to_none=True)
    if chunk_size is None:
        value = loss(**head(encoder(plan.groups, plan.kinds)))
        value.backward()
    else:
        cached = CachedLoss(loss, chunk_size)
        value = cached.backward(
            lambda name, chunk: encoder({name: chunk}, {name: plan.kinds[name]})[name], plan.groups, head
        )
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return value.detach(), grads


@pytest.mark.parametrize(
    ("fusion", "loss_name"),
    [
        ("attention", "multi:P+I+IQ"),
        ("concat", "uni:P+I+IQ"),
        ("concat", "multi:P+I+IQ+Q"),
        ("concat", "multi:P+I+IQ+IX+Q"),
    ],
)
def test_cached_loss_equals_uncached_loss_and_gradients(tiny_model_dir, fusion, loss_name):
    model = tiny(tiny_model_dir, fusion).eval()  # no dropout: the two runs see the same network
    loss = get_loss(loss_name)
    plain, plain_grads = _loss_and_grads(model, loss, None)
    cached, cached_grads = _loss_and_grads(model, loss, 3)
    torch.testing.assert_close(cached, plain, rtol=1e-5, atol=1e-6)
    assert plain_grads.keys() == cached_grads.keys() and len(plain_grads) > 10
    for name, grad in plain_grads.items():
        torch.testing.assert_close(cached_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_cached_loss_replays_dropout_so_gradients_match_its_own_loss(tiny_model_dir):
    """In train mode (dropout on) the re-encoding pass replays each chunk's saved random state, so the result is a
    deterministic function of the random state: two calls from the same state give identical losses and gradients
    (a mismatch between the two passes would make them depend on how the state advanced)."""
    model = tiny(tiny_model_dir, "concat").train()
    loss = get_loss("multi:P+I")
    torch.manual_seed(3)
    first, grads_a = _loss_and_grads(model, loss, 5)
    torch.manual_seed(3)
    second, grads_b = _loss_and_grads(model, loss, 5)
    assert torch.equal(first, second)
    for name, grad in grads_a.items():
        assert torch.equal(grads_b[name], grad), name


def test_split_features_makes_chunks_of_at_most_chunk_size():
    features = {"input_ids": torch.arange(14).reshape(7, 2), "attention_mask": torch.ones(7, 2)}
    chunks = split_features(features, 3)
    assert [c["input_ids"].shape[0] for c in chunks] == [3, 3, 1]
    assert torch.equal(torch.cat([c["input_ids"] for c in chunks]), features["input_ids"])


def test_cached_loss_rejects_bad_chunk_size():
    with pytest.raises(ValueError, match="chunk_size"):
        CachedLoss(get_loss("uni:P"), 0)
