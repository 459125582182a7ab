"""BEIR folders: retrieval metrics, optionally with per-query instructions."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from inf_embed.evaluation.evaluators.base import (
    Evaluator,
    _check_k_values,
    _main_ndcg,
    register_evaluator,
)
from inf_embed.evaluation.loaders import read_beir_corpus, read_beir_queries, read_qrels
from inf_embed.evaluation.metrics import Run, retrieval_metrics
from inf_embed.evaluation.search import search_to_run

logger = logging.getLogger(__name__)


@register_evaluator("beir")
class BEIREvaluator(Evaluator):
    """Retrieval over a BEIR-style corpus: nDCG, MAP, recall and MRR at each k (main score nDCG@10).

    Args:
        corpus: ``{doc_id: text}`` (title already joined, see :func:`~inf_embed.evaluation.loaders.document_text`).
        queries: ``{query_id: text}``; only queries with qrels are evaluated.
        qrels: ``{query_id: {doc_id: relevance}}``.
        instructions: one instruction for every query, ``{query_id: instruction}``, or None.
        k_values: metric cut-offs.
        top_k: documents retrieved per query (default ``max(k_values)``).
        **options: :class:`Evaluator` options.

    Relevant qrels documents absent from the corpus are counted in a warning; if none of them is in the corpus,
    the constructor raises ValueError.
    """

    main_score = "ndcg_at_10"

    def __init__(
        self,
        corpus: Mapping[str, str],
        queries: Mapping[str, str],
        qrels: Mapping[str, Mapping[str, int]],
        *,
        instructions: Mapping[str, str] | str | None = None,
        k_values: Iterable[int] = (1, 3, 5, 10, 100),
        top_k: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.k_values = _check_k_values(k_values)
        self.main_score = _main_ndcg(self.k_values)
        self.top_k = top_k if top_k is not None else max(self.k_values)
        if not corpus:
            raise ValueError("corpus is empty")
        self.corpus = dict(corpus)
        self.query_ids = [qid for qid in queries if qid in qrels]
        if not self.query_ids:
            raise ValueError(f"no query has qrels ({len(queries)} queries, {len(qrels)} qrels entries)")
        missing = [qid for qid in qrels if qid not in queries]
        if missing:
            logger.warning("%d qrels queries have no query text and are skipped (e.g. %r)", len(missing), missing[0])
        self.queries = {qid: queries[qid] for qid in self.query_ids}
        self.qrels = {qid: dict(qrels[qid]) for qid in self.query_ids}
        self._check_relevant_documents()
        self.instructions = instructions

    def _check_relevant_documents(self) -> None:
        """Warn about relevant qrels documents missing from the corpus; raise if none is there.

        A missing document can never be retrieved, so it silently lowers every metric; it usually means the wrong
        corpus or mismatched ids.
        """
        relevant = [(q, d) for q, docs in self.qrels.items() for d, rel in docs.items() if rel > 0]
        missing = [(q, d) for q, d in relevant if d not in self.corpus]
        if not missing:
            return
        if len(missing) == len(relevant):
            raise ValueError(
                f"none of the {len(relevant)} relevant qrels documents is in the corpus ({len(self.corpus)} "
                f"documents; e.g. query {missing[0][0]!r} -> document {missing[0][1]!r}): wrong corpus or ids?"
            )
        hopeless = sorted({q for q, _ in missing} - {q for q, d in relevant if d in self.corpus})
        logger.warning(
            "%d of %d relevant qrels documents are not in the corpus and cannot be retrieved (e.g. query %r -> "
            "document %r); %d queries have none of their relevant documents in the corpus",
            len(missing),
            len(relevant),
            missing[0][0],
            missing[0][1],
            len(hopeless),
        )

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        *,
        split: str = "test",
        instruction: str | None = None,
        **kwargs: Any,
    ) -> BEIREvaluator:
        """Load ``path/corpus.jsonl``, ``path/queries.jsonl`` and ``path/qrels/{split}.tsv``.

        Per-query instructions come from an ``instruction`` field in ``queries.jsonl``; ``instruction`` applies
        one instruction to the queries that have none.
        """
        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"BEIR data must be a folder with corpus.jsonl, queries.jsonl, qrels/; got {root}")
        corpus = read_beir_corpus(root / "corpus.jsonl")
        queries, per_query = read_beir_queries(root / "queries.jsonl")
        qrels = read_qrels(root / "qrels" / f"{split}.tsv")
        instructions: Mapping[str, str] | str | None = per_query or instruction
        if per_query and instruction:
            instructions = {qid: per_query.get(qid, instruction) for qid in queries}
        return cls(corpus, queries, qrels, instructions=instructions, **kwargs)

    def _instruction_list(self) -> list[str | None] | str | None:
        if self.instructions is None or isinstance(self.instructions, str):
            return self.instructions
        return [self.instructions.get(qid) for qid in self.query_ids]

    def search(self, model: Any) -> Run | None:
        """The run ``{query_id: {doc_id: score}}`` (top ``top_k``, in rank order); None off rank 0."""
        doc_ids = list(self.corpus)
        corpus = self._corpus(model, doc_ids, [self.corpus[d] for d in doc_ids])
        if corpus is None:
            return None
        queries = self._queries(model, [self.queries[q] for q in self.query_ids], self._instruction_list())
        scores, indices = self._search(queries, corpus, self.top_k, doc_ids)
        return search_to_run(self.query_ids, doc_ids, scores, indices)

    def _evaluate(self, model: Any) -> dict[str, float] | None:
        run = self.search(model)
        if run is None:
            return None
        results: dict[str, float] = dict(retrieval_metrics(self.qrels, run, self.k_values))
        results["num_queries"] = len(self.query_ids)
        results["num_documents"] = len(self.corpus)
        return results
