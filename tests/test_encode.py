from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch

from inf_embed import InfEmbed


def test_single_string_gives_a_1d_array(tiny_model):
    out = tiny_model.encode("hello world")
    assert isinstance(out, np.ndarray) and out.shape == (32,) and out.dtype == np.float32


def test_output_types_follow_sentence_transformers(tiny_model):
    texts = ["a", "bb b", "ccc c c"]
    assert isinstance(tiny_model.encode(texts), np.ndarray)
    tensor = tiny_model.encode(texts, convert_to_tensor=True)
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (3, 32)
    as_list = tiny_model.encode(texts, convert_to_numpy=False)
    assert isinstance(as_list, list) and all(t.shape == (32,) for t in as_list)
    tokens = tiny_model.encode(texts, output_value="token_embeddings")
    lengths = [len(tiny_model.tokenizer(t)["input_ids"]) for t in texts]
    assert [t.shape[0] for t in tokens] == lengths
    dicts = tiny_model.encode(texts, output_value=None)
    assert set(dicts[0]) >= {"input_ids", "attention_mask", "token_embeddings", "sentence_embedding"}


def test_per_row_dicts_carry_each_rows_own_instruction(tiny_model):
    # two distinct instructions for two queries: the (U, Li) instruction table has as many rows as the batch,
    # and must still be indexed by each row's instruction, not by the row's position
    queries, instructions = ["x", "y"], ["zeta instruction long", "alpha"]
    rows = tiny_model.encode_query(queries, instruction=instructions, output_value=None, batch_size=2)
    for row, instruction in zip(rows, instructions, strict=True):
        assert int(row["instr_mask"].sum()) == len(tiny_model.tokenizer(instruction)["input_ids"])
        assert row["instr_token_embeddings"].shape[0] == row["instr_mask"].shape[0]
    plain = tiny_model.encode_query(["x", "y"], instruction=["alpha", None], output_value=None, batch_size=2)
    assert plain[1]["instr_mask"] is None and int(plain[0]["instr_mask"].sum()) == 3  # [CLS] alpha [SEP]


def test_tuple_and_numpy_inputs_are_batches(tiny_model):
    texts = ("one", "two two")
    expected = tiny_model.encode(list(texts))
    np.testing.assert_array_equal(tiny_model.encode(texts), expected)
    np.testing.assert_array_equal(tiny_model.encode(np.array(texts)), expected)


def test_empty_list_returns_empty_array_of_shape_0_by_dim(tiny_model):
    assert tiny_model.encode([]).shape == (0, 32)
    assert tiny_model.encode_query([], instruction=[]).shape == (0, 32)
    assert tiny_model.encode([], convert_to_tensor=True).shape == (0, 32)


def test_batching_and_length_sorting_do_not_change_results(tiny_model):
    texts = ["short", "a much longer text with many more words in it", "mid length text", "x"]
    one_by_one = np.stack([tiny_model.encode(t) for t in texts])
    np.testing.assert_allclose(tiny_model.encode(texts, batch_size=2), one_by_one, atol=1e-5)


def test_per_item_instructions_stay_aligned_through_the_sort(tiny_model):
    queries = ["q", "a much longer query with many words", "mid query", "another long long long query here"]
    instructions = ["first instruction", None, "third one is long and detailed", "fourth"]
    batched = tiny_model.encode_query(queries, instruction=instructions, batch_size=3)
    one_by_one = np.stack([tiny_model.encode_query(q, instruction=i) for q, i in zip(queries, instructions)])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


def test_shared_instruction_is_encoded_once_per_call(tiny_model):
    queries = [f"query number {i}" for i in range(10)]
    calls = []
    handle = tiny_model.backbone.register_forward_hook(lambda m, args, kwargs_out: calls.append(1))
    try:
        shared = tiny_model.encode_query(queries, instruction="one instruction for all", batch_size=4)
    finally:
        handle.remove()
    assert len(calls) == 3 + 1  # three query batches, one instruction pass
    per_item = tiny_model.encode_query(queries, instruction=["one instruction for all"] * 10, batch_size=4)
    np.testing.assert_allclose(shared, per_item, atol=1e-6)


def test_precisions_give_sentence_transformers_dtypes_and_shapes(tiny_model):
    texts = [f"text {i}" for i in range(5)]
    assert tiny_model.encode(texts, precision="int8").dtype == np.int8
    assert tiny_model.encode(texts, precision="uint8").dtype == np.uint8
    assert tiny_model.encode(texts, precision="binary").shape == (5, 4)
    assert tiny_model.encode(texts, precision="ubinary").dtype == np.uint8


def test_truncate_dim_and_normalize(tiny_model):
    out = tiny_model.encode(["a b c", "d"], truncate_dim=8, normalize_embeddings=True)
    assert out.shape == (2, 8)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)


