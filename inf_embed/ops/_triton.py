"""Triton kernels for instruction-query attention pooling (CUDA; the interpreter runs them on CPU tensors).

Importing this module imports ``triton`` and fails with ``ImportError`` when it is missing (the optional extra
``pip install "inf-embed[triton]"``); :mod:`._dispatch` imports it lazily and falls back to the PyTorch kernels.

One program per x row ``b``; the whole (BLOCK_X, BLOCK_Y) logit tile lives in registers and ``d`` is looped in
BLOCK_D chunks, so every kernel reads ``x[b]`` and ``y[k_b]`` once (the forward reads ``y[k_b]`` a second time for
``w @ y``, from L2). The semantics are those of :mod:`._default` (see its docstring for the formulas); the forward
writes the fp32 attention ``attn`` that the backward reuses. ``y_index`` is read by the kernels directly, so ``y``
is never gathered. All tensors are addressed through strides.

Order, as in Liger-Kernel: kernels, then launchers. No autograd here; :mod:`._custom_op` owns it.
"""

from __future__ import annotations

import logging

import torch
import triton
import triton.language as tl
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = [
    "INTERPRETED",
    "block_config",
    "iq_attention_pool_backward_triton",
    "iq_attention_pool_forward_triton",
]

_MIN_BLOCK = 16  # tl.dot needs M, N, K >= 16


@triton.jit
def _iq_attention_pool_fwd_kernel(
    x_ptr, xm_ptr, y_ptr, ym_ptr, yidx_ptr, out_ptr, attn_ptr,
    len_x, len_y, dim, scale,
    sx_b, sx_l, sx_d, sxm_b, sxm_l,
    sy_b, sy_l, sy_d, sym_b, sym_l,
    so_b, so_d, sa_b, sa_x, sa_y,
    HAS_INDEX: tl.constexpr, BLOCK_X: tl.constexpr, BLOCK_Y: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_UPCAST: tl.constexpr, INPUT_PRECISION: tl.constexpr,
) -> None:  # fmt: skip
    """out[b] = w[b] @ y[k_b] and attn[b] = masked softmax_j(scale x[b] y[k_b]^T); see :mod:`._default`.

    Shapes: x (B, Lx, d), xm (B, Lx) uint8, y (By, Ly, d), ym (By, Ly) uint8, yidx (B,) int64 (if HAS_INDEX),
    out (B, d) input dtype, attn (B, Lx, Ly) fp32. Grid: (B,).
    """
    b = tl.program_id(0).to(tl.int64)
    if HAS_INDEX:
        k = tl.load(yidx_ptr + b).to(tl.int64)
    else:
        k = b
    offs_x = tl.arange(0, BLOCK_X)
    offs_y = tl.arange(0, BLOCK_Y)
    offs_d = tl.arange(0, BLOCK_D)
    in_x = offs_x < len_x
    in_y = offs_y < len_y
    mx = (tl.load(xm_ptr + b * sxm_b + offs_x * sxm_l, mask=in_x, other=0) != 0) & in_x
    my = (tl.load(ym_ptr + k * sym_b + offs_y * sym_l, mask=in_y, other=0) != 0) & in_y
    x_row = x_ptr + b * sx_b
    y_row = y_ptr + k * sy_b

    # S = x y^T over d chunks: (BLOCK_X, BLOCK_Y), fp32
    s = tl.zeros((BLOCK_X, BLOCK_Y), dtype=tl.float32)
    for d0 in range(0, dim, BLOCK_D):
        in_d = (d0 + offs_d) < dim
        xc = tl.load(
            x_row + offs_x[:, None] * sx_l + (d0 + offs_d)[None, :] * sx_d,
            mask=in_x[:, None] & in_d[None, :],
            other=0.0,
        )  # (BLOCK_X, BLOCK_D)
        yc = tl.load(
            y_row + offs_y[:, None] * sy_l + (d0 + offs_d)[None, :] * sy_d,
            mask=in_y[:, None] & in_d[None, :],
            other=0.0,
        )  # (BLOCK_Y, BLOCK_D)
        if DOT_UPCAST:  # the interpreter's bf16 tl.dot is wrong (triton-lang/triton#11584)
            xc = xc.to(tl.float32)
            yc = yc.to(tl.float32)
        s += tl.dot(xc, tl.trans(yc), input_precision=INPUT_PRECISION)

    # masked softmax over y; rows with no valid y token give attn = 0
    s = tl.where(my[None, :], s * scale, -3.4028234663852886e38)
    m = tl.max(s, axis=1)  # (BLOCK_X,)
    p = tl.where(my[None, :], tl.exp(s - m[:, None]), 0.0)
    denom = tl.sum(p, axis=1)
    attn = p / tl.where(denom > 0.0, denom, 1.0)[:, None]  # (BLOCK_X, BLOCK_Y)
    attn = tl.where(mx[:, None] & my[None, :], attn, 0.0)  # padded x rows too, even if their logits overflowed
    tl.store(
        attn_ptr + b * sa_b + offs_x[:, None] * sa_x + offs_y[None, :] * sa_y, attn, mask=in_x[:, None] & in_y[None, :]
    )

    # pooling weights w (BLOCK_Y,): x-mean of attn, or the y-mean when no x token is valid
    n_x = tl.sum(mx.to(tl.float32), axis=0)
    n_y = tl.sum(my.to(tl.float32), axis=0)
    c = mx.to(tl.float32) / tl.maximum(n_x, 1.0)
    w_attn = tl.sum(c[:, None] * attn, axis=0)
    w_mean = my.to(tl.float32) / tl.maximum(n_y, 1.0)
    w = tl.where(n_x > 0.0, w_attn, w_mean)

    # out = w @ y over d chunks
    for d0 in range(0, dim, BLOCK_D):
        in_d = (d0 + offs_d) < dim
        yc = tl.load(
            y_row + offs_y[:, None] * sy_l + (d0 + offs_d)[None, :] * sy_d,
            mask=in_y[:, None] & in_d[None, :],
            other=0.0,
        ).to(tl.float32)
        o = tl.sum(w[:, None] * yc, axis=0)  # (BLOCK_D,)
        tl.store(out_ptr + b * so_b + (d0 + offs_d) * so_d, o.to(out_ptr.dtype.element_ty), mask=in_d)


