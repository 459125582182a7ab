"""benchmarks/query_emphasis.py: its weight parsing and the two re-weighted query embeddings."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

QUERIES = ["python snake", "java island travel", "bank of a river"]
INSTRUCTIONS = ["I want facts about reptiles in the wild.", None, "Geography notes on erosion and soil."]


@pytest.fixture
def script(load_benchmark):
    return load_benchmark("query_emphasis")


@pytest.fixture
def concat_model(tiny_model_dir):
    from inf_embed import InfEmbed

    return InfEmbed.from_pretrained(tiny_model_dir, fusion="concat")


def test_weights_parse_and_reject_negative_or_non_numbers(script):
    assert script._weights("1, 0.5,0") == [1.0, 0.5, 0.0]
    for bad in ("0.5,x", "-0.1", "nan"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected"):
            script._weights(bad)


def test_instruction_token_weight_one_is_the_concat_embedding(script, concat_model):
    wrapped = script.InstructionTokenWeight(concat_model, 1.0)
    got = wrapped.encode_query(QUERIES, instruction=INSTRUCTIONS)
    expected = concat_model.encode_query(QUERIES, instruction=INSTRUCTIONS, normalize_embeddings=True)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_instruction_token_weight_zero_pools_the_query_and_special_tokens(script, concat_model):
    got = script.InstructionTokenWeight(concat_model, 0.0).encode_query(QUERIES, instruction=INSTRUCTIONS)
    states = concat_model.encode_query(QUERIES, instruction=INSTRUCTIONS, output_value="token_embeddings")
    for row, (query, instruction, tokens) in enumerate(zip(QUERIES, INSTRUCTIONS, states)):
        if instruction is None:
            kept = list(range(tokens.shape[0]))
        else:
            pieces = len(concat_model.tokenizer(query, add_special_tokens=False)["input_ids"])
            kept = list(range(pieces + 1)) + [tokens.shape[0] - 1]  # [CLS], the query's pieces, the last [SEP]
        expected = torch.nn.functional.normalize(tokens[kept].float().mean(dim=0), dim=0).numpy()
        np.testing.assert_allclose(got[row], expected, atol=1e-5)
    assert not np.allclose(
        got[0],
        script.InstructionTokenWeight(concat_model, 1.0).encode_query(QUERIES[:1], instruction=INSTRUCTIONS[:1])[0],
        atol=1e-4,
    )


def test_instruction_token_weight_refuses_a_model_that_does_not_join_texts(script, tiny_model):
    with pytest.raises(ValueError, match="concat"):
        script.InstructionTokenWeight(tiny_model, 0.5)


def test_joined_weight_mixes_the_query_alone_with_the_joined_text(script, concat_model):
    alone = concat_model.encode_query(QUERIES, normalize_embeddings=True)
    joined = concat_model.encode_query(QUERIES, instruction=INSTRUCTIONS, normalize_embeddings=True)
    np.testing.assert_allclose(
        script.JoinedWeight(concat_model, 0.0).encode_query(QUERIES, instruction=INSTRUCTIONS)[[0, 2]],
        alone[[0, 2]],
        atol=1e-5,
    )
    got = script.JoinedWeight(concat_model, 0.5).encode_query(QUERIES, instruction=INSTRUCTIONS)
    mixed = alone + 0.5 * joined
    np.testing.assert_allclose(got[[0, 2]], (mixed / np.linalg.norm(mixed, axis=1, keepdims=True))[[0, 2]], atol=1e-5)
    np.testing.assert_allclose(got[1], joined[1], atol=1e-5)  # no instruction: the model's own (unit) query embedding
