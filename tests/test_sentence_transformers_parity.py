"""Drop-in proof: on the bundled all-MiniLM-L6-v2 folder, InfEmbed.encode equals SentenceTransformer.encode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

sentence_transformers = pytest.importorskip("sentence_transformers", reason="parity tests need the dev extra")

DOCS = [
    "Neutrophils are a common type of white blood cell.",
    "ZIP code 70123 is located in southeast Louisiana.",
    "A short one.",
    "The quick brown fox jumps over the lazy dog " * 40,  # longer than the 256-token budget
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
]


@pytest.fixture(scope="module")
def pair(minilm_path):
    from inf_embed import InfEmbed

    return InfEmbed.from_pretrained(minilm_path), sentence_transformers.SentenceTransformer(minilm_path, device="cpu")


def _close(ours, theirs):
    ours_np = ours.numpy() if isinstance(ours, torch.Tensor) else np.asarray(ours)
    theirs_np = theirs.numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    assert ours_np.shape == theirs_np.shape and ours_np.dtype == theirs_np.dtype
    if ours_np.dtype.kind == "f":
        np.testing.assert_allclose(ours_np, theirs_np, atol=1e-5, rtol=0)
    else:
        # Quantised buckets may differ by one where a float lands within 1e-6 of a bucket edge.
        assert np.abs(ours_np.astype(np.int32) - theirs_np.astype(np.int32)).max() <= 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"convert_to_tensor": True},
        {"convert_to_numpy": False},
        {"normalize_embeddings": True},
        {"truncate_dim": 128},
        {"truncate_dim": 64, "normalize_embeddings": True},
        {"batch_size": 2},
        {"precision": "int8"},
        {"precision": "uint8"},
        {"precision": "binary"},
        {"precision": "ubinary"},
        {"precision": "int8", "convert_to_tensor": True},
    ],
    ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()) or "default",
)
def test_encode_matches_sentence_transformers(pair, kwargs):
    ours, theirs = pair
    a, b = ours.encode(DOCS, **kwargs), theirs.encode(DOCS, **kwargs)
    assert type(a) is type(b)
    if isinstance(a, list):
        a, b = torch.stack(a), torch.stack(b)
    _close(a, b)


def test_single_string_and_documents_and_queries_match(pair):
    ours, theirs = pair
    _close(ours.encode(DOCS[0]), theirs.encode(DOCS[0]))
    _close(ours.encode_document(DOCS), theirs.encode_document(DOCS))
    _close(ours.encode_query(DOCS), theirs.encode_query(DOCS))


def test_token_embeddings_match(pair):
    ours, theirs = pair
    for a, b in zip(
        ours.encode(DOCS, output_value="token_embeddings"), theirs.encode(DOCS, output_value="token_embeddings")
    ):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_similarity_and_dimensions_match(pair):
    ours, theirs = pair
    emb = theirs.encode(DOCS)
    torch.testing.assert_close(ours.similarity(emb, emb), theirs.similarity(emb, emb), atol=1e-6, rtol=0)
    assert ours.get_sentence_embedding_dimension() == theirs.get_embedding_dimension() == 384
    assert ours.max_seq_length == theirs.max_seq_length == 256
