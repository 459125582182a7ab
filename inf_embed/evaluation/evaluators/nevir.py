"""NevIR negation pairs: paired accuracy."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inf_embed.evaluation import distributed as dist_utils
from inf_embed.evaluation.evaluators.base import Evaluator, register_evaluator
from inf_embed.evaluation.loaders import read_jsonl
from inf_embed.evaluation.metrics import paired_accuracy

logger = logging.getLogger(__name__)


@register_evaluator("nevir")
class NevIREvaluator(Evaluator):
    """NevIR negation pairs: paired accuracy (main score), each query ranking only its pair's two documents.

    A pair is correct iff s(q1, doc1) > s(q1, doc2) and s(q2, doc2) > s(q2, doc1) (cosine; ties count as wrong).
    Also reports ``q1_accuracy`` and ``q2_accuracy``, the two halves.

    Args:
        pairs: dicts with ``q1``, ``q2``, ``doc1``, ``doc2`` (``id`` optional).
        instruction: an instruction given with every query, or None.
        **options: :class:`Evaluator` options.
    """

    main_score = "paired_accuracy"

    def __init__(self, pairs: Sequence[Mapping[str, Any]], *, instruction: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        if not pairs:
            raise ValueError("pairs is empty")
        for index, pair in enumerate(pairs):
            absent = [f for f in ("q1", "q2", "doc1", "doc2") if not pair.get(f)]
            if absent:
                raise ValueError(f"pairs[{index}] (id {pair.get('id')!r}): missing or empty fields {absent}")
        self.pairs = [{f: str(p[f]) for f in ("q1", "q2", "doc1", "doc2")} for p in pairs]
        self.instruction = instruction

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], **kwargs: Any) -> NevIREvaluator:
        """Load ``nevir_pairs.jsonl`` (fields ``id, q1, q2, doc1, doc2``) from a folder, or any such JSON-lines file."""
        source = Path(path)
        if source.is_dir():
            source = source / "nevir_pairs.jsonl"
        return cls([record for _, record in read_jsonl(source)], **kwargs)

    def pair_scores(self, model: Any) -> np.ndarray:
        """(N, 2, 2) cosine similarities: ``[i, a, b]`` = s(query a+1, doc b+1) of pair i."""
        n = len(self.pairs)
        queries = self._queries(model, [p["q1"] for p in self.pairs] + [p["q2"] for p in self.pairs], self.instruction)
        unique = list(dict.fromkeys(p[f] for p in self.pairs for f in ("doc1", "doc2")))
        doc_emb = self._documents(model, unique)
        position = {text: i for i, text in enumerate(unique)}
        doc1 = doc_emb[[position[p["doc1"]] for p in self.pairs]]
        doc2 = doc_emb[[position[p["doc2"]] for p in self.pairs]]
        scores = np.empty((n, 2, 2), dtype=np.float64)
        for a, q in enumerate((queries[:n], queries[n:])):
            scores[:, a, 0] = np.einsum("nd,nd->n", q, doc1)
            scores[:, a, 1] = np.einsum("nd,nd->n", q, doc2)
        return scores

    def _evaluate(self, model: Any) -> dict[str, float] | None:
        if dist_utils.get_rank() != 0:
            return None
        scores = self.pair_scores(model)
        return {
            "paired_accuracy": paired_accuracy(scores),
            "q1_accuracy": float(np.mean(scores[:, 0, 0] > scores[:, 0, 1])),
            "q2_accuracy": float(np.mean(scores[:, 1, 1] > scores[:, 1, 0])),
            "num_pairs": len(self.pairs),
        }
