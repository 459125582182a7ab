"""benchmarks/finetune_vs_st.py: the helpers the evaluation scripts share."""

from __future__ import annotations

import json
import platform

import torch


def test_write_rows_json_writes_meta_and_rows_and_skips_without_a_path(load_benchmark, tmp_path):
    script = load_benchmark("finetune_vs_st")
    script.write_rows_json(None, [{"a": 1}], model="m")  # no --json: nothing written, no error
    target = tmp_path / "out" / "rows.json"
    script.write_rows_json(
        target, [{"rule": "x", "results": {"infir": {"ndcg_at_10": 0.5}}}], model=tmp_path, base=None
    )
    written = json.loads(target.read_text())
    assert written["rows"] == [{"rule": "x", "results": {"infir": {"ndcg_at_10": 0.5}}}]
    assert written["meta"] == {
        "model": str(tmp_path),
        "base": "None",
        "torch": torch.__version__,
        "machine": platform.machine(),
    }


def test_the_peer_gets_two_rows_per_record_and_the_presets_plain_pairs(load_benchmark):
    from inf_embed.data import TripletExample

    script = load_benchmark("finetune_vs_st")
    records = [
        TripletExample(
            instruction=f"I{k}", query=f"Q{k}", positive=f"P{k}", instruction_negative=f"J{k}",
            instruction_negative_passage=f"D{k}",
        )
        for k in range(2)
    ]  # fmt: skip
    tables = script.st_rows(records, plain_queries=False)
    assert list(tables) == ["instructed"]
    assert tables["instructed"] == {
        "anchor": ["Q0 I0", "Q0 J0", "Q1 I1", "Q1 J1"],
        "positive": ["P0", "D0", "P1", "D1"],
        "negative": ["D0", "P0", "D1", "P1"],
    }
    plain = script.st_rows(records, plain_queries=True)["plain"]
    assert plain == {"anchor": ["Q0", "Q1"], "positive": ["P0", "P1"]}
