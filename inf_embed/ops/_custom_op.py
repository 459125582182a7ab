"""``torch.library`` registration of instruction-query attention pooling.

Two ops, whose schemas are the contract (change them only with a version note):

* ``inf_embed::iq_attention_pool(Tensor x_states, Tensor x_mask, Tensor y_states, Tensor y_mask,
  Tensor? y_index, float scale) -> (Tensor out, Tensor attn)``: ``out`` (B, d) in the input dtype and ``attn``
  (B, Lx, Ly), the softmax over valid y tokens in fp32 (fp64 for fp64 inputs), zero at padded x rows and padded
  y tokens (so all zero for a row without a valid y token). ``attn``
  is returned so that backward reuses it instead of recomputing ``x @ y^T`` (flash-attn's saved ``softmax_lse``
  pattern); it is not differentiable.
* ``inf_embed::iq_attention_pool_backward(Tensor grad, Tensor attn, Tensor x_states, Tensor x_mask,
  Tensor y_states, Tensor y_mask, Tensor? y_index, float scale, bool need_x_grad, bool need_y_grad)
  -> (Tensor x_grad, Tensor y_grad)``: a gradient that is not needed comes back as an empty (0,) tensor.

Masks are bool, ``y_index`` is int64, ``x_states`` and ``y_states`` share a dtype; the public wrapper
(:mod:`inf_embed.ops.iq_attention`) converts and checks arguments. The default kernels (:mod:`._default`) serve
every device; :mod:`._dispatch` adds a CUDA kernel when Triton is available. Bodies run with autocast disabled, so
eager, ``aot_eager`` and Inductor agree on dtypes. There is no double backward: the backward op has no autograd
formula, so ``create_graph=True`` through this op raises.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from inf_embed.ops import _default

logger = logging.getLogger(__name__)

__all__ = ["iq_attention_pool_backward_op", "iq_attention_pool_op"]


def _check_forward_args(
    x_states: Tensor, x_mask: Tensor, y_states: Tensor, y_mask: Tensor, y_index: Tensor | None
) -> None:
    """Shape and dtype checks shared by the fake and real kernels (``torch._check``: traceable)."""
    torch._check(x_states.dim() == 3 and y_states.dim() == 3, lambda: "x_states and y_states must be 3-D")
    batch, len_x, dim = x_states.shape
    batch_y, len_y, dim_y = y_states.shape
    torch._check(dim == dim_y, lambda: f"x_states has d={dim}, y_states has d={dim_y}")
    torch._check(x_states.dtype == y_states.dtype, lambda: "x_states and y_states must share a dtype")
    torch._check(x_mask.dtype == torch.bool and y_mask.dtype == torch.bool, lambda: "masks must be bool")
    torch._check(x_mask.shape == (batch, len_x), lambda: f"x_mask must be {(batch, len_x)}, got {x_mask.shape}")
    torch._check(y_mask.shape == (batch_y, len_y), lambda: f"y_mask must be {(batch_y, len_y)}, got {y_mask.shape}")
    if y_index is None:
        torch._check(batch_y == batch, lambda: f"y_states has {batch_y} rows, x_states has {batch}")
    else:
        torch._check(y_index.dtype == torch.int64, lambda: "y_index must be int64")
        torch._check(y_index.shape == (batch,), lambda: f"y_index must be {(batch,)}, got {y_index.shape}")


@torch.library.custom_op("inf_embed::iq_attention_pool", mutates_args=())
def iq_attention_pool_op(
    x_states: Tensor,
    x_mask: Tensor,
    y_states: Tensor,
    y_mask: Tensor,
    y_index: Tensor | None,
    scale: float,
) -> tuple[Tensor, Tensor]:
    """Forward op; see the module docstring for the schema and :func:`._default.iq_attention_pool_forward`."""
    _check_forward_args(x_states, x_mask, y_states, y_mask, y_index)
    return _default.iq_attention_pool_forward(x_states, x_mask, y_states, y_mask, y_index, scale)


@iq_attention_pool_op.register_fake
def _iq_attention_pool_fake(
    x_states: Tensor,
    x_mask: Tensor,
    y_states: Tensor,
    y_mask: Tensor,
    y_index: Tensor | None,
    scale: float,
) -> tuple[Tensor, Tensor]:
    _check_forward_args(x_states, x_mask, y_states, y_mask, y_index)
    batch, len_x, dim = x_states.shape
    len_y = y_states.shape[1]
    out = x_states.new_empty((batch, dim))
    attn = x_states.new_empty((batch, len_x, len_y), dtype=_default.acc_dtype(x_states.dtype))
    return out, attn


@torch.library.custom_op("inf_embed::iq_attention_pool_backward", mutates_args=())
def iq_attention_pool_backward_op(
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
    """Backward op; see :func:`._default.iq_attention_pool_backward`."""
    return _default.iq_attention_pool_backward(
        grad, attn, x_states, x_mask, y_states, y_mask, y_index, scale, need_x_grad, need_y_grad
    )


@iq_attention_pool_backward_op.register_fake
def _iq_attention_pool_backward_fake(
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
    x_grad = x_states.new_empty(x_states.shape if need_x_grad else (0,))
    y_grad = y_states.new_empty(y_states.shape if need_y_grad else (0,))
    return x_grad, y_grad


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
    x_states, x_mask, y_states, y_mask, y_index, scale = inputs
    _, attn = output
    ctx.mark_non_differentiable(attn)
    ctx.save_for_backward(attn, x_states, x_mask, y_states, y_mask, y_index)
    ctx.scale = scale


def _backward(ctx: Any, grad: Tensor, _grad_attn: Tensor | None) -> tuple[Tensor | None, ...]:
    attn, x_states, x_mask, y_states, y_mask, y_index = ctx.saved_tensors
    need_x_grad, need_y_grad = ctx.needs_input_grad[0], ctx.needs_input_grad[2]
    x_grad, y_grad = iq_attention_pool_backward_op(
        grad, attn, x_states, x_mask, y_states, y_mask, y_index, ctx.scale, need_x_grad, need_y_grad
    )
    return (
        x_grad if need_x_grad else None,
        None,
        y_grad if need_y_grad else None,
        None,
        None,
        None,
    )


iq_attention_pool_op.register_autograd(_backward, setup_context=_setup_context)
