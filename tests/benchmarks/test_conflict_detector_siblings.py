"""benchmarks/conflict_detector.py: the sibling-swap misfits synthesised from the records' own poisonings."""

from __future__ import annotations

import numpy as np
import pytest


def record(query: str, poisoned: str, instruction: str) -> dict[str, str]:
    return {"query_positive": query, "query_negative": poisoned, "instruction_positive": instruction}


def test_substitution_finds_the_one_swapped_span_and_rejects_the_rest(load_benchmark):
    script = load_benchmark("conflict_detector")
    assert script.substitution("what is Neutrophils definition", "what is lymphocytes definition") == (
        "neutrophils",
        "lymphocytes",
    )
    assert script.substitution("pit bulls as pets", "pet monkeys as pets") == ("pit bulls", "pet monkeys")
    assert script.substitution("is milk frozen", "is milk frozen ok") is None  # an insertion only
    assert script.substitution("a b c d", "x b c y") is None  # two places
    assert script.substitution("same text", "same text") is None


def one_hot_embedding(groups: dict[str, int]):
    """Unit rows where phrases of one group are close (cosine 0.8) and of different groups orthogonal."""

    def embed(phrases: list[str]) -> np.ndarray:
        rows = np.zeros((len(phrases), 16))
        for k, phrase in enumerate(phrases):
            rows[k, groups[phrase]] = 0.8
            rows[k, 8 + k % 8] = 0.6
        return rows

    return embed


def test_sibling_misfits_swap_the_nearest_other_spans_into_query_or_instruction(load_benchmark):
    script = load_benchmark("conflict_detector")
    records = [
        record("dose of aspirin", "dose of ibuprofen", "aspirin safety for adults"),
        record("what is a neutrophil", "what is a lymphocyte", "define neutrophil cells"),
        record("price of naproxen", "price of acetaminophen", "naproxen for back pain"),
        record("aspirins for kids", "aspirin for kids", "children and aspirin"),  # near-identical spelling
        record("capital of peru", "capital of peru city", "Lima facts"),  # an insertion: not a swap
    ]
    groups = {
        "aspirin": 0,
        "ibuprofen": 0,
        "naproxen": 0,
        "acetaminophen": 0,
        "aspirins": 0,
        "neutrophil": 1,
        "lymphocyte": 1,
    }
    misfits = script.sibling_misfits(records, 1, ("query",), one_hot_embedding(groups))
    queries = dict(zip([r["instruction_positive"] for r in records], [None] * len(records)))
    for query, instruction in misfits:
        queries[instruction] = query
    # the nearest other drug, never the record's own swap (ibuprofen), never "aspirins" (a spelling of aspirin)
    assert queries["aspirin safety for adults"] in {"dose of naproxen", "dose of acetaminophen"}
    assert queries["naproxen for back pain"] in {"price of aspirin", "price of aspirins", "price of ibuprofen"}
    assert queries["Lima facts"] is None
    assert all(q != r["query_positive"] for q, i in misfits for r in records if r["instruction_positive"] == i)

    both = script.sibling_misfits(records, 2, ("query", "instruction"), one_hot_embedding(groups))
    swapped_instructions = [i for q, i in both if q in {r["query_positive"] for r in records}]
    assert "define lymphocyte cells" not in swapped_instructions  # the record's own swap is never used
    assert not any(i == "Lima facts" for q, i in both)  # no swap, no misfit
    assert {i for i in swapped_instructions if i.endswith("safety for adults")} == {
        "naproxen safety for adults",
        "acetaminophen safety for adults",
    }


def test_bad_sibling_arguments_are_rejected_with_the_argument_named(load_benchmark, monkeypatch, capsys):
    script = load_benchmark("conflict_detector")
    for argv, named in (
        (["--siblings", "-1"], "--siblings must be >= 0"),
        (["--siblings", "2", "--sibling-sides", "query,passage"], "--sibling-sides"),
        (["--sibling-sides", ""], "--sibling-sides"),
    ):
        monkeypatch.setattr("sys.argv", ["conflict_detector.py", *argv])
        with pytest.raises(SystemExit):
            script.main()
        assert named in capsys.readouterr().err
