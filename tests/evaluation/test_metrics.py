"""Metrics against hand-computed fixtures (ties, missing documents, several changed documents), then against
pytrec_eval and mteb themselves when they are installed."""

from __future__ import annotations

import logging
import random
from math import log2

import numpy as np
import pytest

from inf_embed.evaluation.metrics import (
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    p_mrr,
    p_mrr_per_query,
    paired_accuracy,
    paired_accuracy_from_run,
    rank_score,
    recall_at_k,
    retrieval_metrics,
)

# q1: graded qrels and a tie between a and b at 0.5. Ties go by doc id *descending* (trec_eval, mteb >= 2): c, b, a, d.
# q3: one relevant document (x) missing from the run.
QRELS = {"q1": {"a": 1, "c": 2}, "q3": {"x": 1, "y": 1}, "q4": {"a": 1}}
RUN = {
    "q1": {"a": 0.5, "b": 0.5, "c": 0.9, "d": 0.1},
    "q3": {"y": 0.3, "z": 0.9},
    "q5": {"a": 1.0},  # no qrels: not evaluated
}  # q4 has qrels but no run: not evaluated (pytrec_eval's behaviour)


def test_ndcg_breaks_ties_by_descending_doc_id_and_uses_graded_gain():
    # q1 ranking c, b, a, d: DCG@3 = 2/log2(2) + 0 + 1/log2(4); IDCG@3 = 2/log2(2) + 1/log2(3).
    q1 = (2 + 1 / log2(4)) / (2 + 1 / log2(3))
    # q3 ranking z, y: DCG = 1/log2(3); IDCG = 1 + 1/log2(3).
    q3 = (1 / log2(3)) / (1 + 1 / log2(3))
    assert ndcg_at_k(QRELS, RUN, 3) == pytest.approx((q1 + q3) / 2, abs=1e-12)
    assert ndcg_at_k({"q1": QRELS["q1"]}, RUN, 2) == pytest.approx(2 / (2 + 1 / log2(3)), abs=1e-12)


def test_map_counts_unretrieved_relevant_documents():
    # q1: hits at ranks 1 and 3 -> (1 + 2/3) / 2; q3: hit at rank 2 of 2 relevant -> (1/2) / 2.
    assert map_at_k(QRELS, RUN, 10) == pytest.approx(((1 + 2 / 3) / 2 + 0.25) / 2, abs=1e-12)
    # cut at 2: q1 keeps only rank 1 -> 1/2; q3 unchanged.
    assert map_at_k(QRELS, RUN, 2) == pytest.approx((0.5 + 0.25) / 2, abs=1e-12)


def test_recall_divides_by_all_relevant_documents():
    assert recall_at_k(QRELS, RUN, 2) == pytest.approx((0.5 + 0.5) / 2)
    assert recall_at_k(QRELS, RUN, 3) == pytest.approx((1.0 + 0.5) / 2)


def test_mrr_breaks_ties_by_descending_doc_id_not_insertion_order():
    qrels = {"q2": {"a": 1}}
    run = {"q2": {"a": 0.7, "b": 0.7, "c": 0.2}}  # inserted a first, but b ranks first
    assert mrr_at_k(qrels, run, 10) == pytest.approx(0.5)
    assert mrr_at_k(qrels, run, 1) == 0.0
    assert ndcg_at_k(qrels, run, 1) == 0.0


def test_query_without_relevant_document_scores_zero():
    qrels = {"q": {"a": 0}}
    run = {"q": {"a": 1.0}}
    assert ndcg_at_k(qrels, run, 10) == 0.0
    assert map_at_k(qrels, run, 10) == 0.0
    assert recall_at_k(qrels, run, 10) == 0.0
    assert mrr_at_k(qrels, run, 10) == 0.0


def test_queries_with_empty_qrels_are_skipped_as_pytrec_eval_does():
    # q2 has an empty qrels entry (no judgment at all): pytrec_eval does not evaluate it. q3 has a judgment, none
    # relevant: it is evaluated and scores 0.
    qrels = {"q1": {"a": 1}, "q2": {}, "q3": {"b": 0}}
    run = {"q1": {"a": 1.0, "b": 0.5}, "q2": {"a": 1.0}, "q3": {"b": 1.0}}
    results = retrieval_metrics(qrels, run, (10,))
    assert results == {"ndcg_at_10": 0.5, "map_at_10": 0.5, "recall_at_10": 0.5, "mrr_at_10": 0.5}
    assert ndcg_at_k(qrels, run, 10) == map_at_k(qrels, run, 10) == recall_at_k(qrels, run, 10) == 0.5
    assert mrr_at_k(qrels, run, 10) == 0.5
    pytrec_eval = pytest.importorskip("pytrec_eval", reason="pytrec_eval (pytrec-eval-terrier) is not installed")
    reference = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    assert sorted(reference) == ["q1", "q3"]


