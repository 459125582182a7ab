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

The poisoned-instruction term (IX, ours) does the same for the items (I-, Q+, hn1): the paper's P term already
ranks hn1 above P+ for (I-, Q+), but stops there, so an instruction change moves P+ from rank 1 to rank 2 at
best (p-MRR 0.5). IX takes hn1 (and any candidate equal to it) out of the candidates and applies ``-log(1 - P_k)``
to P+'s probability among the rest, pushing P+ below the passages the instruction never asked for either:

``P_k = e^{s(g_k, f_k)} / Σ_{c ≠ hn1_k} e^{s(g_k, c)}``,   ``g_k = enc(Q+_k ⊕ I-_k)``,  ``f_k = P+_k``,

weighted by ``instruction_weight``.

``passage_gradient`` in [0, 1] scales the gradient that both terms send into the passage embeddings (candidates
and ``f_k``); 0 detaches them, so the terms move only the poisoned query sides and leave the passage geometry to
the base loss.

``exclude_record_hard_negative`` takes the record's own hn1 (D-, the positive of its (I-, Q+) item) out of the Q
term's candidates too. D- is on P+'s topic and P+ must beat it for (I+, Q+) (paired accuracy); with D- among the
candidates, the cheapest way for the Q term to demote P+ under (I+, Q-) is to lift D- above it, which pulls the
other way. Without D-, P+ has to fall below passages on other topics, as it does when a query-only ranker sees Q-.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from inf_embed.losses.base import ContrastiveLoss
from inf_embed.losses.inf_ir import InfIRLoss, shared_positives
from inf_embed.losses.registry import register_loss

__all__ = ["PoisonedQueryLoss"]


