"""Evaluators on small synthetic data and on the shared data, with a hashing encoder, checked against metrics
computed on brute-force runs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from _evaluation_fakes import (
    CORPUS,
    HashingEncoder,
    infir_records,
    write_beir,
    write_followir,
    write_jsonl,
    write_qrels,
)

from inf_embed.evaluation import (
    BEIREvaluator,
    FollowIREvaluator,
    InfIREvaluator,
    NevIREvaluator,
    get_evaluator,
    list_evaluators,
    p_mrr,
    paired_accuracy,
    retrieval_metrics,
)


def _unit(array: np.ndarray) -> np.ndarray:
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def _brute_run(model, query_ids, queries, instructions, corpus):
    doc_ids = list(corpus)
    q = _unit(model.encode_query(queries, instruction=instructions))
    d = _unit(model.encode_document([corpus[i] for i in doc_ids]))
    scores = q @ d.T
    return {qid: {doc: float(s) for doc, s in zip(doc_ids, row)} for qid, row in zip(query_ids, scores)}


@pytest.fixture
def beir_folder(tmp_path: Path) -> Path:
    return write_beir(tmp_path)


def test_registry_lists_the_four_formats_and_names_them_on_error():
    assert list_evaluators() == ["beir", "followir", "infir", "nevir"]
    assert get_evaluator("nevir") is NevIREvaluator
    with pytest.raises(ValueError, match="known: beir, followir, infir, nevir"):
        get_evaluator("bright")


def test_beir_evaluator_matches_metrics_of_a_brute_force_run(beir_folder, hashing_model):
    evaluator = BEIREvaluator.from_path(beir_folder, split="test", k_values=(1, 3, 10))
    results = evaluator(hashing_model)
    titled = {k: (f"Energy {v}" if k != "d5" else v) for k, v in CORPUS.items()}  # title + " " + text, as mteb
    run = _brute_run(
        hashing_model,
        ["q1", "q2"],
        ["how do solar panels work", "power from wind"],
        ["prefer home rooftop systems", None],
        titled,
    )
    expected = retrieval_metrics({"q1": {"d1": 1, "d3": 2}, "q2": {"d2": 1}}, run, (1, 3, 10))
    for name, value in expected.items():
        assert results[name] == pytest.approx(value, abs=1e-6), name
    assert results["main_score"] == results["ndcg_at_10"]
    assert results["num_queries"] == 2 and results["num_documents"] == 5


def test_beir_instructions_reach_encode_query_separately_from_the_query(beir_folder, hashing_model):
    BEIREvaluator.from_path(beir_folder)(hashing_model)
    call = hashing_model.query_calls[-1]
    assert call["queries"] == ["how do solar panels work", "power from wind"]
    assert call["instruction"] == ["prefer home rooftop systems", None]
    assert call["normalize_embeddings"] is True and call["convert_to_numpy"] is True


class UnnormalisedModel(HashingEncoder):
    """Ignores normalize_embeddings and scales every row by a different factor (paper bug B4's setting)."""

    def _finish(self, rows, normalize):
        array = np.stack(rows).astype(np.float32)
        return array * np.linspace(0.1, 10.0, len(array), dtype=np.float32)[:, None]


def test_evaluators_l2_normalise_even_when_the_model_does_not(beir_folder, shared_data):
    clean, raw = HashingEncoder(), UnnormalisedModel()
    beir = BEIREvaluator.from_path(beir_folder)
    assert beir(raw)["ndcg_at_10"] == pytest.approx(beir(clean)["ndcg_at_10"], abs=1e-9)
    nevir = NevIREvaluator.from_path(shared_data / "nevir")
    np.testing.assert_allclose(nevir.pair_scores(raw), nevir.pair_scores(clean), atol=1e-6)


def test_beir_from_path_names_missing_files_and_bad_lines(tmp_path, beir_folder):
    with pytest.raises(FileNotFoundError, match="must be a folder"):
        BEIREvaluator.from_path(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="dev.tsv"):
        BEIREvaluator.from_path(beir_folder, split="dev")
    with (beir_folder / "corpus.jsonl").open("a") as handle:
        handle.write("{broken\n")
    with pytest.raises(ValueError, match=r"corpus.jsonl:6: not valid JSON"):
        BEIREvaluator.from_path(beir_folder)


def test_beir_warns_about_relevant_documents_missing_from_the_corpus(caplog):
    queries = {"q1": "solar panels", "q2": "wind power"}
    qrels = {"q1": {"d1": 1, "D3": 1}, "q2": {"x9": 2, "d5": 0}}
    with caplog.at_level(logging.WARNING, logger="inf_embed.evaluation"):
        BEIREvaluator(CORPUS, queries, qrels)
    assert "2 of 3 relevant qrels documents are not in the corpus" in caplog.text
    assert "'D3'" in caplog.text and "1 queries have none of their relevant documents" in caplog.text


def test_beir_raises_when_no_relevant_document_is_in_the_corpus():
    with pytest.raises(
        ValueError, match=r"none of the 2 relevant qrels documents is in the corpus.*'q1' -> document 'D1'"
    ):
        BEIREvaluator(CORPUS, {"q1": "solar", "q2": "wind"}, {"q1": {"D1": 1, "d2": 0}, "q2": {"D2": 1}})


def test_beir_results_do_not_depend_on_corpus_order_or_top_k_when_documents_tie(hashing_model):
    # a and b have the same text, so exactly tied scores; the metrics rank b (larger id) first, and so must the cut.
    texts = {"a": "solar panels on roofs", "b": "solar panels on roofs", "c": "wind turbines"}
    seen = set()
    for order in (["a", "b", "c"], ["b", "a", "c"]):
        corpus = {d: texts[d] for d in order}
        for top_k in (1, 3):
            evaluator = BEIREvaluator(corpus, {"q": "solar panels"}, {"q": {"a": 1}}, k_values=(1,), top_k=top_k)
            assert list(evaluator.search(hashing_model)["q"])[0] == "b"
            seen.add(evaluator(hashing_model)["ndcg_at_1"])
    assert seen == {0.0}


# ---- FollowIR --------------------------------------------------------------------------------------------------------


def test_followir_p_mrr_and_per_run_metrics_match_brute_force_runs(tmp_path, hashing_model):
    write_followir(tmp_path)
    evaluator = FollowIREvaluator.from_path(tmp_path, k_values=(1, 5))
    assert evaluator.changed_docs == {"a": ["d1"], "b": ["d4"]}  # relevant under og, not under changed
    results = evaluator(hashing_model)
    og = _brute_run(
        hashing_model,
        ["a", "b"],
        ["solar panels", "making power"],
        ["any kind of solar installation", "wind or water power"],
        CORPUS,
    )
    changed = _brute_run(
        hashing_model,
        ["a", "b"],
        ["solar panels", "making power"],
        ["only rooftop installations for homes", "only wind power, not water"],
        CORPUS,
    )
    assert results["p_mrr"] == pytest.approx(p_mrr(og, changed, {"a": ["d1"], "b": ["d4"]}), abs=1e-9)
    assert results["main_score"] == results["p_mrr"]
    og_expected = retrieval_metrics({"a": {"d1": 1, "d3": 1}, "b": {"d2": 1, "d4": 1}}, og, (1, 5))
    assert results["og_ndcg_at_5"] == pytest.approx(og_expected["ndcg_at_5"], abs=1e-6)
    assert "changed_map_at_5" in results and -1 <= results["p_mrr"] <= 1


def test_followir_uses_qrel_diff_and_reranks_only_top_ranked_candidates(tmp_path, hashing_model):
    write_followir(tmp_path, with_diff=True, with_top_ranked=True)
    evaluator = FollowIREvaluator.from_path(tmp_path, k_values=(1, 3))
    assert evaluator.changed_docs == {"a": ["d1"]}
    og_run, changed_run = evaluator.search(hashing_model)
    assert set(og_run["a"]) == {"d1", "d3", "d5"} and set(changed_run["b"]) == {"d2", "d4", "d1"}
    assert -1 <= evaluator(hashing_model)["p_mrr"] <= 1


def test_followir_requires_both_instructions_for_every_query():
    with pytest.raises(ValueError, match="changed_instructions has no entry for 1 queries"):
        FollowIREvaluator(CORPUS, {"a": "x"}, {"a": "i"}, {}, {"a": {"d1": 1}}, {"a": {}})


def test_an_instruction_blind_model_scores_zero_p_mrr_on_followir(tmp_path):
    write_followir(tmp_path)
    blind = HashingEncoder(instruction_weight=0.0)
    assert FollowIREvaluator.from_path(tmp_path)(blind)["p_mrr"] == 0.0


def _followir_args(query_ids):
    """Constructor arguments of write_followir's two queries (a, b), restricted to ``query_ids``."""
    queries = {"a": "solar panels", "b": "making power"}
    og = {"a": "any kind of solar installation", "b": "wind or water power"}
    changed = {"a": "only rooftop installations for homes", "b": "only wind power, not water"}
    og_qrels = {"a": {"d1": 1, "d3": 1}, "b": {"d2": 1, "d4": 1}}
    changed_qrels = {"a": {"d3": 1, "d1": 0}, "b": {"d2": 1}}
    return [{q: m[q] for q in query_ids if q in m} for m in (queries, og, changed, og_qrels, changed_qrels)]


def test_followir_leaves_a_query_without_top_ranked_candidates_out_of_the_runs_with_one_warning(hashing_model, caplog):
    top_ranked = {"a": ["d1", "d3", "d5"]}  # b has no candidates
    with caplog.at_level(logging.WARNING, logger="inf_embed.evaluation"):
        partial = FollowIREvaluator(CORPUS, *_followir_args(["a", "b"]), top_ranked=top_ranked, k_values=(1, 5))
    warnings = [r.getMessage() for r in caplog.records if "pre-ranked" in r.getMessage()]
    assert warnings == [
        "FollowIR: 1 of 2 queries have no pre-ranked documents for the og and changed runs and are left out (e.g. 'b')"
    ]
    og_run, changed_run = partial.search(hashing_model)
    assert set(og_run) == set(changed_run) == {"a"}
    only_a = FollowIREvaluator(CORPUS, *_followir_args(["a"]), top_ranked=top_ranked, k_values=(1, 5))
    got, expected = partial(hashing_model), only_a(hashing_model)
    for name in ("p_mrr", "og_ndcg_at_5", "changed_ndcg_at_5", "og_map_at_5", "changed_recall_at_1"):
        assert got[name] == pytest.approx(expected[name], abs=1e-12), name


def test_followir_does_not_score_a_query_without_changed_qrels_as_zero(hashing_model):
    queries, og, changed, og_qrels, changed_qrels = _followir_args(["a", "b"])
    del changed_qrels["b"]  # every relevant document of b was removed under the changed instruction
    evaluator = FollowIREvaluator(CORPUS, queries, og, changed, og_qrels, changed_qrels, k_values=(1, 5))
    assert set(evaluator.changed_qrels) == {"a"} and evaluator.changed_docs["b"] == ["d2", "d4"]
    _, changed_run = evaluator.search(hashing_model)
    results = evaluator(hashing_model)
    expected = retrieval_metrics({"a": changed_qrels["a"]}, changed_run, (1, 5))
    assert results["changed_ndcg_at_5"] == pytest.approx(expected["ndcg_at_5"], abs=1e-12)


def test_followir_from_path_warns_about_every_id_it_cannot_match(tmp_path, caplog):
    write_followir(tmp_path)
    with (tmp_path / "queries.jsonl").open("a") as handle:
        handle.write(json.dumps({"_id": "c-og", "text": "coffee", "instruction": "espresso"}) + "\n")
    write_qrels(
        tmp_path / "qrels" / "test.tsv",
        [("a-og", "d1", 1), ("a-og", "d3", 1), ("a-changed", "d3", 1), ("b", "d2", 1), ("b-og", "d4", 1)],
    )
    write_jsonl(
        tmp_path / "qrel_diff.jsonl",
        [{"query-id": "a", "corpus-ids": ["d1"]}, {"query-id": "zz-og", "corpus-ids": ["d2"]}],
    )
    with caplog.at_level(logging.WARNING, logger="inf_embed.evaluation"):
        evaluator = FollowIREvaluator.from_path(tmp_path)
    text = caplog.text
    assert "1 queries have no '-changed' / '-og' counterpart and are ignored (e.g. 'c-og')" in text
    assert "1 qrels/test.tsv query ids do not end in '-og' or '-changed' and are ignored (e.g. 'b')" in text
    assert "1 changed_docs queries have no query and are ignored (e.g. 'zz')" in text
    assert evaluator.query_ids == ["a", "b"] and evaluator.changed_docs == {"a": ["d1"]}


def test_followir_top_ranked_keeps_one_candidate_list_per_side(tmp_path, hashing_model):
    write_followir(tmp_path)
    write_jsonl(
        tmp_path / "top_ranked.jsonl",
        [
            {"query-id": "a-og", "corpus-ids": ["d1", "d3", "d5"]},
            {"query-id": "a-changed", "corpus-ids": ["d2", "d1"]},
            {"query-id": "b", "corpus-ids": ["d2", "d4"]},  # no suffix: both sides
        ],
    )
    evaluator = FollowIREvaluator.from_path(tmp_path, k_values=(1, 3))
    assert evaluator.top_ranked == {"a": ["d1", "d3", "d5"], "b": ["d2", "d4"]}
    assert evaluator.changed_top_ranked == {"a": ["d2", "d1"], "b": ["d2", "d4"]}
    og_run, changed_run = evaluator.search(hashing_model)
    assert set(og_run["a"]) == {"d1", "d3", "d5"} and set(changed_run["a"]) == {"d2", "d1"}
    with (tmp_path / "top_ranked.jsonl").open("a") as handle:
        handle.write(json.dumps({"query-id": "a-og", "corpus-ids": ["d1"]}) + "\n")
    with pytest.raises(ValueError, match=r"top_ranked\.jsonl:4: a second top_ranked list for query 'a' \(og side"):
        FollowIREvaluator.from_path(tmp_path)


@pytest.mark.parametrize("name", ["qrel_diff.jsonl", "top_ranked.jsonl"])
def test_followir_names_the_line_of_a_record_without_corpus_ids(tmp_path, name):
    write_followir(tmp_path)
    write_jsonl(tmp_path / name, [{"query-id": "a", "corpus_ids": ["d1"]}])
    with pytest.raises(ValueError, match=rf"{name}:1: missing field 'corpus-ids'"):
        FollowIREvaluator.from_path(tmp_path)


# ---- InF-IR ----------------------------------------------------------------------------------------------------------


EXTRA = {
    "p0": "solar explained with rooftop homes and more solar facts",
    "x1": "a recipe for bread",
    "x2": "tea explained with green tea health and more tea facts",
}


def test_infir_corpus_holds_positives_hard_negatives_and_extra_passages_without_duplicates():
    records = infir_records()
    del records[3]["document_id"]  # its P+ text is already in EXTRA as x2: reuse that id
    evaluator = InfIREvaluator(records, extra_corpus=EXTRA)
    assert evaluator.pos_ids == ["p0", "p1", "p2", "x2"]
    assert evaluator.neg_ids == ["r0-hn1", "r1-hn1", "r2-hn1", "r3-hn1"]
    assert len(evaluator.corpus) == 3 + 2 + 4  # extra (3) + new positives p1, p2 + 4 hard negatives


def test_infir_rejects_conflicting_ids_and_missing_fields_naming_the_record():
    records = infir_records()
    records[0]["document"] = "another text"
    with pytest.raises(ValueError, match=r"records\[0\] \(id 'r0'\): document id 'p0' is already in the corpus"):
        InfIREvaluator(records, extra_corpus=EXTRA)
    records = infir_records()
    del records[2]["instruction_negative"]
    with pytest.raises(ValueError, match=r"records\[2\].*\['instruction_negative'\]"):
        InfIREvaluator(records)


def test_infir_metrics_match_brute_force_definitions(hashing_model):
    records = infir_records()
    evaluator = InfIREvaluator(records, extra_corpus=EXTRA, k_values=(1, 10))
    results = evaluator(hashing_model)
    ids = [r["id"] for r in records]
    corpus = evaluator.corpus

    def run(queries, instructions):
        return _brute_run(hashing_model, ids, queries, instructions, corpus)

    pos = run([r["query_positive"] for r in records], [r["instruction_positive"] for r in records])
    neg_i = run([r["query_positive"] for r in records], [r["instruction_negative"] for r in records])
    neg_q = run([r["query_negative"] for r in records], [r["instruction_positive"] for r in records])
    changed = {r["id"]: [r["document_id"]] for r in records}
    assert results["p_mrr_instruction"] == pytest.approx(p_mrr(pos, neg_i, changed), abs=1e-9)
    assert results["p_mrr_query"] == pytest.approx(p_mrr(pos, neg_q, changed), abs=1e-9)
    pair = [
        [
            [pos[r["id"]][r["document_id"]], pos[r["id"]][f"{r['id']}-hn1"]],
            [neg_i[r["id"]][r["document_id"]], neg_i[r["id"]][f"{r['id']}-hn1"]],
        ]
        for r in records
    ]
    assert results["paired_accuracy"] == paired_accuracy(pair)
    expected = retrieval_metrics({r["id"]: {r["document_id"]: 1} for r in records}, pos, (1, 10))
    assert results["ndcg_at_10"] == pytest.approx(expected["ndcg_at_10"], abs=1e-6)
    assert results["main_score"] == results["p_mrr_instruction"]


def test_infir_evaluate_scores_matches_the_embedding_path(hashing_model):
    evaluator = InfIREvaluator(infir_records(), extra_corpus=EXTRA, k_values=(1, 10))
    texts, instructions = evaluator.query_texts()
    n = len(evaluator.rows)
    assert texts[:n] == texts[n : 2 * n] == [r["query_positive"] for r in evaluator.rows]
    assert instructions[2 * n :] == [r["instruction_positive"] for r in evaluator.rows]
    queries = hashing_model.encode_query(texts, instruction=instructions, normalize_embeddings=True)
    documents = hashing_model.encode_document(list(evaluator.corpus.values()), normalize_embeddings=True)
    from_scores = evaluator.evaluate_scores(np.asarray(queries) @ np.asarray(documents).T)
    from_model = evaluator(hashing_model)
    assert set(from_scores) == set(from_model) - {"eval_seconds"}
    for name, value in from_scores.items():
        assert value == pytest.approx(from_model[name], abs=1e-6), name


def test_infir_evaluate_scores_rejects_a_wrong_shape_or_non_finite_scores():
    evaluator = InfIREvaluator(infir_records(), extra_corpus=EXTRA)
    rows, columns = 3 * len(evaluator.rows), len(evaluator.corpus)
    with pytest.raises(
        ValueError, match=rf"scores: expected shape \({rows}, {columns}\).*got \({rows - 1}, {columns}\)"
    ):
        evaluator.evaluate_scores(np.zeros((rows - 1, columns)))
    bad = np.zeros((rows, columns))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="scores: expected finite"):
        evaluator.evaluate_scores(bad)