@triton.jit
def _iq_attention_pool_bwd_kernel(
    g_ptr, attn_ptr, x_ptr, xm_ptr, y_ptr, ym_ptr, yidx_ptr, dx_ptr, dy_ptr,
    len_x, len_y, dim, scale,
    sg_b, sg_d, sa_b, sa_x, sa_y,
    sx_b, sx_l, sx_d, sxm_b, sxm_l,
    sy_b, sy_l, sy_d, sym_b, sym_l,
    sdx_b, sdx_l, sdx_d, sdy_b, sdy_l, sdy_d,
    HAS_INDEX: tl.constexpr, NEED_DX: tl.constexpr, NEED_DY: tl.constexpr,
    BLOCK_X: tl.constexpr, BLOCK_Y: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_UPCAST: tl.constexpr, INPUT_PRECISION: tl.constexpr,
) -> None:  # fmt: skip
    """Backward of the forward kernel from the saved attn; see :mod:`._default` for the formulas.

    Shapes: g (B, d), attn (B, Lx, Ly) fp32, dx (B, Lx, d), dy (B, Ly, d): the gradient of the paired y row
    ``y[k_b]`` for each b (the launcher sums rows sharing a y row when HAS_INDEX). Grid: (B,).
    """
    b = tl.program_id(0).to(tl.int64)
    if HAS_INDEX:
        k = tl.load(yidx_ptr + b).to(tl.int64)
    else:
        k = b
    offs_x = tl.arange(0, BLOCK_X)
    offs_y = tl.arange(0, BLOCK_Y)
    offs_d = tl.arange(0, BLOCK_D)
    in_x = offs_x < len_x
    in_y = offs_y < len_y
    mx = (tl.load(xm_ptr + b * sxm_b + offs_x * sxm_l, mask=in_x, other=0) != 0) & in_x
    my = (tl.load(ym_ptr + k * sym_b + offs_y * sym_l, mask=in_y, other=0) != 0) & in_y
    x_row = x_ptr + b * sx_b
    y_row = y_ptr + k * sy_b

    # dw = y g: (BLOCK_Y,)
    dw = tl.zeros((BLOCK_Y,), dtype=tl.float32)
    for d0 in range(0, dim, BLOCK_D):
        in_d = (d0 + offs_d) < dim
        yc = tl.load(
            y_row + offs_y[:, None] * sy_l + (d0 + offs_d)[None, :] * sy_d,
            mask=in_y[:, None] & in_d[None, :],
            other=0.0,
        ).to(tl.float32)
        gc = tl.load(g_ptr + b * sg_b + (d0 + offs_d) * sg_d, mask=in_d, other=0.0).to(tl.float32)
        dw += tl.sum(yc * gc[None, :], axis=1)
    # padded y tokens have attn == 0, but their dw may overflow and 0 * inf is NaN: zero it
    dw = tl.where(my, dw, 0.0)

    attn = tl.load(
        attn_ptr + b * sa_b + offs_x[:, None] * sa_x + offs_y[None, :] * sa_y,
        mask=in_x[:, None] & in_y[None, :],
        other=0.0,
    )  # (BLOCK_X, BLOCK_Y) fp32
    n_x = tl.sum(mx.to(tl.float32), axis=0)
    n_y = tl.sum(my.to(tl.float32), axis=0)
    c = mx.to(tl.float32) / tl.maximum(n_x, 1.0)
    w = tl.where(n_x > 0.0, tl.sum(c[:, None] * attn, axis=0), my.to(tl.float32) / tl.maximum(n_y, 1.0))
    ds = c[:, None] * attn * (dw[None, :] - tl.sum(attn * dw[None, :], axis=1)[:, None])  # (BLOCK_X, BLOCK_Y)
    if DOT_UPCAST:
        ds_op = ds
    else:
        ds_op = ds.to(x_ptr.dtype.element_ty)

    for d0 in range(0, dim, BLOCK_D):
        in_d = (d0 + offs_d) < dim
        if NEED_DX:
            yc = tl.load(
                y_row + offs_y[:, None] * sy_l + (d0 + offs_d)[None, :] * sy_d,
                mask=in_y[:, None] & in_d[None, :],
                other=0.0,
            )  # (BLOCK_Y, BLOCK_D)
            if DOT_UPCAST:
                yc = yc.to(tl.float32)
            dxc = tl.dot(ds_op, yc, input_precision=INPUT_PRECISION) * scale  # (BLOCK_X, BLOCK_D)
            tl.store(
                dx_ptr + b * sdx_b + offs_x[:, None] * sdx_l + (d0 + offs_d)[None, :] * sdx_d,
                dxc.to(dx_ptr.dtype.element_ty),
                mask=in_x[:, None] & in_d[None, :],
            )
        if NEED_DY:
            xc = tl.load(
                x_row + offs_x[:, None] * sx_l + (d0 + offs_d)[None, :] * sx_d,
                mask=in_x[:, None] & in_d[None, :],
                other=0.0,
            )  # (BLOCK_X, BLOCK_D)
            if DOT_UPCAST:
                xc = xc.to(tl.float32)
            gc = tl.load(g_ptr + b * sg_b + (d0 + offs_d) * sg_d, mask=in_d, other=0.0).to(tl.float32)
            dyc = tl.dot(tl.trans(ds_op), xc, input_precision=INPUT_PRECISION) * scale  # (BLOCK_Y, BLOCK_D)
            dyc += w[:, None] * gc[None, :]
            tl.store(
                dy_ptr + b * sdy_b + offs_y[:, None] * sdy_l + (d0 + offs_d)[None, :] * sdy_d,
                dyc.to(dy_ptr.dtype.element_ty),
                mask=in_y[:, None] & in_d[None, :],
            )


