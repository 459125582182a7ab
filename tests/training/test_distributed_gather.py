"""Rank helpers and all_gather_with_grad: no-ops without a process group (bug B11); with two gloo processes,
correct gathering and a loss whose DDP gradients equal the single-process gradients."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from inf_embed.losses import get_loss
from inf_embed.training.distributed import (
    all_gather_with_grad,
    all_reduce_mean,
    barrier,
    get_local_rank,
    get_rank,
    get_world_size,
    is_distributed,
    is_main_process,
)

WORLD_SIZE = 2
# Rows of the global batch held by each rank (unequal on purpose), and of the extra candidates.
ITEM_SPLIT = (3, 2)
HARD_SPLIT = (2, 0)
QNEG_SPLIT = (1, 1)
LOSSES = ("multi:P+I+IQ", "uni:P+I+IQ", "uni:P")
DIM_IN, DIM, VARIANTS = 6, 4, 3


def test_helpers_without_process_group_act_as_single_process() -> None:
    assert not is_distributed()
    assert (get_world_size(), get_rank(), is_main_process()) == (1, 0, True)
    barrier()
    x = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(x) is x
    mean = all_reduce_mean(x)
    assert torch.equal(mean, x.detach()) and not mean.requires_grad


def test_local_rank_comes_from_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert get_local_rank() == 0
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert get_local_rank() == 3
    monkeypatch.setenv("LOCAL_RANK", "x")
    with pytest.raises(ValueError, match="LOCAL_RANK"):
        get_local_rank()


def _global_inputs() -> dict[str, torch.Tensor]:
    """Raw (pre-encoder) inputs of the whole global batch, identical in every process."""
    g = torch.Generator().manual_seed(1234)
    items, hard, qneg = sum(ITEM_SPLIT), sum(HARD_SPLIT), sum(QNEG_SPLIT)
    ids = torch.randint(0, 4, (items, VARIANTS), generator=g)
    ids[0, 1] = ids[0, 0]  # a false negative to mask
    return {
        "q": torch.randn(items, DIM_IN, generator=g, dtype=torch.float64),
        "p": torch.randn(items, DIM_IN, generator=g, dtype=torch.float64),
        "n": torch.randn(items, VARIANTS, DIM_IN, generator=g, dtype=torch.float64),
        "hard": torch.randn(hard, DIM_IN, generator=g, dtype=torch.float64),
        "qneg": torch.randn(qneg, DIM_IN, generator=g, dtype=torch.float64),
        "ids": ids,
    }


def _slice(tensor: torch.Tensor, split: tuple[int, ...], rank: int) -> torch.Tensor:
    start = sum(split[:rank])
    return tensor[start : start + split[rank]]


def _encoder() -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(DIM_IN, DIM, dtype=torch.float64)


def _loss_and_grads(model: torch.nn.Module, inputs: dict[str, torch.Tensor], name: str) -> tuple[float, torch.Tensor]:
    """One forward of the toy encoder over every input, then the loss; returns (loss, weight gradient)."""
    parts = [inputs["q"], inputs["p"], inputs["n"].reshape(-1, DIM_IN), inputs["hard"], inputs["qneg"]]
    encoded = torch.nn.functional.normalize(model(torch.cat(parts)), dim=-1)
    q, p, n, hard, qneg = encoded.split([len(t) for t in parts])
    hard = hard if len(hard) else None  # a rank without hard negatives passes None
    loss = get_loss(name)(
        q,
        p,
        n.reshape(-1, VARIANTS, DIM),
        instruction_ids=inputs["ids"],
        hard_negative_embeddings=hard,
        query_negative_embeddings=qneg,
    )
    model.zero_grad()
    loss.backward()
    weight = model.module.weight if hasattr(model, "module") else model.weight
    return loss.item(), weight.grad.detach().clone()


def _worker(rank: int, store: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD_SIZE)
    try:
        results: dict[str, object] = {"world_size": get_world_size(), "rank": get_rank()}

        # Unequal row counts, gradient only into the local slice.
        local = torch.full((ITEM_SPLIT[rank], 2), float(rank + 1), requires_grad=True)
        gathered = all_gather_with_grad(local)
        weights = torch.arange(gathered.numel(), dtype=torch.float32).reshape(gathered.shape)
        (gathered * weights).sum().backward()
        results["gathered"] = gathered.detach()
        results["local_grad"] = local.grad
        results["bool"] = all_gather_with_grad(torch.tensor([rank == 0] * (rank + 1)))
        results["empty"] = all_gather_with_grad(torch.zeros(HARD_SPLIT[rank], 3))
        try:
            all_gather_with_grad(torch.zeros(1, 2 + rank))
        except ValueError as error:
            results["shape_error"] = str(error)
        results["mean"] = all_reduce_mean(torch.tensor([float(rank)]))

        # The loss under DDP: same value and same parameter gradients as one process on the whole batch.
        full = _global_inputs()
        splits = {"q": ITEM_SPLIT, "p": ITEM_SPLIT, "n": ITEM_SPLIT, "ids": ITEM_SPLIT, "hard": HARD_SPLIT}
        splits["qneg"] = QNEG_SPLIT
        mine = {k: _slice(v, splits[k], rank) for k, v in full.items()}
        model = torch.nn.parallel.DistributedDataParallel(_encoder())
        for name in LOSSES:
            results[name] = _loss_and_grads(model, mine, name)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_gather_and_match_single_process_loss_and_gradients(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]

    expected = torch.cat([torch.full((ITEM_SPLIT[r], 2), float(r + 1)) for r in range(WORLD_SIZE)])
    weights = torch.arange(expected.numel(), dtype=torch.float32).reshape(expected.shape)
    for rank, result in enumerate(results):
        assert (result["world_size"], result["rank"]) == (WORLD_SIZE, rank)
        assert torch.equal(result["gathered"], expected)
        assert torch.equal(result["local_grad"], _slice(weights, ITEM_SPLIT, rank))
        assert torch.equal(result["bool"], torch.tensor([True, False, False]))
        assert result["empty"].shape == (sum(HARD_SPLIT), 3)
        assert "rank 0: (1, 2), rank 1: (1, 3)" in result["shape_error"]
        assert result["mean"].item() == pytest.approx(0.5)

    single = _encoder()
    for name in LOSSES:
        loss, grad = _loss_and_grads(single, _global_inputs(), name)
        for result in results:
            ddp_loss, ddp_grad = result[name]
            assert ddp_loss == pytest.approx(loss, rel=1e-12), name
            torch.testing.assert_close(ddp_grad, grad, rtol=1e-10, atol=1e-12, msg=name)


@pytest.fixture(autouse=True)
def _no_inherited_torchrun_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        if variable in os.environ:
            monkeypatch.delenv(variable)