def test_infir_evaluate_scores_cuts_ties_by_doc_id_like_the_metrics():
    cut = InfIREvaluator(infir_records(), extra_corpus=EXTRA, top_k=3, k_values=(1, 3))
    whole = InfIREvaluator(infir_records(), extra_corpus=EXTRA, top_k=None, k_values=(1, 3))
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 3, size=(3 * len(cut.rows), len(cut.corpus))).astype(np.float64)  # many ties
        got, expected = cut.evaluate_scores(scores), whole.evaluate_scores(scores)
        for name in ("ndcg", "map", "recall", "mrr"):
            for k in (1, 3):
                assert got[f"{name}_at_{k}"] == expected[f"{name}_at_{k}"], (name, k)


def test_an_instruction_blind_model_gets_zero_instruction_p_mrr_and_zero_paired_accuracy():
    results = InfIREvaluator(infir_records(), extra_corpus=EXTRA)(HashingEncoder(instruction_weight=0.0))
    assert results["p_mrr_instruction"] == 0.0
    assert results["paired_accuracy"] == 0.0  # one ranking cannot put P+ first and D- first


def test_infir_dev_split_with_msmarco_corpus(shared_data, hashing_model):
    evaluator = InfIREvaluator.from_path(
        shared_data / "infir-marco", split="dev", extra_corpus=shared_data / "instructir" / "msmarco_filtered"
    )
    results = evaluator(hashing_model)
    assert results["num_records"] == 200
    assert results["num_documents"] == 1743 + 200  # every P+ is an msmarco_filtered passage; 200 D-
    for name in ("p_mrr_instruction", "p_mrr_query"):
        assert -1 <= results[name] <= 1
    assert 0 <= results["paired_accuracy"] <= 1 and 0 < results["ndcg_at_10"] <= 1