INTERPRETED: bool = not isinstance(_iq_attention_pool_fwd_kernel, triton.runtime.JITFunction)
"""True when the kernels were created under ``TRITON_INTERPRET=1`` (they then run on CPU tensors)."""


def block_config(len_x: int, len_y: int) -> tuple[int, int, int, int]:
    """Tile sizes for a shape; callers check the limits of :mod:`._dispatch` (Lx and tile size) first.

    Args:
        len_x: Lx.
        len_y: Ly.

    Returns:
        ``(BLOCK_X, BLOCK_Y, BLOCK_D, num_warps)``: powers of two, each block at least 16 (``tl.dot``).
    """
    block_x = max(_MIN_BLOCK, triton.next_power_of_2(len_x))
    block_y = max(_MIN_BLOCK, triton.next_power_of_2(len_y))
    tile = block_x * block_y
    block_d = 64 if tile <= 4096 else 32
    num_warps = 4 if tile <= 4096 else 8
    return block_x, block_y, block_d, num_warps


def _input_precision(dtype: torch.dtype) -> str:
    # fp32 is exact ("ieee") unless the user opted into TF32 for fp32 matmuls
    if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest" and not INTERPRETED:
        return "tf32"
    return "ieee"


def _u8(mask: Tensor) -> Tensor:
    return mask.view(torch.uint8) if mask.dtype == torch.bool else mask.to(torch.uint8)


def _last_dim_contiguous(t: Tensor) -> Tensor:
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