class PoisonedQueryLoss(ContrastiveLoss):
    """An :class:`InfIRLoss` plus the poisoned-query ranking term (module docstring).

    Call it like the base loss, with one more keyword: ``query_negative_passage_embeddings`` (G, d), the passage
    ``f_k`` that each row of ``query_negative_embeddings`` (G, d) must not retrieve.

    Args:
        base: the InF-IR loss to extend (its temperature and gathering are used for the term too).
        weight: the Q term's weight (>= 0).
        instruction_weight: the IX term's weight (>= 0).
        passage_gradient: share in [0, 1] of the terms' gradient that reaches the passage embeddings (0: the
            terms shape only the poisoned query sides).
        exclude_record_hard_negative: leave each poisoned query's own record hn1 out of the Q term's candidates
            (then the loss also takes ``query_negative_excluded_embeddings`` (G, d) and
            ``query_negative_excluded_mask`` (G,) bool: the passage to leave out, and which rows have one).

    Raises:
        ValueError: a weight is negative or not finite, ``passage_gradient`` is outside [0, 1], or
            ``exclude_record_hard_negative`` is not a bool (or 0 / 1).
    """

    def __init__(
        self,
        base: InfIRLoss,
        weight: float = 1.0,
        instruction_weight: float = 0.0,
        passage_gradient: float = 1.0,
        exclude_record_hard_negative: bool | float = False,
    ) -> None:
        super().__init__(base.temperature, gather_across_ranks=base.gather_across_ranks)
        for label, value, upper, expected in (
            ("weight", weight, math.inf, "a finite number >= 0"),
            ("instruction_weight", instruction_weight, math.inf, "a finite number >= 0"),
            ("passage_gradient", passage_gradient, 1.0, "a number in [0, 1]"),
        ):
            number = not isinstance(value, bool) and isinstance(value, (int, float))
            if not number or not 0 <= value <= upper or math.isinf(value):  # NaN fails 0 <= value
                raise ValueError(f"{label}: expected {expected}, got {value!r}")
        # 0 / 1 too: ``--loss-options`` passes numbers
        exclude = exclude_record_hard_negative
        if not isinstance(exclude, (bool, int, float)) or exclude not in (0, 1):
            raise ValueError(f"exclude_record_hard_negative: expected a bool (or 0 / 1), got {exclude!r}")
        self.exclude_record_hard_negative = bool(exclude)
        self.base = base
        self.weight = float(weight)
        self.instruction_weight = float(instruction_weight)
        self.passage_gradient = float(passage_gradient)

    @property
    def name(self) -> str:
        ix = "+IX" if self.instruction_weight else ""
        q = "+Q" if self.weight or not self.instruction_weight else ""
        return f"{self.base.name}{ix}{q}"

    uses_query_negative_passages = True

    @property
    def uses_query_negative_exclusions(self) -> bool:
        return self.exclude_record_hard_negative

    @property
    def uses_instruction_negative_items(self) -> bool:
        return self.instruction_weight > 0

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
        config = {**self.base.get_config_dict(), "poisoned_query_weight": self.weight}
        if self.instruction_weight:
            config["poisoned_instruction_weight"] = self.instruction_weight
        if self.passage_gradient != 1.0:
            config["poisoned_term_passage_gradient"] = self.passage_gradient
        if self.exclude_record_hard_negative:
            config["poisoned_query_excludes_record_hard_negative"] = True
        return config

    def forward(
        self,
        query_embeddings: torch.Tensor | None,
        passage_embeddings: torch.Tensor,
        instruction_variant_embeddings: torch.Tensor | None = None,
        *,
        query_negative_embeddings: torch.Tensor | None = None,
        query_negative_passage_embeddings: torch.Tensor | None = None,
        query_negative_excluded_embeddings: torch.Tensor | None = None,
        query_negative_excluded_mask: torch.Tensor | None = None,
        hard_negative_embeddings: torch.Tensor | None = None,
        poisoned_instruction_embeddings: torch.Tensor | None = None,
        poisoned_instruction_passage_embeddings: torch.Tensor | None = None,
        poisoned_instruction_forbidden_embeddings: torch.Tensor | None = None,
        **base_inputs: Any,
    ) -> torch.Tensor:
        """Base loss + ``weight`` x the Q term (+ ``instruction_weight`` x the IX term).

        Tensors as in :meth:`InfIRLoss.forward`, plus (G, d) ``f`` (``query_negative_passage_embeddings``) and,
        for the IX term, three (K, d) tensors: the query sides (I-, Q+) of the batch's instruction-negative
        items, their own positives (hn1, excluded from the candidates) and their records' P+ (forbidden); with
        ``exclude_record_hard_negative``, (G, d) ``query_negative_excluded_embeddings`` and (G,) bool
        ``query_negative_excluded_mask``.
        """
        excluded, excluded_mask = None, None
        if self.exclude_record_hard_negative and query_negative_embeddings is not None:
            if query_negative_excluded_embeddings is None or query_negative_excluded_mask is None:
                raise ValueError(
                    "query_negative_excluded_embeddings and query_negative_excluded_mask: required with "
                    "exclude_record_hard_negative=True (the trainer passes them), got None"
                )
            excluded, excluded_mask = query_negative_excluded_embeddings, query_negative_excluded_mask
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
        loss = loss + self.weight * self.poisoned_query_term(
            passage_embeddings,
            query_negative_embeddings,
            query_negative_passage_embeddings,
            hard_negative_embeddings,
            own_positives=excluded,
            own_positive_mask=excluded_mask,
        )
        if self.instruction_weight:
            loss = loss + self.instruction_weight * self.poisoned_query_term(
                passage_embeddings,
                poisoned_instruction_embeddings,
                poisoned_instruction_forbidden_embeddings,
                hard_negative_embeddings,
                own_positives=poisoned_instruction_passage_embeddings,
                names=("poisoned_instruction_embeddings", "poisoned_instruction_forbidden_embeddings"),
            )
        return loss

    def poisoned_query_term(
        self,
        passages: torch.Tensor,
        poisoned: torch.Tensor | None,
        forbidden: torch.Tensor | None,
        hard_negatives: torch.Tensor | None = None,
        own_positives: torch.Tensor | None = None,
        names: tuple[str, str] = ("query_negative_embeddings", "query_negative_passage_embeddings"),
        own_positive_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean of ``-log(1 - P_k)`` over the global batch (scaled for DDP like the base loss).

        Args:
            passages: (N, d) positive passages p of this rank.
            poisoned: (G, d) poisoned query sides g, or None (no poisoned queries on this rank).
            forbidden: (G, d) the passage f_k each g_k must not retrieve (one of the batch's positives).
            hard_negatives: (H, d) extra candidate passages, or None.
            own_positives: (G, d) a passage each g_k rightly retrieves, removed from its candidates (with any
                candidate equal to it), so that P_k is f_k's probability among the passages g_k should rank
                below it (or, for the Q term, a passage it must not be compared with); None: nothing removed.
            names: the caller's names of ``poisoned`` and ``forbidden``, for error messages.
            own_positive_mask: (G,) bool, which rows of ``own_positives`` are real (False: nothing removed for
                that g_k); None: all of them.
        """
        dim = passages.shape[1]
        if (poisoned is None) != (forbidden is None) or (
            poisoned is not None and (poisoned.shape != forbidden.shape or poisoned.dim() != 2)
        ):
            raise ValueError(
                f"{names[0]} and {names[1]}: expected two (G, d) tensors of the same shape, got "
                f"{_shape(poisoned)} and {_shape(forbidden)}"
            )
        if own_positives is not None and (poisoned is None or own_positives.shape != poisoned.shape):
            raise ValueError(
                f"own positives: expected a (G, d) tensor like the poisoned ones {_shape(poisoned)}, "
                f"got {_shape(own_positives)}"
            )
        if own_positive_mask is not None and (
            own_positives is None
            or own_positive_mask.shape != own_positives.shape[:1]
            or own_positive_mask.dtype != torch.bool
        ):
            raise ValueError(
                f"own positive mask: expected a (G,) bool tensor for the {_shape(own_positives)} own positives, got "
                f"{_shape(own_positive_mask)} {getattr(own_positive_mask, 'dtype', '')}"
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
        f, candidates = self._scale_passage_gradient(f), self._scale_passage_gradient(candidates)
        logits = g @ candidates.T * self.scale  # (G, N + H)
        shared = shared_positives(p)
        if shared is not None:
            # a passage shared by two items is one candidate, not two: its later copies leave the softmax
            later_copy = torch.tril(shared, diagonal=-1).any(dim=1)  # (N,)
            logits = logits.masked_fill(torch.cat([later_copy, later_copy.new_zeros(h.shape[0])]), float("-inf"))
        if own_positives is not None:
            own = self.gather(own_positives).to(dtype)
            # Exact equality: the own positive is one of the gathered candidates (same tensor values), so this
            # finds its column on every rank without passing indices across ranks.
            is_own = (candidates.unsqueeze(0) == own.unsqueeze(1)).all(dim=-1)  # (G, N + H)
            if own_positive_mask is not None:
                real = self.gather(own_positive_mask.to(own.dtype)) > 0.5  # bool does not all-gather
                is_own = is_own & real.unsqueeze(1)
            logits = logits.masked_fill(is_own, float("-inf"))
        log_prob = (g * f).sum(dim=-1) * self.scale - torch.logsumexp(logits, dim=1)  # (G,) log P_k <= 0
        # -log(1 - P) = -log(-expm1(log P)); clamp keeps P == 1 (a lone candidate) finite
        term = -torch.log((-torch.expm1(log_prob.clamp_max(0.0))).clamp_min(torch.finfo(dtype).tiny))
        return self.scale_for_ddp(term.mean())

    def _scale_passage_gradient(self, passages: torch.Tensor) -> torch.Tensor:
        """Same values; the gradient flowing back through them is multiplied by ``passage_gradient``."""
        if self.passage_gradient == 1.0:
            return passages
        detached = passages.detach()
        if self.passage_gradient == 0.0:
            return detached
        return detached + self.passage_gradient * (passages - detached)


_FULL_OBJECTIVE = ("P", "I", "IQ")  # the paper's full objective, multi:P+I+IQ


def _shape(value: torch.Tensor | None) -> str:
    return "None" if value is None else str(tuple(value.shape))


def _objective_plus(
    base_terms: tuple[str, ...],
    weight: float,
    instruction_weight: float,
    passage_gradient: float = 1.0,
    exclude_record_hard_negative: bool | float = False,
    **kwargs: Any,
) -> PoisonedQueryLoss:
    """The paper's ``multi`` objective over ``base_terms`` plus our ranking terms at the given weights."""
    return PoisonedQueryLoss(
        InfIRLoss("multi", base_terms, **kwargs),
        weight=weight,
        instruction_weight=instruction_weight,
        passage_gradient=passage_gradient,
        exclude_record_hard_negative=exclude_record_hard_negative,
    )


@register_loss("multi:P+I+IQ+Q")
def multi_p_i_iq_q(weight: float = 1.0, **kwargs: Any) -> PoisonedQueryLoss:
    r"""ℓ^multi_{P,I,IQ} plus the poisoned-query ranking term (ours):
    ``l = ℓ^multi_{P,I,IQ} + weight · mean_k -log(1 - P(f_k | g_k))`` (see :mod:`inf_embed.losses.poisoned_query`)."""
    return _objective_plus(_FULL_OBJECTIVE, weight, 0.0, **kwargs)


@register_loss("multi:P+I+IQ+IX")
def multi_p_i_iq_ix(instruction_weight: float = 1.0, **kwargs: Any) -> PoisonedQueryLoss:
    r"""ℓ^multi_{P,I,IQ} plus the poisoned-instruction ranking term (ours) alone: (I-, Q+) must rank its record's
    P+ below the batch's passages other than its own hn1 (see :mod:`inf_embed.losses.poisoned_query`)."""
    return _objective_plus(_FULL_OBJECTIVE, 0.0, instruction_weight, **kwargs)


@register_loss("multi:P+IX")
def multi_p_ix(instruction_weight: float = 1.0, **kwargs: Any) -> PoisonedQueryLoss:
    r"""The passage term alone (what sentence-transformers' ``MultipleNegativesRankingLoss`` trains on InF-IR rows:
    each query side against the batch's passages and hard negatives) plus the poisoned-instruction ranking term
    (ours): ``l = ℓ_P + instruction_weight · mean_k -log(1 - P(f_k | g_k))`` over the items (I-, Q+), their own hn1
    left out of the candidates (see :mod:`inf_embed.losses.poisoned_query`)."""
    return _objective_plus(("P",), 0.0, instruction_weight, **kwargs)


@register_loss("multi:P+I+IQ+IX+Q")
def multi_p_i_iq_ix_q(weight: float = 1.0, instruction_weight: float = 1.0, **kwargs: Any) -> PoisonedQueryLoss:
    r"""ℓ^multi_{P,I,IQ} plus both ranking terms (ours): the poisoned query (I+, Q-) and the poisoned instruction
    (I-, Q+) must not retrieve their record's P+; for (I-, Q+) its own passage hn1 is left out of the candidates,
    so P+ is pushed below the unrelated passages, not just below hn1 (see :mod:`inf_embed.losses.poisoned_query`)."""
    return _objective_plus(_FULL_OBJECTIVE, weight, instruction_weight, **kwargs)
