"""Which kernel runs: the Triton kernel where it applies, the PyTorch default otherwise.

:func:`register_kernels` (called by ``inf_embed.ops`` at import) registers CUDA kernels on the custom ops when
``triton`` is installed and ``INF_EMBED_DISABLE_KERNELS`` is unset. Each call of a registered kernel asks
:func:`kernel_unsupported_reason`; when it returns a reason, the default implementation runs and the reason is
logged at DEBUG level. ``triton`` itself is imported lazily, on the first CUDA call.

Environment:

* ``INF_EMBED_DISABLE_KERNELS`` (any value except ``""``, ``0``, ``false``, ``no``, ``off``): no Triton kernel.
  Read at import (nothing is registered) and at every call (so it can be set later, too).
* ``TRITON_INTERPRET=1``: Triton's interpreter, which runs the kernels on CPU tensors (tests only; slow).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from types import ModuleType

import torch
from torch import Tensor

from inf_embed.ops import _default
from inf_embed.ops._custom_op import _check_forward_args, iq_attention_pool_backward_op, iq_attention_pool_op

logger = logging.getLogger(__name__)

__all__ = [
    "DISABLE_ENV",
    "KERNEL_DTYPES",
    "MAX_LEN_X",
    "MAX_TILE",
    "kernel_unsupported_reason",
    "kernels_disabled",
    "register_kernels",
]

DISABLE_ENV = "INF_EMBED_DISABLE_KERNELS"
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_LEN_X = 256
"""Largest Lx the Triton kernels take (all x rows of one batch row sit in one tile)."""
MAX_TILE = 16384
"""Largest ``BLOCK_X * BLOCK_Y`` (the fp32 logit tile held in registers; blocks are powers of two >= 16)."""

_FALSE_VALUES = ("", "0", "false", "no", "off")
_registered = False
_triton_module: ModuleType | None = None
_triton_error: str | None = None


def kernels_disabled() -> bool:
    """Whether ``INF_EMBED_DISABLE_KERNELS`` is set to a true value."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in _FALSE_VALUES


def _interpreter_requested() -> bool:
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() not in _FALSE_VALUES


def _block(length: int) -> int:
    """Power-of-two block covering ``length``, at least 16 (``tl.dot``'s minimum)."""
    return max(16, 1 << max(length - 1, 0).bit_length())


def _load_triton() -> ModuleType | None:
    """Import :mod:`._triton` once; remember why it failed."""
    global _triton_module, _triton_error
    if _triton_module is None and _triton_error is None:
        try:
            _triton_module = importlib.import_module("inf_embed.ops._triton")
        except ImportError as exc:  # triton missing or broken: fall back, say why
            _triton_error = f"triton is not importable ({exc}); install the extra: pip install 'inf-embed[triton]'"
    return _triton_module


def kernel_unsupported_reason(x_states: Tensor, y_states: Tensor) -> str | None:
    """Why the Triton kernel cannot run these inputs, or None when it can.

    Checks, in order: the environment switch, the dtype, the shape limits, the device, then whether ``triton``
    imports (the import happens here, once).

    Args:
        x_states: (B, Lx, d).
        y_states: (By, Ly, d).

    Returns:
        A human-readable reason, or None.
    """
    if kernels_disabled():
        return f"{DISABLE_ENV} is set"
    if x_states.dtype not in KERNEL_DTYPES:
        return f"dtype {x_states.dtype} is not covered by the Triton kernel (float16, bfloat16, float32)"
    len_x, len_y = x_states.shape[1], y_states.shape[1]
    if len_x > MAX_LEN_X:
        return f"Lx={len_x} exceeds the Triton kernel's limit of {MAX_LEN_X}"
    tile = _block(len_x) * _block(len_y)
    if tile > MAX_TILE:
        return f"logit tile {_block(len_x)}x{_block(len_y)} (Lx={len_x}, Ly={len_y}) exceeds {MAX_TILE} elements"
    device = x_states.device.type
    if device != "cuda" and not (device == "cpu" and _interpreter_requested()):
        return f"tensors are on {device}; the Triton kernel runs on cuda (or on cpu with TRITON_INTERPRET=1)"
    module = _load_triton()
    if module is None:
        return _triton_error
    if device == "cpu" and not module.INTERPRETED:
        return "TRITON_INTERPRET was unset when inf_embed.ops._triton was imported, so it cannot run on cpu"
    return None


def iq_attention_pool_forward_kernel(
    x_states: Tensor,
    x_mask: Tensor,
    y_states: Tensor,
    y_mask: Tensor,
    y_index: Tensor | None,
    scale: float,
) -> tuple[Tensor, Tensor]:
    """Forward for a kernel-eligible device: Triton when it applies, else the default (reason at DEBUG)."""
    _check_forward_args(x_states, x_mask, y_states, y_mask, y_index)
    reason = kernel_unsupported_reason(x_states, y_states)
    if reason is not None:
        logger.debug("iq_attention_pool forward uses the PyTorch implementation: %s", reason)
        return _default.iq_attention_pool_forward(x_states, x_mask, y_states, y_mask, y_index, scale)
    assert _triton_module is not None  # set by kernel_unsupported_reason
    return _triton_module.iq_attention_pool_forward_triton(x_states, x_mask, y_states, y_mask, y_index, scale)


def iq_attention_pool_backward_kernel(
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
    """Backward for a kernel-eligible device: Triton when it applies, else the default (reason at DEBUG)."""
    args = (grad, attn, x_states, x_mask, y_states, y_mask, y_index, scale, need_x_grad, need_y_grad)
    reason = kernel_unsupported_reason(x_states, y_states)
    if reason is not None:
        logger.debug("iq_attention_pool backward uses the PyTorch implementation: %s", reason)
        return _default.iq_attention_pool_backward(*args)
    assert _triton_module is not None  # set by kernel_unsupported_reason
    return _triton_module.iq_attention_pool_backward_triton(*args)


def register_kernels() -> bool:
    """Register the CUDA kernels on the custom ops, once, when allowed.

    Returns:
        True when the CUDA kernels are registered (now or earlier).
    """
    global _registered
    if _registered:
        return True
    if kernels_disabled():
        logger.debug("Triton kernels not registered: %s is set", DISABLE_ENV)
        return False
    if importlib.util.find_spec("triton") is None:
        logger.debug("Triton kernels not registered: triton is not installed (pip install 'inf-embed[triton]')")
        return False
    iq_attention_pool_op.register_kernel("cuda")(iq_attention_pool_forward_kernel)
    iq_attention_pool_backward_op.register_kernel("cuda")(iq_attention_pool_backward_kernel)
    _registered = True
    logger.debug("Triton kernels registered for cuda (triton is imported on the first cuda call)")
    return True
