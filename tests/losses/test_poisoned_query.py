"""PoisonedQueryLoss (ours): the base InF-IR loss plus -log(1 - P(f_k | g_k)) per poisoned query side."""

from __future__ import annotations

import math

import pytest
import torch
from test_inf_ir import make_inputs as _raw_inputs

from inf_embed.losses import PoisonedQueryLoss, get_loss


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
