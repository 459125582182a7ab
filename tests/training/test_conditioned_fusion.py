"""fusion="conditioned": query and instruction encoded as one text pair, the query segment pooled."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import torch
from _training_helpers import (
    one_thread,  # noqa: F401  (autouse fixture)
    records,
    small_args,
    tiny,
)

from inf_embed import InfEmbed, InfEmbedConfig
from inf_embed.cli.main import main
from inf_embed.data import build_text_batch
from inf_embed.encode import tokenize_pairs
from inf_embed.losses import get_loss
from inf_embed.modules import get_fusion, list_fusions
from inf_embed.modules.pooling import mean_pooling
from inf_embed.training import Trainer
from inf_embed.training.trainer import plan_batch

QUERIES = ["what is a neutrophil", "zip code of harahan", "how do solar panels work"]


def _fusion(weight: float, pooling: str = "mean"):
    config = InfEmbedConfig(fusion="conditioned", pooling=pooling, instruction_weight=weight)
    return get_fusion("conditioned")(config, 3)


def _direct(model: InfEmbed, query: str, instruction: str | None) -> torch.Tensor:
    """The embedding computed by hand: backbone on tokenizer(query, instruction), weighted mean, L2 norm."""
    tok = model.tokenizer
    encoded = tok([query], [instruction], return_tensors="pt") if instruction else tok([query], return_tensors="pt")
    sequence_ids = encoded.encodings[0].sequence_ids
    with torch.no_grad():
        states = model.backbone(**encoded).last_hidden_state[0]  # (L, d)
    # the instruction segment starts at the instruction's first token and runs to the end of the pair
    first = sequence_ids.index(1) if 1 in sequence_ids else len(sequence_ids)
    weights = torch.tensor([1.0] * first + [model.config.instruction_weight] * (len(sequence_ids) - first))
    if model.config.pooling == "cls":
        pooled = states[0]
    else:
        pooled = (states * weights[:, None]).sum(0) / weights.sum()
    return torch.nn.functional.normalize(pooled, dim=0)


def test_conditioned_is_registered_and_parameter_free(tiny_model_dir):
    assert "conditioned" in list_fusions()
    model = tiny(tiny_model_dir, "conditioned")
    assert model.fusion.pairs_text and not model.fusion.encodes_instruction
    assert not get_fusion("attention").pairs_text
    assert list(model.fusion.parameters()) == []
    assert model.fusion.compose_text("q", "i") == "q"


@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
def test_pool_pair_matches_a_hand_computation(weight):
    states = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3) ** 0.5
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    segment = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]])
    got = _fusion(weight).pool_pair(states, mask, segment)
    for b in range(2):
        num, den = torch.zeros(3), 0.0
        for t in range(5):
            w = float(mask[b, t]) * (weight if segment[b, t] else 1.0)
            num += w * states[b, t]
            den += w
        torch.testing.assert_close(got[b], num / den)
    if weight == 1.0:
        torch.testing.assert_close(got, mean_pooling(states, mask))
    cls = _fusion(weight, "cls").pool_pair(states, mask, segment)
    torch.testing.assert_close(cls, states[:, 0])


def test_weight_one_is_mean_pooling_over_the_whole_pair(tiny_model_dir):
    model = tiny(tiny_model_dir, "conditioned", instruction_weight=1.0)
    encoded = model.tokenizer([QUERIES[0]], ["I want a definition"], return_tensors="pt")
    with torch.no_grad():
        states = model.backbone(**encoded).last_hidden_state
        expected = torch.nn.functional.normalize(mean_pooling(states, encoded["attention_mask"]), dim=-1)[0]
    got = model.encode_query(QUERIES[0], instruction="I want a definition", convert_to_tensor=True)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("empty", [None, "", "   ", [None, "", " "]])
def test_no_instruction_gives_the_plain_pooled_query(tiny_model_dir, empty):
    model = tiny(tiny_model_dir, "conditioned")
    got = model.encode_query(QUERIES, instruction=empty)
    np.testing.assert_allclose(got, model.encode_document(QUERIES), atol=1e-6)


def test_the_instruction_changes_the_embedding(tiny_model_dir):
    model = tiny(tiny_model_dir, "conditioned")
    a = model.encode_query(QUERIES[:1], instruction="I want a definition")
    b = model.encode_query(QUERIES[:1], instruction="I want the normal count range in adults")
    assert not np.allclose(a, b, atol=1e-4)
    assert not np.allclose(a, model.encode_document(QUERIES[:1]), atol=1e-4)


@pytest.mark.parametrize("pooling,weight", [("mean", 0.0), ("mean", 0.3), ("cls", 0.0)])
def test_encode_query_equals_a_direct_forward_on_the_pair(tiny_model_dir, pooling, weight):
    model = tiny(tiny_model_dir, "conditioned", pooling=pooling, instruction_weight=weight)
    instructions = ["I want a definition", None, "numbers only please, as a short list"]
    got = model.encode_query(QUERIES, instruction=instructions, batch_size=2, convert_to_tensor=True)
    for row, (query, instruction) in enumerate(zip(QUERIES, instructions)):
        torch.testing.assert_close(got[row], _direct(model, query, instruction), atol=1e-5, rtol=1e-5)
    shared = model.encode_query(QUERIES, instruction="be brief", batch_size=2, convert_to_tensor=True)
    for row, query in enumerate(QUERIES):
        torch.testing.assert_close(shared[row], _direct(model, query, "be brief"), atol=1e-5, rtol=1e-5)
    prompted = model.encode_query(QUERIES[0], instruction="be brief", prompt="query: ", convert_to_tensor=True)
    torch.testing.assert_close(prompted, _direct(model, "query: " + QUERIES[0], "be brief"), atol=1e-5, rtol=1e-5)


def test_tokenize_pairs_marks_the_instruction_segment_and_counts_cuts(tiny_model_dir):
    tok = tiny(tiny_model_dir, "conditioned").tokenizer
    pairs = [("what is x", "be brief"), ("what is x", None), ("a b c d e f g h", "i j k l m n o p")]
    features, cut = tokenize_pairs(tok, pairs, max_query_length=4, max_pair_length=10)
    assert cut == 2  # the lone query over 4 tokens and the long pair over 10
    mask, segment = features["attention_mask"], features["instruction_segment"]
    # [CLS] what is x [SEP] be brief [SEP]: the query segment ends with the first [SEP]
    assert segment[0, : int(mask[0].sum())].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert features["token_type_ids"][0, :8].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert int(mask[1].sum()) == 4 and segment[1].sum() == 0
    assert int(mask[2].sum()) == 10 and segment[2].tolist() == [0] * 5 + [1] * 5  # longest_first: 3 + 4 tokens kept


def test_pair_truncation_is_reported(tiny_model_dir, caplog):
    model = tiny(tiny_model_dir, "conditioned", max_query_length=4, max_instruction_length=4)
    with caplog.at_level(logging.WARNING, logger="inf_embed.encode"):
        model.encode_query(["a b c d e f g h"], instruction="i j k l m n o p")
    assert "1 of 1 inputs were longer than the token budget" in caplog.text
    assert "max_length=8" in caplog.text


def test_training_plan_encodes_text_pairs(tiny_model_dir):
    """(Training and encode_query agree for this fusion: tests/training/test_trainer.py, parametrised by fusion.)"""
    model = tiny(tiny_model_dir, "conditioned", instruction_weight=0.25).eval()
    text = build_text_batch(records(4), num_instruction_variants=3, generator=torch.Generator().manual_seed(0))
    plan = plan_batch(model, text, get_loss("multi:P+I+IQ"))
    assert "instruction_segment" in plan.groups["texts"] and plan.pair_instruction is None


def test_config_round_trip_and_validation():
    config = InfEmbedConfig(fusion="conditioned", instruction_weight=0.25)
    data = json.loads(config.to_json_string())
    assert data["instruction_weight"] == 0.25
    assert InfEmbedConfig.from_dict(data) == config
    assert InfEmbedConfig().instruction_weight == 0.0
    for bad in (-0.1, 1.5, float("nan"), "0.5", True, None):
        with pytest.raises(ValueError, match="instruction_weight must be a number in \\[0, 1\\]"):
            InfEmbedConfig(fusion="conditioned", instruction_weight=bad)


def test_last_pooling_is_rejected_at_model_construction(tiny_model_dir):
    with pytest.raises(ValueError, match="cannot use pooling='last'"):
        tiny(tiny_model_dir, "conditioned", pooling="last")


def test_save_load_round_trip_keeps_the_fusion_and_weight(tiny_model_dir, tmp_path):
    model = tiny(tiny_model_dir, "conditioned", instruction_weight=0.4)
    folder = model.save_pretrained(tmp_path / "conditioned")
    reloaded = InfEmbed.from_pretrained(folder)
    assert reloaded.config.fusion == "conditioned" and reloaded.config.instruction_weight == 0.4
    assert reloaded.fusion.instruction_weight == 0.4
    instructions = ["be brief", None, "a definition"]
    np.testing.assert_array_equal(
        reloaded.encode_query(QUERIES, instruction=instructions), model.encode_query(QUERIES, instruction=instructions)
    )


@pytest.mark.parametrize("cache_chunk_size", [None, 3])
def test_trainer_steps_change_the_weights(tiny_model_dir, tmp_path, cache_chunk_size):
    model = tiny(tiny_model_dir, "conditioned", instruction_weight=0.5)
    before = model.backbone.embeddings.word_embeddings.weight.detach().clone()
    args = small_args(tmp_path, max_steps=2, cache_chunk_size=cache_chunk_size)
    out = Trainer(model, args, records(6), loss="multi:P+I+IQ").train()
    assert out.global_step == 2 and np.isfinite(out.training_loss)
    assert not torch.equal(before, model.backbone.embeddings.word_embeddings.weight.detach())


def test_train_cli_accepts_the_conditioned_fusion(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    with open(data, "w", encoding="utf-8") as handle:
        for record in records(3):
            handle.write(json.dumps(record.to_dict()) + "\n")
    argv = ["train", "--data", str(data), "--output", str(tmp_path / "out"), "--model", tiny_model_dir]
    argv += ["--fusion", "conditioned", "--instruction-weight", "0.5", "--loss", "uni:P", "--batch-size", "3"]
    argv += ["--max-steps", "1", "--max-passage-length", "32", "--no-show-progress-bar"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    config = InfEmbedConfig.load(os.path.join(summary["model"]))
    assert config.fusion == "conditioned" and config.instruction_weight == 0.5
