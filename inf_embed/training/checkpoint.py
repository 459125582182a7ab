"""Atomic training checkpoints and exact resume.

A checkpoint is a folder ``<output_dir>/checkpoint-<step>/`` holding:

- ``model/``: the model as ``InfEmbed.save_pretrained`` writes it (loadable on its own);
- ``trainer_state.pt``: optimizer, scheduler, random states (Python, NumPy, torch CPU and CUDA, the trainer's
  instruction-sampling generator) and the step counter;
- ``trainer_state.json``: the step, the training arguments and the log history, for people.

The folder is built under a temporary name beside its target and renamed into place with ``os.replace``, so a
crash leaves either the complete checkpoint or nothing. :func:`latest_checkpoint` ignores temporary folders.
Because the data order is a pure function of the seed and the step (see the trainer), the step counter plus these
states resume training exactly: the next batch, the learning rate and the dropout masks are those an
uninterrupted run would have used.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import tempfile
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_PREFIX",
    "capture_rng_state",
    "latest_checkpoint",
    "list_checkpoints",
    "load_trainer_state",
    "restore_rng_state",
    "save_checkpoint",
]

CHECKPOINT_PREFIX = "checkpoint-"
_PATTERN = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")
STATE_FILE = "trainer_state.pt"
STATE_JSON = "trainer_state.json"
MODEL_FOLDER = "model"


def capture_rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every random state training depends on (Python, NumPy, torch CPU, CUDA if used, and ``generator``)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Restore what :func:`capture_rng_state` captured (the CUDA states only when CUDA is in use)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def list_checkpoints(output_dir: str | os.PathLike[str]) -> list[tuple[int, str]]:
    """Complete checkpoints in ``output_dir`` as (step, path), oldest first."""
    folder = os.fspath(output_dir)
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        match = _PATTERN.match(name)
        path = os.path.join(folder, name)
        if match and os.path.isfile(os.path.join(path, STATE_FILE)):
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(output_dir: str | os.PathLike[str]) -> str | None:
    """Path of the newest complete checkpoint in ``output_dir``, or None."""
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def save_checkpoint(
    output_dir: str | os.PathLike[str],
    step: int,
    model: Any,
    state: dict[str, Any],
    summary: dict[str, Any],
    *,
    total_limit: int | None = None,
) -> str:
    """Write ``checkpoint-<step>`` atomically; returns its path.

    Args:
        output_dir: the training output folder.
        step: the optimizer step just completed.
        model: an ``InfEmbed`` (saved with ``save_pretrained``).
        state: tensors and objects for ``trainer_state.pt`` (optimizer, scheduler, random states, step).
        summary: JSON-serialisable data for ``trainer_state.json``.
        total_limit: afterwards keep only the newest ``total_limit`` checkpoints; None keeps all.
    """
    folder = os.path.abspath(os.fspath(output_dir))
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, f"{CHECKPOINT_PREFIX}{step}")
    staging = tempfile.mkdtemp(prefix=f".{CHECKPOINT_PREFIX}{step}.tmp-", dir=folder)
    try:
        model.save_pretrained(os.path.join(staging, MODEL_FOLDER))
        torch.save(state, os.path.join(staging, STATE_FILE))
        with open(os.path.join(staging, STATE_JSON), "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2, default=str)
        if os.path.exists(target):  # re-saving the same step (e.g. after a resume): replace it
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("saved checkpoint %s", target)
    if total_limit is not None:
        for _, old in list_checkpoints(folder)[:-total_limit]:
            shutil.rmtree(old, ignore_errors=True)
            logger.debug("removed old checkpoint %s", old)
    return target


def load_trainer_state(checkpoint: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``trainer_state.pt`` of a checkpoint (on CPU).

    Raises:
        FileNotFoundError: ``checkpoint`` is not a complete checkpoint folder.
    """
    path = os.path.join(os.fspath(checkpoint), STATE_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint: {os.fspath(checkpoint)!r} has no {STATE_FILE}; not a checkpoint folder")
    # The file holds NumPy random states and Python tuples, written by this library: not weights-only.
    return torch.load(path, map_location="cpu", weights_only=False)
