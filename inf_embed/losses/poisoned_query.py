r"""Poisoned-query ranking term (ours): a poisoned query must not retrieve the passage of its record.

The paper uses a poisoned query side ``g_k = enc(Q-_k ⊕ I+_k)`` only as a negative of the IQ term: passage
``p`` must prefer its own ``(I+, Q+)`` over ``g_k``. That never asks *passages* to be ranked for ``g_k``, so a
model that follows the (unchanged) instruction keeps ``f_k`` (the record's P+, which the instruction describes)
on top when the query changes: the query-change p-MRR stays near 0. This term ranks passages for ``g_k`` and
penalises the probability of ``f_k`` among the batch's passages (an unlikelihood loss, there being no passage
that ``g_k`` should retrieve):

``P_k = e^{s(g_k, f_k)} / (Σ_j e^{s(g_k, p_j)} + Σ_h e^{s(g_k, h)})``,   ``l_k = -log(1 - P_k)``,

with ``s(a, b) = <a, b> / tau`` and ``f_k`` one of the ``p_j``. The loss is the base InF-IR loss plus ``weight``
times the mean of ``l_k`` over the global batch's G poisoned queries (0 when there are none).
"""

from __future__ import annotations

from typing import Any

import torch

from inf_embed.losses.base import ContrastiveLoss
from inf_embed.losses.inf_ir import InfIRLoss
from inf_embed.losses.registry import register_loss

__all__ = ["PoisonedQueryLoss"]


class PoisonedQueryLoss(ContrastiveLoss):
    """An :class:`InfIRLoss` plus the poisoned-query ranking term (module docstring).

    Call it like the base loss, with one more keyword: ``query_negative_passage_embeddings`` (G, d), the passage
    ``f_k`` that each row of ``query_negative_embeddings`` (G, d) must not retrieve.

    Args:
        base: the InF-IR loss to extend (its temperature and gathering are used for the term too).
        weight: the term's weight (>= 0).

    Raises:
        ValueError: ``weight`` is negative or not finite.
    """

    def __init__(self, base: InfIRLoss, weight: float = 1.0) -> None:
        super().__init__(base.temperature, gather_across_ranks=base.gather_across_ranks)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < float("inf"):
            raise ValueError(f"weight: expected a finite number >= 0, got {weight!r}")
        self.base = base
        self.weight = float(weight)

    @property
    def name(self) -> str:
        return f"{self.base.name}+Q"

    uses_query_negative_passages = True

    @property
    def uses_query_embeddings(self) -> bool:
        return self.base.uses_query_embeddings

    @property
    def uses_instruction_variants(self) -> bool:
        return self.base.uses_instruction_variants

    @property
    def uses_hard_negatives(self) -> bool:
        return True  # candidates of the term

    @property
    def uses_query_negatives(self) -> bool:
        return True

    @property
    def required_inputs(self) -> frozenset[str]:
        return self.base.required_inputs | {"query_negative_embeddings", "query_negative_passage_embeddings"}

    def get_config_dict(self) -> dict[str, Any]:
        return {**self.base.get_config_dict(), "poisoned_query_weight": self.weight}

    def forward(
        self,
        query_embeddings: torch.Tensor | None,
        passage_embeddings: torch.Tensor,
        instruction_variant_embeddings: torch.Tensor | None = None,
        *,
        query_negative_embeddings: torch.Tensor | None = None,
        query_negative_passage_embeddings: torch.Tensor | None = None,
        hard_negative_embeddings: torch.Tensor | None = None,
        **base_inputs: Any,
    ) -> torch.Tensor:
        """Base loss + ``weight`` x the term; tensors as in :meth:`InfIRLoss.forward`, plus (G, d) ``f``."""
        base_hard = hard_negative_embeddings if self.base.uses_hard_negatives else None
        base_qneg = query_negative_embeddings if self.base.uses_query_negatives else None
        loss = self.base(
            query_embeddings,
            passage_embeddings,
            instruction_variant_embeddings,
            hard_negative_embeddings=base_hard,
            query_negative_embeddings=base_qneg,
            **base_inputs,
        )
        return loss + self.weight * self.poisoned_query_term(
            passage_embeddings, query_negative_embeddings, query_negative_passage_embeddings, hard_negative_embeddings
        )

    def poisoned_query_term(
        self,
        passages: torch.Tensor,
        poisoned: torch.Tensor | None,
        forbidden: torch.Tensor | None,
        hard_negatives: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean of ``-log(1 - P_k)`` over the global batch (scaled for DDP like the base loss).

        Args:
            passages: (N, d) positive passages p of this rank.
            poisoned: (G, d) poisoned query sides g, or None (no poisoned queries on this rank).
            forbidden: (G, d) the passage f_k each g_k must not retrieve (one of the batch's positives).
            hard_negatives: (H, d) extra candidate passages, or None.
        """
        dim = passages.shape[1]
        if (poisoned is None) != (forbidden is None) or (
            poisoned is not None and (poisoned.shape != forbidden.shape or poisoned.dim() != 2)
        ):
            raise ValueError(
                "query_negative_embeddings and query_negative_passage_embeddings: expected two (G, d) tensors "
                f"of the same shape, got {_shape(poisoned)} and {_shape(forbidden)}"
            )
        empty = passages.new_zeros((0, dim))
        g = self.gather(poisoned if poisoned is not None else empty)
        f = self.gather(forbidden if forbidden is not None else empty)
        p = self.gather(passages)
        h = self.gather(hard_negatives if hard_negatives is not None else empty)
        if g.shape[0] == 0:
            return passages.sum() * 0.0  # keeps the graph (and DDP's expectations) intact
        dtype = torch.promote_types(p.dtype, torch.float32)
        g, f, candidates = g.to(dtype), f.to(dtype), torch.cat([p, h]).to(dtype)
        logits = g @ candidates.T * self.scale  # (G, N + H)
        log_prob = (g * f).sum(dim=-1) * self.scale - torch.logsumexp(logits, dim=1)  # (G,) log P_k <= 0
        # -log(1 - P) = -log(-expm1(log P)); clamp keeps P == 1 (a lone candidate) finite
        term = -torch.log((-torch.expm1(log_prob)).clamp_min(torch.finfo(dtype).tiny))
        return self.scale_for_ddp(term.mean())


def _shape(value: torch.Tensor | None) -> str:
    return "None" if value is None else str(tuple(value.shape))


@register_loss("multi:P+I+IQ+Q")
def multi_p_i_iq_q(weight: float = 1.0, **kwargs: Any) -> PoisonedQueryLoss:
    r"""ℓ^multi_{P,I,IQ} plus the poisoned-query ranking term (ours):
    ``l = ℓ^multi_{P,I,IQ} + weight · mean_k -log(1 - P(f_k | g_k))`` (see :mod:`inf_embed.losses.poisoned_query`)."""
    return PoisonedQueryLoss(InfIRLoss("multi", ("P", "I", "IQ"), **kwargs), weight=weight)
