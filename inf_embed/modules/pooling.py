"""Token pooling: (B, L, d) token states and a (B, L) mask -> (B, d) vectors, registered by name."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

PoolingFn = Callable[[Tensor, Tensor], Tensor]
_POOLINGS: dict[str, PoolingFn] = {}


def register_pooling(name: str) -> Callable[[PoolingFn], PoolingFn]:
    """Decorator registering a pooling function under ``name``."""

    def decorator(fn: PoolingFn) -> PoolingFn:
        if name in _POOLINGS:
            raise ValueError(f"pooling {name!r} is already registered")
        _POOLINGS[name] = fn
        return fn

    return decorator


def list_poolings() -> list[str]:
    """Names of the registered pooling modes."""
    return sorted(_POOLINGS)


def get_pooling(name: str) -> PoolingFn:
    """Return the pooling function registered as ``name``; unknown names list the valid ones."""
    try:
        return _POOLINGS[name]
    except KeyError:
        raise ValueError(f"unknown pooling {name!r}; expected one of {list_poolings()}") from None


def masked_weighted_mean(token_embeddings: Tensor, weights: Tensor) -> Tensor:
    """``sum_t w_t h_t / sum_t w_t`` per row, accumulated in fp32 (fp64 for fp64 states); zeros where the weights sum
    to 0.

    Shared by mean pooling and the ``conditioned`` fusion, so that their results agree bit for bit.

    Args:
        token_embeddings: (B, L, d) float.
        weights: (B, L) float, nonnegative (the mask, or the mask re-weighted per token).

    Returns:
        (B, d), same dtype as ``token_embeddings``.
    """
    # fp16 cannot hold the sum of many token states (max 65504) nor the 1e-9 clamp (it rounds to 0, so an
    # all-padding row gave 0 / 0 = NaN): accumulate in fp32, round once at the end
    acc = torch.float64 if token_embeddings.dtype == torch.float64 else torch.float32
    w = weights.to(token_embeddings.dtype).unsqueeze(-1)  # (B, L, 1)
    summed = (token_embeddings * w).sum(dim=1, dtype=acc)  # (B, d)
    # The clamp matches sentence-transformers' Pooling and keeps an all-padding row at zero, not NaN.
    counts = w.sum(dim=1, dtype=acc).clamp(min=1e-9)  # (B, 1)
    return (summed / counts).to(token_embeddings.dtype)


@register_pooling("mean")
def mean_pooling(token_embeddings: Tensor, attention_mask: Tensor) -> Tensor:
    """Masked mean over the valid tokens; a row with no valid token gives zeros.

    Args:
        token_embeddings: (B, L, d) float.
        attention_mask: (B, L) int or bool, 1 for real tokens.

    Returns:
        (B, d), same dtype as ``token_embeddings`` (accumulated in fp32 for fp16/bf16).
    """
    return masked_weighted_mean(token_embeddings, attention_mask)


def _real_token_position(attention_mask: Tensor, last: bool) -> Tensor:
    """(B, L) mask -> (B,) position of each row's first (or last) real token, -1 for a row without one."""
    mask = attention_mask.bool()
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)  # (B, L)
    # -1 marks padding, so the max over a row is its last real token; for the first, count from the right
    marked = torch.where(mask, positions if last else mask.shape[1] - 1 - positions, -1)
    best = marked.amax(dim=1) if mask.shape[1] else marked.new_full((mask.shape[0],), -1)  # amax needs a column
    return best if last else torch.where(best >= 0, mask.shape[1] - 1 - best, -1)


def _token_at(token_embeddings: Tensor, position: Tensor) -> Tensor:
    """(B, L, d) states, (B,) positions with -1 for "none" -> (B, d) states at those positions, zeros for -1."""
    if token_embeddings.shape[1] == 0:  # no token at all: nothing to gather from
        return token_embeddings.new_zeros(token_embeddings.shape[0], token_embeddings.shape[2])
    rows = torch.arange(token_embeddings.shape[0], device=token_embeddings.device)
    gathered = token_embeddings[rows, position.clamp(min=0)]  # (B, d)
    return torch.where((position >= 0).unsqueeze(-1), gathered, torch.zeros_like(gathered))


@register_pooling("cls")
def cls_pooling(token_embeddings: Tensor, attention_mask: Tensor) -> Tensor:
    """The state of the first real token (BERT's [CLS]), for left or right padding alike.

    With right padding this is ``token_embeddings[:, 0]``; with left padding the first columns are padding, so the
    first position whose mask is set is taken instead.

    Args:
        token_embeddings: (B, L, d) float.
        attention_mask: (B, L) int or bool.

    Returns:
        (B, d); a row with no valid token gives zeros.
    """
    return _token_at(token_embeddings, _real_token_position(attention_mask, last=False))


@register_pooling("last")
def last_token_pooling(token_embeddings: Tensor, attention_mask: Tensor) -> Tensor:
    """The state of the last real token, for left or right padding alike.

    Args:
        token_embeddings: (B, L, d) float.
        attention_mask: (B, L) int or bool.

    Returns:
        (B, d); a row with no valid token gives zeros.
    """
    return _token_at(token_embeddings, _real_token_position(attention_mask, last=True))
