from __future__ import annotations

import numpy as np
import pytest
import torch

from inf_embed.similarity import similarity, similarity_pairwise


@pytest.mark.parametrize("name", ["cosine", "dot", "euclidean", "manhattan"])
def test_all_pairs_and_pairwise_agree_on_the_diagonal(name):
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    torch.testing.assert_close(torch.diagonal(similarity(a, b, name)), similarity_pairwise(a, b, name))


def test_values_match_the_definitions():
    a, b = np.array([[3.0, 4.0]]), np.array([[0.0, 1.0]])
    assert similarity(a, b, "dot").item() == pytest.approx(4.0)
    assert similarity(a, b, "cosine").item() == pytest.approx(0.8)
    assert similarity(a, b, "euclidean").item() == pytest.approx(-np.sqrt(9 + 9))
    assert similarity(a, b, "manhattan").item() == pytest.approx(-6.0)


def test_mismatched_dimensions_and_unknown_names_raise():
    with pytest.raises(ValueError, match="dimension 3 but embeddings2 has dimension 4"):
        similarity(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="unknown similarity_fn_name 'maxsim'"):
        similarity(torch.randn(2, 3), torch.randn(2, 3), "maxsim")
    with pytest.raises(ValueError, match="2 rows but embeddings2 has 3"):
        similarity_pairwise(torch.randn(2, 3), torch.randn(3, 3))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["cosine", "dot", "euclidean", "manhattan"])
def test_half_precision_embeddings_are_scored_in_float32(name, dtype):
    a, b = torch.randn(3, 8), torch.randn(2, 8)
    scores = similarity(a.to(dtype), b.to(dtype), name)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, similarity(a.to(dtype).float(), b.to(dtype).float(), name))
    assert similarity_pairwise(a[:2].to(dtype), b.to(dtype), name).dtype == torch.float32
