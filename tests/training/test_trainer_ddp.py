"""Trainer under DDP: two gloo processes give the same losses and updated weights as one process on the
concatenated batch (in-batch negatives gathered across ranks, gradients through the local copies), uncached and
with GradCache (DDP ``no_sync`` on all but the last chunk)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _training_helpers import (
    one_thread,  # noqa: F401  (autouse fixture)
    records,
    tiny,
)

from inf_embed.training import Trainer, TrainingArguments

WORLD_SIZE = 2
RECORDS_PER_RANK = 3
CACHE_SIZES = (None, 4)


def _args(out_dir: str, batch_size: int, cache: int | None) -> TrainingArguments:
    # M = 2: each item's variants are its own instruction and its record's other one, so no random draw differs
    # between one process and two.
    return TrainingArguments(
        output_dir=out_dir,
        batch_size=batch_size,
        max_steps=2,
        num_instruction_variants=2,
        learning_rate=1e-4,
        warmup_steps=0,
        logging_steps=1,
        show_progress_bar=False,
        loss="multi:P+I+IQ",
        cache_chunk_size=cache,
    )


def _worker(rank: int, store: str, model_dir: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.manual_seed(100 + rank)  # the trainer must not depend on the ranks' prior random state
        for cache in CACHE_SIZES:
            model = tiny(model_dir, "concat")
            out = Trainer(
                model, _args(os.path.join(out_dir, f"ddp-{cache}"), RECORDS_PER_RANK, cache), records(12), device="cpu"
            ).train()
            torch.save(
                {"weights": model.state_dict(), "losses": [e["loss"] for e in out.log_history]},
                os.path.join(out_dir, f"rank{rank}-{cache}.pt"),
            )
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def no_dropout_model_dir(tiny_model_dir, tmp_path_factory) -> str:
    """The tiny BERT without dropout: one process and two must see the same network."""
    folder = tmp_path_factory.mktemp("nodrop") / "bert"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def test_two_gloo_processes_match_one_process_on_the_concatenated_batch(no_dropout_model_dir, tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "store"), no_dropout_model_dir, str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    for cache in CACHE_SIZES:
        single_model = tiny(no_dropout_model_dir, "concat")
        single = Trainer(
            single_model, _args(str(tmp_path / f"single-{cache}"), RECORDS_PER_RANK * WORLD_SIZE, cache), records(12)
        ).train()
        results = [torch.load(tmp_path / f"rank{r}-{cache}.pt") for r in range(WORLD_SIZE)]
        expected_losses = [e["loss"] for e in single.log_history]
        for result in results:
            assert result["losses"] == pytest.approx(expected_losses, rel=1e-5), cache
        for name, value in single_model.state_dict().items():
            torch.testing.assert_close(
                results[0]["weights"][name], results[1]["weights"][name], rtol=0, atol=0, msg=f"{name} (cache {cache})"
            )
            torch.testing.assert_close(
                results[0]["weights"][name], value, rtol=1e-4, atol=2e-5, msg=f"{name} (cache {cache})"
            )
