r"""The paper's P / IQ / I terms and their "uni" and "multi" compositions (paper digest §2.3, §2.4).

Notation (one global batch of N items after gathering every rank; item i is (I_i, Q_i, P_i)):

- ``q_i = enc(Q_i ⊕ I_i)``: query-side embedding, (N, d), L2-normalised;
- ``p_i = enc(P_i)``: the positive passage of item i, (N, d);
- ``h_k``: extra hard-negative passages, (H, d), candidates for every row of the P term;
- ``g_k``: extra query-side negatives (instruction-query pairs with no passage of their own, e.g. the poisoned
  query (I+, Q-) when the record has no ``hard_negative_document_2``), (G, d), candidates of the IQ term;
- ``n_{i,m} = enc(Q_i ⊕ I_{j_m})``, m = 0..M-1: instruction variants of row i, (N, M, d), ``n_{i,0}`` is the
  positive combination (the same vector as ``q_i`` for a shared encoder);
- ``V_i``: the valid variants of row i: m = 0, plus every m >= 1 whose instruction text differs from I_i and
  that is not padding (the official code's false negatives, bug B5, are masked out);
- ``s(a, b) = <a, b> / tau`` (exact ``1 / tau``, default tau = 0.05; see :mod:`inf_embed.losses.base`);
- ``D_i = {j != i : p_j = p_i}``: the other items with the same positive passage (a record and its plain-query or
  foreign-instruction copy, :func:`inf_embed.data.with_plain_queries`). The trainer encodes each distinct passage
  text once, so such items get equal rows of ``p``; equal rows are what the loss compares (a copy encoded
  separately on another rank, with dropout, is not recognised).

Score blocks (rows are items; the positive of row i is marked):

- P  ("contrast passages", p(P | I, Q)):  ``S^P[i] = [s(q_i, p_1) .. s(q_i, p_N), s(q_i, h_1) .. s(q_i, h_H)]``,
  positive at column i, columns ``j in D_i`` left out (the same passage is not a negative of itself);
- IQ ("contrast instruction+query", p(I, Q | P)): ``S^IQ[i] = [s(p_i, q_1) .. s(p_i, q_N), s(p_i, g_1) ..
  s(p_i, g_G)]``, positive at column i. Because each record's items are in the same batch, the poisoned pairs
  (I-, Q+) and (I+, Q-) of item i's record are among the q_j / g_k: this is where the paper's negative triplets
  (I-, Q+, P+) and (I+, Q-, P+) act. Columns ``j in D_i`` are left out: ``q_j`` is a positive of ``p_i`` too;
- I  ("contrast instructions", p(I | Q, P)): ``S^I[i] = [s(n_{i,m}, p_i) for m in V_i]``, positive at m = 0.

With ``CE(row, y) = -log(exp(row_y) / sum_k exp(row_k))``:

- ``uni`` concatenates the blocks of its terms into one softmax. The positive logit ``s(q_i, p_i)`` appears
  once: when P is present, the IQ block drops its column i and the I block drops its column 0; when only IQ
  and I are present, the I block drops its column 0.
- ``multi`` sums one CE per term, each with its own normaliser.

The loss is the mean over the N rows (summed over terms for ``multi``). See
:class:`inf_embed.losses.base.ContrastiveLoss` for the cross-rank gathering and the DDP gradient scale.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import Any, Literal, get_args

import torch

from inf_embed.losses.base import (
    ContrastiveLoss,
    instruction_negative_mask,
    masked_cross_entropy,
    to_instruction_ids,
)
from inf_embed.losses.registry import register_loss
from inf_embed.training.distributed import get_world_size

logger = logging.getLogger(__name__)

__all__ = ["InfIRLoss", "Mode", "Term", "instruction_block", "passage_block", "query_block", "shared_positives"]

Mode = Literal["uni", "multi"]
Term = Literal["P", "I", "IQ"]
_TERMS: tuple[str, ...] = get_args(Term)  # canonical order: P, I, IQ


def passage_block(query: torch.Tensor, passages: torch.Tensor, hard_negatives: torch.Tensor | None) -> torch.Tensor:
    """Unscaled P block: inner products of each query side with every passage.

    Args:
        query: (N, d) query-side embeddings q.
        passages: (N, d) positive passages p (row i's positive is column i).
        hard_negatives: (H, d) extra passages h, or None.

    Returns:
        (N, N + H) scores ``<q_i, p_j>`` then ``<q_i, h_k>``.
    """
    candidates = passages if hard_negatives is None else torch.cat([passages, hard_negatives], dim=0)
    return query @ candidates.T  # (N, N + H)


def query_block(query: torch.Tensor, passages: torch.Tensor, query_negatives: torch.Tensor | None) -> torch.Tensor:
    """Unscaled IQ block: inner products of each positive passage with every query side.

    Args:
        query: (N, d) query-side embeddings q (column i is row i's positive).
        passages: (N, d) positive passages p.
        query_negatives: (G, d) extra query-side embeddings g, or None.

    Returns:
        (N, N + G) scores ``<p_i, q_j>`` then ``<p_i, g_k>``.
    """
    candidates = query if query_negatives is None else torch.cat([query, query_negatives], dim=0)
    return passages @ candidates.T  # (N, N + G)


def instruction_block(variants: torch.Tensor, passages: torch.Tensor) -> torch.Tensor:
    """Unscaled I block: each row's instruction variants against the row's own positive passage.

    Args:
        variants: (N, M, d) instruction-variant embeddings n; ``n[:, 0]`` is the positive combination.
        passages: (N, d) positive passages p.

    Returns:
        (N, M) scores ``<n_{i,m}, p_i>``.
    """
    return torch.einsum("nmd,nd->nm", variants, passages)  # (N, M)


class InfIRLoss(ContrastiveLoss):
    r"""The InF-IR contrastive loss over the P, IQ and I terms, composed "uni" or "multi".

    See the module docstring for the notation and blocks. Per row i (``CE`` = cross-entropy on the listed
    candidates, ``\`` = a column removed):

    - ``uni`` over terms T: ``CE([S^P[i] ‖ S^IQ[i] \ {i} ‖ S^I[i] \ {0}], i)`` keeping the blocks in T; without
      P it is ``CE([S^IQ[i] ‖ S^I[i] \ {0}], i)``; with I alone ``CE(S^I[i], 0)``;
    - ``multi`` over terms T: ``sum_{t in T} CE(S^t[i], positive of t)``.

    The eleven named variants of the paper (``list_losses()``) are registered factories of this class; each
    factory's docstring spells out its formula.

    Call signature (all tensors of one rank; a rank without hard or query-side negatives may pass None while
    other ranks pass some)::

        loss = loss_fn(query_embeddings, passage_embeddings, instruction_variant_embeddings,
                       instruction_ids=..., instruction_variant_mask=..., hard_negative_embeddings=...,
                       query_negative_embeddings=...)

    Inputs each term needs (see :attr:`required_inputs`; do not encode what the loss does not use):

    - P: ``query_embeddings``, ``passage_embeddings``; uses ``hard_negative_embeddings`` when given.
    - IQ: ``query_embeddings``, ``passage_embeddings``; uses ``query_negative_embeddings`` when given.
    - I: ``passage_embeddings``, ``instruction_variant_embeddings``, ``instruction_ids``; uses
      ``instruction_variant_mask`` when given.

    Args:
        mode: ``"uni"`` (one softmax) or ``"multi"`` (sum of per-term InfoNCE terms).
        terms: a non-empty subset of ``{"P", "I", "IQ"}``.
        temperature: tau > 0, default 0.05; scores are ``<a, b> / tau``.
        gather_across_ranks: contrast against the items of every rank (see ``ContrastiveLoss``).

    Raises:
        ValueError: unknown mode or term, or no terms.
    """

    def __init__(
        self,
        mode: Mode = "multi",
        terms: Collection[Term] = ("P", "I"),
        temperature: float = 0.05,
        *,
        gather_across_ranks: bool = True,
    ) -> None:
        super().__init__(temperature, gather_across_ranks=gather_across_ranks)
        if mode not in get_args(Mode):
            raise ValueError(f"mode: expected one of {', '.join(get_args(Mode))}, got {mode!r}")
        if isinstance(terms, str):
            terms = tuple(terms.split("+"))
        unknown = [t for t in terms if t not in _TERMS]
        if unknown:
            raise ValueError(f"terms: unknown term(s) {unknown}; expected a subset of {', '.join(_TERMS)}")
        if not terms:
            raise ValueError(f"terms: expected at least one of {', '.join(_TERMS)}")
        self.mode: Mode = mode
        self.terms: tuple[Term, ...] = tuple(t for t in _TERMS if t in terms)  # type: ignore[misc]
        self._warned_unused: set[str] = set()

    @property
    def name(self) -> str:
        """Canonical name, e.g. ``"multi:P+I"``."""
        return f"{self.mode}:{'+'.join(self.terms)}"

    @property
    def uses_query_embeddings(self) -> bool:
        """True when a P or IQ term needs ``query_embeddings``."""
        return "P" in self.terms or "IQ" in self.terms

    @property
    def uses_instruction_variants(self) -> bool:
        """True when an I term needs ``instruction_variant_embeddings`` and ``instruction_ids``."""
        return "I" in self.terms

    @property
    def uses_hard_negatives(self) -> bool:
        """True when ``hard_negative_embeddings`` are used (P term)."""
        return "P" in self.terms

    @property
    def uses_query_negatives(self) -> bool:
        """True when ``query_negative_embeddings`` are used (IQ term)."""
        return "IQ" in self.terms

    @property
    def required_inputs(self) -> frozenset[str]:
        """Names of the ``forward`` arguments that must be given (optional extras are not listed)."""
        needed = {"passage_embeddings"}
        if self.uses_query_embeddings:
            needed.add("query_embeddings")
        if self.uses_instruction_variants:
            needed |= {"instruction_variant_embeddings", "instruction_ids"}
        return frozenset(needed)

    def get_config_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "terms": list(self.terms), **super().get_config_dict()}

    def forward(
        self,
        query_embeddings: torch.Tensor | None,
        passage_embeddings: torch.Tensor,
        instruction_variant_embeddings: torch.Tensor | None = None,
        *,
        instruction_ids: torch.Tensor | Sequence[Sequence[str]] | None = None,
        instruction_variant_mask: torch.Tensor | None = None,
        hard_negative_embeddings: torch.Tensor | None = None,
        query_negative_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Compute the loss of this rank's items against the global batch.

        Embeddings are expected L2-normalised (the loss does not normalise). Scores are computed in float32
        (float64 for float64 inputs).

        Args:
            query_embeddings: (N, d) ``q_i = enc(Q_i ⊕ I_i)``; may be None when the loss has no P or IQ term.
            passage_embeddings: (N, d) ``p_i``, the positive passage of row i.
            instruction_variant_embeddings: (N, M, d) ``n_{i,m} = enc(Q_i ⊕ I_{j_m})`` with ``n[:, 0]`` the
                positive combination; required by the I term.
            instruction_ids: (N, M) integer ids of the instruction in each variant (equal text, equal id), or N
                sequences of M instruction texts; required by the I term. A variant ``m >= 1`` whose id equals
                column 0's is masked out (bug B5).
            instruction_variant_mask: (N, M) bool, False for padding variants; None means all are real.
            hard_negative_embeddings: (H, d) extra negative passages, candidates for every row of the P term.
            query_negative_embeddings: (G, d) extra query-side negatives (no passage of their own),
                candidates for every row of the IQ term.

        Returns:
            Scalar loss: the mean over the global batch's rows. Under DDP its value is the global loss and its
            gradient is scaled by the world size (see ``ContrastiveLoss``).

        Raises:
            ValueError: a required input is missing, or shapes disagree (the message names the argument).
        """
        q, p, n, hard, qneg = self._check_inputs(
            query_embeddings,
            passage_embeddings,
            instruction_variant_embeddings,
            hard_negative_embeddings,
            query_negative_embeddings,
        )
        valid_variants = None
        if n is not None:
            valid_variants = self._variant_validity(n, instruction_ids, instruction_variant_mask)  # (N_r, M)

        # Global batch: this rank's slices keep their gradient; other ranks' are constants. Every rank must make
        # the same collectives, so an optional input this loss uses is gathered even when this rank has none.
        if self.gather_across_ranks and get_world_size() > 1:
            if self.uses_hard_negatives and hard is None:
                hard = p.new_zeros((0, p.shape[1]))
            if self.uses_query_negatives and qneg is None:
                qneg = p.new_zeros((0, p.shape[1]))
        q = self.gather(q)
        p = self.gather(p)
        n = self.gather(n)
        valid_variants = self.gather(valid_variants)
        hard = self.gather(hard)
        qneg = self.gather(qneg)

        compute_dtype = torch.promote_types(p.dtype, torch.float32)
        q, n, hard, qneg = (_cast(t, compute_dtype) for t in (q, n, hard, qneg))
        p = p.to(compute_dtype)
        rows = p.shape[0]
        diagonal = torch.arange(rows, device=p.device)
        shared = shared_positives(p)  # (N, N) or None: the D_i of the module docstring

        blocks: dict[str, torch.Tensor] = {}
        if "P" in self.terms:
            blocks["P"] = passage_block(q, p, hard) * self.scale  # (N, N + H)
        if "IQ" in self.terms:
            blocks["IQ"] = query_block(q, p, qneg) * self.scale  # (N, N + G)
        if "I" in self.terms:
            blocks["I"] = instruction_block(n, p) * self.scale  # (N, M)

        if self.mode == "multi":
            per_row = self._multi_rows(blocks, valid_variants, diagonal, shared)
        else:
            per_row = self._uni_rows(blocks, valid_variants, diagonal, shared)
        return self.scale_for_ddp(per_row.mean())

    def _variant_validity(
        self,
        variants: torch.Tensor,
        instruction_ids: torch.Tensor | Sequence[Sequence[str]] | None,
        variant_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """(N_r, M) bool: which instruction variants take part (column 0, real and distinct from the own)."""
        if instruction_ids is None:
            raise ValueError(
                f"instruction_ids is required by loss {self.name!r} (I term): without them an in-batch "
                "instruction equal to the row's own cannot be masked out (bug B5)"
            )
        rows, columns = variants.shape[:2]
        ids = to_instruction_ids(instruction_ids, rows, columns, variants.device)
        if variant_mask is not None:
            if tuple(variant_mask.shape) != (rows, columns):
                raise ValueError(
                    f"instruction_variant_mask has shape {tuple(variant_mask.shape)}; expected ({rows}, {columns}) "
                    "to match instruction_variant_embeddings"
                )
            variant_mask = variant_mask.to(device=variants.device, dtype=torch.bool)
        return instruction_negative_mask(ids, variant_mask)

    def _multi_rows(
        self,
        blocks: dict[str, torch.Tensor],
        valid_variants: torch.Tensor | None,
        diagonal: torch.Tensor,
        shared: torch.Tensor | None,
    ) -> torch.Tensor:
        """Sum of one InfoNCE per term, each with its own normaliser. Returns (N,) losses."""
        per_row = torch.zeros_like(diagonal, dtype=next(iter(blocks.values())).dtype)
        for term, logits in blocks.items():
            if term == "I":
                per_row = per_row + masked_cross_entropy(logits, torch.zeros_like(diagonal), valid_variants)
            else:
                per_row = per_row + masked_cross_entropy(logits, diagonal, _without_shared(logits, shared))
        return per_row

    def _uni_rows(
        self,
        blocks: dict[str, torch.Tensor],
        valid_variants: torch.Tensor | None,
        diagonal: torch.Tensor,
        shared: torch.Tensor | None,
    ) -> torch.Tensor:
        """One softmax over the concatenated blocks; the positive logit kept once. Returns (N,) losses."""
        logits: list[torch.Tensor] = []
        valid: list[torch.Tensor] = []
        has_anchor_block = False  # a P or IQ block already holds the positive at column i
        for term in ("P", "IQ"):
            if term not in blocks:
                continue
            block = blocks[term]
            keep = _without_shared(block, shared)
            if keep is None:
                keep = torch.ones_like(block, dtype=torch.bool)
            if has_anchor_block:
                keep[diagonal, diagonal] = False  # s(p_i, q_i) == s(q_i, p_i): already the P positive
            has_anchor_block = True
            logits.append(block)
            valid.append(keep)
        if "I" in blocks:
            assert valid_variants is not None  # internal invariant: I block implies its mask
            block, keep = blocks["I"], valid_variants.clone()
            if has_anchor_block:
                keep[:, 0] = False  # n_{i,0} is the positive combination, already present as q_i
            logits.append(block)
            valid.append(keep)
        target = diagonal if has_anchor_block else torch.zeros_like(diagonal)
        return masked_cross_entropy(torch.cat(logits, dim=1), target, torch.cat(valid, dim=1))

    def _check_inputs(
        self,
        query: torch.Tensor | None,
        passages: torch.Tensor,
        variants: torch.Tensor | None,
        hard_negatives: torch.Tensor | None,
        query_negatives: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Validate shapes; drop (with one warning each) optional inputs this loss does not use."""
        if not isinstance(passages, torch.Tensor) or passages.dim() != 2:
            raise ValueError(f"passage_embeddings: expected a (N, d) tensor, got {_describe(passages)}")
        rows, dim = passages.shape
        if not passages.dtype.is_floating_point:
            raise ValueError(f"passage_embeddings: expected a floating dtype, got {passages.dtype}")
        if self.uses_query_embeddings:
            if query is None:
                raise ValueError(f"query_embeddings is required by loss {self.name!r} (P or IQ term)")
            if not isinstance(query, torch.Tensor) or tuple(query.shape) != (rows, dim):
                raise ValueError(
                    f"query_embeddings: expected shape ({rows}, {dim}) to match passage_embeddings, "
                    f"got {_describe(query)}"
                )
        else:
            query = self._unused(query, "query_embeddings", "has no P or IQ term")
        if self.uses_instruction_variants:
            if variants is None:
                raise ValueError(f"instruction_variant_embeddings is required by loss {self.name!r} (I term)")
            if not isinstance(variants, torch.Tensor) or variants.dim() != 3 or variants.shape[0] != rows:
                raise ValueError(
                    f"instruction_variant_embeddings: expected shape ({rows}, M, {dim}), got {_describe(variants)}"
                )
            if variants.shape[1] < 1 or variants.shape[2] != dim:
                raise ValueError(
                    f"instruction_variant_embeddings: expected shape ({rows}, M >= 1, {dim}), got {_describe(variants)}"
                )
        else:
            variants = self._unused(variants, "instruction_variant_embeddings", "has no I term")
        if self.uses_hard_negatives:
            _check_extra(hard_negatives, "hard_negative_embeddings", dim)
        else:
            hard_negatives = self._unused(hard_negatives, "hard_negative_embeddings", "has no P term")
        if self.uses_query_negatives:
            _check_extra(query_negatives, "query_negative_embeddings", dim)
        else:
            query_negatives = self._unused(query_negatives, "query_negative_embeddings", "has no IQ term")
        return query, passages, variants, hard_negatives, query_negatives

    def _unused(self, value: torch.Tensor | None, argument: str, reason: str) -> None:
        """Warn once per argument that a given input is ignored (it was encoded for nothing)."""
        if value is not None and argument not in self._warned_unused:
            self._warned_unused.add(argument)
            logger.warning("%s given but loss %r %s; it is ignored (no need to encode it)", argument, self.name, reason)
        return None


def shared_positives(passages: torch.Tensor) -> torch.Tensor | None:
    """Which items share their positive passage with another item.

    Args:
        passages: (N, d) positive passages, one row per item.

    Returns:
        (N, N) bool, True at (i, j) for j != i with row j equal to row i (exact equality: the trainer encodes a
        passage text once, so items with the same passage get the same row); None when no two rows are equal.
    """
    with torch.no_grad():
        _, ids = torch.unique(passages.detach(), dim=0, return_inverse=True)  # (N,) equal rows, equal id
        if int(ids.max()) + 1 == ids.numel():
            return None
        equal = ids.unsqueeze(0) == ids.unsqueeze(1)  # (N, N)
        equal.fill_diagonal_(False)
    return equal


def _without_shared(block: torch.Tensor, shared: torch.Tensor | None) -> torch.Tensor | None:
    """(N, C) validity of a P or IQ block: its first N columns masked where the item shares row i's passage."""
    if shared is None:
        return None
    keep = torch.ones_like(block, dtype=torch.bool)
    keep[:, : shared.shape[1]] = ~shared
    return keep


def _cast(value: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if value is None else value.to(dtype)


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"shape {tuple(value.shape)}"
    return type(value).__name__


def _check_extra(value: torch.Tensor | None, argument: str, dim: int) -> None:
    if value is None:
        return
    if not isinstance(value, torch.Tensor) or value.dim() != 2 or value.shape[1] != dim:
        raise ValueError(f"{argument}: expected a (K, {dim}) tensor, got {_describe(value)}")


# --------------------------------------------------------------------------------------------------------------
# The eleven variants of the paper's table (digest §2.4), registered by name. Shared options: temperature
# (default 0.05), gather_across_ranks (default True). Notation: see the module docstring; sums over j run over
# the N gathered items, over k over the extra candidates (h: hard-negative passages, g: query-side negatives),
# over m over the valid instruction variants V_i.
# --------------------------------------------------------------------------------------------------------------


@register_loss("uni:P")
def uni_p(**kwargs: Any) -> InfIRLoss:
    r"""ℓ^uni_P, contrast passages (code ``basic/qk``):

    ``l_i = -log e^{s(q_i,p_i)} / (Σ_j e^{s(q_i,p_j)} + Σ_k e^{s(q_i,h_k)})``.
    """
    return InfIRLoss("uni", ("P",), **kwargs)


@register_loss("uni:IQ")
def uni_iq(**kwargs: Any) -> InfIRLoss:
    r"""ℓ^uni_IQ, contrast instruction+query sides (code ``basic/kq``):

    ``l_i = -log e^{s(p_i,q_i)} / (Σ_j e^{s(p_i,q_j)} + Σ_k e^{s(p_i,g_k)})``.
    """
    return InfIRLoss("uni", ("IQ",), **kwargs)


@register_loss("uni:I")
def uni_i(**kwargs: Any) -> InfIRLoss:
    r"""ℓ^uni_I, contrast instructions (code ``map/only_neg``):

    ``l_i = -log e^{s(n_{i,0},p_i)} / Σ_{m∈V_i} e^{s(n_{i,m},p_i)}``.
    """
    return InfIRLoss("uni", ("I",), **kwargs)


@register_loss("uni:P+IQ")
def uni_p_iq(**kwargs: Any) -> InfIRLoss:
    r"""ℓ^uni_{P,IQ}, one softmax over 2N-1 (+H+G) candidates (code ``basic/no_trick``):

    ``l_i = -log e^{s(q_i,p_i)} / (Σ_j e^{s(q_i,p_j)} + Σ_k e^{s(q_i,h_k)} + Σ_{j≠i} e^{s(p_i,q_j)}
    + Σ_k e^{s(p_i,g_k)})``.
    """
    return InfIRLoss("uni", ("P", "IQ"), **kwargs)


@register_loss("uni:P+I")
def uni_p_i(**kwargs: Any) -> InfIRLoss:
    r"""ℓ^uni_{P,I} (code ``map/qk_with_neg``):

    ``l_i = -log e^{s(q_i,p_i)} / (Σ_j e^{s(q_i,p_j)} + Σ_k e^{s(q_i,h_k)} + Σ_{m∈V_i, m≥1} e^{s(n_{i,m},p_i)})``.
    """
    return InfIRLoss("uni", ("P", "I"), **kwargs)


@register_loss("uni:I+IQ")
def uni_i_iq(**kwargs: Any) -> InfIRLoss:
    r"""ℓ^uni_{I,IQ} (code ``map/kq_with_neg``):

    ``l_i = -log e^{s(p_i,q_i)} / (Σ_j e^{s(p_i,q_j)} + Σ_k e^{s(p_i,g_k)} + Σ_{m∈V_i, m≥1} e^{s(n_{i,m},p_i)})``.
    """
    return InfIRLoss("uni", ("I", "IQ"), **kwargs)


@register_loss("uni:P+I+IQ")
def uni_p_i_iq(**kwargs: Any) -> InfIRLoss:
    r"""ℓ^uni_{P,I,IQ} (code ``map/no_trick_with_neg``):

    ``l_i = -log e^{s(q_i,p_i)} / (Σ_j e^{s(q_i,p_j)} + Σ_k e^{s(q_i,h_k)} + Σ_{j≠i} e^{s(p_i,q_j)}
    + Σ_k e^{s(p_i,g_k)} + Σ_{m∈V_i, m≥1} e^{s(n_{i,m},p_i)})``.
    """
    return InfIRLoss("uni", ("P", "I", "IQ"), **kwargs)


@register_loss("multi:P+IQ")
def multi_p_iq(**kwargs: Any) -> InfIRLoss:
    r"""ℓ^multi_{P,IQ}, symmetric InfoNCE (code ``basic_add/no_trick``):

    ``l_i = -log e^{s(q_i,p_i)} / (Σ_j e^{s(q_i,p_j)} + Σ_k e^{s(q_i,h_k)})
    - log e^{s(p_i,q_i)} / (Σ_j e^{s(p_i,q_j)} + Σ_k e^{s(p_i,g_k)})``.
    """
    return InfIRLoss("multi", ("P", "IQ"), **kwargs)


@register_loss("multi:P+I")
def multi_p_i(**kwargs: Any) -> InfIRLoss:
    r"""ℓ^multi_{P,I}, the paper's best loss (code ``map_add/qk_with_neg``):

    ``l_i = -log e^{s(q_i,p_i)} / (Σ_j e^{s(q_i,p_j)} + Σ_k e^{s(q_i,h_k)})
    - log e^{s(n_{i,0},p_i)} / Σ_{m∈V_i} e^{s(n_{i,m},p_i)}``.
    """
    return InfIRLoss("multi", ("P", "I"), **kwargs)


@register_loss("multi:I+IQ")
def multi_i_iq(**kwargs: Any) -> InfIRLoss:
    r"""ℓ^multi_{I,IQ} (code ``map_add/kq_with_neg``):

    ``l_i = -log e^{s(p_i,q_i)} / (Σ_j e^{s(p_i,q_j)} + Σ_k e^{s(p_i,g_k)})
    - log e^{s(n_{i,0},p_i)} / Σ_{m∈V_i} e^{s(n_{i,m},p_i)}``.
    """
    return InfIRLoss("multi", ("I", "IQ"), **kwargs)


@register_loss("multi:P+I+IQ")
def multi_p_i_iq(**kwargs: Any) -> InfIRLoss:
    r"""ℓ^multi_{P,I,IQ} (code ``map_add/no_trick_with_neg``):

    ``l_i = -log e^{s(q_i,p_i)} / (Σ_j e^{s(q_i,p_j)} + Σ_k e^{s(q_i,h_k)})
    - log e^{s(p_i,q_i)} / (Σ_j e^{s(p_i,q_j)} + Σ_k e^{s(p_i,g_k)})
    - log e^{s(n_{i,0},p_i)} / Σ_{m∈V_i} e^{s(n_{i,m},p_i)}``.
    """
    return InfIRLoss("multi", ("P", "I", "IQ"), **kwargs)
