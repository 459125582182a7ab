"""Rank helpers and a cross-rank all-gather that keeps the gradient of the local copy.

Every helper works without an initialised process group (paper bug B11: the official code called
``dist.get_world_size()`` unconditionally, so single-process training crashed): it then behaves as a world of
one process, rank 0, and the collectives are no-ops.

Gradient convention of :func:`all_gather_with_grad` (the E5/SimLM recipe the paper's code descends from): the
slice of the output that came from this rank *is* the input tensor, so gradients flow into it; the slices
received from other ranks are constants. If every rank evaluates the same global loss ``L`` over the gathered
tensors, rank ``r`` obtains exactly ``dL/d(local tensor of r)`` (every row and column in which its items
appear). DDP then *averages* parameter gradients over the ``W`` ranks, so a loss must multiply its gradient by
``W`` to reproduce the single-process gradient; :class:`inf_embed.losses.ContrastiveLoss` does this.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

__all__ = [
    "all_gather_with_grad",
    "all_reduce_mean",
    "barrier",
    "get_local_rank",
    "get_rank",
    "get_world_size",
    "is_distributed",
    "is_main_process",
]

# Largest tensor rank all_gather_with_grad exchanges shapes for (one fixed-size header per rank).
_MAX_NDIM = 8


def is_distributed() -> bool:
    """Return True when ``torch.distributed`` is available and a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def get_world_size(group: dist.ProcessGroup | None = None) -> int:
    """Return the number of processes in ``group`` (default group), or 1 without a process group."""
    return dist.get_world_size(group) if is_distributed() else 1


def get_rank(group: dist.ProcessGroup | None = None) -> int:
    """Return this process's rank in ``group`` (default group), or 0 without a process group."""
    return dist.get_rank(group) if is_distributed() else 0


def get_local_rank() -> int:
    """Return the rank on this node from ``LOCAL_RANK`` (set by ``torchrun``), or 0 when unset.

    Raises:
        ValueError: ``LOCAL_RANK`` is set but is not a non-negative integer.
    """
    value = os.environ.get("LOCAL_RANK")
    if value is None or value == "":
        return 0
    try:
        local_rank = int(value)
    except ValueError:
        raise ValueError(f"environment variable LOCAL_RANK={value!r}: expected a non-negative integer") from None
    if local_rank < 0:
        raise ValueError(f"environment variable LOCAL_RANK={value!r}: expected a non-negative integer")
    return local_rank


def is_main_process() -> bool:
    """Return True on global rank 0 (always True without a process group)."""
    return get_rank() == 0


def barrier(group: dist.ProcessGroup | None = None) -> None:
    """Synchronise all ranks of ``group``; a no-op without a process group."""
    if is_distributed():
        dist.barrier(group)


def all_reduce_mean(tensor: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Average ``tensor`` over the ranks of ``group`` (for logging; no gradient).

    Args:
        tensor: any shape, floating dtype. Not modified.
        group: process group; the default group when None.

    Returns:
        A detached tensor of the same shape holding the mean over ranks (a detached copy of ``tensor``
        without a process group).
    """
    result = tensor.detach().clone()
    world_size = get_world_size(group)
    if world_size > 1:
        dist.all_reduce(result, op=dist.ReduceOp.SUM, group=group)
        result /= world_size
    return result


def all_gather_with_grad(tensor: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, in rank order, keeping the local copy's gradient.

    The local slice of the result is ``tensor`` itself (autograd flows through it); the other slices are
    detached copies received from the other ranks. Ranks may hold different numbers of rows (dim 0), including
    zero; every other dimension and the dtype must agree across ranks. Boolean tensors are supported.

    Without a process group, or with a world size of 1, ``tensor`` is returned unchanged (paper bug B11).

    Args:
        tensor: (n_r, ...) on this rank, on the device the process group's backend communicates on
            (CPU for gloo, CUDA for NCCL).
        group: process group; the default group when None.

    Returns:
        (sum_r n_r, ...) tensor with rows of rank 0 first, then rank 1, and so on.

    Raises:
        ValueError: ``tensor`` is a scalar, has more than 8 dimensions, or the trailing shapes differ between
            ranks (every rank raises, naming each rank's shape).
    """
    world_size = get_world_size(group)
    if world_size <= 1:
        return tensor
    if tensor.dim() == 0:
        raise ValueError("all_gather_with_grad: tensor is a scalar; expected at least one dimension to gather on")
    if tensor.dim() > _MAX_NDIM:
        raise ValueError(f"all_gather_with_grad: tensor has {tensor.dim()} dimensions; at most {_MAX_NDIM} supported")
    rank = get_rank(group)

    # Exchange shapes first: a fixed-size header [ndim, *shape, 0...] per rank.
    header = torch.zeros(_MAX_NDIM + 1, dtype=torch.int64, device=tensor.device)
    header[0] = tensor.dim()
    header[1 : tensor.dim() + 1] = torch.tensor(tensor.shape, dtype=torch.int64)
    headers = [torch.empty_like(header) for _ in range(world_size)]
    dist.all_gather(headers, header, group=group)
    shapes = [tuple(int(v) for v in h[1 : int(h[0]) + 1].tolist()) for h in headers]
    if any(len(s) != tensor.dim() or s[1:] != tuple(tensor.shape[1:]) for s in shapes):
        described = ", ".join(f"rank {r}: {tuple(s)}" for r, s in enumerate(shapes))
        raise ValueError(f"all_gather_with_grad: shapes beyond dim 0 must match on every rank; got {described}")

    sizes = [s[0] for s in shapes]
    max_rows = max(sizes)
    if max_rows == 0:
        return tensor.new_empty((0, *tensor.shape[1:]))

    # Gloo and NCCL gather equal-sized, contiguous buffers; pad to the largest rank and trim afterwards.
    payload = tensor.detach()
    is_bool = payload.dtype == torch.bool
    if is_bool:
        payload = payload.to(torch.uint8)
    if payload.shape[0] < max_rows:
        pad = payload.new_zeros((max_rows - payload.shape[0], *payload.shape[1:]))
        payload = torch.cat([payload, pad], dim=0)
    payload = payload.contiguous()
    buffers = [torch.empty_like(payload) for _ in range(world_size)]
    dist.all_gather(buffers, payload, group=group)

    pieces: list[torch.Tensor] = []
    for r, (buffer, size) in enumerate(zip(buffers, sizes, strict=True)):
        if r == rank:
            pieces.append(tensor)  # the local copy keeps its autograd history
        else:
            piece = buffer[:size]
            pieces.append(piece.to(torch.bool) if is_bool else piece)
    return torch.cat(pieces, dim=0)
