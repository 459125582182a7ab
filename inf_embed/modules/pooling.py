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


@register_pooling("mean")
def mean_pooling(token_embeddings: Tensor, attention_mask: Tensor) -> Tensor:
    """Masked mean over the valid tokens; a row with no valid token gives zeros.

    Args:
        token_embeddings: (B, L, d) float.
        attention_mask: (B, L) int or bool, 1 for real tokens.

    Returns:
        (B, d), same dtype as ``token_embeddings``.
    """
    mask = attention_mask.to(token_embeddings.dtype).unsqueeze(-1)  # (B, L, 1)
    summed = (token_embeddings * mask).sum(dim=1)  # (B, d)
    # The clamp matches sentence-transformers' Pooling and keeps an all-padding row at zero, not NaN.
    counts = mask.sum(dim=1).clamp(min=1e-9)  # (B, 1)
    return summed / counts


@register_pooling("cls")
def cls_pooling(token_embeddings: Tensor, attention_mask: Tensor) -> Tensor:
    """The first token's state (BERT's [CLS]); assumes right padding. Returns (B, d)."""
    return token_embeddings[:, 0]


@register_pooling("last")
def last_token_pooling(token_embeddings: Tensor, attention_mask: Tensor) -> Tensor:
    """The state of the last real token, for left or right padding alike.

    Args:
        token_embeddings: (B, L, d) float.
        attention_mask: (B, L) int or bool.

    Returns:
        (B, d); a row with no valid token gives zeros.
    """
    mask = attention_mask.bool()
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)  # (B, L)
    last = torch.where(mask, positions, -1).amax(dim=1)  # (B,)
    gathered = token_embeddings[torch.arange(mask.shape[0], device=mask.device), last.clamp(min=0)]  # (B, d)
    return torch.where((last >= 0).unsqueeze(-1), gathered, torch.zeros_like(gathered))
