"""Trainer loop: accumulation groups within an epoch, evaluation that leaves training unchanged, measured speed."""

from __future__ import annotations

import random
import time

import torch
from _training_helpers import (
    one_thread,  # noqa: F401  (autouse fixture)
    records,
    tiny,
)
from _training_helpers import (
    small_args as _args,
)
from _training_helpers import (
    weights as _weights,
)

from inf_embed.training import Trainer


def test_last_partial_accumulation_group_stays_in_its_epoch_and_is_averaged_over_its_micro_batches(
    tiny_model_dir, tmp_path
):
    # 10 records in batches of 4: 3 micro-batches per epoch, so with 2 accumulation steps each epoch is 2 + 1
    trainer = Trainer(
        tiny(tiny_model_dir, "concat"),
        _args(tmp_path, batch_size=4, max_steps=None, epochs=2, gradient_accumulation_steps=2),
        records(10),
        loss="uni:P",
    )
    assert trainer.steps_per_epoch == 2 and trainer.total_steps == 4
    assert [list(trainer.step_micro_batches(s)) for s in range(4)] == [[0, 1], [2], [3, 4], [5]]
    seen: list[int] = []
    scales: list[float] = []
    text_batch, forward_backward = trainer._text_batch, trainer._forward_backward
    trainer._text_batch = lambda index: (seen.append(index), text_batch(index))[1]
    trainer._forward_backward = lambda text, **kw: (scales.append(kw["scale"]), forward_backward(text, **kw))[1]
    out = trainer.train()
    assert seen == [0, 1, 2, 3, 4, 5]  # each epoch's micro-batches once, none of a third epoch
    assert scales == [0.5, 0.5, 1.0, 0.5, 0.5, 1.0]  # a lone micro-batch is the whole step's gradient
    assert [e["epoch"] for e in out.log_history] == [0.5, 1.0, 1.5, 2.0]


def test_evaluation_during_training_trains_the_same_weights_without_autograd(tiny_model_dir, tmp_path):
    seen: list[tuple[bool, bool]] = []

    def evaluator(model):
        seen.append((model.training, torch.is_grad_enabled()))
        torch.rand(5), random.random()  # e.g. sampling a subset: draws from the streams training uses next
        return {"score": 1.0}

    runs = []
    for k, ev in enumerate((None, evaluator)):
        model = tiny(tiny_model_dir, "concat")
        Trainer(model, _args(tmp_path / f"run{k}", eval_steps=1), records(8), loss="uni:P+I", evaluator=ev).train()
        runs.append(_weights(model))
    assert seen == [(False, False)] * 3  # steps 1, 2 and the end
    for name in runs[0]:
        assert torch.equal(runs[0][name], runs[1][name]), name


def test_speed_and_train_seconds_leave_out_evaluation_time(tiny_model_dir, tmp_path, monkeypatch):
    offset = {"s": 0.0}
    real = time.perf_counter
    monkeypatch.setattr(time, "perf_counter", lambda: real() + offset["s"])

    def slow_evaluator(model):
        offset["s"] += 1000.0  # each evaluation "takes" 1000 s
        return {"score": 1.0}

    out = Trainer(
        tiny(tiny_model_dir, "concat"),
        _args(tmp_path, eval_steps=1),
        records(8),
        loss="uni:P",
        evaluator=slow_evaluator,
    ).train()
    assert out.train_seconds < 1000.0
    speeds = [e["examples_per_second"] for e in out.log_history if "loss" in e]
    assert len(speeds) == 3 and all(speed > 6 / 1000.0 for speed in speeds)  # 6 items a step
    assert out.examples_per_second > 18 / 1000.0
