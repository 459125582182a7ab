"""benchmarks/document_side.py: its --scales parsing, and that each scale is applied to the model it evaluates."""

from __future__ import annotations

import argparse
import sys

import pytest


@pytest.fixture
def script(load_benchmark):
    return load_benchmark("document_side")


def test_scales_parse_and_reject_values_outside_zero_one(script):
    assert script._scales("1, 0.75,0.5") == [1.0, 0.75, 0.5]
    for bad in ("", "0.5,x", "1.5", "-0.1", "nan"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected"):
            script._scales(bad)


def test_instructed_query_scales_take_any_positive_number(script):
    assert script._positive_scales("0.8,1,1.3") == [0.8, 1.0, 1.3]
    for bad in ("", "0", "-1", "x", "inf"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected"):
            script._positive_scales(bad)


def test_each_scale_is_evaluated_on_the_pulled_back_model(script, tiny_model_dir, tmp_path, monkeypatch, capsys):

    from inf_embed import InfEmbed
    from inf_embed.testing import perturb_weights

    tuned = perturb_weights(InfEmbed.from_pretrained(tiny_model_dir, fusion="concat"))
    folder = tuned.save_pretrained(tmp_path / "tuned")
    seen = []

    def evaluate(evaluators, model):
        seen.append((model.config.document_delta_scale, len(model.document_anchor)))
        return {"infir": {k: 0.5 for k in ("p_mrr_instruction", "p_mrr_query", "paired_accuracy", "ndcg_at_10")}}

    monkeypatch.setattr(script, "evaluate", evaluate)
    monkeypatch.setattr(script, "build_evaluators", lambda root, tasks: {})
    monkeypatch.setattr("inf_embed.model.default_model_path", lambda: tiny_model_dir)
    monkeypatch.setattr(sys, "argv", ["document_side.py", "--model", folder, "--scales", "1,0.5", "--tasks", "infir"])
    script.main()
    anchored = sum("attention." in n for n, _ in tuned.backbone.named_parameters())
    assert seen == [(1.0, 0), (0.5, anchored)]
    assert "| 0.5 | 1 (trained) | 50 | 50 | 50 | 0.5 |" in capsys.readouterr().out


def test_plain_query_scales_encode_only_uninstructed_queries_with_the_interpolated_weights(
    script, tiny_model_dir, tmp_path, monkeypatch, capsys
):
    import numpy as np
    import torch

    from inf_embed import InfEmbed
    from inf_embed.testing import perturb_weights

    start = InfEmbed.from_pretrained(tiny_model_dir, fusion="concat")
    tuned = perturb_weights(InfEmbed.from_pretrained(tiny_model_dir, fusion="concat"))
    folder = tuned.save_pretrained(tmp_path / "tuned")
    half = script.interpolated_copy(folder, start.backbone, 0.5)
    for name, weight in half.backbone.named_parameters():
        expected = (dict(start.backbone.named_parameters())[name] + dict(tuned.backbone.named_parameters())[name]) / 2
        torch.testing.assert_close(weight, expected)

    texts, instruction = ["alpha beta", "gamma"], "about greek letters"
    seen = []

    def evaluate(evaluators, encoder):
        plain = encoder.encode_query(texts)
        instructed = encoder.encode_query(texts, instruction=instruction)
        documents = encoder.encode_document(texts)
        seen.append((plain, instructed, documents))
        return {"scifact": {"ndcg_at_10": 0.5}}

    monkeypatch.setattr(script, "evaluate", evaluate)
    monkeypatch.setattr(script, "build_evaluators", lambda root, tasks: {})
    monkeypatch.setattr("inf_embed.model.default_model_path", lambda: tiny_model_dir)
    argv = ["document_side.py", "--model", folder, "--scales", "0.5", "--plain-query-scales", "1,0"]
    monkeypatch.setattr(sys, "argv", [*argv, "--tasks", "scifact"])
    script.main()

    def unit(rows):
        rows = np.asarray(rows, dtype=np.float64)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    tuned.set_document_delta(start.backbone, 0.5)
    for (plain, instructed, documents), plain_model in zip(seen, (tuned, start)):
        np.testing.assert_allclose(unit(plain), unit(plain_model.encode_query(texts)), atol=1e-5)
        np.testing.assert_allclose(
            unit(instructed), unit(tuned.encode_query(texts, instruction=instruction)), atol=1e-5
        )
        np.testing.assert_allclose(unit(documents), unit(tuned.encode_document(texts)), atol=1e-5)
    assert "| 0.5 | 0 | 0.5 |" in capsys.readouterr().out
