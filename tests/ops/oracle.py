"""Test oracles for instruction-query attention pooling. The package never imports this module.

:func:`iq_attention_pool_oracle` is the naive form of the paper (``AttentionModel._compute_scores``, with the
masking fixed): it materialises the attention ``A`` (B, Lx, Ly) and the attended rows ``E = A y`` (B, Lx, d), then
mean-pools ``E`` over the valid x tokens. :func:`iq_attention_pool_per_row` is the definition written per batch row
on the valid tokens only, with no masking tricks, used to check the oracle itself.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["iq_attention_pool_oracle", "iq_attention_pool_per_row"]


def _prepare(
    x_states: Tensor,
    x_mask: Tensor,
    y_states: Tensor,
    y_mask: Tensor,
    scale: float | None,
    y_index: Tensor | None,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor, Tensor, float]:
    x = x_states.to(dtype)
    y = y_states.to(dtype)
    my = y_mask.bool()
    if y_index is not None:
        y, my = y[y_index], my[y_index]
    scale = 1.0 / math.sqrt(x.shape[-1]) if scale is None else scale
    return x, x_mask.bool(), y, my, scale


def iq_attention_pool_oracle(
    x_states: Tensor,
    x_mask: Tensor,
    y_states: Tensor,
    y_mask: Tensor,
    scale: float | None = None,
    *,
    y_index: Tensor | None = None,
    dtype: torch.dtype = torch.float64,
    return_attention: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Naive instruction-query attention pooling, computed in ``dtype`` (fp64 by default).

    Args:
        x_states: (B, Lx, d).
        x_mask: (B, Lx) bool or int.
        y_states: (By, Ly, d).
        y_mask: (By, Ly) bool or int.
        scale: logit scale, default 1/sqrt(d).
        y_index: (B,) int64 or None.
        dtype: computation dtype (fp64 for tests; the input dtype for benchmarks).
        return_attention: also return ``A``.

    Returns:
        ``out`` (B, d) in ``dtype``; with ``return_attention``, also ``A`` (B, Lx, Ly), zero at padded x rows and
        padded y tokens. Differentiable (autograd through the naive form).
    """
    x, mx, y, my, scale = _prepare(x_states, x_mask, y_states, y_mask, scale, y_index, dtype)
    has_y = my.any(dim=1)  # (B,)
    s = scale * torch.einsum("bid,bjd->bij", x, y)  # (B, Lx, Ly)
    s = s.masked_fill(~my[:, None, :], float("-inf"))
    s = torch.where(has_y[:, None, None], s, torch.zeros_like(s))  # no -inf-only rows: no NaN
    a = torch.softmax(s, dim=-1)
    a = a * (mx[:, :, None] & my[:, None, :] & has_y[:, None, None]).to(dtype)  # (B, Lx, Ly)
    e = torch.einsum("bij,bjd->bid", a, y)  # (B, Lx, d): the attended rows
    mxf = mx.to(dtype)[:, :, None]  # (B, Lx, 1)
    n_x = mxf.sum(dim=1)  # (B, 1)
    pooled = (e * mxf).sum(dim=1) / n_x.clamp_min(1.0)  # (B, d)
    myf = my.to(dtype)[:, :, None]  # (B, Ly, 1)
    y_mean = (y * myf).sum(dim=1) / myf.sum(dim=1).clamp_min(1.0)  # (B, d)
    out = torch.where(n_x > 0, pooled, y_mean)
    return (out, a) if return_attention else out


def iq_attention_pool_per_row(
    x_states: Tensor,
    x_mask: Tensor,
    y_states: Tensor,
    y_mask: Tensor,
    scale: float | None = None,
    *,
    y_index: Tensor | None = None,
) -> Tensor:
    """The definition, one batch row at a time on its valid tokens only (fp64). Slow; for small checks.

    Returns:
        (B, d) float64.
    """
    x, mx, y, my, scale = _prepare(x_states, x_mask, y_states, y_mask, scale, y_index, torch.float64)
    rows = []
    for b in range(x.shape[0]):
        xb, yb = x[b][mx[b]], y[b][my[b]]  # (nx, d), (ny, d)
        if yb.shape[0] == 0:
            rows.append(x.new_zeros(x.shape[-1]))
        elif xb.shape[0] == 0:
            rows.append(yb.mean(dim=0))
        else:
            a = torch.softmax(scale * xb @ yb.T, dim=-1)  # (nx, ny)
            rows.append((a @ yb).mean(dim=0))
    return torch.stack(rows)
