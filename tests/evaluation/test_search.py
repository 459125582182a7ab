"""Chunked exact search (against brute force, ties, bounded reads) and the corpus-embedding cache."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from inf_embed.evaluation.search import (
    CachedEmbeddings,
    EmbeddingCache,
    corpus_fingerprint,
    doc_id_tie_order,
    encode_corpus,
    exact_search,
    model_fingerprint,
    rerank,
    search_to_run,
)


def _brute_force(queries: np.ndarray, corpus: np.ndarray, k: int, cos: bool = True):
    if cos:
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        corpus = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    scores = queries.astype(np.float64) @ corpus.astype(np.float64).T
    # score descending, then index ascending
    order = np.lexsort((np.broadcast_to(np.arange(corpus.shape[0]), scores.shape), -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, 1), order


@pytest.mark.parametrize("chunk,qbatch", [(7, 3), (64, 1024), (1, 2)])
@pytest.mark.parametrize("score_function", ["cos", "dot"])
def test_chunked_search_equals_brute_force(chunk, qbatch, score_function):
    rng = np.random.default_rng(0)
    queries, corpus = rng.normal(size=(9, 16)), rng.normal(size=(50, 16))
    scores, indices = exact_search(
        queries, corpus, 10, score_function=score_function, corpus_chunk_size=chunk, query_batch_size=qbatch
    )
    expected_scores, expected_indices = _brute_force(queries, corpus, 10, cos=score_function == "cos")
    assert scores.dtype == np.float32 and indices.dtype == np.int64 and scores.shape == (9, 10)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 100])
def test_tied_scores_come_back_in_corpus_order_whatever_the_chunking(chunk):
    base = np.eye(4, dtype=np.float32)
    # rows 1, 3, 4, 6 are identical -> exactly tied scores for the first query
    corpus = np.stack([base[1], base[0], base[2], base[0], base[0], base[3], base[0], base[2]])
    queries = np.stack([base[0], base[2]])
    _, indices = exact_search(queries, corpus, 3, corpus_chunk_size=chunk)
    np.testing.assert_array_equal(indices[0], [1, 3, 4])
    np.testing.assert_array_equal(indices[1], [2, 7, 0])


def test_doc_id_tie_order_ranks_ids_descending():
    np.testing.assert_array_equal(doc_id_tie_order(["b", "a", "c", "ab"]), [1, 3, 0, 2])  # c, b, ab, a


@pytest.mark.parametrize("chunk,qbatch", [(1, 1), (2, 1), (3, 2), (100, 1024)])
def test_tie_order_decides_which_tied_rows_survive_the_cut_whatever_the_chunking(chunk, qbatch):
    base = np.eye(4, dtype=np.float32)
    # rows 1, 3, 4, 6 are exactly tied for query 0; rows 2 and 7 for query 1
    corpus = np.stack([base[1], base[0], base[2], base[0], base[0], base[3], base[0], base[2]])
    queries = np.stack([base[0], base[2]])
    tie_order = np.array([7, 6, 5, 4, 3, 2, 1, 0])  # the reverse of the corpus order
    _, indices = exact_search(queries, corpus, 3, tie_order=tie_order, corpus_chunk_size=chunk, query_batch_size=qbatch)
    np.testing.assert_array_equal(indices[0], [6, 4, 3])
    np.testing.assert_array_equal(indices[1], [7, 2, 6])  # then the zeros, by tie order: row 6 first
    with pytest.raises(ValueError, match="tie_order must hold 8 distinct ints"):
        exact_search(queries, corpus, 3, tie_order=np.zeros(8, dtype=np.int64))


def test_the_cut_keeps_the_same_tied_documents_whatever_the_corpus_order_and_top_k():
    # a and b have the same embedding; the metrics rank the tie b before a (doc id descending), so must the cut.
    embedding = {"a": [1.0, 0.0], "b": [1.0, 0.0], "c": [0.0, 1.0]}
    query = np.array([[1.0, 0.0]])
    for order in (["a", "b", "c"], ["b", "a", "c"], ["c", "a", "b"]):
        corpus = np.array([embedding[d] for d in order])
        for top_k in (1, 2, 3):
            scores, indices = exact_search(query, corpus, top_k, tie_order=doc_id_tie_order(order))
            ranked = list(search_to_run(["q"], order, scores, indices)["q"])
            assert ranked == ["b", "a", "c"][:top_k], (order, top_k)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_embeddings_raise_naming_the_side_and_the_rows(bad):
    rng = np.random.default_rng(3)
    queries, corpus = rng.normal(size=(3, 4)), rng.normal(size=(10, 4))
    broken = corpus.copy()
    broken[[4, 8], 1] = bad
    with pytest.raises(ValueError, match=r"corpus_embeddings: 2 of 10 rows hold NaN or infinity \(first: row 4\)"):
        exact_search(queries, broken, 5, corpus_chunk_size=3)
    broken = queries.copy()
    broken[2, 0] = bad
    with pytest.raises(ValueError, match=r"query_embeddings: 1 of 3 rows hold NaN or infinity \(first: row 2\)"):
        exact_search(broken, corpus, 5)
    with pytest.raises(ValueError, match="query_embeddings: 1 of 3 rows hold NaN"):
        rerank(broken, corpus, [[0], [1], [2]])


def test_top_k_none_ranks_the_whole_corpus_and_large_top_k_is_clipped():
    rng = np.random.default_rng(1)
    queries, corpus = rng.normal(size=(2, 8)), rng.normal(size=(11, 8))
    assert exact_search(queries, corpus, None)[1].shape == (2, 11)
    assert exact_search(queries, corpus, 500)[1].shape == (2, 11)
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        exact_search(queries, corpus, 0)


def test_dimension_mismatch_is_reported_with_both_shapes():
    with pytest.raises(ValueError, match="dimension 8"):
        exact_search(np.ones((1, 8)), np.ones((3, 4)), 2)


class RecordingRows:
    """A RowSource that remembers the largest slice it was asked for."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.largest = 0

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index: slice) -> np.ndarray:
        rows = self.array[index]
        self.largest = max(self.largest, len(rows))
        return rows


