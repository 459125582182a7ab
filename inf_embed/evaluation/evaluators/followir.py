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
    id_field,
    read_beir_corpus,
    read_beir_queries,
    read_jsonl,
    read_qrels,
    record_field,
    text_field,
)
from inf_embed.evaluation.metrics import Run, p_mrr, retrieval_metrics
from inf_embed.evaluation.search import rerank, search_to_run

logger = logging.getLogger(__name__)


def _strip_suffix(query_id: str) -> tuple[str, str | None]:
    for suffix in ("-og", "-changed"):
        if query_id.endswith(suffix):
            return query_id[: -len(suffix)], suffix[1:]
    return query_id, None


def _warn_dropped(what: str, ids: Sequence[str], why: str) -> None:
    """One warning per kind of dropped id, with the count and an example (a silent drop looks like a bad model)."""
    if ids:
        logger.warning("FollowIR: %d %s %s and are ignored (e.g. %r)", len(ids), what, why, ids[0])


def _doc_id_list(record: Mapping[str, Any], where: str) -> list[str]:
    """The ``corpus-ids`` list of a qrel_diff / top_ranked record, as strings."""
    ids = record_field(record, "corpus-ids", where)
    if not isinstance(ids, list) or any(isinstance(d, bool) or not isinstance(d, (str, int)) for d in ids):
        raise ValueError(f"{where}: 'corpus-ids' must be a list of document ids, got {ids!r:.80}")
    return [str(d) for d in ids]


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
            whole corpus and keeps ``top_k``. A query without candidates (absent or an empty list) is left out of
            the run, with one warning counting such queries, as mteb does: it counts in no metric.
        changed_top_ranked: candidates for the changed run, if they differ from ``top_ranked`` (default: the same).
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
        changed_top_ranked: Mapping[str, Sequence[str]] | None = None,
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
        # Only queries with judgments get a qrels entry: an empty entry would score 0 instead of being skipped.
        self.og_qrels = {qid: dict(og_qrels[qid]) for qid in self.query_ids if og_qrels.get(qid)}
        self.changed_qrels = {qid: dict(changed_qrels[qid]) for qid in self.query_ids if changed_qrels.get(qid)}
        _warn_dropped("og_qrels queries", [q for q in og_qrels if q not in self.queries], "have no query")
        _warn_dropped("changed_qrels queries", [q for q in changed_qrels if q not in self.queries], "have no query")
        if changed_docs is None:
            changed_docs = {
                qid: [
                    d
                    for d, rel in self.og_qrels.get(qid, {}).items()
                    if rel > 0 and self.changed_qrels.get(qid, {}).get(d, 0) <= 0
                ]
                for qid in self.query_ids
            }
        else:
            _warn_dropped("changed_docs queries", [q for q in changed_docs if q not in self.queries], "have no query")
        self.changed_docs = {qid: list(docs) for qid, docs in changed_docs.items() if qid in self.queries}
        if not any(self.changed_docs.values()):
            raise ValueError("no query has a changed document: p-MRR is undefined (check the qrels or changed_docs)")
        self.top_ranked = self._candidates("top_ranked", top_ranked)
        self.changed_top_ranked = (
            self.top_ranked
            if changed_top_ranked is None
            else self._candidates("changed_top_ranked", changed_top_ranked)
        )
        self._warn_without_candidates()

    def _candidates(self, name: str, top_ranked: Mapping[str, Sequence[str]] | None) -> dict[str, list[str]] | None:
        """``{query_id: candidates}`` for the queries that have candidates; None without ``top_ranked``."""
        if top_ranked is None:
            return None
        unknown = [d for docs in top_ranked.values() for d in docs if d not in self.corpus]
        if unknown:
            raise ValueError(f"{name} names {len(unknown)} documents absent from the corpus (e.g. {unknown[0]!r})")
        _warn_dropped(f"{name} queries", [q for q in top_ranked if q not in self.queries], "have no query")
        return {qid: list(top_ranked[qid]) for qid in self.query_ids if top_ranked.get(qid)}

    def _warn_without_candidates(self) -> None:
        """One warning per run (one in all when both runs lack the same queries) counting queries left out of it.

        mteb (``rerank_top_ranked_documents``) leaves a query without pre-ranked documents out of the run; an empty
        run would instead rank every changed document first on both sides and score p-MRR 0 and nDCG 0.
        """
        missing = {
            run: [qid for qid in self.query_ids if qid not in candidates]
            for run, candidates in (("og run", self.top_ranked), ("changed run", self.changed_top_ranked))
            if candidates is not None
        }
        if len(missing) == 2 and missing["og run"] == missing["changed run"]:
            missing = {"og and changed runs": missing["og run"]}
        for runs, without in missing.items():
            if without:
                logger.warning(
                    "FollowIR: %d of %d queries have no pre-ranked documents for the %s and are left out (e.g. %r)",
                    len(without),
                    len(self.query_ids),
                    runs,
                    without[0],
                )

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], *, split: str = "test", **kwargs: Any) -> FollowIREvaluator:
        """Load the mteb FollowIR layout from a folder.

        - ``corpus.jsonl``: BEIR corpus.
        - ``queries.jsonl``: ``{"_id": "<qid>-og" | "<qid>-changed", "text": ..., "instruction": ...}``; the
          instruction may instead come from ``instructions.jsonl`` (``{"query-id", "instruction"}``).
        - ``qrels/{split}.tsv``: qrels of both variants, ids with the ``-og`` / ``-changed`` suffix.
        - optional ``qrel_diff.jsonl``: ``{"query-id": qid, "corpus-ids": [...]}``, the changed documents.
        - optional ``top_ranked.jsonl``: ``{"query-id": qid (suffix optional), "corpus-ids": [...]}``; an id without
          suffix, or a query listed for one side only, gives the same candidates to both runs.

        Ids that cannot be matched (qrels rows without a suffix, queries with only one side, qrel_diff or
        top_ranked entries of unknown queries) are left out with a warning that counts them.

        Raises:
            FileNotFoundError: if ``path`` is not a folder or a required file is missing.
            ValueError: naming ``path:line`` for a malformed record or a duplicate entry (a second qrel_diff entry,
                or a second top_ranked list for the same query and side).
        """
        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"FollowIR data must be a folder (corpus.jsonl, queries.jsonl, qrels/); got {root}")
        corpus = read_beir_corpus(root / "corpus.jsonl")
        raw_queries, raw_instructions = read_beir_queries(root / "queries.jsonl")
        if (root / "instructions.jsonl").is_file():
            for number, record in read_jsonl(root / "instructions.jsonl"):
                where = f"{root / 'instructions.jsonl'}:{number}"
                key = "query-id" if "query-id" in record else "_id"
                if key not in record or "instruction" not in record:
                    raise ValueError(f"{where}: needs 'query-id' and 'instruction'")
                raw_instructions[id_field(record, key, where)] = text_field(record, "instruction", where) or ""
        sides: dict[str, dict[str, str]] = {"og": {}, "changed": {}}
        instructions: dict[str, dict[str, str]] = {"og": {}, "changed": {}}
        for raw_id, text in raw_queries.items():
            qid, side = _strip_suffix(raw_id)
            if side is None:
                raise ValueError(f"{root / 'queries.jsonl'}: query id {raw_id!r} must end in '-og' or '-changed'")
            sides[side][qid] = text
            if raw_id in raw_instructions:
                instructions[side][qid] = raw_instructions[raw_id]
        query_ids = [qid for qid in sides["og"] if qid in sides["changed"]]
        one_sided = [f"{q}-og" for q in sides["og"] if q not in sides["changed"]]
        one_sided += [f"{q}-changed" for q in sides["changed"] if q not in sides["og"]]
        _warn_dropped("queries", one_sided, "have no '-changed' / '-og' counterpart")
        qrels: dict[str, dict[str, dict[str, int]]] = {"og": {}, "changed": {}}
        unsuffixed = []
        for raw_id, docs in read_qrels(root / "qrels" / f"{split}.tsv").items():
            qid, side = _strip_suffix(raw_id)
            if side is None:
                unsuffixed.append(raw_id)
            else:
                qrels[side][qid] = docs
        _warn_dropped(f"qrels/{split}.tsv query ids", unsuffixed, "do not end in '-og' or '-changed'")
        changed_docs = None
        if (root / "qrel_diff.jsonl").is_file():
            changed_docs = {}
            for number, record in read_jsonl(root / "qrel_diff.jsonl"):
                where = f"{root / 'qrel_diff.jsonl'}:{number}"
                qid = _strip_suffix(id_field(record, "query-id", where))[0]
                if qid in changed_docs:
                    raise ValueError(f"{where}: a second qrel_diff entry for query {qid!r}")
                changed_docs[qid] = _doc_id_list(record, where)
        top_ranked = changed_top_ranked = None
        if (root / "top_ranked.jsonl").is_file():
            top_ranked, changed_top_ranked = cls._read_top_ranked(root / "top_ranked.jsonl")
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
            changed_top_ranked=changed_top_ranked,
            **kwargs,
        )

    @staticmethod
    def _read_top_ranked(path: Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """``(og candidates, changed candidates)`` from ``top_ranked.jsonl``, one list per side and query."""
        lists: dict[str, dict[str, list[str]]] = {"og": {}, "changed": {}}
        seen: dict[tuple[str, str], int] = {}
        for number, record in read_jsonl(path):
            where = f"{path}:{number}"
            qid, side = _strip_suffix(id_field(record, "query-id", where))
            docs = _doc_id_list(record, where)
            for target in (side,) if side is not None else ("og", "changed"):
                if (qid, target) in seen:
                    raise ValueError(
                        f"{where}: a second top_ranked list for query {qid!r} ({target} side, first on line "
                        f"{seen[qid, target]})"
                    )
                seen[qid, target] = number
                lists[target][qid] = docs
        one_sided = sorted(lists["og"].keys() ^ lists["changed"].keys())
        if one_sided:
            logger.info(
                "FollowIR: %d queries have top_ranked candidates for one side only; both runs rerank them (e.g. %r)",
                len(one_sided),
                one_sided[0],
            )
        og = {**lists["changed"], **lists["og"]}
        changed = {**lists["og"], **lists["changed"]}
        return og, changed

    def _run(
        self,
        queries: np.ndarray,
        corpus: Any,
        doc_ids: list[str],
        top_ranked: Mapping[str, Sequence[str]] | None,
    ) -> Run:
        if top_ranked is None:
            scores, indices = self._search(queries, corpus, self.top_k, doc_ids)
            return search_to_run(self.query_ids, doc_ids, scores, indices)
        row = {d: i for i, d in enumerate(doc_ids)}
        position = {qid: i for i, qid in enumerate(self.query_ids)}
        kept = [qid for qid in self.query_ids if qid in top_ranked]  # the others are left out of the run (mteb)
        ranked = rerank(queries[[position[q] for q in kept]], corpus, [[row[d] for d in top_ranked[q]] for q in kept])
        return {
            qid: {doc_ids[int(i)]: float(s) for s, i in zip(scores, indices)}
            for qid, (scores, indices) in zip(kept, ranked)
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
        return (
            self._run(embeddings[:n], corpus, doc_ids, self.top_ranked),
            self._run(embeddings[n:], corpus, doc_ids, self.changed_top_ranked),
        )

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
