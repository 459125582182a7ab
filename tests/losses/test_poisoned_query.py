"""PoisonedQueryLoss (ours): the base InF-IR loss plus -log(1 - P(f_k | g_k)) per poisoned query side."""

from __future__ import annotations

import math

import pytest
import torch
from test_inf_ir import make_inputs as _raw_inputs

from inf_embed.losses import InfIRLoss, PoisonedQueryLoss, get_loss


def make_inputs(**kwargs) -> dict:
    """test_inf_ir's random unit embeddings, under the loss's keyword names."""
    raw = _raw_inputs(**kwargs)
    return {
        "query_embeddings": raw["q"],
        "passage_embeddings": raw["p"],
        "instruction_variant_embeddings": raw["n"],
        "instruction_ids": raw["ids"],
        "instruction_variant_mask": raw["mask"],
        "hard_negative_embeddings": raw["hard"],
        "query_negative_embeddings": raw["qneg"],
    }


def _term_reference(p, hard, g, forbidden_rows, tau):
    """Per poisoned query: softmax over [p ‖ hard], probability of its forbidden passage, -log(1 - P)."""
    candidates = torch.cat([p, hard])
    out = []
    for k in range(g.shape[0]):
        scores = [float(g[k] @ c) / tau for c in candidates]
        z = sum(math.exp(s) for s in scores)
        prob = math.exp(scores[forbidden_rows[k]]) / z
        out.append(-math.log(1 - prob))
    return sum(out) / len(out)


def test_term_matches_a_per_row_reference_and_adds_to_the_base_loss():
    inputs = make_inputs(seed=3, rows=5, qneg=3)
    forbidden_rows = [0, 2, 2]
    forbidden = inputs["passage_embeddings"][forbidden_rows]
    loss = get_loss("multi:P+I+IQ+Q", weight=0.7)
    assert isinstance(loss, PoisonedQueryLoss) and loss.name == "multi:P+I+IQ+Q"
    value = loss(**inputs, query_negative_passage_embeddings=forbidden)
    base = get_loss("multi:P+I+IQ")(**inputs)
    expected_term = _term_reference(
        inputs["passage_embeddings"],
        inputs["hard_negative_embeddings"],
        inputs["query_negative_embeddings"],
        forbidden_rows,
        0.05,
    )
    assert float(value) == pytest.approx(float(base) + 0.7 * expected_term, rel=1e-9)


def test_a_passage_shared_by_two_items_is_one_candidate_of_the_term():
    inputs = make_inputs(seed=5, rows=5, qneg=3)
    inputs["passage_embeddings"][4] = inputs["passage_embeddings"][1]  # items 1 and 4: one passage
    forbidden_rows = [1, 2, 0]
    loss = get_loss("multi:P+I+IQ+Q", weight=1.0)
    term = loss.poisoned_query_term(
        inputs["passage_embeddings"],
        inputs["query_negative_embeddings"],
        inputs["passage_embeddings"][forbidden_rows],
        inputs["hard_negative_embeddings"],
    )
    expected = _term_reference(
        inputs["passage_embeddings"][:4],  # the copy left out
        inputs["hard_negative_embeddings"],
        inputs["query_negative_embeddings"],
        forbidden_rows,
        0.05,
    )
    assert float(term) == pytest.approx(expected, rel=1e-9)


def test_term_pushes_the_forbidden_passage_down():
    inputs = make_inputs(seed=1, rows=4, qneg=2)
    g = inputs["query_negative_embeddings"].clone().requires_grad_(True)
    forbidden = inputs["passage_embeddings"][[1, 3]]
    loss = get_loss("multi:P+I+IQ+Q")
    term = loss.poisoned_query_term(inputs["passage_embeddings"], g, forbidden, inputs["hard_negative_embeddings"])
    term.backward()
    # a step against the gradient lowers each g's score with its forbidden passage
    moved = g.detach() - 0.1 * g.grad
    assert torch.all((moved * forbidden).sum(-1) < (g.detach() * forbidden).sum(-1))


def test_no_poisoned_queries_gives_the_base_loss_and_bad_shapes_name_the_arguments():
    inputs = make_inputs(seed=2)
    base = float(get_loss("multi:P+I+IQ")(**{**inputs, "query_negative_embeddings": None}))
    loss = get_loss("multi:P+I+IQ+Q")
    empty = torch.zeros(0, inputs["passage_embeddings"].shape[1], dtype=torch.float64)
    got = loss(**{**inputs, "query_negative_embeddings": empty}, query_negative_passage_embeddings=empty)
    assert float(got) == pytest.approx(base)
    with pytest.raises(ValueError, match="query_negative_passage_embeddings"):
        loss(**inputs, query_negative_passage_embeddings=None)
    with pytest.raises(ValueError, match="weight"):
        get_loss("multi:P+I+IQ+Q", weight=-1.0)