def test_search_reads_the_corpus_one_chunk_at_a_time():
    rng = np.random.default_rng(2)
    corpus = rng.normal(size=(100, 8)).astype(np.float32)
    rows = RecordingRows(corpus)
    queries = rng.normal(size=(4, 8))
    scores, indices = exact_search(queries, rows, 5, corpus_chunk_size=16)
    assert rows.largest == 16
    np.testing.assert_array_equal(indices, exact_search(queries, corpus, 5)[1])


def test_million_row_corpus_search_stays_within_bounded_memory(tmp_path):
    # 1M x 384 float32 would be 1.5 GB; rows are generated chunk by chunk, so the search must never hold them all.
    script = textwrap.dedent(
        """
        import json, resource, sys
        import numpy as np, torch
        from inf_embed.evaluation.search import exact_search

        class Synthetic:
            def __len__(self):
                return 1_000_000
            def __getitem__(self, index):
                start, stop, _ = index.indices(len(self))
                g = torch.Generator().manual_seed(start)
                return torch.randn(stop - start, 384, generator=g)

        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        queries = torch.randn(8, 384, generator=torch.Generator().manual_seed(7))
        scores, indices = exact_search(queries, Synthetic(), 10, corpus_chunk_size=32768)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"growth_mb": (after - before) / 1024, "shape": list(indices.shape),
                          "max_index": int(indices.max())}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["shape"] == [8, 10]
    assert report["growth_mb"] < 400, report  # one chunk is 48 MB; the whole corpus would be 1465 MB


def test_rerank_scores_only_each_querys_candidates():
    corpus = np.eye(3, dtype=np.float32)
    queries = np.array([[1.0, 0.5, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    ranked = rerank(queries, corpus, [[1, 0], [0, 1]])
    np.testing.assert_array_equal(ranked[0][1], [0, 1])
    np.testing.assert_array_equal(ranked[1][1], [0, 1])  # tie at 0: candidate-list order
    assert ranked[1][0].tolist() == [0.0, 0.0]


def test_search_to_run_inserts_documents_in_rank_order():
    run = search_to_run(["q"], ["a", "b", "c"], np.array([[0.9, 0.1]]), np.array([[2, 0]]))
    assert list(run["q"].items()) == [("c", pytest.approx(0.9)), ("a", pytest.approx(0.1))]


# ---- fingerprints and cache ----------------------------------------------------------------------------------------


def test_model_fingerprint_changes_with_weights_and_config_only(hashing_model):
    from _evaluation_fakes import HashingEncoder

    fp = model_fingerprint(hashing_model)
    assert fp == model_fingerprint(HashingEncoder())
    assert fp != model_fingerprint(HashingEncoder(seed=1))  # other weights
    assert fp != model_fingerprint(HashingEncoder(instruction_weight=0.7))  # other config
    with pytest.raises(TypeError, match="neither `config` nor `state_dict"):
        model_fingerprint(object())


def test_corpus_fingerprint_depends_on_ids_texts_and_order():
    fp = corpus_fingerprint(["a", "b"], ["x", "y"])
    assert fp != corpus_fingerprint(["b", "a"], ["y", "x"])
    assert fp != corpus_fingerprint(["a", "b"], ["x", "y "])
    assert corpus_fingerprint(["ab"], ["c"]) != corpus_fingerprint(["a"], ["bc"])  # length-prefixed parts


def _encode_with_cache(model, texts, cache_dir):
    return encode_corpus(
        lambda batch: model.encode_document(batch), texts, model=model, cache_dir=cache_dir, block_size=3
    )


def test_corpus_embeddings_are_cached_and_reused_when_model_and_corpus_are_unchanged(tmp_path, hashing_model):
    texts = ["alpha beta", "gamma", "delta epsilon zeta", "eta", "theta iota"]
    first = _encode_with_cache(hashing_model, texts, tmp_path)
    assert hashing_model.document_calls == 5
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-6)  # always L2-normalised

    second = _encode_with_cache(hashing_model, texts, tmp_path)
    assert hashing_model.document_calls == 5  # no new encode
    assert isinstance(second, CachedEmbeddings) and second.shape == first.shape
    np.testing.assert_array_equal(second.to_numpy(), first)
    np.testing.assert_array_equal(exact_search(first[:2], second, 3)[1], exact_search(first[:2], first, 3)[1])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left

    _encode_with_cache(hashing_model, texts[:-1] + ["changed"], tmp_path)
    assert hashing_model.document_calls == 10  # corpus changed: re-encoded
    hashing_model.scale += 0.1
    _encode_with_cache(hashing_model, texts, tmp_path)
    assert hashing_model.document_calls == 15  # weights changed: re-encoded
    assert len(list(tmp_path.glob("corpus-*.safetensors"))) == 3


def test_unreadable_cache_file_is_ignored_and_rewritten(tmp_path, hashing_model, caplog):
    texts = ["one", "two"]
    _encode_with_cache(hashing_model, texts, tmp_path)
    (path,) = tmp_path.glob("corpus-*.safetensors")
    path.write_bytes(b"not a safetensors file")
    again = _encode_with_cache(hashing_model, texts, tmp_path)
    assert isinstance(again, np.ndarray) and hashing_model.document_calls == 4
    assert "ignoring unreadable embedding cache" in caplog.text
    assert isinstance(_encode_with_cache(hashing_model, texts, tmp_path), CachedEmbeddings)


def test_cache_key_includes_encode_options(tmp_path):
    cache = EmbeddingCache(tmp_path)
    assert cache.key("m", "c", {"prompt": "a"}) != cache.key("m", "c", {"prompt": "b"})
    assert cache.key("m", "c") == cache.key("m", "c", {})
