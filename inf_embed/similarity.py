"""Similarity functions with sentence-transformers' names and conventions (larger is more similar)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray | list


def _as_2d_tensor(embeddings: ArrayLike, name: str) -> Tensor:
    if isinstance(embeddings, list) and embeddings and isinstance(embeddings[0], Tensor):
        tensor = torch.stack(embeddings)
    else:
        tensor = torch.as_tensor(np.asarray(embeddings) if isinstance(embeddings, list) else embeddings)
    if tensor.ndim == 1:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D embeddings, got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point() or tensor.dtype in (torch.float16, torch.bfloat16):
        # Quantised embeddings: score them as floats rather than overflowing int8 products. Half precision: scores
        # in float32 as sentence-transformers gives them (and cdist has no CPU kernel for half).
        tensor = tensor.float()
    return tensor


def _check_dims(a: Tensor, b: Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embeddings1 has dimension {a.shape[1]} but embeddings2 has dimension {b.shape[1]}")


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """(n1, d), (n2, d) -> (n1, n2) cosine similarities."""
    return torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T


def dot(a: Tensor, b: Tensor) -> Tensor:
    """(n1, d), (n2, d) -> (n1, n2) inner products."""
    return a @ b.T


def euclidean(a: Tensor, b: Tensor) -> Tensor:
    """(n1, d), (n2, d) -> (n1, n2) negative Euclidean distances."""
    return -torch.cdist(a, b, p=2.0)


def manhattan(a: Tensor, b: Tensor) -> Tensor:
    """(n1, d), (n2, d) -> (n1, n2) negative Manhattan distances."""
    return -torch.cdist(a, b, p=1.0)


def _pairwise_cosine(a: Tensor, b: Tensor) -> Tensor:
    return torch.nn.functional.cosine_similarity(a, b, dim=1)


def _pairwise_dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(dim=1)


def _pairwise_euclidean(a: Tensor, b: Tensor) -> Tensor:
    return -(a - b).norm(p=2, dim=1)


def _pairwise_manhattan(a: Tensor, b: Tensor) -> Tensor:
    return -(a - b).abs().sum(dim=1)


SIMILARITY_FUNCTIONS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "cosine": cosine,
    "dot": dot,
    "euclidean": euclidean,
    "manhattan": manhattan,
}
PAIRWISE_FUNCTIONS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "cosine": _pairwise_cosine,
    "dot": _pairwise_dot,
    "euclidean": _pairwise_euclidean,
    "manhattan": _pairwise_manhattan,
}


def similarity(embeddings1: ArrayLike, embeddings2: ArrayLike, fn_name: str = "cosine") -> Tensor:
    """All-pairs similarity: (n1, d) and (n2, d) -> (n1, n2) float tensor (1-D inputs count as one row)."""
    fn = _lookup(SIMILARITY_FUNCTIONS, fn_name)
    a, b = _as_2d_tensor(embeddings1, "embeddings1"), _as_2d_tensor(embeddings2, "embeddings2")
    _check_dims(a, b)
    return fn(a, b.to(a.device, a.dtype))


def similarity_pairwise(embeddings1: ArrayLike, embeddings2: ArrayLike, fn_name: str = "cosine") -> Tensor:
    """Row-wise similarity: (n, d) and (n, d) -> (n,) float tensor."""
    fn = _lookup(PAIRWISE_FUNCTIONS, fn_name)
    a, b = _as_2d_tensor(embeddings1, "embeddings1"), _as_2d_tensor(embeddings2, "embeddings2")
    _check_dims(a, b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"embeddings1 has {a.shape[0]} rows but embeddings2 has {b.shape[0]}")
    return fn(a, b.to(a.device, a.dtype))


def _lookup(table: dict[str, Callable[[Tensor, Tensor], Tensor]], name: str) -> Callable[[Tensor, Tensor], Tensor]:
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown similarity_fn_name {name!r}; expected one of {sorted(table)}") from None
