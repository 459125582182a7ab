"""How evaluators call a model, and an adapter that lets a plain sentence-transformers model be evaluated.

Evaluators accept any object with InfEmbed's two methods::

    encode_query(queries, instruction=None | str | list[str | None], batch_size=..., show_progress_bar=...,
                 convert_to_numpy=True, normalize_embeddings=True, ...) -> (N, d) array
    encode_document(documents, batch_size=..., ...) -> (N, d) array

and always L2-normalise what comes back (the official MAIR eval scored unnormalised vectors, paper bug B4).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from inf_embed.evaluation.search import l2_normalize

logger = logging.getLogger(__name__)

__all__ = [
    "ConcatInstructionEncoder",
    "QueryOnlyEncoder",
    "encode_documents",
    "encode_queries",
    "resolve_progress",
]


def resolve_progress(show_progress_bar: bool | None) -> bool:
    """An explicit choice wins; otherwise progress bars are on only when the evaluation logger is at INFO."""
    if show_progress_bar is not None:
        return show_progress_bar
    return logging.getLogger("inf_embed.evaluation").isEnabledFor(logging.INFO)


def _kwargs(batch_size: int, show_progress_bar: bool | None, device: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "batch_size": batch_size,
        "show_progress_bar": resolve_progress(show_progress_bar),
        "convert_to_numpy": True,
        "normalize_embeddings": True,
    }
    if device is not None:
        kwargs["device"] = device
    return kwargs


def _check_method(model: Any, name: str) -> None:
    if not callable(getattr(model, name, None)):
        raise TypeError(
            f"model must have an `{name}` method (InfEmbed's interface); got {type(model).__name__}. "
            "Wrap a sentence-transformers model in inf_embed.evaluation.ConcatInstructionEncoder."
        )


def encode_queries(
    model: Any,
    queries: Sequence[str],
    instructions: Sequence[str | None] | str | None = None,
    *,
    batch_size: int = 32,
    show_progress_bar: bool | None = None,
    device: Any = None,
) -> np.ndarray:
    """Encode queries with their instructions, passed separately to ``model.encode_query``.

    Args:
        model: an object with ``encode_query(queries, instruction=...)``.
        queries: N query texts.
        instructions: one instruction for all, N per-query instructions (None items for none), or None.
        batch_size: encode batch size.
        show_progress_bar: see :func:`resolve_progress`.
        device: passed to the model when given.

    Returns:
        (N, d) float32, L2-normalised rows.
    """
    _check_method(model, "encode_query")
    if not queries:
        return np.zeros((0, 0), dtype=np.float32)
    if instructions is not None and not isinstance(instructions, str):
        instructions = list(instructions)
        if len(instructions) != len(queries):
            raise ValueError(f"instructions has {len(instructions)} items, queries has {len(queries)}")
        if all(item is None for item in instructions):
            instructions = None
    embeddings = model.encode_query(
        list(queries), instruction=instructions, **_kwargs(batch_size, show_progress_bar, device)
    )
    return l2_normalize(_to_numpy(embeddings))


def encode_documents(
    model: Any,
    documents: Sequence[str],
    *,
    batch_size: int = 32,
    show_progress_bar: bool | None = None,
    device: Any = None,
) -> np.ndarray:
    """Encode documents with ``model.encode_document``.

    Args:
        model: an object with ``encode_document(documents)``.
        documents: N texts.
        batch_size: encode batch size.
        show_progress_bar: see :func:`resolve_progress`.
        device: passed to the model when given.

    Returns:
        (N, d) float32, L2-normalised rows.
    """
    _check_method(model, "encode_document")
    if not documents:
        return np.zeros((0, 0), dtype=np.float32)
    embeddings = model.encode_document(list(documents), **_kwargs(batch_size, show_progress_bar, device))
    return l2_normalize(_to_numpy(embeddings))


def _to_numpy(embeddings: Any) -> np.ndarray:
    if hasattr(embeddings, "detach"):
        embeddings = embeddings.detach().float().cpu().numpy()
    array = np.asarray(embeddings, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"the model returned embeddings of shape {array.shape}, expected (N, d)")
    return array


class ConcatInstructionEncoder:
    """Give a model without an instruction argument (e.g. a ``SentenceTransformer``) InfEmbed's interface.

    The instruction is joined to the query text with ``template`` (default ``"{query} {instruction}"``, what
    mteb's default wrapper and FollowIR do), which is the standard baseline for instruction-following retrieval.

    Args:
        model: an object with ``encode_query(texts, **kwargs)`` and ``encode_document(texts, **kwargs)`` (falls back to
            ``encode``).
        template: format string with ``{query}`` and ``{instruction}``; used only when an instruction is given.
        name: shown in benchmark tables.
    """

    def __init__(self, model: Any, template: str = "{query} {instruction}", name: str | None = None) -> None:
        if "{query}" not in template or "{instruction}" not in template:
            raise ValueError(f"template must contain '{{query}}' and '{{instruction}}', got {template!r}")
        self.model = model
        self.template = template
        self.name = name or type(model).__name__

    @property
    def config(self) -> dict[str, Any]:
        """What identifies this encoder for the embedding cache (the wrapped model's repr and the template)."""
        return {"adapter": "concat", "template": self.template, "model": repr(self.model)}

    def state_dict(self) -> dict[str, Any]:
        """The wrapped model's weights (for the embedding-cache fingerprint)."""
        return self.model.state_dict() if callable(getattr(self.model, "state_dict", None)) else {}

    def _call(self, method: str, texts: list[str], kwargs: dict[str, Any]) -> Any:
        fn = getattr(self.model, method, None) or self.model.encode
        return fn(texts, **kwargs)

    def encode_query(
        self, queries: Sequence[str], instruction: str | Sequence[str | None] | None = None, **kwargs: Any
    ) -> Any:
        """Encode ``template.format(query=q, instruction=i)`` (just ``q`` where i is None or empty)."""
        queries = list(queries)
        if instruction is None or isinstance(instruction, str):
            per_query: list[str | None] = [instruction] * len(queries)
        else:
            per_query = list(instruction)
            if len(per_query) != len(queries):
                raise ValueError(f"instruction has {len(per_query)} items, queries has {len(queries)}")
        texts = [self.template.format(query=q, instruction=i).strip() if i else q for q, i in zip(queries, per_query)]
        return self._call("encode_query", texts, kwargs)

    def encode_document(self, documents: Sequence[str], **kwargs: Any) -> Any:
        """Encode documents unchanged."""
        return self._call("encode_document", list(documents), kwargs)


class QueryOnlyEncoder:
    """Evaluate a model with every instruction dropped: queries are encoded alone, documents unchanged.

    The ablation that tells how much of a score comes from the instruction: p-MRR instruction change is 0 by
    construction, and p-MRR query change is what ranking by the query alone gives.

    Args:
        model: an object with InfEmbed's ``encode_query`` / ``encode_document``.
    """

    def __init__(self, model: Any) -> None:
        _check_method(model, "encode_query")
        _check_method(model, "encode_document")
        self.model = model

    @property
    def config(self) -> Any:
        """The wrapped model's config (for the embedding-cache fingerprint, which also records this class)."""
        return getattr(self.model, "config", None)

    def state_dict(self) -> dict[str, Any]:
        """The wrapped model's weights (for the embedding-cache fingerprint)."""
        return self.model.state_dict() if callable(getattr(self.model, "state_dict", None)) else {}

    def encode_query(
        self, queries: Sequence[str], instruction: str | Sequence[str | None] | None = None, **kwargs: Any
    ) -> Any:
        """``model.encode_query(queries)``; ``instruction`` is accepted and ignored."""
        return self.model.encode_query(list(queries), **kwargs)

    def encode_document(self, documents: Sequence[str], **kwargs: Any) -> Any:
        """``model.encode_document(documents)``."""
        return self.model.encode_document(list(documents), **kwargs)
