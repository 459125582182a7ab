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


def _worker(model: InfEmbed, device: str, shard: int, texts: list[str], kwargs: dict[str, Any], results: Any) -> None:
    from inf_embed.encode import run_inference

    try:
        torch.set_num_threads(max(1, torch.get_num_threads()))
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
    processes = []
    model = model.cpu()
    for shard, device in enumerate(devices):
        start, stop = int(bounds[shard]), int(bounds[shard + 1])
        if start == stop:
            continue
        shard_kwargs = dict(kwargs, instructions=instructions[start:stop] if instructions is not None else None)
        process = context.Process(
            target=_worker, args=(model, device, shard, texts[start:stop], shard_kwargs, results), daemon=True
        )
        process.start()
        processes.append(process)
    outputs: dict[int, Any] = {}
    try:
        while len(outputs) < len(processes):
            try:
                shard, output, error = results.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in processes if not p.is_alive() and p.exitcode not in (0, None)]
                if dead:
                    raise RuntimeError(f"encoding worker died with exit code {dead[0].exitcode}") from None
                continue
            if error is not None:
                raise RuntimeError(f"encoding worker for device {devices[shard]} failed: {error}")
            outputs[shard] = torch.load(io.BytesIO(output), weights_only=False)
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
    ordered = [outputs[shard] for shard in sorted(outputs)]
    if kwargs.get("output_value") == "sentence_embedding":
        return torch.cat(ordered)
    return [item for chunk in ordered for item in chunk]