def iq_attention_pool_forward_triton(
    x_states: Tensor,
    x_mask: Tensor,
    y_states: Tensor,
    y_mask: Tensor,
    y_index: Tensor | None,
    scale: float,
) -> tuple[Tensor, Tensor]:
    """Triton forward with the contract of :func:`._default.iq_attention_pool_forward`.

    Args:
        x_states: (B, Lx, d) fp16, bf16 or fp32, Lx <= MAX_LEN_X.
        x_mask: (B, Lx) bool.
        y_states: (By, Ly, d) same dtype.
        y_mask: (By, Ly) bool.
        y_index: (B,) int64 or None.
        scale: logit scale.

    Returns:
        ``(out, attn)``: (B, d) input dtype and (B, Lx, Ly) fp32.
    """
    x = _last_dim_contiguous(x_states)
    y = _last_dim_contiguous(y_states)
    xm, ym = _u8(x_mask), _u8(y_mask)
    batch, len_x, dim = x.shape
    len_y = y.shape[1]
    out = torch.empty((batch, dim), dtype=x.dtype, device=x.device)
    attn = torch.empty((batch, len_x, len_y), dtype=torch.float32, device=x.device)
    if batch == 0:
        return out, attn
    block_x, block_y, block_d, num_warps = block_config(len_x, len_y)
    idx = y_index if y_index is not None else xm  # placeholder pointer, never read
    _iq_attention_pool_fwd_kernel[(batch,)](
        x, xm, y, ym, idx, out, attn,
        len_x, len_y, dim, float(scale),
        x.stride(0), x.stride(1), x.stride(2), xm.stride(0), xm.stride(1),
        y.stride(0), y.stride(1), y.stride(2), ym.stride(0), ym.stride(1),
        out.stride(0), out.stride(1), attn.stride(0), attn.stride(1), attn.stride(2),
        HAS_INDEX=y_index is not None, BLOCK_X=block_x, BLOCK_Y=block_y, BLOCK_D=block_d,
        DOT_UPCAST=INTERPRETED and x.dtype == torch.bfloat16, INPUT_PRECISION=_input_precision(x.dtype),
        num_warps=num_warps,
    )  # fmt: skip
    return out, attn


def iq_attention_pool_backward_triton(
    grad: Tensor,
    attn: Tensor,
    x_states: Tensor,
    x_mask: Tensor,
    y_states: Tensor,
    y_mask: Tensor,
    y_index: Tensor | None,
    scale: float,
    need_x_grad: bool,
    need_y_grad: bool,
) -> tuple[Tensor, Tensor]:
    """Triton backward with the contract of :func:`._default.iq_attention_pool_backward`.

    With ``y_index``, the per-row y gradients (B, Ly, d) are summed into (By, Ly, d) with ``index_add_`` in fp32.

    Returns:
        ``(x_grad, y_grad)``: (B, Lx, d) and (By, Ly, d) in the input dtype, or empty (0,) when not needed.
    """
    x = _last_dim_contiguous(x_states)
    y = _last_dim_contiguous(y_states)
    g = grad.to(x.dtype)
    attn = attn.to(torch.float32)
    xm, ym = _u8(x_mask), _u8(y_mask)
    batch, len_x, dim = x.shape
    len_y = y.shape[1]
    dx = torch.empty(x.shape if need_x_grad else (0,), dtype=x.dtype, device=x.device)
    dy_rows_dtype = torch.float32 if y_index is not None else y.dtype
    dy_rows = torch.empty((batch, len_y, dim) if need_y_grad else (0,), dtype=dy_rows_dtype, device=x.device)
    if batch > 0 and (need_x_grad or need_y_grad):
        block_x, block_y, block_d, num_warps = block_config(len_x, len_y)
        idx = y_index if y_index is not None else xm  # placeholder pointer, never read
        dx_s = dx.stride() if need_x_grad else (0, 0, 0)
        dy_s = dy_rows.stride() if need_y_grad else (0, 0, 0)
        _iq_attention_pool_bwd_kernel[(batch,)](
            g, attn, x, xm, y, ym, idx, dx, dy_rows,
            len_x, len_y, dim, float(scale),
            g.stride(0), g.stride(1), attn.stride(0), attn.stride(1), attn.stride(2),
            x.stride(0), x.stride(1), x.stride(2), xm.stride(0), xm.stride(1),
            y.stride(0), y.stride(1), y.stride(2), ym.stride(0), ym.stride(1),
            dx_s[0], dx_s[1], dx_s[2], dy_s[0], dy_s[1], dy_s[2],
            HAS_INDEX=y_index is not None, NEED_DX=need_x_grad, NEED_DY=need_y_grad,
            BLOCK_X=block_x, BLOCK_Y=block_y, BLOCK_D=block_d,
            DOT_UPCAST=INTERPRETED and x.dtype == torch.bfloat16, INPUT_PRECISION=_input_precision(x.dtype),
            num_warps=num_warps,
        )  # fmt: skip
    if not need_y_grad or y_index is None:
        return dx, dy_rows
    dy = torch.zeros(y_states.shape, dtype=torch.float32, device=x.device).index_add_(0, y_index, dy_rows)
    return dx, dy.to(y_states.dtype)
