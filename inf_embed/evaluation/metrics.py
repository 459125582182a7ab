"""Retrieval and instruction-following metrics, defined exactly as mteb computes them.

Inputs are plain mappings so that any search can be scored:

- a **run** is ``{query_id: {doc_id: score}}`` (higher score = better);
- **qrels** are ``{query_id: {doc_id: relevance}}``; a document is relevant when its relevance is >= 1.

Ranks come from sorting each query's documents by score descending and breaking ties by document id in
**descending** string order. That is trec_eval's ``comp_sim_docno`` (so ``pytrec_eval``'s ``ndcg_cut``, ``map_cut``
and ``recall``), and mteb >= 2 uses the same key, ``(score, doc_id)`` reversed, for MRR and for the ranks inside
p-MRR (mteb PR #5092; mteb 1.x kept the run's insertion order for tied scores in MRR and p-MRR).

Every retrieval metric (MRR included, so that all four average over the same queries) is averaged over the
queries present in both the run and the qrels whose qrels entry is not empty: the queries ``pytrec_eval``
evaluates, since it drops a query without any judgment. A query with judgments but no relevant document
(every relevance <= 0) is kept and scores 0. mteb's ``mrr`` would count a query with an empty qrels entry as 0;
its loaders never create such entries.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]

__all__ = [
    "Qrels",
    "Run",
    "map_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "p_mrr",
    "p_mrr_per_query",
    "paired_accuracy",
    "paired_accuracy_from_run",
    "rank_score",
    "recall_at_k",
    "retrieval_metrics",
]


def _check_k(k: int, name: str = "k") -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{name} must be a positive int, got {k!r}")


def _ranking(doc_scores: Mapping[str, float]) -> list[str]:
    """Documents by score descending, ties by doc id descending (trec_eval ``comp_sim_docno``, mteb >= 2)."""
    return [doc for doc, _ in sorted(doc_scores.items(), key=lambda item: (item[1], item[0]), reverse=True)]


def _evaluated_queries(qrels: Qrels, run: Run) -> list[str]:
    """Queries in both the run and the qrels, with at least one judgment (pytrec_eval skips unjudged queries)."""
    queries = [qid for qid in run if qrels.get(qid)]
    missing = sum(1 for qid in qrels if qid not in run)
    if missing:
        logger.debug("%d queries of the qrels have no run and are not evaluated (as pytrec_eval)", missing)
    unjudged = sum(1 for qid in run if qid in qrels and not qrels[qid])
    if unjudged:
        logger.debug("%d queries have an empty qrels entry and are not evaluated (as pytrec_eval)", unjudged)
    return queries


def _ndcg(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    dcg = sum(max(judged.get(doc, 0), 0) / math.log2(rank + 2) for rank, doc in enumerate(ranking[:k]))
    ideal_gains = sorted((rel for rel in judged.values() if rel > 0), reverse=True)[:k]
    idcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal_gains))
    return dcg / idcg if idcg > 0 else 0.0


def _average_precision(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    num_rel = sum(1 for rel in judged.values() if rel >= 1)
    if num_rel == 0:
        return 0.0
    hits, total = 0, 0.0
    for rank, doc in enumerate(ranking[:k], start=1):
        if judged.get(doc, 0) >= 1:
            hits += 1
            total += hits / rank
    return total / num_rel


def _recall(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    num_rel = sum(1 for rel in judged.values() if rel >= 1)
    if num_rel == 0:
        return 0.0
    return sum(1 for doc in ranking[:k] if judged.get(doc, 0) >= 1) / num_rel


def _reciprocal_rank(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    for rank, doc in enumerate(ranking[:k], start=1):
        if judged.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def ndcg_at_k(qrels: Qrels, run: Run, k: int = 10) -> float:
    """Mean nDCG@k with linear gain, as ``pytrec_eval``'s ``ndcg_cut.k``.

    DCG@k = sum over ranks r <= k of rel_r / log2(r + 1); IDCG@k is the DCG of the qrels' relevance values sorted
    in decreasing order. Ties in score are broken by doc id, descending.

    Args:
        qrels: ``{query_id: {doc_id: relevance}}``.
        run: ``{query_id: {doc_id: score}}``.
        k: cut-off, a positive int.

    Returns:
        The mean over the queries present in both ``run`` and ``qrels`` with a non-empty qrels entry, in [0, 1];
        0.0 if there are none.
    """
    _check_k(k)
    return _mean([_ndcg(_ranking(run[q]), qrels[q], k) for q in _evaluated_queries(qrels, run)])


def map_at_k(qrels: Qrels, run: Run, k: int = 10) -> float:
    """Mean average precision cut at k, as ``pytrec_eval``'s ``map_cut.k``.

    AP@k = (sum over relevant documents at rank r <= k of precision@r) / (number of relevant documents in the
    qrels), so relevant documents that are not retrieved count against the query.

    Args:
        qrels: ``{query_id: {doc_id: relevance}}``.
        run: ``{query_id: {doc_id: score}}``.
        k: cut-off, a positive int.

    Returns:
        The mean over the queries present in both ``run`` and ``qrels`` with a non-empty qrels entry.
    """
    _check_k(k)
    return _mean([_average_precision(_ranking(run[q]), qrels[q], k) for q in _evaluated_queries(qrels, run)])


def recall_at_k(qrels: Qrels, run: Run, k: int = 10) -> float:
    """Mean recall@k, as ``pytrec_eval``'s ``recall.k``: relevant documents in the top k / relevant documents.

    Args:
        qrels: ``{query_id: {doc_id: relevance}}``.
        run: ``{query_id: {doc_id: score}}``.
        k: cut-off, a positive int.

    Returns:
        The mean over the queries present in both ``run`` and ``qrels`` with a non-empty qrels entry.
    """
    _check_k(k)
    return _mean([_recall(_ranking(run[q]), qrels[q], k) for q in _evaluated_queries(qrels, run)])


def mrr_at_k(qrels: Qrels, run: Run, k: int = 10) -> float:
    """Mean reciprocal rank of the first relevant document (relevance > 0) within the top k, as mteb's ``mrr``.

    Args:
        qrels: ``{query_id: {doc_id: relevance}}``.
        run: ``{query_id: {doc_id: score}}``.
        k: cut-off, a positive int.

    Returns:
        The mean over the queries present in both ``run`` and ``qrels`` with a non-empty qrels entry; 0 for a
        query with no relevant document in its top k.
    """
    _check_k(k)
    return _mean([_reciprocal_rank(_ranking(run[q]), qrels[q], k) for q in _evaluated_queries(qrels, run)])


def retrieval_metrics(qrels: Qrels, run: Run, k_values: Iterable[int] = (1, 3, 5, 10, 100)) -> dict[str, float]:
    """nDCG, MAP, recall and MRR at each k, with mteb's key names (``ndcg_at_10``, ``map_at_10``, ...).

    Sorts each query once, so it is cheaper than calling the single metrics one by one.

    Args:
        qrels: ``{query_id: {doc_id: relevance}}``.
        run: ``{query_id: {doc_id: score}}``.
        k_values: cut-offs, positive ints.

    Returns:
        ``{"ndcg_at_k": ..., "map_at_k": ..., "recall_at_k": ..., "mrr_at_k": ...}`` for every k, each the mean over
        the queries present in both ``run`` and ``qrels`` with a non-empty qrels entry.
    """
    ks = sorted(set(k_values))
    if not ks:
        raise ValueError("k_values must hold at least one cut-off")
    for k in ks:
        _check_k(k, "k_values item")
    per_metric: dict[str, list[float]] = {f"{name}_at_{k}": [] for name in ("ndcg", "map", "recall", "mrr") for k in ks}
    for qid in _evaluated_queries(qrels, run):
        ranking, judged = _ranking(run[qid]), qrels[qid]
        for k in ks:
            per_metric[f"ndcg_at_{k}"].append(_ndcg(ranking, judged, k))
            per_metric[f"map_at_{k}"].append(_average_precision(ranking, judged, k))
            per_metric[f"recall_at_{k}"].append(_recall(ranking, judged, k))
            per_metric[f"mrr_at_{k}"].append(_reciprocal_rank(ranking, judged, k))
    return {name: _mean(values) for name, values in per_metric.items()}


def rank_score(og_rank: int, new_rank: int) -> float:
    """FollowIR's per-document score for a document that stopped being relevant (mteb ``rank_score``).

    With R_og and R_new the document's 1-based ranks before and after the instruction change:
    ``R_new / R_og - 1`` (<= 0) if the document moved up or stayed (R_og >= R_new), else ``1 - R_og / R_new`` (> 0).

    Args:
        og_rank: rank in the original run, >= 1.
        new_rank: rank in the changed run, >= 1.

    Returns:
        A value in (-1, 1): positive when the document was demoted, as it should be.
    """
    if og_rank < 1 or new_rank < 1:
        raise ValueError(f"ranks must be >= 1, got og_rank={og_rank}, new_rank={new_rank}")
    if og_rank >= new_rank:
        return (1 / og_rank) / (1 / new_rank) - 1
    return 1 - (1 / new_rank) / (1 / og_rank)


def p_mrr_per_query(og_run: Run, changed_run: Run, changed_qrels: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Per-query p-MRR: the mean of :func:`rank_score` over the query's changed documents.

    Args:
        og_run: ``{query_id: {doc_id: score}}`` with the original instruction.
        changed_run: ``{query_id: {doc_id: score}}`` with the changed instruction (same query ids, no suffixes).
        changed_qrels: ``{query_id: [doc_id, ...]}``, the documents relevant under the original instruction and
            not under the changed one.

    Returns:
        ``{query_id: p-MRR}`` for every query of ``changed_qrels`` that has at least one changed document and a
        run on both sides (others are skipped, with one warning that counts the queries missing a run).
    """
    per_query: dict[str, float] = {}
    missing = []
    for qid, docs in changed_qrels.items():
        if isinstance(docs, str):
            raise TypeError(f"changed_qrels[{qid!r}] must be a list of doc ids, got a str")
        if qid not in og_run or qid not in changed_run:
            missing.append(qid)
            continue
        if not docs:
            continue
        og, new = og_run[qid], changed_run[qid]
        # Rank maps built once per query; the same ranks as mteb's get_rank_from_dict (absent: len(run) + 1).
        og_ranks = {doc: rank for rank, doc in enumerate(_ranking(og), start=1)}
        new_ranks = {doc: rank for rank, doc in enumerate(_ranking(new), start=1)}
        scores = [rank_score(og_ranks.get(d, len(og) + 1), new_ranks.get(d, len(new) + 1)) for d in docs]
        per_query[qid] = sum(scores) / len(scores)
    if missing:
        logger.warning(
            "p-MRR: %d of %d queries in changed_qrels have no run on one side and are skipped (e.g. %r)",
            len(missing),
            len(changed_qrels),
            missing[0],
        )
    return per_query


