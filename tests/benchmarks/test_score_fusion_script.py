"""benchmarks/score_fusion.py: its argument parsing, the score rules and the score matrices it evaluates."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

# two queries over four documents
JOINED = np.array([[0.9, 0.8, 0.1, 0.0], [0.2, 0.7, 0.6, 0.5]])
ALONE = np.array([[0.3, 0.9, 0.2, 0.1], [0.9, 0.1, 0.8, 0.0]])


@pytest.fixture
def script(load_benchmark):
    return load_benchmark("score_fusion")


def test_arguments_parse_and_name_what_is_wrong(script):
    assert script._offsets("0, 0.5,-0.1") == [0.0, 0.5, -0.1]
    assert script._top_ks("2,3") == [2, 3]
    for parse, bad in (
        (script._offsets, "0.1,x"),
        (script._offsets, "inf"),
        (script._top_ks, "0"),
        (script._top_ks, "2.5"),
    ):
        with pytest.raises(argparse.ArgumentTypeError, match="expected"):
            parse(bad)


def test_capped_by_query_lets_the_query_veto_only_below_the_joined_score(script):
    got = script.capped_by_query(0.1)(JOINED, ALONE)
    np.testing.assert_allclose(got, [[0.4, 0.8, 0.1, 0.0], [0.2, 0.2, 0.6, 0.1]])
    np.testing.assert_allclose(script.capped_by_query(10.0)(JOINED, ALONE), JOINED)


def test_standardized_rule_caps_on_each_rows_z_scores(script):
    z = script.standardize(JOINED)
    np.testing.assert_allclose(z.mean(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=1), 1.0)
    np.testing.assert_allclose(script.standardize(np.ones((1, 3))), 0.0)  # a constant row: no division by zero
    got = script.standardized_capped_by_query(0.0)(JOINED, ALONE)
    np.testing.assert_allclose(got, np.minimum(z, script.standardize(ALONE)))


def test_query_top_k_first_ranks_the_query_alones_best_above_the_rest_by_the_joined_score(script):
    got = script.query_top_k_first(2)(JOINED, ALONE)
    assert np.argsort(-got, axis=1).tolist() == [[0, 1, 2, 3], [2, 0, 1, 3]]
    assert np.argsort(-script.query_top_k_first(1)(JOINED, ALONE), axis=1)[:, 0].tolist() == [1, 0]


def test_rules_start_with_the_model_as_is_and_the_query_alone(script):
    args = argparse.Namespace(offsets=[0.1], z_offsets=[1.0], query_top_k=[3])
    rules = script.rules_from_arguments(args)
    assert [name for name, _ in rules] == [
        "s_j (the model as is)",
        "s_q (the query alone)",
        "min(s_j, s_q + 0.1)",
        "min(z_j, z_q + 1)",
        "query top 3 first",
    ]
    np.testing.assert_array_equal(rules[0][1](JOINED, ALONE), JOINED)
    np.testing.assert_array_equal(rules[1][1](JOINED, ALONE), ALONE)


def test_the_model_as_is_reproduces_the_evaluators_own_metrics(script, tiny_model, shared_data):
    from inf_embed.evaluation import InfIREvaluator
    from inf_embed.evaluation.loaders import read_jsonl

    records = [record for _, record in read_jsonl(shared_data / "infir-marco" / "dev.jsonl")][:12]
    evaluator = InfIREvaluator(records)
    joined, alone = script.score_matrices(tiny_model, evaluator)
    assert joined.shape == alone.shape == (36, len(evaluator.corpus))
    assert not np.allclose(joined, alone)  # the tiny attention model does read the instruction
    np.testing.assert_allclose(alone[:12], alone[12:24], atol=1e-6)  # Q+ twice: the instruction plays no part
    from_scores = evaluator.evaluate_scores(joined)
    for name, value in evaluator(tiny_model).items():
        if name != "eval_seconds":
            assert from_scores[name] == pytest.approx(value, abs=1e-5), name


def test_positive_ranks_count_ties_against_p_plus(script):
    class Evaluator:
        corpus = {"a": "", "p": "", "b": ""}
        pos_ids = ["p"]

    scores = np.array([[0.1, 0.5, 0.2], [0.5, 0.5, 0.2], [0.9, 0.1, 0.2]])  # (I+,Q+), (I-,Q+), (I+,Q-) of one record
    assert script.positive_ranks(Evaluator, scores).tolist() == [1, 2, 3]