# ---- NevIR -----------------------------------------------------------------------------------------------------------


def test_nevir_paired_accuracy_on_the_dev_pairs_matches_its_definition(shared_data, hashing_model):
    evaluator = NevIREvaluator.from_path(shared_data / "nevir")
    results = evaluator(hashing_model)
    pairs = [json.loads(line) for line in (shared_data / "nevir" / "nevir_pairs.jsonl").read_text().splitlines()]
    q1 = _unit(hashing_model.encode_query([p["q1"] for p in pairs]))
    q2 = _unit(hashing_model.encode_query([p["q2"] for p in pairs]))
    d1 = _unit(hashing_model.encode_document([p["doc1"] for p in pairs]))
    d2 = _unit(hashing_model.encode_document([p["doc2"] for p in pairs]))
    s = lambda a, b: np.einsum("nd,nd->n", a, b)  # noqa: E731
    correct = (s(q1, d1) > s(q1, d2)) & (s(q2, d2) > s(q2, d1))
    assert results["num_pairs"] == 113
    assert results["paired_accuracy"] == pytest.approx(correct.mean())
    assert results["q1_accuracy"] == pytest.approx((s(q1, d1) > s(q1, d2)).mean())


def test_nevir_rejects_pairs_with_missing_fields():
    with pytest.raises(ValueError, match=r"pairs\[0\] \(id 'x'\): missing or empty fields \['doc2'\]"):
        NevIREvaluator([{"id": "x", "q1": "a", "q2": "b", "doc1": "c"}])