def _ix_reference(p, hard, g, forbidden_rows, own_rows, tau):
    """Per poisoned instruction: softmax over [p ‖ hard] without its own positive, P(forbidden), -log(1 - P)."""
    candidates = torch.cat([p, hard])
    out = []
    for k in range(g.shape[0]):
        scores = {c: float(g[k] @ candidates[c]) / tau for c in range(len(candidates)) if c != own_rows[k]}
        z = sum(math.exp(s) for s in scores.values())
        out.append(-math.log(1 - math.exp(scores[forbidden_rows[k]]) / z))
    return sum(out) / len(out)


def test_poisoned_instruction_term_leaves_out_its_own_positive_and_adds_to_the_loss():
    inputs = make_inputs(seed=4, rows=6, qneg=2)
    p, q = inputs["passage_embeddings"], inputs["query_embeddings"]
    q_forbidden = p[[0, 1]]
    own_rows, forbidden_rows = [3, 5], [2, 4]  # items 3 and 5 are (I-, Q+, hn1) of the records of items 2 and 4
    ix_inputs = {
        "poisoned_instruction_embeddings": q[own_rows],
        "poisoned_instruction_passage_embeddings": p[own_rows],
        "poisoned_instruction_forbidden_embeddings": p[forbidden_rows],
    }
    loss = get_loss("multi:P+I+IQ+IX+Q", weight=0.5, instruction_weight=0.3)
    assert loss.name == "multi:P+I+IQ+IX+Q" and loss.uses_instruction_negative_items
    assert loss.get_config_dict()["poisoned_instruction_weight"] == 0.3
    value = loss(**inputs, query_negative_passage_embeddings=q_forbidden, **ix_inputs)
    q_only = get_loss("multi:P+I+IQ+Q", weight=0.5)(**inputs, query_negative_passage_embeddings=q_forbidden)
    hard = inputs["hard_negative_embeddings"]
    expected_ix = _ix_reference(p, hard, q[own_rows], forbidden_rows, own_rows, 0.05)
    assert float(value) == pytest.approx(float(q_only) + 0.3 * expected_ix, rel=1e-9)
    # the own positive really is left out: including it gives a different (smaller) term
    with_own = _term_reference(p, hard, q[own_rows], forbidden_rows, 0.05)
    assert with_own < expected_ix
    ix_only = get_loss("multi:P+I+IQ+IX")
    assert ix_only.name == "multi:P+I+IQ+IX" and ix_only.weight == 0.0
    base = get_loss("multi:P+I+IQ")(**inputs)
    got = ix_only(**inputs, query_negative_passage_embeddings=q_forbidden, **ix_inputs)
    assert float(got) == pytest.approx(float(base) + expected_ix, rel=1e-9)


def test_passage_term_with_poisoned_instructions_is_the_passage_term_plus_ix():
    inputs = make_inputs(seed=7, rows=6, qneg=2)
    p, q = inputs["passage_embeddings"], inputs["query_embeddings"]
    own_rows, forbidden_rows = [3, 5], [2, 4]
    ix_inputs = {
        "poisoned_instruction_embeddings": q[own_rows],
        "poisoned_instruction_passage_embeddings": p[own_rows],
        "poisoned_instruction_forbidden_embeddings": p[forbidden_rows],
    }
    loss = get_loss("multi:P+IX", instruction_weight=0.2)
    assert loss.name == "multi:P+IX" and loss.weight == 0.0 and loss.base.terms == ("P",)
    assert loss.uses_instruction_negative_items and not loss.uses_instruction_variants
    passage_term = InfIRLoss("multi", ("P",))(q, p, hard_negative_embeddings=inputs["hard_negative_embeddings"])
    value = loss(**inputs, query_negative_passage_embeddings=p[[0, 1]], **ix_inputs)
    expected_ix = _ix_reference(p, inputs["hard_negative_embeddings"], q[own_rows], forbidden_rows, own_rows, 0.05)
    assert float(value) == pytest.approx(float(passage_term) + 0.2 * expected_ix, rel=1e-9)
    with pytest.raises(ValueError, match="instruction_weight"):
        get_loss("multi:P+IX", instruction_weight=-0.1)