def p_mrr(og_run: Run, changed_run: Run, changed_qrels: Mapping[str, Sequence[str]]) -> float:
    """p-MRR (FollowIR), exactly as mteb's ``calculate_pmrr``.

    For each query q and each changed document d (relevant under the original instruction, not under the changed
    one), take d's 1-based rank in the original run R_og and in the changed run R_new (score descending, ties by
    doc id descending; a document absent from a run gets rank ``len(run[q]) + 1``). Score d
    with :func:`rank_score`, average per query, then average over queries.

    Args:
        og_run: ``{query_id: {doc_id: score}}`` with the original instruction.
        changed_run: ``{query_id: {doc_id: score}}`` with the changed instruction.
        changed_qrels: ``{query_id: [doc_id, ...]}``, the changed documents per query.

    Returns:
        p-MRR in [-1, 1]: 0 when rankings ignore the instruction, positive when the changed documents are demoted.

    Raises:
        ValueError: if no query of ``changed_qrels`` has a changed document and runs on both sides.
    """
    per_query = p_mrr_per_query(og_run, changed_run, changed_qrels)
    if not per_query:
        raise ValueError(
            "p_mrr: no query of changed_qrels has both a changed document and a run in og_run and changed_run "
            f"({len(changed_qrels)} queries in changed_qrels)"
        )
    return float(sum(per_query.values()) / len(per_query))