def test_prompts_are_prepended(tiny_model):
    tiny_model.config.prompts = {"query": "query: ", "document": "passage: ", "web": "web: "}
    np.testing.assert_allclose(tiny_model.encode_query("x"), tiny_model.encode("query: x"), atol=1e-6)
    np.testing.assert_allclose(tiny_model.encode_document("x"), tiny_model.encode("passage: x"), atol=1e-6)
    np.testing.assert_allclose(tiny_model.encode("x", prompt_name="web"), tiny_model.encode("web: x"), atol=1e-6)
    with pytest.raises(ValueError, match="prompt_name 'nope'"):
        tiny_model.encode("x", prompt_name="nope")


def test_encode_query_takes_sentence_transformers_positional_arguments(tiny_model):
    tiny_model.config.prompts = {"query": "query: ", "web": "web: "}
    np.testing.assert_allclose(tiny_model.encode_query(["x"], "web"), tiny_model.encode(["web: x"]), atol=1e-6)
    with pytest.raises(TypeError):
        tiny_model.encode_query(["x"], "web", None, 32, None, "sentence_embedding", "float32", True, False, None, False,
                                None, "an instruction")  # fmt: skip
    with pytest.raises(TypeError, match="prompt_name must be a string .* got list"):
        tiny_model.encode_query(["x"], ["an instruction passed positionally"])


def test_instructed_inputs_take_the_query_prompt(tiny_model):
    tiny_model.config.prompts = {"query": "query: "}
    np.testing.assert_allclose(
        tiny_model.encode(["x", "y"], instruction="about z"),
        tiny_model.encode_query(["x", "y"], instruction="about z"),
        atol=1e-6,
    )


def test_a_zero_dimensional_string_array_is_one_text(tiny_model):
    single = tiny_model.encode(np.array("hello"))
    assert single.shape == (tiny_model.get_sentence_embedding_dimension(),)
    np.testing.assert_allclose(single, tiny_model.encode("hello"), atol=1e-6)
    np.testing.assert_allclose(
        tiny_model.encode_query(["a", "b"], instruction=np.array("ab")),
        tiny_model.encode_query(["a", "b"], instruction="ab"),
        atol=1e-6,
    )


def test_numpy_integers_are_accepted_for_batch_size_and_truncate_dim(tiny_model):
    out = tiny_model.encode(["a", "b", "c"], batch_size=np.int64(2), truncate_dim=np.int32(8))
    np.testing.assert_allclose(out, tiny_model.encode(["a", "b", "c"], truncate_dim=8), atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"sentences": None}, TypeError, "sentences must be a string or a sequence"),
        ({"sentences": ["ok", None]}, TypeError, r"sentences\[1\] must be a string, got NoneType"),
        ({"sentences": ["ok", 3]}, TypeError, r"sentences\[1\] must be a string, got int"),
        ({"sentences": ["a"], "batch_size": 0}, ValueError, "batch_size must be a positive integer, got 0"),
        ({"sentences": ["a"], "batch_size": -2}, ValueError, "batch_size must be a positive integer"),
        ({"sentences": ["a"], "precision": "float16"}, ValueError, "precision must be one of"),
        ({"sentences": ["a"], "truncate_dim": 0}, ValueError, "truncate_dim must be a positive integer"),
        ({"sentences": ["a"], "output_value": "logits"}, ValueError, "output_value must be one of"),
    ],
)
def test_bad_encode_arguments_raise_naming_the_argument(tiny_model, kwargs, error, message):
    with pytest.raises(error, match=message):
        tiny_model.encode(**kwargs)


def test_instruction_list_length_mismatch_is_an_error(tiny_model):
    with pytest.raises(ValueError, match="instruction has 3 items, inputs has 2"):
        tiny_model.encode_query(["a", "b"], instruction=["x", "y", "z"])


def test_non_string_instruction_item_names_its_index(tiny_model):
    with pytest.raises(TypeError, match=r"instruction\[1\] must be a string or None, got int"):
        tiny_model.encode_query(["a", "b"], instruction=["x", 5])


def test_none_query_item_names_its_index(tiny_model):
    with pytest.raises(TypeError, match=r"queries\[0\] must be a string"):
        tiny_model.encode_query([None])


def test_overlong_inputs_are_truncated_with_one_warning_counting_them(tiny_model, caplog):
    tiny_model.max_seq_length = 8
    texts = ["word " * 50, "short", "word " * 20]
    with caplog.at_level(logging.WARNING, logger="inf_embed.encode"):
        out = tiny_model.encode(texts, batch_size=1)
    warnings = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].getMessage().startswith("2 of 3 inputs")
    assert out.shape == (3, 32)