# ---- a real (tiny) InfEmbed --------------------------------------------------------------------------------------


def test_every_evaluator_runs_on_a_tiny_infembed_and_the_cache_serves_the_second_run(tiny_model, tmp_path, shared_data):
    cache = tmp_path / "cache"
    beir = BEIREvaluator.from_path(write_beir(tmp_path / "beir"), k_values=(1, 10), cache_dir=cache)
    first = beir(tiny_model)
    assert len(list(cache.glob("corpus-*.safetensors"))) == 1
    assert beir(tiny_model)["ndcg_at_10"] == pytest.approx(first["ndcg_at_10"], abs=1e-6)
    assert len(list(cache.glob("corpus-*.safetensors"))) == 1  # reused, not re-written
    with torch.no_grad():
        next(tiny_model.parameters()).add_(0.01)
    beir(tiny_model)
    assert len(list(cache.glob("corpus-*.safetensors"))) == 2  # new weights, new entry

    followir = FollowIREvaluator.from_path(write_followir(tmp_path / "followir"), k_values=(1, 5))(tiny_model)
    infir = InfIREvaluator(infir_records(), extra_corpus=EXTRA)(tiny_model)
    nevir = NevIREvaluator.from_path(shared_data / "nevir")(tiny_model)
    assert -1 <= followir["p_mrr"] <= 1 and -1 <= infir["p_mrr_instruction"] <= 1
    assert 0 <= nevir["paired_accuracy"] <= 1 and nevir["num_pairs"] == 113
