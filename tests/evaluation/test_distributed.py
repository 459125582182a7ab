"""Sharded corpus encoding under torchrun (two CPU gloo processes) equals single-process encoding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _distributed_worker import beir_data, corpus_texts
from _evaluation_fakes import HashingEncoder

from inf_embed.evaluation import BEIREvaluator
from inf_embed.evaluation.distributed import encode_sharded, shard_bounds
from inf_embed.evaluation.search import l2_normalize

WORKER = Path(__file__).parent / "_distributed_worker.py"


@pytest.mark.parametrize("n,world", [(10, 3), (2, 4), (0, 2), (7, 1)])
def test_shards_are_contiguous_and_cover_every_item_once(n, world):
    bounds = [shard_bounds(n, world, r) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [end - start for start, end in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_shard_bounds_rejects_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="rank must be in"):
        shard_bounds(5, 2, 2)


def test_without_a_process_group_encode_sharded_is_plain_encoding():
    model = HashingEncoder()
    texts = corpus_texts()[:9]
    np.testing.assert_array_equal(encode_sharded(model.encode_document, texts), model.encode_document(texts))


def test_two_gloo_ranks_encode_shards_and_rank0_gathers_what_one_process_encodes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        str(tmp_path),
        str(tmp_path / "cache"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    model = HashingEncoder()
    texts = corpus_texts()
    single = model.encode_document(texts)
    np.testing.assert_array_equal(np.load(tmp_path / "sharded.npy"), single)
    np.testing.assert_allclose(np.load(tmp_path / "cached_first.npy"), l2_normalize(single), rtol=1e-6)
    np.testing.assert_array_equal(np.load(tmp_path / "cached_second.npy"), np.load(tmp_path / "cached_first.npy"))

    assert [r["shard_calls"] for r in reports] == [52, 51]  # each rank encoded only its shard
    assert [r["sharded_is_none"] for r in reports] == [False, True]  # only rank 0 holds the gathered rows
    assert [r["first_is_none"] for r in reports] == [False, True]
    assert [r["second_type"] for r in reports] == ["CachedEmbeddings", "NoneType"]  # both ranks saw the hit

    expected = BEIREvaluator(*beir_data(), k_values=(1, 10))(HashingEncoder())
    for report in reports:  # every rank returns rank 0's results
        for name in ("ndcg_at_10", "map_at_10", "recall_at_10", "mrr_at_10"):
            assert report["results"][name] == pytest.approx(expected[name], abs=1e-9)
