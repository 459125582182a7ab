"""`inf-embed train`: flags map to TrainingArguments, a run writes a loadable model, --resume continues."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil

import pytest
from _training_helpers import (
    one_thread,  # noqa: F401  (autouse fixture)
    records,
)

from inf_embed.cli.main import main
from inf_embed.training import TrainingArguments
from inf_embed.training.args import add_arguments, from_namespace


def _write_records(path):
    with open(path, "w", encoding="utf-8") as handle:
        for record in records(6):
            handle.write(json.dumps(record.to_dict()) + "\n")
    return path


def test_every_training_argument_has_a_flag_with_its_name():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = {opt for action in parser._actions for opt in action.option_strings}
    for spec in dataclasses.fields(TrainingArguments):
        assert "--" + spec.name.replace("_", "-") in flags, spec.name
    flags = ["--output", "o", "--lr", "3e-5", "--max-steps", "7", "--bf16", "--max-grad-norm", "0"]
    args = from_namespace(parser.parse_args(flags))
    assert (args.output_dir, args.learning_rate, args.max_steps, args.bf16) == ("o", 3e-5, 7, True)
    assert args.max_grad_norm is None  # 0 disables clipping
    assert args.batch_size == TrainingArguments().batch_size  # flags not given keep the dataclass default


def test_train_command_writes_a_model_and_resumes(tiny_model_dir, tmp_path, capsys):
    data = _write_records(tmp_path / "train.jsonl")
    out = tmp_path / "out"
    common = [
        "train",
        "--data",
        str(data),
        "--output",
        str(out),
        "--model",
        tiny_model_dir,
        "--fusion",
        "concat",
        "--loss",
        "uni:P",
        "--batch-size",
        "3",
        "--max-query-length",
        "24",
        "--max-instruction-length",
        "24",
        "--max-passage-length",
        "32",
        "--save-steps",
        "1",
        "--logging-steps",
        "1",
        "--no-show-progress-bar",
    ]
    assert main([*common, "--max-steps", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and summary["records"] == 6
    assert (out / "model" / "config.json").exists() or any((out / "model").iterdir())
    shutil.rmtree(out / "checkpoint-2")  # as if the job had died during step 2
    # the schedule is fixed by the checkpoint's optimizer and scheduler states: a longer run is refused
    with pytest.raises(ValueError, match=r"total steps: 2 -> 3 \(max_steps: 2 -> 3\)"):
        main([*common, "--max-steps", "3", "--resume"])
    assert main([*common, "--max-steps", "2", "--resume"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2
    state = json.loads((out / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2]


def test_preset_default_fills_the_recipe_and_writes_a_loadable_delta(tiny_model_dir, tmp_path, capsys):
    from inf_embed import InfEmbed
    from inf_embed.delta import read_delta_config
    from inf_embed.training.presets import get_preset

    data = _write_records(tmp_path / "train.jsonl")
    out = tmp_path / "run"
    argv = ["train", "--preset", "default", "--data", str(data), "--model", tiny_model_dir, "--output", str(out)]
    argv += ["--max-steps", "2", "--batch-size", "3", "--max-query-length", "24", "--max-instruction-length", "24"]
    argv += ["--max-passage-length", "32", "--no-show-progress-bar"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and summary["delta"] == str(out / "delta")
    recorded = read_delta_config(out / "delta")
    preset = get_preset("default")
    assert recorded["config"]["fusion"] == preset.model_overrides["fusion"]
    training = recorded["metadata"]["training_arguments"]
    assert training["loss"] == preset.training["loss"] and training["seed"] == preset.training["seed"]
    assert training["batch_size"] == 3  # an explicit flag wins over the preset
    assert recorded["metadata"]["command"] == "inf-embed train --preset default"
    # only the attention weights were trained, so only they are stored
    assert recorded["delta_dtypes"] and all("attention." in name for name in recorded["delta_dtypes"])
    full = InfEmbed.from_pretrained(out / "model")
    compact = InfEmbed(out / "delta")
    texts, instruction = ["what is a neutrophil", "tax form 1040"], "for a nurse"
    assert (
        abs(
            full.encode_query(texts, instruction=instruction) - compact.encode_query(texts, instruction=instruction)
        ).max()
        < 1e-4
    )
    assert compact.config.document_delta_scale == preset.training.get("document_delta_scale", 1.0)
    assert compact.config.plain_query_side == preset.training.get("plain_query_side", "query")
    assert abs(full.encode_document(texts) - compact.encode_document(texts)).max() < 1e-4


def test_train_without_data_or_preset_says_what_is_missing(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit, match="--data"):
        main(["train", "--output", str(tmp_path)])


@pytest.mark.parametrize(
    ("flag", "value", "fusion", "owner"),
    [
        ("--query-weight", "0.9", "concat", "anchored"),
        ("--gate-threshold", "0.1", "attention", "gated"),
        ("--instruction-weight", "0.3", "concat", "conditioned"),
    ],
)
def test_fusion_flag_for_another_fusion_is_rejected_naming_both(tmp_path, flag, value, fusion, owner):
    data = _write_records(tmp_path / "train.jsonl")
    command = ["train", "--data", str(data), "--output", str(tmp_path / "out"), "--fusion", fusion, flag, value]
    with pytest.raises(SystemExit, match=rf"{flag} applies to --fusion {owner} only; this run's fusion is {fusion}"):
        main(command)
    assert not (tmp_path / "out").exists()


def test_instruction_weight_error_and_help_point_to_the_loss_option(tiny_model_dir, tmp_path, capsys):
    data = _write_records(tmp_path / "train.jsonl")
    # no --fusion: the model's own fusion (attention for the tiny model) is checked once the model is loaded
    command = ["train", "--data", str(data), "--output", str(tmp_path / "out"), "--model", tiny_model_dir]
    with pytest.raises(SystemExit, match="fusion is attention.*--loss-options instruction_weight=") as error:
        main([*command, "--instruction-weight", "0.3"])
    assert "not the poisoned-instruction (IX) loss term's weight" in str(error.value)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--loss-options instruction_weight=VALUE" in " ".join(capsys.readouterr().out.split())


def test_fusion_flag_for_its_own_fusion_is_accepted(tiny_model_dir, tmp_path, capsys):
    data = _write_records(tmp_path / "train.jsonl")
    out = tmp_path / "out"
    command = ["train", "--data", str(data), "--output", str(out), "--model", tiny_model_dir, "--fusion", "anchored"]
    extra = [
        "--query-weight",
        "0.9",
        "--max-steps",
        "1",
        "--batch-size",
        "3",
        "--loss",
        "uni:P",
        "--no-show-progress-bar",
    ]
    assert main([*command, *extra]) == 0
    assert json.loads((out / "model" / "inf_embed_config.json").read_text())["query_weight"] == 0.9
