"""``encode(..., device=[...])``: a temporary pool of processes, one per device, each encoding one shard.

Each worker receives a copy of the model, encodes a contiguous shard of the inputs with the single-process
engine and sends the result back; shards are concatenated in input order, so the result equals
single-process encoding.
"""

from __future__ import annotations

import io
import logging
import queue
import traceback
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from inf_embed.model import InfEmbed

logger = logging.getLogger(__name__)


def _worker(
    model: InfEmbed, device: str, shard: int, texts: list[str], kwargs: dict[str, Any], results: Any, threads: int
) -> None:
    from inf_embed.encode import run_inference

    try:
        torch.set_num_threads(threads)
        model.to(device)
        output = run_inference(model, texts, **kwargs)
        if isinstance(output, torch.Tensor):
            output = output.cpu()
        else:
            output = [
                {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in item.items()}
                if isinstance(item, dict)
                else item.cpu()
                for item in output
            ]
        # Bytes, not tensors: torch's queue shares tensors through the sender's process, which exits next.
        buffer = io.BytesIO()
        torch.save(output, buffer)
        results.put((shard, buffer.getvalue(), None))
    except BaseException as error:  # report every failure, or the parent would wait forever
        results.put((shard, None, f"{type(error).__name__}: {error}\n{traceback.format_exc()}"))


def threads_per_worker(devices: list[str], available: int) -> list[int]:
    """Intra-op threads for each worker: the parent's threads shared among the CPU workers (each would otherwise
    take every core, and several on one machine oversubscribe it); a GPU worker keeps one thread to feed its card.
    """
    cpu_workers = sum(1 for device in devices if torch.device(device).type == "cpu")
    share = max(1, available // max(1, cpu_workers))
    return [share if torch.device(device).type == "cpu" else 1 for device in devices]


def encode_multi_process(
    model: InfEmbed, texts: list[str], devices: list[str | torch.device], **kwargs: Any
) -> torch.Tensor | list[Any]:
    """Encode ``texts`` in one process per entry of ``devices``; same result as single-process encoding."""
    if not devices:
        raise ValueError("device must name at least one device when given as a list")
    devices = [str(torch.device(d)) for d in devices]
    instructions = kwargs.pop("instructions")
    bounds = np.linspace(0, len(texts), num=len(devices) + 1).round().astype(int)
    context = torch.multiprocessing.get_context("spawn")
    results = context.Queue()
    processes: dict[int, Any] = {}
    model = model.cpu()
    threads = threads_per_worker(devices, torch.get_num_threads())
    try:
        # started inside the try, so a failed start still stops the workers already running
        for shard, device in enumerate(devices):
            start, stop = int(bounds[shard]), int(bounds[shard + 1])
            if start == stop:
                continue
            shard_kwargs = dict(kwargs, instructions=instructions[start:stop] if instructions is not None else None)
            process = context.Process(
                target=_worker,
                args=(model, device, shard, texts[start:stop], shard_kwargs, results, threads[shard]),
                daemon=True,
            )
            process.start()
            processes[shard] = process
        outputs = _collect(processes, results, devices)
    except BaseException:
        _stop(processes.values(), grace=0.0)
        raise
    _stop(processes.values(), grace=5.0)
    ordered = [outputs[shard] for shard in sorted(outputs)]
    if kwargs.get("output_value") == "sentence_embedding":
        return torch.cat(ordered)
    return [item for chunk in ordered for item in chunk]


def _collect(processes: dict[int, Any], results: Any, devices: list[str], poll: float = 1.0) -> dict[int, Any]:
    """Each shard's output, keyed by shard; raises as soon as a worker fails or exits without its rows.

    A worker counts as lost only while its own shard is missing: one that delivered its rows and then exited with
    an error (e.g. a crash in CUDA teardown) has done its job. A worker that exited without reporting, whatever
    its exit code (``os._exit(0)`` included), is an error rather than a wait that never ends.
    """
    outputs: dict[int, Any] = {}
    while len(outputs) < len(processes):
        try:
            shard, output, error = results.get(timeout=poll)
        except queue.Empty:
            lost = [shard for shard, p in processes.items() if shard not in outputs and not p.is_alive()]
            if not lost:
                continue
            try:  # a worker that exited just after sending has its message in the pipe already
                shard, output, error = results.get(timeout=poll)
            except queue.Empty:
                process = processes[lost[0]]
                raise RuntimeError(
                    f"encoding worker for device {devices[lost[0]]} exited with code {process.exitcode} "
                    "without returning its rows"
                ) from None
        if error is not None:
            raise RuntimeError(f"encoding worker for device {devices[shard]} failed: {error}")
        outputs[shard] = torch.load(io.BytesIO(output), weights_only=False)
    return outputs


def _stop(processes: Any, grace: float) -> None:
    """Wait up to ``grace`` seconds for each worker, then terminate and reap the ones still running."""
    for process in processes:
        process.join(timeout=grace)
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
