"""`InfEmbedConfig`: everything needed to rebuild an `InfEmbed` model except its weights.

This module imports neither torch nor the Hub client, so a config can be read, validated and edited anywhere.
Overrides go through :func:`dataclasses.replace`; ``from_dict`` rejects unknown keys so that a typo in a saved
config is an error, not a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

CONFIG_FILE_NAME = "inf_embed_config.json"
FORMAT_VERSION = 1

POOLING_MODES: tuple[str, ...] = ("mean", "cls", "last")
FUSION_NAMES: tuple[str, ...] = ("anchored", "attention", "concat", "conditioned", "gated", "none", "residual")
PADDING_SIDES: tuple[str, ...] = ("right", "left")
SIMILARITY_FN_NAMES: tuple[str, ...] = ("cosine", "dot", "euclidean", "manhattan")
PLAIN_QUERY_SIDES: tuple[str, ...] = ("query", "document")

PoolingMode = Literal["mean", "cls", "last"]
FusionName = Literal["anchored", "attention", "concat", "conditioned", "gated", "none", "residual"]


@dataclass
class InfEmbedConfig:
    """Configuration of an :class:`~inf_embed.InfEmbed` model.

    Attributes:
        backbone: Name or path the backbone encoder came from (provenance only: a saved model carries its own
            backbone weights and ``config.json``).
        pooling: How token states become one vector on the passage side and for un-instructed queries:
            ``"mean"`` (masked mean), ``"cls"`` (first token) or ``"last"`` (last real token; decoders).
        fusion: How an instruction conditions the query. ``"attention"``: the paper's parameter-free
            instruction-query attention over separately encoded instruction and query tokens; ``"concat"``:
            instruction and query joined into one text through ``concat_template``; ``"conditioned"``: query and
            instruction encoded together as a tokenizer text pair and the query segment pooled (instruction
            tokens weighted by ``instruction_weight``; ``pooling`` ``"mean"`` or ``"cls"``); ``"residual"``: the
            pooled query plus a learned projection of attended instruction content; ``"anchored"``: the
            ``concat`` embedding plus ``query_weight`` times the query encoded alone (both L2-normalised);
            ``"gated"``: the ``concat`` embedding, or the query encoded alone when the query and the instruction,
            each encoded alone, have a cosine below ``gate_threshold`` (the instruction does not fit the query);
            ``"none"``: the instruction is ignored.
        concat_template: Template for ``fusion="concat"``, ``"anchored"`` and ``"gated"``; must contain ``{query}`` and
            ``{instruction}``. The default puts the query first, as the paper's training code does.
        max_query_length: Token budget of a query (special tokens included).
        max_instruction_length: Token budget of an instruction encoded on its own (``fusion="attention"``).
            With ``fusion="concat"`` the joined text, with ``fusion="conditioned"`` the (query, instruction) pair,
            gets ``max_query_length + max_instruction_length``.
        max_passage_length: Token budget of a passage.
        normalize: L2-normalise every output embedding (after the optional projection).
        padding_side: Tokenizer padding side; ``"left"`` for decoder backbones with ``pooling="last"``.
        projection_dim: Output size of an optional linear projection shared by queries and passages; ``None``
            for no projection.
        attention_scale: Softmax scale of the instruction-query attention; ``None`` means ``1/sqrt(hidden)``.
        instruction_weight: For ``fusion="conditioned"`` with mean pooling, the weight in [0, 1] of the
            instruction segment's tokens relative to the query's (0: pool the query segment only; 1: mean over the
            whole pair).
        query_weight: For ``fusion="anchored"``, the weight (>= 0) of the query-alone embedding added to the
            joined text's: it keeps the query's own topic in the embedding when a long instruction would drown it.
        gate_threshold: For ``fusion="gated"``, the cosine in [-1, 1] between the query and the instruction, each
            encoded alone, below which the instruction is taken not to fit the query and the query alone is
            embedded.
        document_delta_scale: The share in [0, 1] of the fine-tuning change that the document side takes: documents
            are encoded with ``anchor + document_delta_scale * (weight - anchor)`` for each backbone weight that
            has an anchor (the weights fine-tuning started from), queries with the weights themselves. 1 (default)
            encodes both sides alike. Below 1 the model needs anchors: a delta folder's base, or
            :meth:`~inf_embed.InfEmbed.set_document_delta`.
        plain_query_side: Which side's weights encode a query that comes without an instruction when the model is
            asymmetric (``document_delta_scale`` < 1): ``"query"`` (default), as instructed queries, or
            ``"document"``, as the documents, so that uninstructed search is a symmetric model (the query prompt
            and length budget still apply). Instructed queries always take the query side.
        similarity_fn_name: Score used by ``similarity``: ``cosine``, ``dot``, ``euclidean`` or ``manhattan``.
        prompts: Named text prefixes, as in sentence-transformers (``encode_query`` uses ``prompts["query"]``,
            ``encode_document`` uses ``prompts["document"]``).
        format_version: Version of this file's schema.
    """

    backbone: str = "sentence-transformers/all-MiniLM-L6-v2"
    pooling: PoolingMode = "mean"
    fusion: FusionName = "attention"
    concat_template: str = "{query} {instruction}"
    max_query_length: int = 256
    max_instruction_length: int = 256
    max_passage_length: int = 512
    normalize: bool = True
    padding_side: Literal["right", "left"] = "right"
    projection_dim: int | None = None
    attention_scale: float | None = None
    instruction_weight: float = 0.0
    query_weight: float = 0.5
    gate_threshold: float = 0.3
    document_delta_scale: float = 1.0
    plain_query_side: Literal["query", "document"] = "query"
    similarity_fn_name: Literal["cosine", "dot", "euclidean", "manhattan"] = "cosine"
    prompts: dict[str, str] = field(default_factory=lambda: {"query": "", "document": ""})
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field; raises ``ValueError`` or ``TypeError`` naming the bad field."""
        _check_choice("pooling", self.pooling, POOLING_MODES)
        _check_choice("fusion", self.fusion, FUSION_NAMES)
        _check_choice("padding_side", self.padding_side, PADDING_SIDES)
        _check_choice("similarity_fn_name", self.similarity_fn_name, SIMILARITY_FN_NAMES)
        _check_choice("plain_query_side", self.plain_query_side, PLAIN_QUERY_SIDES)
        if not isinstance(self.backbone, str) or not self.backbone:
            raise TypeError(f"backbone must be a non-empty string, got {self.backbone!r}")
        for name in ("max_query_length", "max_instruction_length", "max_passage_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ValueError(f"{name} must be an integer >= 2, got {value!r}")
        if not isinstance(self.normalize, bool):
            raise TypeError(f"normalize must be a bool, got {self.normalize!r}")
        if self.projection_dim is not None and (
            isinstance(self.projection_dim, bool) or not isinstance(self.projection_dim, int) or self.projection_dim < 1
        ):
            raise ValueError(f"projection_dim must be a positive integer or None, got {self.projection_dim!r}")
        if self.attention_scale is not None and (
            not isinstance(self.attention_scale, (int, float)) or not self.attention_scale > 0
        ):
            raise ValueError(f"attention_scale must be a positive number or None, got {self.attention_scale!r}")
        if (
            isinstance(self.instruction_weight, bool)
            or not isinstance(self.instruction_weight, (int, float))
            or not 0.0 <= self.instruction_weight <= 1.0
        ):
            raise ValueError(f"instruction_weight must be a number in [0, 1], got {self.instruction_weight!r}")
        if (
            isinstance(self.query_weight, bool)
            or not isinstance(self.query_weight, (int, float))
            or not math.isfinite(self.query_weight)
            or self.query_weight < 0
        ):
            raise ValueError(f"query_weight must be a finite number >= 0, got {self.query_weight!r}")
        if (
            isinstance(self.gate_threshold, bool)
            or not isinstance(self.gate_threshold, (int, float))
            or not -1.0 <= self.gate_threshold <= 1.0
        ):
            raise ValueError(f"gate_threshold must be a number in [-1, 1], got {self.gate_threshold!r}")
        if (
            isinstance(self.document_delta_scale, bool)
            or not isinstance(self.document_delta_scale, (int, float))
            or not 0.0 <= self.document_delta_scale <= 1.0
        ):
            raise ValueError(f"document_delta_scale must be a number in [0, 1], got {self.document_delta_scale!r}")
        if not isinstance(self.concat_template, str) or any(
            part not in self.concat_template for part in ("{query}", "{instruction}")
        ):
            raise ValueError(
                f"concat_template must contain '{{query}}' and '{{instruction}}', got {self.concat_template!r}"
            )
        try:
            self.concat_template.format(query="", instruction="")
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(
                f"concat_template may only use the fields {{query}} and {{instruction}}, got "
                f"{self.concat_template!r} ({error})"
            ) from None
        if not isinstance(self.prompts, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.prompts.items()
        ):
            raise TypeError(f"prompts must be a dict of str to str, got {self.prompts!r}")
        if self.format_version != FORMAT_VERSION:
            raise ValueError(
                f"format_version {self.format_version!r} is not supported by this inf_embed "
                f"(expected {FORMAT_VERSION}); upgrade inf_embed to load this model"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InfEmbedConfig:
        """Build a config from a dict, rejecting unknown keys.

        Raises:
            ValueError: ``data`` has a key that is not a field; the message lists the known fields.
        """
        if not isinstance(data, dict):
            raise TypeError(f"config data must be a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown InfEmbedConfig keys {unknown}; known keys are {sorted(known)}")
        return cls(**data)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save(self, folder: str | os.PathLike) -> str:
        """Write ``inf_embed_config.json`` into ``folder``; returns the file path."""
        path = os.path.join(os.fspath(folder), CONFIG_FILE_NAME)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(self.to_json_string())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> InfEmbedConfig:
        """Read a config from a JSON file, or from ``inf_embed_config.json`` inside a folder."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, CONFIG_FILE_NAME)
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from None
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{path}: {error}") from None


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {list(choices)}")
