r"""GradCache: a contrastive loss over a batch larger than the encoder's activations fit in memory.

Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup" (2021). In-batch
negatives couple every embedding of the batch, so the batch cannot simply be split into accumulated
micro-batches (that would shrink the contrast set). GradCache splits the *encoder* work instead:

1. encode every chunk of ``chunk_size`` sequences without building a graph, keeping only the representations
   ``r`` (sentence embeddings, or token states for the attention fusion) and the random state of each chunk;
2. compute the loss ``L(head(r))`` on the cached representations with autograd, and back-propagate to
   ``dL/dr`` (parameters used in ``head`` get their gradient here);
3. re-encode each chunk with a graph, under the random state saved in step 1 (same dropout masks), and
   back-propagate ``dL/dr`` of that chunk into the encoder: ``backward(r_chunk, grad_r_chunk)``.

By the chain rule the encoder gradient is exactly ``sum_chunks (dr/dθ)ᵀ dL/dr = dL/dθ``: the loss and the
gradients equal those of the uncached loss on the same batch (up to float rounding), while peak activation
memory is that of one chunk. The price is a second forward pass of the encoder.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = ["CachedLoss", "split_features"]

#: (group name, features of one chunk of that group) -> representations (n, ...) with a graph when grad is on.
EncodeFn = Callable[[str, Mapping[str, Tensor]], Tensor]
#: representations of every group (whole batch) -> keyword arguments of the wrapped loss.
HeadFn = Callable[[dict[str, Tensor]], dict[str, Any]]
#: is_last_backward -> context manager (e.g. ``DistributedDataParallel.no_sync`` unless last).
SyncFn = Callable[[bool], AbstractContextManager[Any]]


def split_features(features: Mapping[str, Tensor], chunk_size: int) -> list[dict[str, Tensor]]:
    """Split a tokenised feature dict along dim 0 into chunks of at most ``chunk_size`` rows.

    Args:
        features: ``input_ids`` (n, L), ``attention_mask`` (n, L), ... all with n rows.
        chunk_size: rows per chunk, >= 1.

    Returns:
        ceil(n / chunk_size) dicts of views (no copy); an empty list when n == 0.
    """
    rows = int(next(iter(features.values())).shape[0])
    return [{k: v[s : s + chunk_size] for k, v in features.items()} for s in range(0, rows, chunk_size)]


@contextlib.contextmanager
def _replay_rng(state: tuple[Tensor, list[Tensor]], devices: list[int]) -> Iterator[None]:
    """Run the block under a saved (CPU, CUDA) random state; the caller's state is restored afterwards."""
    cpu_state, cuda_states = state
    with torch.random.fork_rng(devices=devices):
        torch.set_rng_state(cpu_state)
        for device, cuda_state in zip(devices, cuda_states, strict=True):
            torch.cuda.set_rng_state(cuda_state, device)
        yield


class CachedLoss(nn.Module):
    """GradCache wrapper: the wrapped loss and its gradients, with encoder memory bounded by ``chunk_size``.

    Calling the wrapper like a loss (``cached(query_embeddings, ...)``) is the wrapped loss itself. The
    cached computation is :meth:`backward`, which owns the encoder calls because it must run the encoder twice.

    Args:
        loss: the loss to wrap, e.g. ``get_loss("multi:P+I")``.
        chunk_size: sequences per encoder call, >= 1.

    Raises:
        ValueError: ``chunk_size`` is not a positive integer.
    """

    def __init__(self, loss: nn.Module, chunk_size: int) -> None:
        super().__init__()
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size: expected an integer >= 1, got {chunk_size!r}")
        self.loss = loss
        self.chunk_size = chunk_size

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        """The wrapped loss on precomputed embeddings (no caching involved)."""
        return self.loss(*args, **kwargs)

    def backward(
        self,
        encode: EncodeFn,
        groups: Mapping[str, Mapping[str, Tensor]],
        head: HeadFn,
        *,
        scale: float = 1.0,
        sync: SyncFn | None = None,
        check: Callable[[Tensor], None] | None = None,
    ) -> Tensor:
        """Compute the loss of one batch and accumulate ``scale * dL/dθ`` into ``.grad``, chunk by chunk.

        Args:
            encode: encoder call on one chunk of one group (see :data:`EncodeFn`); it must be deterministic given
                the random state (dropout is replayed through the saved state).
            groups: group name -> tokenised features (n_g rows each) of the whole batch.
            head: maps the concatenated representations of every group to the wrapped loss's keyword
                arguments (fusion, projection, normalisation, indexing happen here, with autograd).
            scale: gradient multiplier (e.g. 1 / gradient_accumulation_steps); the returned loss is unscaled.
            sync: context manager factory wrapping each encoder backward; called with True for the last one
                only (DDP: ``no_sync`` for the others).
            check: called on the loss before any backward (e.g. stop on a non-finite loss).

        Returns:
            The scalar loss (detached), equal to the uncached loss on the same batch.
        """
        devices: list[int] = []
        chunks: list[tuple[str, dict[str, Tensor]]] = []
        for name, features in groups.items():
            chunks.extend((name, chunk) for chunk in split_features(features, self.chunk_size))
            for value in features.values():
                if value.is_cuda and value.device.index not in devices:
                    devices.append(value.device.index)
        # Step 1: representations without a graph, remembering each chunk's random state.
        states: list[tuple[Tensor, list[Tensor]]] = []
        pieces: dict[str, list[Tensor]] = {name: [] for name in groups}
        with torch.no_grad():
            for name, chunk in chunks:
                states.append((torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]))
                pieces[name].append(encode(name, chunk))
        reps = {name: torch.cat(parts).detach().requires_grad_() for name, parts in pieces.items() if parts}
        # Step 2: the loss on the cached representations; gradients w.r.t. them (and head parameters).
        loss = self.loss(**head(reps))
        if check is not None:
            check(loss)
        (loss * scale).backward()
        # Step 3: re-encode each chunk with a graph under its saved random state and push its gradient in.
        offsets = {name: 0 for name in groups}
        for position, ((name, chunk), state) in enumerate(zip(chunks, states, strict=True)):
            grad = reps[name].grad
            rows = int(next(iter(chunk.values())).shape[0])
            start = offsets[name]
            offsets[name] = start + rows
            context = sync(position == len(chunks) - 1) if sync is not None else contextlib.nullcontext()
            with _replay_rng(state, devices), context:
                rep = encode(name, chunk)
                if grad is None:  # the loss did not use this group: keep the graph for DDP, zero gradient
                    rep.sum().mul(0.0).backward()
                else:
                    rep.backward(grad[start : start + rows].to(rep.dtype))
        return loss.detach()
