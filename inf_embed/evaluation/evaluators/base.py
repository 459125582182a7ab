"""Evaluator base class and the evaluator registry (names are the CLI's ``--format`` values)."""

from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np

from inf_embed.evaluation import distributed as dist_utils
from inf_embed.evaluation.encoders import encode_documents, encode_queries
from inf_embed.evaluation.search import CachedEmbeddings, doc_id_tie_order, encode_corpus, exact_search

logger = logging.getLogger(__name__)


__all__ = ["Evaluator", "get_evaluator", "list_evaluators", "register_evaluator"]

_REGISTRY: dict[str, type[Evaluator]] = {}
E = TypeVar("E", bound="type[Evaluator]")


def register_evaluator(name: str) -> Callable[[E], E]:
    """Class decorator registering an :class:`Evaluator` subclass under ``name`` (the CLI's ``--format``)."""

    def decorate(cls: E) -> E:
        if name in _REGISTRY:
            raise ValueError(f"an evaluator named {name!r} is already registered ({_REGISTRY[name].__name__})")
        cls.format_name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def get_evaluator(name: str) -> type[Evaluator]:
    """The evaluator class registered under ``name``; raises ValueError listing the known names."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown evaluator {name!r}; known: {', '.join(list_evaluators())}")
    return _REGISTRY[name]


def list_evaluators() -> list[str]:
    """Registered evaluator names, sorted."""
    return sorted(_REGISTRY)


class Evaluator(ABC):
    """Base class: shared encode, cache, search and distributed options.

    Args:
        batch_size: encode batch size.
        show_progress_bar: progress bars; default on when the ``inf_embed.evaluation`` logger is at INFO.
        cache_dir: folder caching corpus embeddings (keyed by model weights + config and corpus); None: no cache.
        search_device: device for the exact search (default CPU).
        corpus_chunk_size: corpus rows per search step (bounds memory).
        query_batch_size: queries per search step.
    """

    format_name: ClassVar[str] = ""
    #: the key of the headline metric; ``results["main_score"]`` repeats its value.
    main_score: str = ""

    def __init__(
        self,
        *,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        search_device: str | None = None,
        corpus_chunk_size: int = 16384,
        query_batch_size: int = 1024,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self.cache_dir = cache_dir
        self.search_device = search_device
        self.corpus_chunk_size = corpus_chunk_size
        self.query_batch_size = query_batch_size

    def __call__(self, model: Any) -> dict[str, float]:
        """Evaluate ``model``; same as :meth:`evaluate`."""
        return self.evaluate(model)

    def evaluate(self, model: Any) -> dict[str, float]:
        """Evaluate ``model`` and return flat ``{metric: value}`` including ``main_score`` and ``eval_seconds``.

        Every rank of a process group must call this; all ranks get rank 0's results.
        """
        start = time.perf_counter()
        results = self._evaluate(model)
        if results is not None:
            results["main_score"] = results[self.main_score]
            results["eval_seconds"] = round(time.perf_counter() - start, 3)
            logger.info("%s: %s = %.4f", type(self).__name__, self.main_score, results["main_score"])
        return dist_utils.broadcast_object(results)

    @abstractmethod
    def _evaluate(self, model: Any) -> dict[str, float] | None:
        """Results on rank 0 (or without a process group); None on the other ranks."""

    @classmethod
    @abstractmethod
    def from_path(cls, path: str | os.PathLike[str], **kwargs: Any) -> Evaluator:
        """Build the evaluator from files on disk."""

    # -- shared helpers -------------------------------------------------------------------------------------------

    def _queries(self, model: Any, texts: Sequence[str], instructions: Sequence[str | None] | str | None) -> np.ndarray:
        return encode_queries(
            model, texts, instructions, batch_size=self.batch_size, show_progress_bar=self.show_progress_bar
        )

    def _documents(self, model: Any, texts: Sequence[str]) -> np.ndarray:
        return encode_documents(model, texts, batch_size=self.batch_size, show_progress_bar=self.show_progress_bar)

    def _corpus(self, model: Any, doc_ids: Sequence[str], texts: Sequence[str]) -> np.ndarray | CachedEmbeddings | None:
        """Corpus embeddings via the cache and, under a process group, sharded encoding (None off rank 0)."""
        return encode_corpus(
            lambda batch: self._documents(model, batch),
            texts,
            doc_ids=doc_ids,
            model=model if self.cache_dir is not None else None,
            cache_dir=self.cache_dir,
            options={"side": "document", "normalize": True},
        )

    def _search(
        self, queries: np.ndarray, corpus: Any, top_k: int | None, doc_ids: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows per query; exact ties at the cut are broken by doc id descending, as the metrics rank them."""
        return exact_search(
            queries,
            corpus,
            top_k,
            tie_order=doc_id_tie_order(doc_ids),
            score_function="cos",
            corpus_chunk_size=self.corpus_chunk_size,
            query_batch_size=self.query_batch_size,
            device=self.search_device,
            show_progress_bar=self.show_progress_bar,
        )


def _check_k_values(k_values: Iterable[int]) -> tuple[int, ...]:
    ks = tuple(sorted(set(k_values)))
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"k_values must be positive ints, got {tuple(k_values)!r}")
    return ks


def _main_ndcg(ks: tuple[int, ...]) -> str:
    return "ndcg_at_10" if 10 in ks else f"ndcg_at_{ks[0]}"
