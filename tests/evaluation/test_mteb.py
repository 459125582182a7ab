"""The MTEB wrapper in an offline mteb run on mteb's tiny in-memory mock tasks."""

from __future__ import annotations

import numpy as np
import pytest
from _evaluation_fakes import HashingEncoder

mteb = pytest.importorskip(
    "mteb", reason="mteb is not installed; the MTEB wrapper is an optional extra (pip install 'inf-embed[mteb]')"
)

from inf_embed.evaluation import InfEmbedMTEBWrapper, inf_embed_model_meta  # noqa: E402


def _run(wrapper, task):
    return mteb.evaluate(wrapper, [task], cache=None, show_progress_bar=False, encode_kwargs={"batch_size": 4})


def _query_calls(model):
    return [call for call in model.query_calls if call["queries"]]


def test_instruction_task_gets_query_and_instruction_separately():
    from mteb.mocks import MockInstructionRetrieval

    model = HashingEncoder()
    result = _run(InfEmbedMTEBWrapper(model, model_name="test/hashing"), MockInstructionRetrieval())
    (call,) = _query_calls(model)
    assert call["queries"] == ["This is a test sentence", "This is another test sentence"]
    assert call["instruction"] == ["This is a test instruction", "This is another test instruction"]
    assert call["batch_size"] == 4
    scores = result.task_results[0].get_score()
    assert 0.0 <= scores <= 1.0


def test_concat_mode_reproduces_mtebs_query_plus_instruction_text():
    from mteb.mocks import MockInstructionRetrieval

    model = HashingEncoder()
    _run(InfEmbedMTEBWrapper(model, instruction_mode="concat", model_name="test/hashing"), MockInstructionRetrieval())
    (call,) = _query_calls(model)
    assert call["queries"][0] == "This is a test sentence This is a test instruction"
    assert call["instruction"] is None


def test_task_instruction_is_used_for_queries_without_one():
    from mteb.mocks import MockRetrievalTask

    model = HashingEncoder()
    task = MockRetrievalTask()
    wrapper = InfEmbedMTEBWrapper(model, task_instructions={task.metadata.name: "Find the matching passage"})
    _run(wrapper, task)
    calls = _query_calls(model)
    assert calls  # one per split
    for call in calls:
        assert call["instruction"] == ["Find the matching passage"] * len(call["queries"])


def test_similarity_is_cosine_and_meta_describes_the_model():
    wrapper = InfEmbedMTEBWrapper(HashingEncoder(), model_name="hashing")
    a, b = np.array([[3.0, 0.0], [1.0, 1.0]]), np.array([[2.0, 0.0]])
    np.testing.assert_allclose(wrapper.similarity(a, b).numpy(), [[1.0], [2**-0.5]], rtol=1e-6)
    np.testing.assert_allclose(wrapper.similarity_pairwise(a, a).numpy(), [1.0, 1.0], rtol=1e-6)
    meta = wrapper.mteb_model_meta
    assert meta.name == "inf-embed/hashing" and meta.embed_dim == 64 and meta.use_instructions
    assert inf_embed_model_meta("org/x", similarity_fn_name="cosine").name == "org/x"
    with pytest.raises(ValueError, match="instruction_mode must be"):
        InfEmbedMTEBWrapper(HashingEncoder(), instruction_mode="prefix")


def test_a_plain_list_of_texts_is_encoded_as_one_batch():
    model = HashingEncoder()
    wrapper = InfEmbedMTEBWrapper(model)
    embeddings = wrapper.encode(
        ["a b", "c"], task_metadata=None, hf_split="test", hf_subset="default", prompt_type=None
    )
    assert embeddings.shape == (2, 64) and model.document_calls == 2
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-6)


def test_precision_from_encode_kwargs_reaches_the_model():
    """mteb labels the results with `precision` (output_dtypes), so the embeddings must be computed with it."""
    from mteb.mocks import MockInstructionRetrieval

    model = HashingEncoder()
    mteb.evaluate(
        InfEmbedMTEBWrapper(model, model_name="test/hashing"),
        [MockInstructionRetrieval()],
        cache=None,
        show_progress_bar=False,
        encode_kwargs={"batch_size": 4, "precision": "int8"},
    )
    (call,) = _query_calls(model)
    assert call["precision"] == "int8"


def test_quantised_rows_come_back_as_the_model_quantised_them(tiny_model):
    wrapper = InfEmbedMTEBWrapper(tiny_model)
    texts = ["a first text", "another one", "and a third"]
    kwargs = {"task_metadata": None, "hf_split": "test", "hf_subset": "default", "prompt_type": None}
    quantised = wrapper.encode(texts, precision="int8", **kwargs)
    assert quantised.dtype == np.int8
    expected = tiny_model.encode(texts, precision="int8", normalize_embeddings=True)
    np.testing.assert_array_equal(quantised, expected)
    plain = wrapper.encode(texts, **kwargs)
    assert plain.dtype == np.float32
    # the similarity upcasts quantised rows itself
    np.testing.assert_allclose(wrapper.similarity(quantised, quantised).diagonal().numpy(), 1.0, rtol=1e-5)
