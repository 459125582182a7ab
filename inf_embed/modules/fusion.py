"""Instruction fusions: how an instruction conditions a query embedding, registered by name.

A fusion acts at two points of the query path:

1. ``compose_text(query, instruction)`` runs before tokenisation. ``concat`` (and ``anchored``, ``gated``) join
   the texts here; the others return the query unchanged.
2. ``forward(...)`` runs after the backbone. ``attention`` mixes the separately encoded instruction and query
   token states through :func:`inf_embed.ops.iq_attention_pool`; ``residual`` adds a learned projection of the
   instruction content the query tokens attend to (same op) to the pooled query; the others return the pooled
   query.

Only fusions with ``encodes_instruction = True`` get instruction token states, so the engine encodes
instructions only when they are used. ``anchored`` and ``gated`` (``anchors_query = True``) also get the query
encoded alone, and ``gated`` (``gates_on_instruction = True``) the instruction encoded alone; their ``anchor(...)``
combines these with the joined text's embedding.

``conditioned`` (``pairs_text = True``) works differently: query and instruction are tokenised together as a text
pair, ``tokenizer(query, instruction)``, so the backbone's self-attention lets the instruction shape the query
tokens' states, and ``pool_pair(...)`` replaces pooling + ``forward``: it pools the query segment, with the
instruction segment's tokens down-weighted by ``config.instruction_weight``.
"""

from __future__ import annotations

from typing import ClassVar, NoReturn

import torch
from torch import Tensor, nn

from inf_embed.config import InfEmbedConfig
from inf_embed.modules.pooling import cls_pooling, masked_weighted_mean

_FUSIONS: dict[str, type[Fusion]] = {}


def register_fusion(name: str):
    """Class decorator registering a :class:`Fusion` subclass under ``name``."""

    def decorator(cls: type[Fusion]) -> type[Fusion]:
        if name in _FUSIONS:
            raise ValueError(f"fusion {name!r} is already registered")
        cls.name = name
        _FUSIONS[name] = cls
        return cls

    return decorator


def list_fusions() -> list[str]:
    """Names of the registered fusions."""
    return sorted(_FUSIONS)


def get_fusion(name: str) -> type[Fusion]:
    """Return the fusion class registered as ``name``; unknown names list the valid ones."""
    try:
        return _FUSIONS[name]
    except KeyError:
        raise ValueError(f"unknown fusion {name!r}; expected one of {list_fusions()}") from None


def has_instruction_text(instruction: str | None) -> bool:
    """Whether an instruction carries text; ``None``, ``""`` and whitespace mean "no instruction"."""
    return instruction is not None and bool(instruction.strip())


def _attention_scale(config: InfEmbedConfig, hidden_size: int) -> float:
    """Softmax scale of the instruction-query attention: the configured one, else 1/sqrt(hidden size)."""
    return config.attention_scale if config.attention_scale is not None else hidden_size**-0.5


