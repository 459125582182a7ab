"""Public instruction-query attention pooling: argument checks, then one custom-op call."""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor

from inf_embed.ops._custom_op import iq_attention_pool_op

logger = logging.getLogger(__name__)

__all__ = ["iq_attention_pool"]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# dtypes that autocast lowers (it never touches fp64), as torch.bmm does
_AUTOCAST_ELIGIBLE = (torch.float16, torch.bfloat16, torch.float32)


def iq_attention_pool(
    x_states: Tensor,
    x_mask: Tensor,
    y_states: Tensor,
    y_mask: Tensor,
    scale: float | None = None,
    *,
    y_index: Tensor | None = None,
) -> Tensor:
    """Rows of ``x`` attend over the tokens of ``y``; the attended rows are mean-pooled over the valid ``x`` tokens.

    For each batch row ``b`` (paired with y row ``k = y_index[b]``, or ``k = b``)::

        A[i, j] = softmax_j(scale * <x[b, i], y[k, j]>)    over the valid y tokens j (y_mask[k, j])
        out[b]  = mean over valid x tokens i of  sum_j A[i, j] y[k, j]

    computed as ``w @ y[k]`` with ``w = mean_i A[i, :]``, so no (B, Lx, d) tensor is built. The paper's fusion is
    ``x = instruction, y = query``; ``x = query, y = instruction`` lets query tokens pull in instruction content.

    Edge cases, which hold for every kernel:

    * a row with no valid ``x`` token gives the masked mean of its ``y`` tokens;
    * a row with no valid ``y`` token gives zeros (whatever ``x`` is);
    * never NaN, in forward or backward: padded logits are filled with ``finfo.min``, not ``-inf``, by one masking
      routine for training and inference (the official code used -1e8 in training and -1e-8 at inference);
    * finite values at padded positions do not change the output and receive zero gradient.

    Numerics and dtypes. Softmax and pooling weights accumulate in fp32 (fp64 for fp64 inputs); the GEMMs
    accumulate in fp32. The PyTorch implementation rounds the fp16/bf16 logits to the input dtype before the fp32
    softmax (the Triton kernel keeps them in fp32). The output has the inputs' dtype. Under ``torch.autocast`` for the
    inputs' device type, fp32/fp16/bf16 inputs are first cast to the autocast dtype, as ``torch.bmm`` would be, so
    the output has the autocast dtype (fp64 inputs are left alone); eager and ``torch.compile`` agree on this.
    The same function serves training and inference. There is no double backward (``create_graph=True`` through
    this op raises). On CUDA, a Triton kernel is used when ``triton`` is installed, the shape and dtype are covered
    and ``INF_EMBED_DISABLE_KERNELS`` is unset; otherwise the PyTorch implementation runs (the reason is logged at
    DEBUG level by ``inf_embed.ops._dispatch``).

    Args:
        x_states: (B, Lx, d) float16, bfloat16, float32 or float64; the attending sequences.
        x_mask: (B, Lx) bool or integer (tokenizers' int64 masks); nonzero marks a valid token.
        y_states: (By, Ly, d) same dtype and device as ``x_states``; the attended sequences.
        y_mask: (By, Ly) bool or integer.
        scale: logit scale, a finite float; ``None`` means ``1 / sqrt(d)``.
        y_index: (B,) integer tensor with values in [0, By): x row ``b`` is paired with y row ``y_index[b]``, so
            many x sequences can share one y sequence (e.g. one query against several instructions) without the
            caller repeating ``y_states``. Nothing is copied by the Triton kernel, nor on CPU when the x rows are
            grouped by y row (``y_index = arange(By).repeat_interleave(m)``, including By == 1); any other
            ``y_index`` makes the PyTorch implementation gather a transient (B, Ly, d) copy, freed when the call
            returns (never saved for backward). The y gradient sums over the x rows sharing a y row. ``None`` pairs
            row ``b`` with row ``b`` and requires By == B.

    Returns:
        (B, d) tensor, the pooled attended states, in the (possibly autocast) input dtype.

    Raises:
        TypeError: an argument is not a tensor, or has an unsupported dtype, or the states' dtypes differ.
        ValueError: a shape, device, ``scale`` or ``y_index`` value is inconsistent.
    """
    _check_states(x_states, y_states)
    batch, len_x, dim = x_states.shape
    batch_y, len_y, _ = y_states.shape
    index = _check_index(y_index, batch, batch_y, x_states.device)
    x_mask = _as_bool_mask(x_mask, "x_mask", (batch, len_x), x_states.device)
    y_mask = _as_bool_mask(y_mask, "y_mask", (batch_y, len_y), x_states.device)
    scale = _check_scale(scale, dim)

    x_states, y_states = _apply_autocast(x_states, y_states)
    if x_states.dtype != y_states.dtype:
        raise TypeError(f"x_states and y_states must have the same dtype, got {x_states.dtype} and {y_states.dtype}")
    out, _ = iq_attention_pool_op(x_states, x_mask, y_states, y_mask, index, scale)
    return out


