"""InF-IR-schema records: instruction and query p-MRR, paired instruction accuracy, nDCG."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inf_embed.evaluation.evaluators.base import (
    Evaluator,
    _check_k_values,
    register_evaluator,
)
from inf_embed.evaluation.loaders import read_beir_corpus, read_jsonl
from inf_embed.evaluation.metrics import p_mrr, paired_accuracy, retrieval_metrics
from inf_embed.evaluation.search import doc_id_tie_order, search_to_run

logger = logging.getLogger(__name__)


_INFIR_REQUIRED = (
    "query_positive",
    "instruction_positive",
    "query_negative",
    "instruction_negative",
    "hard_negative_document_1",
)


@register_evaluator("infir")
class InfIREvaluator(Evaluator):
    """Instruction following on InF-IR-schema records (I+, Q+, P+, I-, Q-, D-), over one shared corpus.

    The corpus is every record's P+ (``document`` or ``document_positive``) and hard negatives
    (``hard_negative_document_1`` = D-, and ``hard_negative_document_2`` if present) plus ``extra_corpus``
    (e.g. ``instructir/msmarco_filtered``). P+ takes the id ``document_id`` when given (so a P+ already in the
    extra corpus is not duplicated; a P+ whose text is already there under another id reuses that id).
    Each record is searched three times over the whole corpus (``top_k=None``): with (I+, Q+), (I-, Q+) and
    (I+, Q-). Metrics:

    - ``p_mrr_instruction``: p-MRR of P+ when I+ becomes I- (P+ is relevant under I+, not under I-); main score.
    - ``p_mrr_query``: p-MRR of P+ when Q+ becomes Q-.
    - ``paired_accuracy``: the fraction of records where **both** s(I+Q+, P+) > s(I+Q+, D-) **and**
      s(I-Q+, D-) > s(I-Q+, P+), s being the cosine similarity of the query embedding (query and instruction) and
      the document embedding; ties count as wrong. Equivalently: in a ranking of just {P+, D-}, (I+, Q+) puts P+
      first and (I-, Q+) puts D- first.
    - ``ndcg_at_k``, ``mrr_at_k``, ``recall_at_k``, ``map_at_k``: retrieval of P+ for (I+, Q+), one relevant document.
    - ``neg_instruction_ndcg_at_10``: retrieval of D- for (I-, Q+).

    Args:
        records: InF-IR records (dicts with the fields above; ``id`` optional).
        extra_corpus: ``{doc_id: text}`` added to the corpus.
        k_values: metric cut-offs.
        top_k: documents ranked per query; None (default) ranks the whole corpus, making p-MRR exact.
        **options: :class:`Evaluator` options.
    """

    main_score = "p_mrr_instruction"

    def __init__(
        self,
        records: Sequence[Mapping[str, Any]],
        *,
        extra_corpus: Mapping[str, str] | None = None,
        k_values: Iterable[int] = (1, 5, 10, 100),
        top_k: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if not records:
            raise ValueError("records is empty")
        self.k_values = _check_k_values(k_values)
        self.top_k = top_k
        corpus: dict[str, str] = dict(extra_corpus or {})
        by_text = {text: doc_id for doc_id, text in corpus.items()}

        def add(doc_id: str, text: str, where: str) -> str:
            if doc_id in corpus and corpus[doc_id] != text:
                raise ValueError(f"{where}: document id {doc_id!r} is already in the corpus with a different text")
            corpus[doc_id] = text
            by_text.setdefault(text, doc_id)
            return doc_id

        self.record_ids: list[str] = []
        self.pos_ids: list[str] = []
        self.neg_ids: list[str] = []
        self.rows: list[dict[str, str]] = []
        for index, record in enumerate(records):
            rid = str(record.get("id") or f"record-{index}")
            where = f"records[{index}] (id {rid!r})"
            absent = [f for f in _INFIR_REQUIRED if not record.get(f)]
            positive = record.get("document") or record.get("document_positive")
            if not positive:
                absent.append("document")
            if absent:
                raise ValueError(f"{where}: missing or empty fields {absent}")
            if rid in self.record_ids:
                raise ValueError(f"{where}: duplicate record id {rid!r}")
            pos_id = str(record["document_id"]) if record.get("document_id") else by_text.get(positive, f"{rid}-pos")
            self.pos_ids.append(add(pos_id, str(positive), where))
            self.neg_ids.append(add(f"{rid}-hn1", str(record["hard_negative_document_1"]), where))
            if record.get("hard_negative_document_2"):
                add(f"{rid}-hn2", str(record["hard_negative_document_2"]), where)
            self.record_ids.append(rid)
            self.rows.append({f: str(record[f]) for f in _INFIR_REQUIRED})
        self.corpus = corpus

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        *,
        split: str = "dev",
        extra_corpus: str | os.PathLike[str] | Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> InfIREvaluator:
        """Load records from a JSON-lines file, or from ``path/{split}.jsonl`` for a folder.

        Args:
            path: the records file or folder.
            split: file stem used when ``path`` is a folder.
            extra_corpus: a BEIR folder or ``corpus.jsonl`` (e.g. ``instructir/msmarco_filtered``), or a mapping.
            **kwargs: constructor arguments.
        """
        source = Path(path)
        if source.is_dir():
            source = source / f"{split}.jsonl"
        records = [record for _, record in read_jsonl(source)]
        extra: Mapping[str, str] | None
        if extra_corpus is None or isinstance(extra_corpus, Mapping):
            extra = extra_corpus
        else:
            corpus_path = Path(extra_corpus)
            extra = read_beir_corpus(corpus_path / "corpus.jsonl" if corpus_path.is_dir() else corpus_path)
        return cls(records, extra_corpus=extra, **kwargs)

    def search(self, model: Any) -> dict[str, Any] | None:
        """Runs and pair scores: ``{"runs": {"pos"|"neg_instruction"|"neg_query": Run}, "pair_scores": (N, 2, 2)}``."""
        doc_ids = list(self.corpus)
        corpus = self._corpus(model, doc_ids, [self.corpus[d] for d in doc_ids])
        if corpus is None:
            return None
        n = len(self.rows)
        texts, instructions = self.query_texts()
        queries = self._queries(model, texts, instructions)  # (3N, d): (I+,Q+), (I-,Q+), (I+,Q-)
        scores, indices = self._search(queries, corpus, self.top_k, doc_ids)
        pos_rows, neg_rows = self._pair_rows(doc_ids)
        pos_emb = _rows(corpus, pos_rows)  # (N, d)
        neg_emb = _rows(corpus, neg_rows)
        pair = np.empty((n, 2, 2), dtype=np.float64)
        for a, q in enumerate((queries[:n], queries[n : 2 * n])):  # query a: (I+,Q+) then (I-,Q+)
            pair[:, a, 0] = np.einsum("nd,nd->n", q, pos_emb)  # document 0: P+
            pair[:, a, 1] = np.einsum("nd,nd->n", q, neg_emb)  # document 1: D-
        return {"runs": self._runs(doc_ids, scores, indices), "pair_scores": pair}

    def query_texts(self) -> tuple[list[str], list[str]]:
        """The 3N searched (query, instruction) pairs in the order of :meth:`evaluate_scores`' rows:
        (I+, Q+) for every record, then (I-, Q+), then (I+, Q-)."""
        texts = [r["query_positive"] for r in self.rows] * 2 + [r["query_negative"] for r in self.rows]
        instructions = (
            [r["instruction_positive"] for r in self.rows]
            + [r["instruction_negative"] for r in self.rows]
            + [r["instruction_positive"] for r in self.rows]
        )
        return texts, instructions

    def evaluate_scores(self, scores: np.ndarray) -> dict[str, float]:
        """The metrics of :meth:`__call__` (less ``eval_seconds``) from a score matrix instead of a model.

        For scoring rules that are not one dot product (e.g. a combination of several query embeddings' scores).

        Args:
            scores: (3N, C) float, row r the score of every corpus document (columns in ``list(self.corpus)``
                order) for the r-th pair of :meth:`query_texts`; higher ranks first, exact ties by doc id
                descending (as the metrics and :meth:`search`).
        """
        scores = np.asarray(scores, dtype=np.float64)
        n, doc_ids = len(self.rows), list(self.corpus)
        if scores.shape != (3 * n, len(doc_ids)):
            raise ValueError(
                f"scores: expected shape {(3 * n, len(doc_ids))} (3 x records, documents), got {scores.shape}"
            )
        if not np.isfinite(scores).all():
            raise ValueError("scores: expected finite values, got NaN or infinity")
        k = len(doc_ids) if self.top_k is None else min(self.top_k, len(doc_ids))
        # Score descending, then doc id descending: the metrics' tie rule, so the top-k cut keeps the same documents.
        by_tie = np.argsort(doc_id_tie_order(doc_ids))  # (C,) columns by doc id descending
        indices = by_tie[np.argsort(-scores[:, by_tie], axis=1, kind="stable")[:, :k]]
        pos_rows, neg_rows = self._pair_rows(doc_ids)
        records = np.arange(n)
        pair = np.empty((n, 2, 2), dtype=np.float64)
        for a in range(2):  # query a: (I+,Q+) then (I-,Q+); document 0: P+, 1: D-
            pair[:, a, 0] = scores[a * n + records, pos_rows]
            pair[:, a, 1] = scores[a * n + records, neg_rows]
        runs = self._runs(doc_ids, np.take_along_axis(scores, indices, axis=1), indices)
        results = self._metrics({"runs": runs, "pair_scores": pair})
        results["main_score"] = results[self.main_score]
        return results

    def _pair_rows(self, doc_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        row = {d: i for i, d in enumerate(doc_ids)}
        return np.asarray([row[d] for d in self.pos_ids]), np.asarray([row[d] for d in self.neg_ids])

    def _runs(self, doc_ids: list[str], scores: np.ndarray, indices: np.ndarray) -> dict[str, Any]:
        n = len(self.rows)
        names = ("pos", "neg_instruction", "neg_query")
        return {
            name: search_to_run(self.record_ids, doc_ids, scores[i * n : (i + 1) * n], indices[i * n : (i + 1) * n])
            for i, name in enumerate(names)
        }

    def _evaluate(self, model: Any) -> dict[str, float] | None:
        found = self.search(model)
        if found is None:
            return None
        return self._metrics(found)

    def _metrics(self, found: Mapping[str, Any]) -> dict[str, float]:
        runs = found["runs"]
        changed = {rid: [pos] for rid, pos in zip(self.record_ids, self.pos_ids)}
        results: dict[str, float] = {
            "p_mrr_instruction": p_mrr(runs["pos"], runs["neg_instruction"], changed),
            "p_mrr_query": p_mrr(runs["pos"], runs["neg_query"], changed),
            "paired_accuracy": paired_accuracy(found["pair_scores"]),
        }
        qrels_pos = {rid: {pos: 1} for rid, pos in zip(self.record_ids, self.pos_ids)}
        results.update(retrieval_metrics(qrels_pos, runs["pos"], self.k_values))
        qrels_neg = {rid: {neg: 1} for rid, neg in zip(self.record_ids, self.neg_ids)}
        neg_metrics = retrieval_metrics(qrels_neg, runs["neg_instruction"], (10,))
        results["neg_instruction_ndcg_at_10"] = neg_metrics["ndcg_at_10"]
        results["num_records"] = len(self.rows)
        results["num_documents"] = len(self.corpus)
        return results


def _rows(corpus: Any, rows: np.ndarray) -> np.ndarray:
    """Selected rows of an in-memory or cached corpus, (len(rows), d) float32."""
    if isinstance(corpus, np.ndarray):
        return corpus[rows]
    return np.stack([np.asarray(corpus[int(r) : int(r) + 1])[0] for r in rows]).astype(np.float32)