def _pair_rows(
    pooled_query: Tensor, instruction_index: Tensor | None, query_index: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Per (query, instruction) pair: the pooled query (P, d), the instruction row (P,) clamped to >= 0, and
    whether the pair has an instruction row at all (P,) bool (index -1 means none)."""
    pooled = pooled_query if query_index is None else pooled_query[query_index]
    if instruction_index is None:
        instruction_index = torch.arange(pooled.shape[0], device=pooled.device)
    return pooled, instruction_index.clamp(min=0), instruction_index >= 0


def _check_fusion_inputs(
    name: str,
    hidden_size: int,
    query_tokens: Tensor,
    query_mask: Tensor,
    pooled_query: Tensor,
    instruction_tokens: Tensor,
    instruction_mask: Tensor,
    instruction_index: Tensor | None,
    query_index: Tensor | None,
) -> None:
    """Shapes of :meth:`Fusion.forward`'s arguments, checked before any indexing: a wrong batch size would otherwise
    be silently truncated by ``instruction_tokens[rows]`` or reported under the op's own argument names.

    Raises:
        ValueError: naming the first inconsistent argument.
    """

    def fail(message: str) -> NoReturn:
        raise ValueError(f"fusion {name!r}: {message}")

    for arg, t in (("query_tokens", query_tokens), ("instruction_tokens", instruction_tokens)):
        if t.dim() != 3:
            fail(f"{arg} must be 3-D (batch, length, hidden), got shape {tuple(t.shape)}")
    batch_q, len_q, dim = query_tokens.shape
    num_instr, len_i, dim_i = instruction_tokens.shape
    if dim != hidden_size:  # the attention scale and the projection are sized for hidden_size
        fail(f"query_tokens has hidden size {dim}, but the fusion was built for hidden_size={hidden_size}")
    if dim_i != dim:
        fail(f"instruction_tokens has hidden size {dim_i}, but query_tokens has {dim}")
    if tuple(query_mask.shape) != (batch_q, len_q):
        fail(f"query_mask must have shape {(batch_q, len_q)} to match query_tokens, got {tuple(query_mask.shape)}")
    if tuple(pooled_query.shape) != (batch_q, dim):
        fail(f"pooled_query must have shape {(batch_q, dim)} to match query_tokens, got {tuple(pooled_query.shape)}")
    if tuple(instruction_mask.shape) != (num_instr, len_i):
        fail(
            f"instruction_mask must have shape {(num_instr, len_i)} to match instruction_tokens, "
            f"got {tuple(instruction_mask.shape)}"
        )
    if query_index is not None and query_index.dim() != 1:
        fail(f"query_index must be 1-D (one query row per pair), got shape {tuple(query_index.shape)}")
    pairs = batch_q if query_index is None else query_index.shape[0]
    if instruction_index is None:
        if num_instr != pairs:
            fail(
                f"instruction_tokens has {num_instr} rows but there are {pairs} pairs; pass instruction_index "
                f"(shape ({pairs},)) to pair them"
            )
    elif tuple(instruction_index.shape) != (pairs,):
        fail(f"instruction_index must have shape ({pairs},) (one row per pair), got {tuple(instruction_index.shape)}")


def _instruction_pairs(
    name: str,
    hidden_size: int,
    query_tokens: Tensor,
    query_mask: Tensor,
    pooled_query: Tensor,
    instruction_tokens: Tensor | None,
    instruction_mask: Tensor | None,
    instruction_index: Tensor | None,
    query_index: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, bool]:
    """The attention fusions' common start: :func:`_pair_rows` plus whether there is anything to fuse.

    Returns ``(pooled (P, d), rows (P,), has_row (P,) bool, fuse)``; ``fuse`` is False when no instruction states
    were given or there are none (U = 0), and the fusion then returns ``pooled`` as it is. Inputs are checked
    (:func:`_check_fusion_inputs`) whenever instruction states are given.
    """
    pooled, rows, has_row = _pair_rows(pooled_query, instruction_index, query_index)
    if instruction_tokens is None or instruction_mask is None:
        return pooled, rows, has_row, False
    _check_fusion_inputs(
        name, hidden_size, query_tokens, query_mask, pooled_query, instruction_tokens, instruction_mask,
        instruction_index, query_index,
    )  # fmt: skip
    if instruction_tokens.shape[0] == 0:  # no instruction at all: every index must be -1
        _check_no_instruction_rows(name, has_row)
        return pooled, rows, has_row, False
    return pooled, rows, has_row, True


def _check_no_instruction_rows(name: str, has_row: Tensor) -> None:
    """With no instruction rows at all (U = 0), an instruction_index other than -1 points at nothing."""
    if not torch.compiler.is_compiling() and bool(has_row.any()):
        raise ValueError(f"fusion {name!r}: instruction_tokens has 0 rows but instruction_index is not all -1")


class Fusion(nn.Module):
    """Base class: no instruction effect. Subclasses override ``compose_text`` and/or ``forward``."""

    name: ClassVar[str] = ""
    encodes_instruction: ClassVar[bool] = False
    joins_text: ClassVar[bool] = False  # compose_text joins query and instruction (token budget of both)
    anchors_query: ClassVar[bool] = False  # also encodes the query alone (see AnchoredFusion.anchor)
    gates_on_instruction: ClassVar[bool] = False  # also encodes the instruction alone (see GatedFusion.anchor)
    pairs_text: ClassVar[bool] = False

    def __init__(self, config: InfEmbedConfig, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size

    def compose_text(self, query: str, instruction: str | None) -> str:
        """Text that the backbone encodes for one query."""
        return query

    def forward(
        self,
        query_tokens: Tensor,
        query_mask: Tensor,
        pooled_query: Tensor,
        instruction_tokens: Tensor | None = None,
        instruction_mask: Tensor | None = None,
        instruction_index: Tensor | None = None,
        query_index: Tensor | None = None,
    ) -> Tensor:
        """Fuse instructions into query embeddings, one output row per (query, instruction) pair.

        Args:
            query_tokens: (Bq, Lq, d) backbone states of the distinct query texts.
            query_mask: (Bq, Lq) int or bool.
            pooled_query: (Bq, d) the queries pooled with the model's pooling (the un-instructed embeddings).
            instruction_tokens: (U, Li, d) states of the distinct instructions, or None (no instructions).
            instruction_mask: (U, Li) int or bool.
            instruction_index: (P,) int64 instruction row of each pair; -1 means "no instruction". None pairs
                row p with instruction p.
            query_index: (P,) int64 query row of each pair, so one query can be paired with several instructions
                without copying its states. None pairs row p with query p.

        Returns:
            (P, d) query embeddings (P = Bq when both indices are None).
        """
        return pooled_query if query_index is None else pooled_query[query_index]

    def pool_pair(self, token_states: Tensor, attention_mask: Tensor, instruction_segment: Tensor) -> Tensor:
        """Pool jointly encoded (query, instruction) pairs; only fusions with ``pairs_text = True`` do."""
        raise TypeError(f"fusion {self.name!r} does not encode (query, instruction) text pairs")

    def anchor(
        self, joined: Tensor, query: Tensor, has_instruction: Tensor, instruction: Tensor | None = None
    ) -> Tensor:
        """Combine the joined text's embedding with the query (and instruction) encoded alone; only fusions with
        ``anchors_query = True`` do.

        Args:
            joined: (P, d) pooled ``compose_text(query, instruction)`` states.
            query: (P, d) pooled query-alone states.
            has_instruction: (P,) bool; rows without instruction keep ``joined`` (which is then the query).
            instruction: (P, d) pooled instruction-alone states (any values on rows without instruction), given
                to fusions with ``gates_on_instruction = True``; None otherwise.

        Returns:
            (P, d) embeddings.
        """
        raise TypeError(f"fusion {self.name!r} does not combine the joined text with the query encoded alone")


@register_fusion("none")
class NoFusion(Fusion):
    """The instruction is ignored: the query embedding is the pooled query."""


@register_fusion("concat")
class ConcatFusion(Fusion):
    """Instruction and query become one text, ``concat_template.format(query=..., instruction=...)``.

    Without an instruction the text is the query alone, so an un-instructed query embeds exactly like
    ``encode`` of the same text.
    """

    joins_text: ClassVar[bool] = True

    def __init__(self, config: InfEmbedConfig, hidden_size: int) -> None:
        super().__init__(config, hidden_size)
        self.template = config.concat_template

    def compose_text(self, query: str, instruction: str | None) -> str:
        if not has_instruction_text(instruction):
            return query
        return self.template.format(query=query, instruction=instruction)


@register_fusion("anchored")
class AnchoredFusion(ConcatFusion):
    """``concat`` plus the query encoded alone: ``e = n(pool(Q ⊕ I)) + query_weight · n(pool(Q))``, n = L2 norm.

    Joining a long instruction to a short query lets the instruction dominate the joined text's embedding, so a
    changed query barely moves it (the query "drowns"). The separately encoded query is an anchor that keeps the
    query's own topic in the embedding; the joined text still carries what the instruction asks for. Both parts
    come from the same backbone, so the fusion has no parameters; ``query_weight`` is chosen by measurement.

    A query without instruction gets the plain pooled query, as with every fusion.
    """

    anchors_query: ClassVar[bool] = True

    def __init__(self, config: InfEmbedConfig, hidden_size: int) -> None:
        super().__init__(config, hidden_size)
        self.query_weight = float(config.query_weight)

    def anchor(
        self, joined: Tensor, query: Tensor, has_instruction: Tensor, instruction: Tensor | None = None
    ) -> Tensor:
        """Mix the joined-text and query-alone embeddings of instructed rows (arguments: :meth:`Fusion.anchor`;
        ``instruction`` is unused)."""
        normalize = nn.functional.normalize
        mixed = normalize(joined, dim=-1) + self.query_weight * normalize(query, dim=-1)
        return torch.where(has_instruction.unsqueeze(1), mixed.to(joined.dtype), joined)


@register_fusion("gated")
class GatedFusion(ConcatFusion):
    """``concat``, falling back to the query alone when the instruction does not fit the query.

    ``e = pool(Q ⊕ I)`` if ``cos(pool(Q), pool(I)) >= gate_threshold`` else ``pool(Q)``, where ``pool(Q)`` and
    ``pool(I)`` encode the query and the instruction each alone. A joined text is dominated by a long instruction
    (on InF-IR dev the trained ``concat`` embedding has cosine ~0.96 with the instruction alone), so when one
    instruction is applied to a query it does not describe, ``concat`` retrieves what the instruction describes
    and ignores the query. The gate keeps the query in charge of the topic in that case; an instruction that fits
    its query is used exactly as ``concat`` uses it. The gate has no parameters; ``gate_threshold`` is chosen by
    measurement (BENCHMARKS.md). The selection is a hard switch per row: gradients flow through the selected
    branch only.

    A query without instruction gets the plain pooled query, as with every fusion.
    """

    anchors_query: ClassVar[bool] = True
    gates_on_instruction: ClassVar[bool] = True

    def __init__(self, config: InfEmbedConfig, hidden_size: int) -> None:
        super().__init__(config, hidden_size)
        self.gate_threshold = float(config.gate_threshold)

    def fits(self, query: Tensor, instruction: Tensor) -> Tensor:
        """(P,) bool: whether each instruction fits its query, ``cos(query, instruction) >= gate_threshold``.

        Args:
            query: (P, d) pooled query-alone states.
            instruction: (P, d) pooled instruction-alone states.
        """
        cosine = nn.functional.cosine_similarity(query.float(), instruction.float(), dim=-1)
        return cosine >= self.gate_threshold

    def anchor(
        self, joined: Tensor, query: Tensor, has_instruction: Tensor, instruction: Tensor | None = None
    ) -> Tensor:
        """Keep the joined-text embedding where the instruction fits, else take the query alone (arguments:
        :meth:`Fusion.anchor`; ``instruction`` is required)."""
        if instruction is None:
            raise ValueError("fusion 'gated' needs the instructions encoded alone (instruction=None)")
        keep = ~has_instruction | self.fits(query, instruction)
        return torch.where(keep.unsqueeze(1), joined, query.to(joined.dtype))


@register_fusion("attention")
class AttentionFusion(Fusion):
    """The paper's instruction-query attention (InF-Embed Eq. 4), with no parameters.

    Each instruction token attends over the query tokens, ``A = softmax_q(H_I H_Qᵀ · scale)``, and the rows of
    ``A H_Q`` are mean-pooled over the instruction tokens. The result lies in the convex hull of the query token
    states: the instruction re-weights query tokens and cannot add content. One op,
    :func:`inf_embed.ops.iq_attention_pool`, serves training and inference, so the two cannot mask differently
    (the official code's -1e8 / -1e-8 bug).

    A query without instruction (``None``, empty or whitespace) gets the plain pooled query, exactly what
    ``encode_document`` gives for the same text.
    """

    encodes_instruction: ClassVar[bool] = True

    def __init__(self, config: InfEmbedConfig, hidden_size: int) -> None:
        super().__init__(config, hidden_size)
        self.scale = _attention_scale(config, hidden_size)

    def forward(
        self,
        query_tokens: Tensor,
        query_mask: Tensor,
        pooled_query: Tensor,
        instruction_tokens: Tensor | None = None,
        instruction_mask: Tensor | None = None,
        instruction_index: Tensor | None = None,
        query_index: Tensor | None = None,
    ) -> Tensor:
        pooled, rows, has_row, fuse = _instruction_pairs(
            self.name, self.hidden_size, query_tokens, query_mask, pooled_query, instruction_tokens,
            instruction_mask, instruction_index, query_index,
        )  # fmt: skip
        if not fuse:
            return pooled
        from inf_embed.ops import iq_attention_pool

        x_states = instruction_tokens[rows]  # (P, Li, d)
        x_mask = instruction_mask[rows].bool() & has_row.unsqueeze(1)  # (P, Li)
        fused = iq_attention_pool(x_states, x_mask, query_tokens, query_mask, self.scale, y_index=query_index)
        has_instruction = x_mask.any(dim=1, keepdim=True)  # (P, 1)
        return torch.where(has_instruction, fused.to(pooled.dtype), pooled)


@register_fusion("residual")
class ResidualFusion(Fusion):
    """Pooled query plus a learned projection of instruction content pulled in by the query tokens.

    ``e = pooled_query + W · iq_attention_pool(x=query tokens, y=instruction tokens)``: each query token attends
    over the instruction tokens, the attended rows are mean-pooled over the query tokens, and ``W`` (a bias-free
    ``d × d`` linear map, initialised to zero) decides how much of that instruction content enters the embedding.
    Unlike ``attention`` the instruction can add content outside the query's token states, while the residual
    path keeps the query itself. With ``W = 0`` (untrained) the model equals its backbone.

    A query without instruction (``None``, empty or whitespace, or an index of -1) gets the plain pooled query.
    """

    encodes_instruction: ClassVar[bool] = True

    def __init__(self, config: InfEmbedConfig, hidden_size: int) -> None:
        super().__init__(config, hidden_size)
        self.scale = _attention_scale(config, hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size, bias=False)
        nn.init.zeros_(self.proj.weight)

    def forward(
        self,
        query_tokens: Tensor,
        query_mask: Tensor,
        pooled_query: Tensor,
        instruction_tokens: Tensor | None = None,
        instruction_mask: Tensor | None = None,
        instruction_index: Tensor | None = None,
        query_index: Tensor | None = None,
    ) -> Tensor:
        pooled, rows, has_row, fuse = _instruction_pairs(
            self.name, self.hidden_size, query_tokens, query_mask, pooled_query, instruction_tokens,
            instruction_mask, instruction_index, query_index,
        )  # fmt: skip
        if not fuse:
            return pooled
        from inf_embed.ops import iq_attention_pool

        x_states = query_tokens if query_index is None else query_tokens[query_index]  # (P, Lq, d)
        x_mask = query_mask if query_index is None else query_mask[query_index]  # (P, Lq)
        attended = iq_attention_pool(x_states, x_mask, instruction_tokens, instruction_mask, self.scale, y_index=rows)
        has_instruction = has_row.unsqueeze(1) & instruction_mask[rows].bool().any(dim=1, keepdim=True)  # (P, 1)
        fused = pooled + self.proj(attended.to(self.proj.weight.dtype)).to(pooled.dtype)
        return torch.where(has_instruction, fused, pooled)


@register_fusion("conditioned")
class ConditionedFusion(Fusion):
    """Instruction-conditioned query pooling over the jointly encoded pair ``tokenizer(query, instruction)``.

    The backbone sees ``[CLS] query [SEP] instruction [SEP]`` (BERT; other tokenizers use their own pair format),
    so every query token state is contextualised by the instruction. The embedding pools the query segment
    ([CLS], the query tokens and the separator after them); the instruction segment (its tokens and the special
    tokens after them) enters with weight ``config.instruction_weight``:

    * ``pooling="mean"``: ``e = sum_t w_t h_t / sum_t w_t`` with ``w_t = mask_t`` on the query segment and
      ``mask_t * instruction_weight`` on the instruction segment (``instruction_weight = 1`` is the mean over the
      whole pair);
    * ``pooling="cls"``: the first real token's state (the [CLS] of a left-padded row too);
    * ``pooling="last"`` is rejected: a causal decoder's last query token cannot see the instruction after it.

    A query without instruction (``None``, empty or whitespace) is tokenised alone and gets the plain pooled
    query, exactly what ``encode_document`` gives for the same text. No parameters.
    """

    pairs_text: ClassVar[bool] = True

    def __init__(self, config: InfEmbedConfig, hidden_size: int) -> None:
        super().__init__(config, hidden_size)
        if config.pooling == "last":
            raise ValueError(
                "fusion 'conditioned' cannot use pooling='last': with a causal decoder the last query token does "
                "not see the instruction that follows it; use pooling='mean' or 'cls'"
            )
        self.pooling = config.pooling
        self.instruction_weight = float(config.instruction_weight)

    def pool_pair(self, token_states: Tensor, attention_mask: Tensor, instruction_segment: Tensor) -> Tensor:
        """Pool jointly encoded pairs.

        Args:
            token_states: (B, L, d) backbone states of the pair texts.
            attention_mask: (B, L) int or bool, 1 for real tokens.
            instruction_segment: (B, L) int or bool, 1 for the instruction segment's tokens (all 0 for a row
                encoded without instruction).

        Returns:
            (B, d), same dtype as ``token_states``.
        """
        # The pooling module's own functions, so a row without instruction is bit-identical to the plain pooled query
        if self.pooling == "cls":
            return cls_pooling(token_states, attention_mask)
        mask = attention_mask.to(token_states.dtype)
        weights = torch.where(instruction_segment.bool(), mask * self.instruction_weight, mask)  # (B, L)
        return masked_weighted_mean(token_states, weights)