def test_retrieval_metrics_equals_single_metrics_with_mteb_key_names():
    results = retrieval_metrics(QRELS, RUN, (1, 3, 10))
    for k in (1, 3, 10):
        assert results[f"ndcg_at_{k}"] == ndcg_at_k(QRELS, RUN, k)
        assert results[f"map_at_{k}"] == map_at_k(QRELS, RUN, k)
        assert results[f"recall_at_{k}"] == recall_at_k(QRELS, RUN, k)
        assert results[f"mrr_at_{k}"] == mrr_at_k(QRELS, RUN, k)


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_bad_k_is_rejected_with_its_value(k):
    with pytest.raises(ValueError, match="k must be a positive int"):
        ndcg_at_k(QRELS, RUN, k)


def test_rank_score_matches_followir_formula():
    assert rank_score(1, 1) == 0.0
    assert rank_score(1, 10) == pytest.approx(0.9)  # demoted: 1 - 1/10
    assert rank_score(10, 1) == pytest.approx(-0.9)  # promoted: 1/10 - 1
    assert rank_score(2, 3) == pytest.approx(1 - 2 / 3)
    with pytest.raises(ValueError, match="ranks must be >= 1"):
        rank_score(0, 1)


def _p_mrr_fixture():
    og = {
        # A: two changed documents; d1 falls from 1 to 3 (+2/3), d2 stays at 2 (0) -> 1/3
        "A": {"d1": 0.9, "d2": 0.8, "d3": 0.7},
        # B: ties by doc id descending: e1 is 2nd in og (after e2) and 1st in changed (before e0) -> 1/2 - 1.
        # (Insertion order would give 0, ascending doc id +1/2.)
        "B": {"e1": 0.5, "e2": 0.5},
        # C: m absent from og (3 docs -> rank 4), first in changed -> 1/4 - 1 = -3/4
        "C": {"c1": 0.9, "c2": 0.8, "c3": 0.7},
        # D: z absent from both; og has 2 docs (rank 3), changed has 4 (rank 5) -> 1 - 3/5 = +2/5
        "D": {"u": 0.9, "v": 0.8},
        "E": {"e": 0.1},
        "F": {"f": 0.1},
    }
    changed = {
        "A": {"d3": 0.9, "d2": 0.5, "d1": 0.4},
        "B": {"e0": 0.1, "e1": 0.1},
        "C": {"m": 0.9, "c1": 0.1},
        "D": {"u": 0.4, "v": 0.3, "w": 0.2, "x": 0.1},
        # E has no changed run: skipped with a warning
        "F": {"f": 0.1},
    }
    changed_docs = {"A": ["d1", "d2"], "B": ["e1"], "C": ["m"], "D": ["z"], "E": ["e"], "F": []}
    return og, changed, changed_docs


def test_p_mrr_per_query_handles_ties_missing_documents_and_several_changed_documents(caplog):
    og, changed, changed_docs = _p_mrr_fixture()
    with caplog.at_level(logging.WARNING, logger="inf_embed.evaluation.metrics"):
        per_query = p_mrr_per_query(og, changed, changed_docs)
    assert per_query == pytest.approx({"A": 1 / 3, "B": -1 / 2, "C": -3 / 4, "D": 2 / 5})
    assert "1 of 6 queries" in caplog.text


def test_p_mrr_averages_per_query_then_over_queries():
    og, changed, changed_docs = _p_mrr_fixture()
    assert p_mrr(og, changed, changed_docs) == pytest.approx((1 / 3 - 1 / 2 - 3 / 4 + 2 / 5) / 4, abs=1e-12)


def test_p_mrr_is_zero_when_the_instruction_changes_nothing():
    run = {"q": {"a": 0.3, "b": 0.2, "c": 0.1}}
    assert p_mrr(run, run, {"q": ["a", "c"]}) == 0.0


