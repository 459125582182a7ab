"""Sharded corpus encoding under ``torchrun``: every rank encodes a contiguous shard, rank 0 gathers.

Launch any script that calls the evaluators (or :func:`encode_sharded`) with
``torchrun --nproc_per_node N script.py`` after ``torch.distributed.init_process_group(...)``; with CUDA use
``backend="nccl"`` and one GPU per rank (``cuda:LOCAL_RANK``), on CPU ``backend="gloo"``. The gathered result
is identical to single-process encoding: shards are contiguous, in rank order, and each row is encoded by the
same function.

The gather runs in row chunks of ``gather_chunk_rows`` so the communication buffers stay bounded; only rank 0
holds the full (N, d) array.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = [
    "broadcast_flag",
    "broadcast_object",
    "encode_sharded",
    "gather_rows_to_rank0",
    "get_rank",
    "get_world_size",
    "is_distributed",
    "local_device",
    "shard_bounds",
]


def is_distributed() -> bool:
    """True when a ``torch.distributed`` process group with more than one rank is initialised."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() and get_world_size() > 1


def get_rank() -> int:
    """This process's rank, 0 without a process group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def get_world_size() -> int:
    """The number of ranks, 1 without a process group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def local_device() -> torch.device:
    """The device for this rank's model: ``cuda:LOCAL_RANK`` when CUDA is available, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _comm_device() -> torch.device:
    # NCCL only moves CUDA tensors; gloo moves CPU tensors.
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shard_bounds(num_items: int, world_size: int, rank: int) -> tuple[int, int]:
    """The contiguous ``[start, end)`` slice of ``num_items`` that ``rank`` encodes.

    The first ``num_items % world_size`` ranks get one extra item (``np.array_split``'s split), so shards
    concatenated in rank order give back the original order.

    Args:
        num_items: N >= 0.
        world_size: number of ranks, >= 1.
        rank: 0 <= rank < world_size.

    Returns:
        ``(start, end)``.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
    if num_items < 0:
        raise ValueError(f"num_items must be >= 0, got {num_items}")
    base, extra = divmod(num_items, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def broadcast_flag(flag: bool, src: int = 0) -> bool:
    """Rank ``src``'s boolean, on every rank (a no-op without a process group)."""
    if not is_distributed():
        return flag
    tensor = torch.tensor([1 if flag else 0], dtype=torch.int64, device=_comm_device())
    torch.distributed.broadcast(tensor, src=src)
    return bool(tensor.item())


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable object, on every rank (a no-op without a process group)."""
    if not is_distributed():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]


def gather_rows_to_rank0(local: np.ndarray, num_rows: int, *, gather_chunk_rows: int = 65536) -> np.ndarray | None:
    """Concatenate every rank's (n_r, d) float32 rows, in rank order, on rank 0.

    Shards must follow :func:`shard_bounds` for ``num_rows`` rows. Rows travel in chunks of
    ``gather_chunk_rows`` per rank, padded to equal size (``torch.distributed.gather`` needs equal shapes).

    Args:
        local: this rank's (n_r, d) rows.
        num_rows: N, the total over ranks.
        gather_chunk_rows: rows per rank per collective call.

    Returns:
        (N, d) float32 on rank 0, None on the other ranks.
    """
    world, rank = get_world_size(), get_rank()
    device = _comm_device()
    local = np.asarray(local, dtype=np.float32)
    # Every rank must agree on d, including ranks whose shard is empty.
    dim_t = torch.tensor([local.shape[1] if local.ndim == 2 and local.shape[0] else 0], device=device)
    torch.distributed.all_reduce(dim_t, op=torch.distributed.ReduceOp.MAX)
    dim = int(dim_t.item())
    bounds = [shard_bounds(num_rows, world, r) for r in range(world)]
    expected = bounds[rank][1] - bounds[rank][0]
    if local.shape[0] != expected:
        raise ValueError(f"rank {rank} holds {local.shape[0]} rows, its shard of {num_rows} has {expected}")
    local_rows = local.reshape(expected, dim) if expected else np.zeros((0, dim), np.float32)
    max_rows = max(end - start for start, end in bounds)
    output = np.empty((num_rows, dim), dtype=np.float32) if rank == 0 else None
    for offset in range(0, max_rows, gather_chunk_rows):
        piece = np.zeros((gather_chunk_rows, dim), dtype=np.float32)
        mine = local_rows[offset : offset + gather_chunk_rows]
        piece[: len(mine)] = mine
        send = torch.from_numpy(piece).to(device)
        receive = [torch.empty_like(send) for _ in range(world)] if rank == 0 else None
        torch.distributed.gather(send, gather_list=receive, dst=0)
        if rank == 0 and receive is not None and output is not None:
            for r, tensor in enumerate(receive):
                start, end = bounds[r]
                count = max(0, min(end - start - offset, gather_chunk_rows))
                if count:
                    output[start + offset : start + offset + count] = tensor[:count].cpu().numpy()
    return output


def encode_sharded(
    encode_fn: Callable[[Sequence[str]], np.ndarray],
    texts: Sequence[str],
    *,
    gather_chunk_rows: int = 65536,
) -> np.ndarray | None:
    """Encode ``texts`` across the ranks of the initialised process group; rank 0 gets all rows.

    Args:
        encode_fn: maps a list of texts to an (n, d) float array; each rank calls it on its own shard.
        texts: N texts, the same list on every rank.
        gather_chunk_rows: rows per rank per collective call.

    Returns:
        (N, d) float32 on rank 0 (in the order of ``texts``), None on the other ranks. Without a process group,
        simply ``encode_fn(texts)``.
    """
    if not is_distributed():
        return np.asarray(encode_fn(list(texts)), dtype=np.float32)
    world, rank = get_world_size(), get_rank()
    start, end = shard_bounds(len(texts), world, rank)
    logger.info("rank %d/%d encodes corpus rows [%d, %d)", rank, world, start, end)
    shard = list(texts[start:end])
    local = np.asarray(encode_fn(shard), dtype=np.float32) if shard else np.zeros((0, 0), np.float32)
    return gather_rows_to_rank0(local, len(texts), gather_chunk_rows=gather_chunk_rows)
