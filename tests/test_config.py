from __future__ import annotations

import dataclasses
import json

import pytest

from inf_embed import InfEmbedConfig


def test_config_round_trips_through_json(tmp_path):
    config = InfEmbedConfig(pooling="cls", fusion="concat", projection_dim=64, prompts={"query": "q: ", "document": ""})
    config.save(tmp_path)
    assert InfEmbedConfig.load(tmp_path) == config
    assert InfEmbedConfig.from_dict(json.loads(config.to_json_string())) == config


def test_unknown_config_key_is_rejected_with_known_keys_listed():
    with pytest.raises(ValueError, match=r"unknown InfEmbedConfig keys \['poolling'\].*known keys"):
        InfEmbedConfig.from_dict({"poolling": "mean"})


def test_unknown_key_in_saved_file_names_the_file(tmp_path):
    (tmp_path / "inf_embed_config.json").write_text(json.dumps({"fusion": "attention", "extra": 1}))
    with pytest.raises(ValueError, match="inf_embed_config.json.*extra"):
        InfEmbedConfig.load(tmp_path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("pooling", "max", "unknown pooling 'max'"),
        ("fusion", "gatted", "unknown fusion 'gatted'"),
        ("padding_side", "middle", "unknown padding_side"),
        ("max_query_length", 0, "max_query_length must be an integer"),
        ("projection_dim", -3, "projection_dim must be a positive integer"),
        ("concat_template", "{query}", "concat_template must contain"),
        ("concat_template", "{query} {instruction} {other}", "may only use the fields"),
        ("similarity_fn_name", "maxsim", "unknown similarity_fn_name"),
        ("format_version", 99, "format_version 99 is not supported"),
    ],
)
def test_invalid_field_raises_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        InfEmbedConfig(**{field: value})


def test_replace_validates_overrides():
    config = InfEmbedConfig()
    assert dataclasses.replace(config, fusion="none").fusion == "none"
    with pytest.raises(ValueError, match="unknown fusion"):
        dataclasses.replace(config, fusion="nope")
