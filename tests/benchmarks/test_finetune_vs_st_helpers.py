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