def test_p_mrr_without_any_scorable_query_raises():
    with pytest.raises(ValueError, match="no query of changed_qrels"):
        p_mrr({"q": {"a": 1.0}}, {"q": {"a": 1.0}}, {"q": []})


def test_paired_accuracy_needs_both_queries_right_and_ties_are_wrong():
    scores = [
        [[0.9, 0.1], [0.2, 0.8]],  # correct
        [[0.9, 0.1], [0.8, 0.2]],  # q2 prefers doc1
        [[0.5, 0.5], [0.1, 0.9]],  # q1 tie
        [[0.3, 0.4], [0.1, 0.9]],  # q1 prefers doc2
    ]
    assert paired_accuracy(scores) == 0.25
    with pytest.raises(ValueError, match=r"shape \(N, 2, 2\)"):
        paired_accuracy(np.zeros((3, 2)))


def test_paired_accuracy_from_run_reads_the_two_documents_of_each_pair():
    run = {"q1": {"d1": 0.9, "d2": 0.1}, "q2": {"d1": 0.2, "d2": 0.8}, "q3": {"d3": 0.1, "d4": 0.2}}
    run["q4"] = {"d3": 0.9, "d4": 0.1}
    assert paired_accuracy_from_run(run, [("q1", "q2", "d1", "d2"), ("q3", "q4", "d3", "d4")]) == 0.5
    with pytest.raises(KeyError, match="'d9'"):
        paired_accuracy_from_run(run, [("q1", "q2", "d1", "d9")])


# ---- agreement with the reference implementations ----------------------------------------------------------------


def _random_runs(seed: int, num_queries: int = 25, num_docs: int = 30):
    rng = random.Random(seed)
    docs = [f"d{i:02d}" for i in range(num_docs)]
    qrels, run = {}, {}
    for q in range(num_queries):
        qid = f"q{q}"
        judged = rng.sample(docs, rng.randint(1, 6))
        qrels[qid] = {d: rng.choice([0, 1, 1, 2]) for d in judged}
        retrieved = rng.sample(docs, rng.randint(3, num_docs))
        # coarse scores force many ties
        run[qid] = {d: float(rng.randint(0, 5)) for d in retrieved}
    return qrels, run


def test_retrieval_metrics_agree_with_pytrec_eval_on_tied_random_runs():
    pytrec_eval = pytest.importorskip("pytrec_eval", reason="pytrec_eval (pytrec-eval-terrier) is not installed")
    qrels, run = _random_runs(0)
    ks = (1, 3, 5, 10)
    measures = {
        f"ndcg_cut.{','.join(map(str, ks))}",
        f"map_cut.{','.join(map(str, ks))}",
        f"recall.{','.join(map(str, ks))}",
    }
    reference = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    ours = retrieval_metrics(qrels, run, ks)
    for k in ks:
        for name, key in (("ndcg", f"ndcg_cut_{k}"), ("map", f"map_cut_{k}"), ("recall", f"recall_{k}")):
            expected = np.mean([reference[q][key] for q in reference])
            assert ours[f"{name}_at_{k}"] == pytest.approx(expected, abs=1e-9), (name, k)


def test_mrr_and_p_mrr_agree_with_mteb_on_tied_random_runs():
    pytest.importorskip("mteb", reason="mteb is not installed (pip install 'inf-embed[mteb]')")
    from mteb._evaluators.retrieval_metrics import calculate_pmrr, mrr

    qrels, og = _random_runs(1)
    _, changed = _random_runs(2)
    changed_docs = {q: [d for d, rel in qrels[q].items() if rel > 0] for q in qrels}
    changed_docs = {q: docs for q, docs in changed_docs.items() if docs}
    expected = calculate_pmrr(
        {f"{q}-og": r for q, r in og.items()}, {f"{q}-changed": r for q, r in changed.items()}, changed_docs
    )
    assert p_mrr(og, changed, changed_docs) == pytest.approx(expected, abs=1e-12)
    reference_mrr = mrr(qrels, og, [1, 5, 10])
    ours = retrieval_metrics(qrels, og, (1, 5, 10))
    for k in (1, 5, 10):
        assert ours[f"mrr_at_{k}"] == pytest.approx(np.mean(reference_mrr[f"MRR@{k}"]), abs=1e-12)
