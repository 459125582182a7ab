"""inf_embed.compat: how sentence-transformers folders map onto an InfEmbed config, and what is refused."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from transformers import AutoConfig

from inf_embed.compat import read_sentence_transformers_folder


def _st_folder(root, tiny_model_dir, modules, dense=None, config_st=None):
    """A sentence-transformers folder layout (configs only) around the tiny backbone; ``modules`` are type names."""
    shutil.copytree(tiny_model_dir, root)
    paths = {"Transformer": "", "Pooling": "1_Pooling", "Dense": "2_Dense", "Normalize": "3_Normalize"}
    entries = [
        {"idx": i, "name": str(i), "path": paths[m], "type": f"sentence_transformers.models.{m}"}
        for i, m in enumerate(modules)
    ]
    (root / "modules.json").write_text(json.dumps(entries))
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": 32, "pooling_mode": "mean"}))
    (root / "2_Dense").mkdir()
    dense = {"in_features": 32, "out_features": 8, "bias": True, **(dense or {})}
    (root / "2_Dense" / "config.json").write_text(json.dumps(dense))
    (root / "config_sentence_transformers.json").write_text(json.dumps(config_st or {}))
    return str(root)


def _read_st(folder):
    return read_sentence_transformers_folder(folder, AutoConfig.from_pretrained(folder))


def test_st_dense_after_normalize_is_refused_since_inf_embed_normalises_last(tiny_model_dir, tmp_path):
    folder = _st_folder(tmp_path / "st", tiny_model_dir, ["Transformer", "Pooling", "Normalize", "Dense"])
    with pytest.raises(ValueError, match=r"Dense'? after Normalize \(idx 2\) is not supported"):
        _read_st(folder)
    ok = _read_st(_st_folder(tmp_path / "ok", tiny_model_dir, ["Transformer", "Pooling", "Dense", "Normalize"]))
    assert ok.config.normalize and ok.config.projection_dim == 8


def test_st_default_prompt_name_and_truncate_dim_are_not_dropped_silently(tiny_model_dir, tmp_path, caplog):
    config_st = {"prompts": {"clf": "classify: "}, "default_prompt_name": "clf", "truncate_dim": 4}
    folder = _st_folder(tmp_path / "st", tiny_model_dir, ["Transformer", "Pooling"], config_st=config_st)
    with caplog.at_level(logging.WARNING, logger="inf_embed.compat"):
        foreign = _read_st(folder)
    assert foreign.config.prompts["clf"] == "classify: "
    assert "default_prompt_name='clf'" in caplog.text and "pass prompt_name='clf' to encode" in caplog.text
    assert "truncate_dim=4" in caplog.text