def test_poisoned_instruction_term_checks_its_inputs():
    inputs = make_inputs(seed=5, rows=4, qneg=1)
    p, q = inputs["passage_embeddings"], inputs["query_embeddings"]
    loss = get_loss("multi:P+I+IQ+IX", instruction_weight=1.0)
    with pytest.raises(ValueError, match="own positives"):
        loss.poisoned_query_term(p, q[[1]], p[[0]], own_positives=p[[1, 2]])
    with pytest.raises(ValueError, match="instruction_weight"):
        get_loss("multi:P+I+IQ+IX", instruction_weight=float("nan"))


@pytest.mark.parametrize("share", [0.0, 0.25, 1.0])
def test_passage_gradient_scales_only_the_terms_gradient_into_the_passages(share):
    inputs = make_inputs(seed=6, rows=5, qneg=2)
    forbidden_rows = [1, 4]

    def passage_and_query_grads(loss, base_only=False):
        p = inputs["passage_embeddings"].clone().requires_grad_(True)
        g = inputs["query_negative_embeddings"].clone().requires_grad_(True)
        kwargs = {**inputs, "passage_embeddings": p, "query_negative_embeddings": g}
        if base_only:
            value = loss(**kwargs)
        else:
            value = loss(**kwargs, query_negative_passage_embeddings=p[forbidden_rows])
        value.backward()
        return value.detach(), p.grad, g.grad

    scaled = get_loss("multi:P+I+IQ+Q", weight=0.5, passage_gradient=share)
    full = get_loss("multi:P+I+IQ+Q", weight=0.5)
    value, p_grad, g_grad = passage_and_query_grads(scaled)
    full_value, full_p_grad, full_g_grad = passage_and_query_grads(full)
    _, base_p_grad, _ = passage_and_query_grads(get_loss("multi:P+I+IQ"), base_only=True)
    # same loss value and the same gradient on the poisoned query sides ...
    assert float(value) == pytest.approx(float(full_value), rel=1e-12)
    torch.testing.assert_close(g_grad, full_g_grad)
    # ... while the term's share of the passage gradient is scaled (the base loss's is untouched)
    torch.testing.assert_close(p_grad - base_p_grad, share * (full_p_grad - base_p_grad))
    assert (scaled.get_config_dict().get("poisoned_term_passage_gradient", 1.0)) == share


def test_passage_gradient_outside_zero_one_is_an_error():
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="passage_gradient"):
            get_loss("multi:P+I+IQ+IX+Q", passage_gradient=bad)


def test_excluding_the_record_hard_negative_leaves_it_out_of_the_q_term_where_the_mask_says_so():
    inputs = make_inputs(seed=7, rows=6, qneg=3)
    p, hard = inputs["passage_embeddings"], inputs["hard_negative_embeddings"]
    forbidden_rows, excluded_rows = [0, 2, 4], [1, 3, 5]  # items 1, 3, 5: (I-, Q+, hn1) of the records of 0, 2, 4
    mask = torch.tensor([True, False, True])
    loss = get_loss("multi:P+I+IQ+Q", weight=0.7, exclude_record_hard_negative=1)
    assert (
        loss.uses_query_negative_exclusions and loss.get_config_dict()["poisoned_query_excludes_record_hard_negative"]
    )
    value = loss(
        **inputs,
        query_negative_passage_embeddings=p[forbidden_rows],
        query_negative_excluded_embeddings=p[excluded_rows],
        query_negative_excluded_mask=mask,
    )
    base = get_loss("multi:P+I+IQ")(**inputs)
    g = inputs["query_negative_embeddings"]
    rows = [
        _ix_reference(p, hard, g[[k]], [forbidden_rows[k]], [excluded_rows[k]], 0.05)
        if mask[k]
        else _term_reference(p, hard, g[[k]], [forbidden_rows[k]], 0.05)
        for k in range(3)
    ]
    assert float(value) == pytest.approx(float(base) + 0.7 * sum(rows) / 3, rel=1e-9)
    with pytest.raises(ValueError, match="query_negative_excluded_embeddings"):
        loss(**inputs, query_negative_passage_embeddings=p[forbidden_rows])
    with pytest.raises(ValueError, match="own positive mask"):
        loss.poisoned_query_term(p, g, p[forbidden_rows], own_positives=p[excluded_rows], own_positive_mask=mask[:2])
    with pytest.raises(ValueError, match="exclude_record_hard_negative"):
        get_loss("multi:P+I+IQ+Q", exclude_record_hard_negative=0.5)
