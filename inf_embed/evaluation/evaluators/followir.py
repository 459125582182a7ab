"""FollowIR (mteb layout): p-MRR between original- and changed-instruction runs."""

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
from inf_embed.evaluation.loaders import (
    read_beir_corpus,
    read_beir_queries,
    read_jsonl,
    read_qrels,
)
from inf_embed.evaluation.metrics import Run, p_mrr, retrieval_metrics
from inf_embed.evaluation.search import rerank, search_to_run

logger = logging.getLogger(__name__)


def _strip_suffix(query_id: str) -> tuple[str, str | None]:
    for suffix in ("-og", "-changed"):
        if query_id.endswith(suffix):
            return query_id[: -len(suffix)], suffix[1:]
    return query_id, None


@register_evaluator("followir")
class FollowIREvaluator(Evaluator):
    """FollowIR: each query is run with its original and its changed instruction; reports p-MRR (main score)
    plus the retrieval metrics of each run (``og_*`` and ``changed_*``).

    Args:
        corpus: ``{doc_id: text}``.
        queries: ``{query_id: text}`` (ids without ``-og``/``-changed``).
        og_instructions: ``{query_id: original instruction}``.
        changed_instructions: ``{query_id: changed instruction}``.
        og_qrels: ``{query_id: {doc_id: relevance}}`` under the original instruction.
        changed_qrels: the same under the changed instruction.
        changed_docs: ``{query_id: [doc_id, ...]}`` whose relevance changed; default: relevant in ``og_qrels`` and
            not relevant (or absent) in ``changed_qrels``.
        changed_queries: query texts for the changed run, if they differ from ``queries``.
        top_ranked: ``{query_id: [doc_id, ...]}`` candidates to rerank (FollowIR's reranking setting); None ranks the
            whole corpus and keeps ``top_k``.
        k_values: metric cut-offs.
        top_k: documents kept per query without ``top_ranked``; p-MRR treats a document beyond it as rank
            ``top_k + 1``.
        **options: :class:`Evaluator` options.
    """

    main_score = "p_mrr"

    def __init__(
        self,
        corpus: Mapping[str, str],
        queries: Mapping[str, str],
        og_instructions: Mapping[str, str],
        changed_instructions: Mapping[str, str],
        og_qrels: Mapping[str, Mapping[str, int]],
        changed_qrels: Mapping[str, Mapping[str, int]],
        *,
        changed_docs: Mapping[str, Sequence[str]] | None = None,
        changed_queries: Mapping[str, str] | None = None,
        top_ranked: Mapping[str, Sequence[str]] | None = None,
        k_values: Iterable[int] = (1, 3, 5, 10, 100, 1000),
        top_k: int = 1000,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.k_values = _check_k_values(k_values)
        self.top_k = top_k
        if not corpus:
            raise ValueError("corpus is empty")
        self.corpus = dict(corpus)
        self.query_ids = list(queries)
        for name, mapping in (("og_instructions", og_instructions), ("changed_instructions", changed_instructions)):
            absent = [qid for qid in self.query_ids if qid not in mapping]
            if absent:
                raise ValueError(f"{name} has no entry for {len(absent)} queries (e.g. {absent[0]!r})")
        self.queries = dict(queries)
        self.changed_queries = {qid: (changed_queries or {}).get(qid, queries[qid]) for qid in self.query_ids}
        self.og_instructions = dict(og_instructions)
        self.changed_instructions = dict(changed_instructions)
        self.og_qrels = {qid: dict(og_qrels.get(qid, {})) for qid in self.query_ids}
        self.changed_qrels = {qid: dict(changed_qrels.get(qid, {})) for qid in self.query_ids}
        if changed_docs is None:
            changed_docs = {
                qid: [d for d, rel in self.og_qrels[qid].items() if rel > 0 and self.changed_qrels[qid].get(d, 0) <= 0]
                for qid in self.query_ids
            }
        self.changed_docs = {qid: list(docs) for qid, docs in changed_docs.items() if qid in self.queries}
        if not any(self.changed_docs.values()):
            raise ValueError("no query has a changed document: p-MRR is undefined (check the qrels or changed_docs)")
        self.top_ranked = None
        if top_ranked is not None:
            unknown = [d for docs in top_ranked.values() for d in docs if d not in self.corpus]
            if unknown:
                raise ValueError(
                    f"top_ranked names {len(unknown)} documents absent from the corpus (e.g. {unknown[0]!r})"
                )
            self.top_ranked = {qid: list(top_ranked.get(qid, [])) for qid in self.query_ids}

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], *, split: str = "test", **kwargs: Any) -> FollowIREvaluator:
        """Load the mteb FollowIR layout from a folder.

        - ``corpus.jsonl``: BEIR corpus.
        - ``queries.jsonl``: ``{"_id": "<qid>-og" | "<qid>-changed", "text": ..., "instruction": ...}``; the
          instruction may instead come from ``instructions.jsonl`` (``{"query-id", "instruction"}``).
        - ``qrels/{split}.tsv``: qrels of both variants, ids with the ``-og`` / ``-changed`` suffix.
        - optional ``qrel_diff.jsonl``: ``{"query-id": qid, "corpus-ids": [...]}``, the changed documents.
        - optional ``top_ranked.jsonl``: ``{"query-id": qid (suffix optional), "corpus-ids": [...]}``.
        """
        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"FollowIR data must be a folder (corpus.jsonl, queries.jsonl, qrels/); got {root}")
        corpus = read_beir_corpus(root / "corpus.jsonl")
        raw_queries, raw_instructions = read_beir_queries(root / "queries.jsonl")
        if (root / "instructions.jsonl").is_file():
            for number, record in read_jsonl(root / "instructions.jsonl"):
                qid = record.get("query-id", record.get("_id"))
                if qid is None or "instruction" not in record:
                    raise ValueError(f"{root / 'instructions.jsonl'}:{number}: needs 'query-id' and 'instruction'")
                raw_instructions[str(qid)] = str(record["instruction"])
        sides: dict[str, dict[str, str]] = {"og": {}, "changed": {}}
        instructions: dict[str, dict[str, str]] = {"og": {}, "changed": {}}
        for raw_id, text in raw_queries.items():
            qid, side = _strip_suffix(raw_id)
            if side is None:
                raise ValueError(f"{root / 'queries.jsonl'}: query id {raw_id!r} must end in '-og' or '-changed'")
            sides[side][qid] = text
            if raw_id in raw_instructions:
                instructions[side][qid] = raw_instructions[raw_id]
        qrels: dict[str, dict[str, dict[str, int]]] = {"og": {}, "changed": {}}
        for raw_id, docs in read_qrels(root / "qrels" / f"{split}.tsv").items():
            qid, side = _strip_suffix(raw_id)
            if side is not None:
                qrels[side][qid] = docs
        changed_docs = None
        if (root / "qrel_diff.jsonl").is_file():
            changed_docs = {
                _strip_suffix(str(r["query-id"]))[0]: [str(d) for d in r["corpus-ids"]]
                for _, r in read_jsonl(root / "qrel_diff.jsonl")
            }
        top_ranked = None
        if (root / "top_ranked.jsonl").is_file():
            top_ranked = {}
            for _, record in read_jsonl(root / "top_ranked.jsonl"):
                qid = _strip_suffix(str(record["query-id"]))[0]
                top_ranked.setdefault(qid, [str(d) for d in record["corpus-ids"]])
        query_ids = [qid for qid in sides["og"] if qid in sides["changed"]]
        return cls(
            corpus,
            {qid: sides["og"][qid] for qid in query_ids},
            instructions["og"],
            instructions["changed"],
            qrels["og"],
            qrels["changed"],
            changed_docs=changed_docs,
            changed_queries={qid: sides["changed"][qid] for qid in query_ids},
            top_ranked=top_ranked,
            **kwargs,
        )

    def _run(self, queries: np.ndarray, corpus: Any, doc_ids: list[str]) -> Run:
        if self.top_ranked is None:
            scores, indices = self._search(queries, corpus, self.top_k)
            return search_to_run(self.query_ids, doc_ids, scores, indices)
        row = {d: i for i, d in enumerate(doc_ids)}
        ranked = rerank(queries, corpus, [[row[d] for d in self.top_ranked[q]] for q in self.query_ids])
        return {
            qid: {doc_ids[int(i)]: float(s) for s, i in zip(scores, indices)}
            for qid, (scores, indices) in zip(self.query_ids, ranked)
        }

    def search(self, model: Any) -> tuple[Run, Run] | None:
        """``(og_run, changed_run)``; None off rank 0."""
        doc_ids = list(self.corpus)
        corpus = self._corpus(model, doc_ids, [self.corpus[d] for d in doc_ids])
        if corpus is None:
            return None
        n = len(self.query_ids)
        texts = [self.queries[q] for q in self.query_ids] + [self.changed_queries[q] for q in self.query_ids]
        instr = [self.og_instructions[q] for q in self.query_ids]
        instr += [self.changed_instructions[q] for q in self.query_ids]
        embeddings = self._queries(model, texts, instr)
        return self._run(embeddings[:n], corpus, doc_ids), self._run(embeddings[n:], corpus, doc_ids)

    def _evaluate(self, model: Any) -> dict[str, float] | None:
        runs = self.search(model)
        if runs is None:
            return None
        og_run, changed_run = runs
        results: dict[str, float] = {"p_mrr": p_mrr(og_run, changed_run, self.changed_docs)}
        for side, run, qrels in (("og", og_run, self.og_qrels), ("changed", changed_run, self.changed_qrels)):
            for name, value in retrieval_metrics(qrels, run, self.k_values).items():
                results[f"{side}_{name}"] = value
        results["num_queries"] = len(self.query_ids)
        results["num_documents"] = len(self.corpus)
        return results