def _check_states(x_states: Tensor, y_states: Tensor) -> None:
    for name, t in (("x_states", x_states), ("y_states", y_states)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 3:
            raise ValueError(f"{name} must be 3-D (batch, length, d), got shape {tuple(t.shape)}")
        if t.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    if x_states.device != y_states.device:
        raise ValueError(f"x_states is on {x_states.device} but y_states is on {y_states.device}")
    if x_states.shape[2] != y_states.shape[2]:
        raise ValueError(f"x_states has d={x_states.shape[2]} but y_states has d={y_states.shape[2]}; they must match")
    if x_states.shape[2] == 0:
        raise ValueError("x_states and y_states have d=0; the hidden size must be at least 1")


def _as_bool_mask(mask: Tensor, name: str, shape: tuple[int, int], device: torch.device) -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype.is_floating_point or mask.dtype.is_complex:
        raise TypeError(f"{name} must be bool or an integer dtype (as tokenizers return), got {mask.dtype}")
    if tuple(mask.shape) != shape:
        raise ValueError(f"{name} must have shape {shape} to match the states, got {tuple(mask.shape)}")
    if mask.device != device:
        raise ValueError(f"{name} is on {mask.device} but the states are on {device}")
    return mask if mask.dtype == torch.bool else mask != 0


def _check_index(y_index: Tensor | None, batch: int, batch_y: int, device: torch.device) -> Tensor | None:
    if y_index is None:
        if batch_y != batch:
            raise ValueError(
                f"y_states has {batch_y} rows but x_states has {batch}; pass y_index (shape ({batch},)) to pair them"
            )
        return None
    if not isinstance(y_index, Tensor):
        raise TypeError(f"y_index must be a torch.Tensor or None, got {type(y_index).__name__}")
    if y_index.dtype.is_floating_point or y_index.dtype.is_complex or y_index.dtype == torch.bool:
        raise TypeError(f"y_index must be an integer tensor, got {y_index.dtype}")
    if tuple(y_index.shape) != (batch,):
        raise ValueError(f"y_index must have shape ({batch},) (one y row per x row), got {tuple(y_index.shape)}")
    if y_index.device != device:
        raise ValueError(f"y_index is on {y_index.device} but the states are on {device}")
    y_index = y_index.long()
    if not torch.compiler.is_compiling() and batch > 0:
        bad = (y_index < 0) | (y_index >= batch_y)
        if device.type == "cpu":
            if bool(bad.any()):
                pos = int(bad.nonzero()[0, 0])
                raise ValueError(
                    f"y_index[{pos}] = {int(y_index[pos])} is out of range; expected values in [0, {batch_y})"
                )
        else:  # no host sync on accelerators: the check fails asynchronously
            torch._assert_async(~bad.any(), f"y_index has values outside [0, {batch_y})")
    return y_index


def _check_scale(scale: float | None, dim: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(dim)
    if isinstance(scale, bool) or not isinstance(scale, (int, float, torch.SymInt, torch.SymFloat)):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
    if torch.compiler.is_compiling():  # may be symbolic (computed from a dynamic d): no value check
        return scale
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    return float(scale)


def _apply_autocast(x_states: Tensor, y_states: Tensor) -> tuple[Tensor, Tensor]:
    """Cast like an autocast lower-precision op (``torch.bmm``), since the op bodies run with autocast disabled."""
    device_type = x_states.device.type
    # CPU and CUDA always have autocast; asking only for other devices keeps the check out of compiled graphs
    # (torch <= 2.11's dynamo cannot trace torch._C._is_autocast_available).
    if device_type not in ("cpu", "cuda") and not torch.amp.is_autocast_available(device_type):
        return x_states, y_states
    if not torch.is_autocast_enabled(device_type):
        return x_states, y_states
    dtype = torch.get_autocast_dtype(device_type)
    if x_states.dtype in _AUTOCAST_ELIGIBLE:
        x_states = x_states.to(dtype)
    if y_states.dtype in _AUTOCAST_ELIGIBLE:
        y_states = y_states.to(dtype)
    return x_states, y_states
