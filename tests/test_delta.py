"""Delta models: save the change from a base backbone, load it back exactly, refuse a different base."""

from __future__ import annotations

import json
import os

import pytest
import torch

from inf_embed import InfEmbed
from inf_embed.delta import DELTA_CONFIG_FILE, DELTA_WEIGHTS_FILE, apply_delta, backbone_fingerprint, save_delta
from inf_embed.testing import make_tiny_model


def _fine_tuned(base_dir: str, fusion: str = "residual") -> InfEmbed:
    model = InfEmbed.from_pretrained(base_dir, fusion=fusion)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.backbone.named_parameters():
            if "attention." in name:
                param.add_(torch.randn_like(param) * 1e-3)
        if fusion == "residual":
            model.fusion.proj.weight.normal_(0, 0.02)
    return model


def test_delta_round_trip_matches_the_fine_tuned_model(tiny_model_dir, tmp_path):
    base = InfEmbed.from_pretrained(tiny_model_dir)
    tuned = _fine_tuned(tiny_model_dir)
    folder = save_delta(tuned, base.backbone, tmp_path / "delta", base_name=tiny_model_dir, metadata={"note": "x"})
    data = json.loads((tmp_path / "delta" / DELTA_CONFIG_FILE).read_text())
    assert data["config"]["fusion"] == "residual" and data["metadata"] == {"note": "x"}
    assert all("attention." in name for name in data["delta_dtypes"])  # only changed tensors are stored
    loaded = InfEmbed(folder)
    assert loaded.config.fusion == "residual"
    texts = ["what is a neutrophil", "solar panel output in winter"]
    expected = tuned.encode_query(texts, instruction="a short definition")
    got = loaded.encode_query(texts, instruction="a short definition")
    assert abs(got - expected).max() < 1e-4  # float16 deltas
    torch.testing.assert_close(loaded.fusion.proj.weight, tuned.fusion.proj.weight, rtol=0, atol=0)


def test_delta_refuses_a_different_base_backbone(tiny_model_dir, tmp_path):
    base = InfEmbed.from_pretrained(tiny_model_dir)
    folder = save_delta(_fine_tuned(tiny_model_dir), base.backbone, tmp_path / "delta", base_name=tiny_model_dir)
    other = InfEmbed.from_pretrained(tiny_model_dir, fusion="residual")
    with torch.no_grad():
        next(other.backbone.parameters()).add_(1e-3)
    with pytest.raises(ValueError, match="fingerprint"):
        apply_delta(other, folder)


def test_delta_with_missing_module_weights_is_an_error(tiny_model_dir, tmp_path):
    base = InfEmbed.from_pretrained(tiny_model_dir)
    folder = save_delta(_fine_tuned(tiny_model_dir, "concat"), base.backbone, tmp_path / "d", base_name=tiny_model_dir)
    with pytest.raises(ValueError, match="missing module weights"):
        InfEmbed(folder, fusion="residual")  # residual needs fusion.proj.weight, the delta has none


def test_fingerprint_identifies_weights_not_files(tiny_model_dir, tmp_path):
    same = InfEmbed.from_pretrained(make_tiny_model(tmp_path / "same", seed=0))
    other = InfEmbed.from_pretrained(make_tiny_model(tmp_path / "other", seed=1))
    reference = backbone_fingerprint(InfEmbed.from_pretrained(tiny_model_dir).backbone)
    assert backbone_fingerprint(same.backbone) == reference
    assert backbone_fingerprint(other.backbone) != reference


def test_save_delta_is_atomic(tiny_model_dir, tmp_path, monkeypatch):
    base = InfEmbed.from_pretrained(tiny_model_dir)
    target = tmp_path / "delta"
    save_delta(_fine_tuned(tiny_model_dir), base.backbone, target, base_name=tiny_model_dir)
    before = sorted(os.listdir(target))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("inf_embed.delta.save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_delta(_fine_tuned(tiny_model_dir), base.backbone, target, base_name=tiny_model_dir)
    assert sorted(os.listdir(target)) == before == sorted([DELTA_CONFIG_FILE, DELTA_WEIGHTS_FILE])
    assert [p for p in os.listdir(tmp_path) if p != "delta"] == []