def paired_accuracy(scores: np.ndarray | Sequence[Sequence[Sequence[float]]]) -> float:
    """Paired accuracy (NevIR): both queries of a pair must prefer their own document.

    Pair i is correct iff ``scores[i, 0, 0] > scores[i, 0, 1]`` and ``scores[i, 1, 1] > scores[i, 1, 0]``, where
    ``scores[i, a, b]`` is the similarity of query a and document b of pair i (query a's own document is b = a).
    Ties count as wrong, so a model that cannot tell the documents apart scores 0, and one that always prefers the
    same document scores 0 as well; random scores give 25%.

    Args:
        scores: (N, 2, 2) float similarities.

    Returns:
        The fraction of correct pairs, in [0, 1].
    """
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 3 or array.shape[1:] != (2, 2) or array.shape[0] == 0:
        raise ValueError(f"scores must have shape (N, 2, 2) with N >= 1, got {array.shape}")
    correct = (array[:, 0, 0] > array[:, 0, 1]) & (array[:, 1, 1] > array[:, 1, 0])
    return float(correct.mean())


def paired_accuracy_from_run(run: Run, pairs: Iterable[tuple[str, str, str, str]]) -> float:
    """:func:`paired_accuracy` from a run and ``(query_1, query_2, doc_1, doc_2)`` id tuples.

    Args:
        run: ``{query_id: {doc_id: score}}`` holding both documents of the pair for both queries.
        pairs: ``(q1, q2, d1, d2)`` tuples where d1 is relevant to q1 and d2 to q2.

    Returns:
        The fraction of pairs where q1 scores d1 above d2 and q2 scores d2 above d1.

    Raises:
        KeyError: naming the query and document missing from the run.
    """
    rows = []
    for q1, q2, d1, d2 in pairs:
        row = []
        for query in (q1, q2):
            if query not in run:
                raise KeyError(f"paired_accuracy_from_run: query {query!r} is not in the run")
            for doc in (d1, d2):
                if doc not in run[query]:
                    raise KeyError(f"paired_accuracy_from_run: document {doc!r} is not in run[{query!r}]")
            row.append([run[query][d1], run[query][d2]])
        rows.append(row)
    return paired_accuracy(np.asarray(rows, dtype=np.float64).reshape(-1, 2, 2))
