"""Shared machinery of the contrastive losses: temperature, masked cross-entropy, false-negative masks,
cross-rank gathering and the DDP gradient scale.

Temperature. Scores are ``s(a, b) = <a, b> / tau`` with the exact ``1 / tau``. The official code multiplies by
``1 / (tau + 1e-4)`` (19.96 instead of 20 for ``tau = 0.05``); the ``1e-4`` only guards against ``tau = 0``,
which :class:`ContrastiveLoss` rejects instead, and ``1 / tau`` is what the paper states. Pass
``temperature=0.0501`` to reproduce the official code's scale exactly.

Masking. Excluded candidates are filled with ``torch.finfo(dtype).min`` (never ``-inf``, which turns a fully
masked row into NaN), after scaling, so they take no part in a softmax and receive no gradient.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from inf_embed.training.distributed import all_gather_with_grad, get_world_size

logger = logging.getLogger(__name__)

__all__ = ["ContrastiveLoss", "instruction_negative_mask", "masked_cross_entropy", "to_instruction_ids"]


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row ``-log softmax(logits[i])[target[i]]`` over the valid candidates only.

    Args:
        logits: (R, C) float scores, already divided by the temperature.
        target: (R,) int64 column of each row's positive; the positive must be valid.
        valid: (R, C) bool, False for candidates excluded from the softmax; all valid when None.

    Returns:
        (R,) float per-row losses. A row whose only valid candidate is its positive gives 0.
    """
    if valid is not None:
        logits = logits.masked_fill(~valid, torch.finfo(logits.dtype).min)
    return torch.logsumexp(logits, dim=1) - logits.gather(1, target[:, None]).squeeze(1)


def to_instruction_ids(
    instruction_ids: torch.Tensor | Sequence[Sequence[str]], rows: int, columns: int, device: torch.device
) -> torch.Tensor:
    """Convert instruction identifiers (ints or texts) to an (R, M) int64 tensor.

    Equal texts get equal ids; ids only need to be consistent within a row (the mask compares a row's variants
    with the row's own instruction), so the mapping is local to this call.

    Args:
        instruction_ids: (R, M) integer tensor, or R sequences of M instruction texts.
        rows: expected R.
        columns: expected M.
        device: device of the returned tensor.

    Returns:
        (R, M) int64 tensor.

    Raises:
        ValueError: the shape is not (R, M), or a text is not a string.
        TypeError: a tensor of a non-integer dtype.
    """
    if isinstance(instruction_ids, torch.Tensor):
        if instruction_ids.dtype.is_floating_point or instruction_ids.dtype.is_complex:
            raise TypeError(f"instruction_ids: expected an integer tensor, got dtype {instruction_ids.dtype}")
        if tuple(instruction_ids.shape) != (rows, columns):
            raise ValueError(
                f"instruction_ids has shape {tuple(instruction_ids.shape)}; expected ({rows}, {columns}) to match "
                "instruction_variant_embeddings"
            )
        return instruction_ids.to(device=device, dtype=torch.int64)
    if len(instruction_ids) != rows:
        raise ValueError(f"instruction_ids has {len(instruction_ids)} rows; expected {rows}")
    table: dict[str, int] = {}
    ids: list[list[int]] = []
    for i, row in enumerate(instruction_ids):
        if isinstance(row, str) or len(row) != columns:
            got = "a string" if isinstance(row, str) else f"{len(row)} entries"
            raise ValueError(f"instruction_ids[{i}] has {got}; expected a sequence of {columns} instruction texts")
        for m, text in enumerate(row):
            if not isinstance(text, str):
                raise ValueError(f"instruction_ids[{i}][{m}]: expected a string, got {type(text).__name__}")
        ids.append([table.setdefault(text, len(table)) for text in row])
    return torch.tensor(ids, dtype=torch.int64, device=device).reshape(rows, columns)


def instruction_negative_mask(instruction_ids: torch.Tensor, variant_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Valid instruction negatives: those whose instruction differs from the row's own (paper bug B5).

    Column 0 (the positive combination) is always valid. Column ``m >= 1`` is valid when its id differs from
    column 0's and ``variant_mask`` (padding) allows it.

    Args:
        instruction_ids: (R, M) int64, id of the instruction used in each variant; column 0 is the row's own.
        variant_mask: (R, M) bool, False for padding slots; None means all slots are real.

    Returns:
        (R, M) bool.
    """
    valid = instruction_ids != instruction_ids[:, :1]
    valid[:, 0] = True
    if variant_mask is not None:
        valid &= variant_mask
        valid[:, 0] = True
    return valid


class ContrastiveLoss(nn.Module):
    """Base class: temperature, cross-rank gathering and the DDP gradient scale.

    Subclasses implement :meth:`forward` on embeddings (never on a model), gather their inputs with
    :meth:`gather`, compute the mean loss over the *global* batch, and return :meth:`scale_for_ddp` of it.

    DDP convention. With ``W > 1`` ranks and ``gather_across_ranks=True``, every rank computes the same global
    loss ``L`` (the mean over all gathered rows) but only its own slices carry gradient. The returned tensor has
    the value ``L`` (so logs and NaN checks see the single-process loss) and the gradient ``W * dL``, so that
    DDP's averaging over ``W`` ranks leaves exactly the single-process gradient of ``L`` on the concatenated
    batch. With ``gather_across_ranks=False`` each rank contrasts only its own items and nothing is rescaled.
    Without a process group both settings are the plain single-process loss.

    Args:
        temperature: ``tau`` > 0; scores are ``<a, b> / tau`` (see the module docstring on ``1e-4``).
        gather_across_ranks: use the items of every rank as in-batch negatives.

    Raises:
        ValueError: ``temperature`` is not a finite positive number.
    """

    def __init__(self, temperature: float = 0.05, *, gather_across_ranks: bool = True) -> None:
        super().__init__()
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise ValueError(f"temperature: expected a positive float, got {temperature!r}")
        if not math.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"temperature: expected a finite value > 0, got {temperature!r}")
        self.temperature = float(temperature)
        self.gather_across_ranks = bool(gather_across_ranks)

    @property
    def scale(self) -> float:
        """The logit scale ``1 / tau``."""
        return 1.0 / self.temperature

    def gather(self, tensor: torch.Tensor | None) -> torch.Tensor | None:
        """All-gather ``tensor`` (N_r, ...) along dim 0 when gathering is on; None stays None."""
        if tensor is None or not self.gather_across_ranks:
            return tensor
        return all_gather_with_grad(tensor)

    def scale_for_ddp(self, loss: torch.Tensor) -> torch.Tensor:
        """Return a tensor with the value of ``loss`` and ``W`` times its gradient (see the class docstring)."""
        world_size = get_world_size() if self.gather_across_ranks else 1
        if world_size <= 1:
            return loss
        return loss * world_size - loss.detach() * (world_size - 1)

    def get_config_dict(self) -> dict[str, Any]:
        """The constructor arguments, for saving with a checkpoint or a model card."""
        return {"temperature": self.temperature, "gather_across_ranks": self.gather_across_ranks}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.get_config_dict().items())
