"""Inputs, tolerances and comparison helpers shared by the op tests."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .oracle import iq_attention_pool_oracle

Pattern = Literal["full", "right", "left", "scattered", "empty_rows"]
PATTERNS: tuple[Pattern, ...] = ("full", "right", "left", "scattered", "empty_rows")

# (B, Lx, Ly, d): single tokens, Lx = 1, Ly = 1, odd sizes, sizes past one 16-wide block
SHAPES: tuple[tuple[int, int, int, int], ...] = (
    (1, 1, 1, 8),
    (3, 1, 6, 16),
    (3, 6, 1, 16),
    (4, 9, 7, 24),
    (3, 17, 33, 40),
)

# Tolerances against the fp64 oracle, elementwise |actual - expected| <= atol + rtol * |expected|, for states of
# unit scale (randn). Low-precision error comes from rounding the GEMM outputs (logits, dS) to the input dtype.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (2e-2, 2e-2),
}
DTYPES: tuple[torch.dtype, ...] = tuple(TOLERANCES)


@dataclass
class Case:
    """One set of op inputs; masks are bool unless made otherwise."""

    x: Tensor  # (B, Lx, d)
    x_mask: Tensor  # (B, Lx)
    y: Tensor  # (By, Ly, d)
    y_mask: Tensor  # (By, Ly)
    y_index: Tensor | None = None  # (B,)
    scale: float | None = None

    @property
    def resolved_scale(self) -> float:
        return 1.0 / math.sqrt(self.x.shape[-1]) if self.scale is None else self.scale


def make_mask(batch: int, length: int, pattern: Pattern, gen: torch.Generator) -> Tensor:
    """(batch, length) bool mask in one of the padding patterns.

    ``right``/``left``: random valid lengths in [1, length] at the start/end (HF right/left padding);
    ``scattered``: each token valid with probability 0.6 (rows may end up empty); ``empty_rows``: right padding
    with lengths in [0, length] and row 0 forced empty.
    """
    if pattern == "full":
        return torch.ones(batch, length, dtype=torch.bool)
    if pattern == "scattered":
        return torch.rand(batch, length, generator=gen) < 0.6
    low = 0 if pattern == "empty_rows" else 1
    lengths = torch.randint(low, length + 1, (batch,), generator=gen)
    if pattern == "empty_rows":
        lengths[0] = 0
    pos = torch.arange(length)
    if pattern == "left":
        return pos[None, :] >= (length - lengths)[:, None]
    return pos[None, :] < lengths[:, None]


def make_case(
    batch: int,
    len_x: int,
    len_y: int,
    dim: int,
    dtype: torch.dtype = torch.float64,
    pattern: Pattern = "right",
    *,
    seed: int = 0,
    batch_y: int | None = None,
    grouped: bool = False,
    magnitude: float = 1.0,
) -> Case:
    """Random states (``magnitude * randn``, also at padded positions) and masks.

    With ``pattern="empty_rows"`` and ``batch >= 3``: row 0 has no valid x token, row 1 no valid y token, row 2
    neither. With ``batch_y``, ``y`` has ``batch_y`` rows and ``y_index`` pairs x rows with them (every y row used
    when batch >= batch_y); ``grouped`` makes it ``[0]*m + [1]*m + ...`` (m = batch / batch_y x rows per y row).
    """
    gen = torch.Generator().manual_seed(seed)
    by = batch if batch_y is None else batch_y
    x = (magnitude * torch.randn(batch, len_x, dim, generator=gen, dtype=torch.float64)).to(dtype)
    y = (magnitude * torch.randn(by, len_y, dim, generator=gen, dtype=torch.float64)).to(dtype)
    x_mask = make_mask(batch, len_x, pattern, gen)
    y_mask = make_mask(by, len_y, pattern, gen)
    if pattern == "empty_rows" and by >= 2:
        y_mask[1] = False
        if batch >= 3:
            x_mask[0] = False
            x_mask[2] = False
            y_mask[2 % by] = False
    y_index = None
    if batch_y is not None and grouped:
        y_index = torch.arange(by).repeat_interleave(batch // by)
    elif batch_y is not None:
        y_index = torch.cat([torch.arange(by), torch.randint(0, by, (max(batch - by, 0),), generator=gen)])
        y_index = y_index[torch.randperm(y_index.numel(), generator=gen)][:batch]
    return Case(x, x_mask, y, y_mask, y_index)


def oracle_forward_and_grads(case: Case, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """fp64 oracle output, attention and gradients of ``<out, grad>`` w.r.t. x and y.

    Returns:
        ``(out (B, d), attn (B, Lx, Ly), x_grad (B, Lx, d), y_grad (By, Ly, d))``, all fp64.
    """
    x = case.x.detach().double().requires_grad_(True)
    y = case.y.detach().double().requires_grad_(True)
    out, attn = iq_attention_pool_oracle(
        x, case.x_mask, y, case.y_mask, case.scale, y_index=case.y_index, return_attention=True
    )
    out.backward(grad.double())
    return out.detach(), attn.detach(), x.grad, y.grad


def assert_close_to_oracle(actual: Tensor, expected: Tensor, dtype: torch.dtype, what: str) -> None:
    """Compare with the fp64 oracle at the tolerance of ``dtype``; never NaN."""
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    atol, rtol = TOLERANCES[dtype]
    torch.testing.assert_close(actual.double(), expected, atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


Layer = Literal["public", "custom_op", "default", "triton", "dispatch"]


def run_layer(layer: Layer, case: Case, grad: Tensor) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """Forward and backward of one layer of the op stack.

    ``public``: :func:`inf_embed.ops.iq_attention_pool` with autograd; ``custom_op``: the registered
    ``torch.ops.inf_embed.iq_attention_pool`` with autograd; ``default``: the PyTorch forward and hand-written
    backward called directly; ``triton``: the Triton launchers called directly; ``dispatch``: the CUDA kernel entries
    of :mod:`inf_embed.ops._dispatch` (Triton when it applies, else the default).

    Returns:
        ``(out (B, d), attn (B, Lx, Ly) or None for "public", x_grad, y_grad)``.
    """
    scale = case.resolved_scale
    x_mask, y_mask = case.x_mask.bool(), case.y_mask.bool()
    if layer in ("public", "custom_op"):
        x = case.x.detach().clone().requires_grad_(True)
        y = case.y.detach().clone().requires_grad_(True)
        attn = None
        if layer == "public":
            from inf_embed.ops import iq_attention_pool

            out = iq_attention_pool(x, case.x_mask, y, case.y_mask, case.scale, y_index=case.y_index)
        else:
            out, attn = torch.ops.inf_embed.iq_attention_pool(x, x_mask, y, y_mask, case.y_index, scale)
        out.backward(grad)
        return out.detach(), attn, x.grad, y.grad
    if layer == "default":
        from inf_embed.ops import _default

        forward, backward = _default.iq_attention_pool_forward, _default.iq_attention_pool_backward
    elif layer == "triton":
        from inf_embed.ops import _triton

        forward, backward = _triton.iq_attention_pool_forward_triton, _triton.iq_attention_pool_backward_triton
    else:
        from inf_embed.ops import _dispatch

        forward, backward = _dispatch.iq_attention_pool_forward_kernel, _dispatch.iq_attention_pool_backward_kernel
    args = (case.x, x_mask, case.y, y_mask, case.y_index, scale)
    out, attn = forward(*args)
    x_grad, y_grad = backward(grad, attn, *args[:5], scale, True, True)
    return out, attn, x_grad, y_grad


def check_layer_against_oracle(layer: Layer, case: Case, dtype: torch.dtype, *, seed: int = 1) -> None:
    """Output, attention (where the layer exposes it) and both gradients against the fp64 oracle."""
    gen = torch.Generator().manual_seed(seed)
    grad = torch.randn(case.x.shape[0], case.x.shape[2], generator=gen, dtype=torch.float64)
    grad = grad.to(device=case.x.device, dtype=dtype)
    out, attn, x_grad, y_grad = run_layer(layer, case, grad)
    ref_out, ref_attn, ref_x_grad, ref_y_grad = oracle_forward_and_grads(case, grad)
    assert out.dtype == dtype and x_grad.dtype == dtype and y_grad.dtype == dtype
    assert_close_to_oracle(out, ref_out, dtype, f"{layer} output")
    if attn is not None:
        assert attn.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        assert_close_to_oracle(attn, ref_attn, dtype, f"{layer} attention")
    assert_close_to_oracle(x_grad, ref_x_grad, dtype, f"{layer} x_states gradient")
    assert_close_to_oracle(y_grad, ref_y_grad, dtype, f"{layer} y_states gradient")
