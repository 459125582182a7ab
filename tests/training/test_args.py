"""TrainingArguments validation (every field, by name), the JSON round trip, and the presets."""

from __future__ import annotations

import dataclasses
import json

import pytest

from inf_embed.training.args import TrainingArguments
from inf_embed.training.presets import PRESETS, get_preset


@pytest.mark.parametrize("name", [spec.name for spec in dataclasses.fields(TrainingArguments)])
def test_every_field_rejects_a_wrong_type_with_a_value_error_naming_it(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        TrainingArguments(**{name: object()})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("warmup_steps", True),
        ("warmup_ratio", "0.1"),
        ("adam_beta1", None),
        ("adam_beta2", float("nan")),
        ("loss", ""),
        ("bf16", "no"),
        ("gradient_checkpointing", None),
        ("resume", 1),
        ("show_progress_bar", "yes"),
        ("seed", -1),
        ("seed", 2**32),
        ("seed", 1.5),
    ],
)
def test_bad_values_name_their_field(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        TrainingArguments(**{name: value})


def test_json_round_trip() -> None:
    args = TrainingArguments(max_steps=5, loss_options="weight=0.5", show_progress_bar=False, warmup_steps=0, seed=7)
    assert TrainingArguments(**json.loads(json.dumps(args.to_dict()))) == args


def test_presets_build_valid_training_arguments() -> None:
    for name, preset in PRESETS.items():
        args = TrainingArguments(**preset.training)
        assert get_preset(name) is preset
        assert args.seed == preset.training["seed"]


def test_unknown_preset_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown preset 'nope'.*'default'"):
        get_preset("nope")
