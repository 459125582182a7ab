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


class _ExitOnUnpickle:
    """Unpickling this (in a pool worker, with the model it hangs on) ends that process with ``code`` at once."""

    def __init__(self, code: int) -> None:
        self.code = code

    def __reduce__(self):
        return (os._exit, (self.code,))


def test_a_pool_worker_that_exits_cleanly_without_its_rows_is_an_error_not_a_hang(tiny_model):
    import multiprocessing
    import threading

    tiny_model._exit_in_worker = _ExitOnUnpickle(0)  # exit code 0: the case the pool used to wait on forever
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            tiny_model.encode(["a", "b", "c"], device=["cpu"])
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), "encode(device=[...]) hung on a worker that exited without reporting"
    assert len(outcome) == 1 and isinstance(outcome[0], RuntimeError)
    assert "exited with code 0 without returning its rows" in str(outcome[0])
    assert not multiprocessing.active_children()  # the worker was reaped


def test_pool_collection_keeps_rows_of_a_worker_that_exited_with_an_error_after_sending():
    import io
    import queue
    import threading
    import time
    from types import SimpleNamespace

    import torch

    from inf_embed.multiprocess import _collect

    def payload(value: float) -> bytes:
        buffer = io.BytesIO()
        torch.save(torch.full((1, 2), value), buffer)
        return buffer.getvalue()

    results: queue.Queue = queue.Queue()
    results.put((0, payload(0.0), None))
    # shard 0 delivered, then its process died with code 1 (e.g. a crash at interpreter exit); shard 1 is slow
    processes = {
        0: SimpleNamespace(is_alive=lambda: False, exitcode=1),
        1: SimpleNamespace(is_alive=lambda: True, exitcode=None),
    }
    threading.Timer(0.3, lambda: results.put((1, payload(1.0), None))).start()
    start = time.perf_counter()
    outputs = _collect(processes, results, ["cpu", "cpu"], poll=0.05)
    assert time.perf_counter() - start < 5
    assert [float(outputs[s][0, 0]) for s in sorted(outputs)] == [0.0, 1.0]

    lost = {0: SimpleNamespace(is_alive=lambda: False, exitcode=-9)}
    with pytest.raises(RuntimeError, match="device cpu exited with code -9 without returning its rows"):
        _collect(lost, queue.Queue(), ["cpu"], poll=0.05)


def test_pool_workers_share_the_parents_threads_among_the_cpu_workers():
    from inf_embed.multiprocess import threads_per_worker

    assert threads_per_worker(["cpu", "cpu"], 8) == [4, 4]
    assert threads_per_worker(["cpu", "cpu", "cpu"], 2) == [1, 1, 1]
    assert threads_per_worker(["cuda:0", "cuda:1", "cpu"], 6) == [1, 1, 6]
