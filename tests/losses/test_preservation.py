"""PassagePreservationLoss (ours): a loss plus weight x mean(1 - cos(passage, starting model's passage))."""

from __future__ import annotations

import math

import pytest
import torch
from test_poisoned_query import make_inputs

from inf_embed.losses import PassagePreservationLoss, get_loss


def _targets(passages: torch.Tensor, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(passages + 0.3 * torch.randn(passages.shape, generator=g), dim=-1)


def test_term_is_the_mean_one_minus_cosine_added_to_the_base_loss():
    base = get_loss("multi:P+I+IQ")
    inputs = make_inputs()
    passages = torch.cat([inputs["passage_embeddings"], inputs["hard_negative_embeddings"]])
    targets = _targets(passages)
    loss = PassagePreservationLoss(base, 0.7)
    value = loss(**inputs, preserved_passage_embeddings=passages, preservation_targets=targets)
    drift = [1 - float(p @ t) for p, t in zip(passages, targets)]
    assert float(value) == pytest.approx(float(base(**inputs)) + 0.7 * sum(drift) / len(drift), rel=1e-5)
    # passages equal to their targets add nothing
    same = loss(**inputs, preserved_passage_embeddings=passages, preservation_targets=passages.clone())
    assert float(same) == pytest.approx(float(base(**inputs)), abs=1e-6)


def test_gradient_pulls_passages_towards_their_targets_and_never_into_the_targets():
    inputs = make_inputs()
    passages = inputs["passage_embeddings"].clone().requires_grad_()
    targets = _targets(passages.detach()).requires_grad_()
    loss = PassagePreservationLoss(get_loss("uni:P"), 1.0)
    term = loss(
        **{**inputs, "passage_embeddings": passages},
        preserved_passage_embeddings=passages,
        preservation_targets=targets,
    )
    term.backward()
    assert targets.grad is None
    # descending the term's own gradient raises each passage's cosine with its target
    only = PassagePreservationLoss(get_loss("uni:P"), 1.0)
    p = passages.detach().clone().requires_grad_()
    drift = only(
        **{**inputs, "passage_embeddings": p.detach()}, preserved_passage_embeddings=p, preservation_targets=targets
    )
    drift.backward()
    before = torch.nn.functional.cosine_similarity(p, targets, dim=-1)
    after = torch.nn.functional.cosine_similarity(p - 0.1 * p.grad, targets, dim=-1)
    assert bool((after > before).all())


def test_flags_pass_through_and_bad_inputs_name_the_argument():
    base = get_loss("multi:P+I+IQ+IX+Q", weight=0.5, instruction_weight=0.2)
    loss = PassagePreservationLoss(base, 0.1)
    for flag in (
        "uses_hard_negatives",
        "uses_query_negatives",
        "uses_instruction_variants",
        "uses_instruction_negative_items",
    ):
        assert getattr(loss, flag) == getattr(base, flag), flag
    assert loss.required_inputs == base.required_inputs and loss.name == base.name
    assert loss.get_config_dict()["passage_preservation_weight"] == 0.1
    for bad in (-0.1, math.inf, math.nan, True, "1"):
        with pytest.raises(ValueError, match="weight: expected a finite number >= 0"):
            PassagePreservationLoss(base, bad)
    inputs = make_inputs()
    with pytest.raises(ValueError, match="preservation_targets: required"):
        PassagePreservationLoss(get_loss("uni:P"), 1.0)(**inputs)
    passages = inputs["passage_embeddings"]
    with pytest.raises(ValueError, match="preservation_targets: expected the shape"):
        PassagePreservationLoss(get_loss("uni:P"), 1.0)(
            **inputs, preserved_passage_embeddings=passages, preservation_targets=passages[:2]
        )