def test_text_that_exactly_fills_the_budget_is_not_reported_as_truncated(tiny_model, caplog):
    text = "a b c d e f"  # 6 word pieces + [CLS] + [SEP] = 8 tokens
    tiny_model.max_seq_length = 8
    with caplog.at_level(logging.WARNING, logger="inf_embed.encode"):
        tiny_model.encode([text])
    assert not [r for r in caplog.records if "truncated" in r.getMessage()]


def test_similarity_uses_the_configured_function(tiny_model):
    a = tiny_model.encode(["x", "y"])
    scores = tiny_model.similarity(a, a)
    assert scores.shape == (2, 2)
    torch.testing.assert_close(torch.diagonal(scores), torch.ones(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(tiny_model.similarity_pairwise(a, a), torch.ones(2), atol=1e-5, rtol=0)


def test_dimension_and_max_seq_length_properties(tiny_model):
    assert tiny_model.get_sentence_embedding_dimension() == 32
    tiny_model.max_seq_length = 16
    assert tiny_model.config.max_query_length == tiny_model.config.max_passage_length == 16
    assert tiny_model.device.type == "cpu"
    with pytest.raises(ValueError, match="max_query_length"):
        tiny_model.max_seq_length = 1
    assert tiny_model.config.max_query_length == tiny_model.config.max_instruction_length == 16  # left as it was


def test_similarity_fn_name_can_be_set_and_is_checked(tiny_model):
    tiny_model.similarity_fn_name = "dot"
    a, b = tiny_model.encode(["a", "b"]), tiny_model.encode(["c"])
    torch.testing.assert_close(tiny_model.similarity(a, b), torch.as_tensor(a @ b.T))
    with pytest.raises(ValueError, match="similarity_fn_name"):
        tiny_model.similarity_fn_name = "maxsim"
    assert tiny_model.similarity_fn_name == "dot"


def test_sentence_transformers_constructor_arguments(tiny_model_dir, tmp_path):
    model = InfEmbed(tiny_model_dir, truncate_dim=8, cache_folder=str(tmp_path), trust_remote_code=False)
    assert model.encode(["a"]).shape == (1, 8)
    with pytest.raises(ValueError, match="truncate_dim must be a positive integer"):
        InfEmbed(tiny_model_dir, truncate_dim=0)
    with pytest.raises(ValueError, match="trust_remote_code=True is not supported"):
        InfEmbed(tiny_model_dir, trust_remote_code=True)
    with pytest.raises(ValueError, match="cache_folder=.* and cache_dir=.* disagree"):
        InfEmbed(tiny_model_dir, cache_folder="/a", cache_dir="/b")


def test_a_tokenizer_without_pad_token_is_given_one_or_a_clear_error(tiny_model):
    tokenizer = copy.deepcopy(tiny_model.tokenizer)
    tokenizer.pad_token = None
    model = InfEmbed(config=tiny_model.config, backbone=tiny_model.backbone, tokenizer=tokenizer)
    np.testing.assert_allclose(model.encode(["a", "b c d"]), tiny_model.encode(["a", "b c d"]), atol=1e-5)
    bare = copy.deepcopy(tiny_model.tokenizer)
    bare.pad_token = bare.unk_token = None
    with pytest.raises(ValueError, match="no pad token and no eos or unk token"):
        InfEmbed(config=tiny_model.config, backbone=tiny_model.backbone, tokenizer=bare)


def test_device_list_encodes_in_a_process_pool_with_the_same_result(tiny_model):
    queries = [f"query {i} " + "word " * (i % 5) for i in range(9)]
    instructions = [None if i % 3 == 0 else f"instruction {i % 2}" for i in range(9)]
    single = tiny_model.encode_query(queries, instruction=instructions, batch_size=4)
    pooled = tiny_model.encode_query(queries, instruction=instructions, batch_size=4, device=["cpu", "cpu"])
    np.testing.assert_allclose(pooled, single, atol=1e-6)


def test_empty_device_list_is_an_error(tiny_model):
    with pytest.raises(ValueError, match="device must name at least one device"):
        tiny_model.encode(["a"], device=[])


def test_truncation_is_counted_with_a_slow_tokenizer_too(tiny_model, tiny_model_dir, caplog):
    from transformers import BertTokenizer

    tiny_model.tokenizer = BertTokenizer.from_pretrained(tiny_model_dir)
    tiny_model.max_seq_length = 8
    with caplog.at_level(logging.WARNING, logger="inf_embed.encode"):
        tiny_model.encode(["word " * 30, "a b c d e f", "short"])
    messages = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert len(messages) == 1 and messages[0].startswith("1 of 3 inputs")


def test_inputs_spanning_several_sort_windows_keep_their_order(tiny_model):
    texts = [("word " * (i % 7)) + f"text {i}" for i in range(40)]  # batch_size=2: 32 texts per window
    one_by_one = np.stack([tiny_model.encode(t) for t in texts])
    np.testing.assert_allclose(tiny_model.encode(texts, batch_size=2), one_by_one, atol=1e-5)
