"""Atomic training checkpoints and exact resume.

A checkpoint is a folder ``<output_dir>/checkpoint-<step>/`` holding:

- ``model/``: the model as ``InfEmbed.save_pretrained`` writes it (loadable on its own);
- ``trainer_state.pt``: optimizer, scheduler, random states (Python, NumPy, torch CPU and CUDA, the trainer's
  instruction-sampling generator) and the step counter;
- ``trainer_state.json``: the step, the training arguments and the log history, for people.

The folder is built under a temporary name beside its target, flushed to disk, and renamed into place with
``os.replace``, so a crash leaves either the complete checkpoint or nothing. A checkpoint counts as complete while it
holds ``trainer_state.pt``; a folder is deleted by removing that file first, so a crash in the middle of a deletion
never leaves a half-deleted folder that :func:`latest_checkpoint` would pick. Re-saving a step moves the old folder
aside (``.checkpoint-<step>.old-*``) before the new one takes its name; if a crash falls between the two renames,
:func:`list_checkpoints` still finds the old folder. Other temporary folders are ignored.
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

from inf_embed.hub import give_plain_permissions

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
# A complete checkpoint moved aside while the same step is re-saved (see save_checkpoint).
_ASIDE_PATTERN = re.compile(rf"^\.{CHECKPOINT_PREFIX}(\d+)\.old-")
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
    """Complete checkpoints in ``output_dir`` as (step, path), oldest first.

    A step whose ``checkpoint-<step>`` is missing but whose previous folder was moved aside by an interrupted
    re-save (``.checkpoint-<step>.old-*``, still complete) is listed with that folder's path.
    """
    folder = os.fspath(output_dir)
    if not os.path.isdir(folder):
        return []
    found: dict[int, str] = {}
    aside: dict[int, str] = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not os.path.isfile(os.path.join(path, STATE_FILE)):
            continue
        if match := _PATTERN.match(name):
            found[int(match.group(1))] = path
        elif match := _ASIDE_PATTERN.match(name):
            aside.setdefault(int(match.group(1)), path)
    for step, path in aside.items():
        found.setdefault(step, path)
    return sorted(found.items())


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
        total_limit: afterwards keep only ``total_limit`` checkpoints, this one and the newest others; None
            keeps all.

    Raises:
        ValueError: ``total_limit`` is not None or an integer >= 1.
    """
    if total_limit is not None and (
        isinstance(total_limit, bool) or not isinstance(total_limit, int) or total_limit < 1
    ):
        raise ValueError(f"total_limit: expected an integer >= 1 or None, got {total_limit!r}")
    folder = os.path.abspath(os.fspath(output_dir))
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, f"{CHECKPOINT_PREFIX}{step}")
    staging = tempfile.mkdtemp(prefix=f".{CHECKPOINT_PREFIX}{step}.tmp-", dir=folder)
    aside: str | None = None
    try:
        model.save_pretrained(os.path.join(staging, MODEL_FOLDER))
        torch.save(state, os.path.join(staging, STATE_FILE))
        with open(os.path.join(staging, STATE_JSON), "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2, default=str)
        give_plain_permissions(staging)  # mkdtemp's folder is private (0700); a checkpoint is an ordinary folder
        _fsync_tree(staging)  # the rename must not reach the disk before the files it publishes
        if os.path.exists(target):
            # Re-saving the same step (e.g. after a resume): move the old folder aside first instead of deleting
            # it in place, so that until the new one has its name the old one stays complete and listed.
            aside = tempfile.mkdtemp(prefix=f".{CHECKPOINT_PREFIX}{step}.old-", dir=folder)
            os.replace(target, aside)  # onto the empty placeholder: an atomic rename
            os.replace(staging, target)
            _remove_checkpoint(aside)
        else:
            os.replace(staging, target)
        _fsync_dir(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if aside is not None and os.path.isdir(aside):
            if not os.path.exists(target) and os.path.isfile(os.path.join(aside, STATE_FILE)):
                os.replace(aside, target)  # the new one never got the name: put the old one back
            else:
                _remove_checkpoint(aside)  # the empty placeholder, or the old folder already replaced
        raise
    logger.info("saved checkpoint %s", target)
    if total_limit is not None:
        # Rotate by step but never the checkpoint just written: a stale higher-step checkpoint (another run in the
        # same folder) must not outlive it.
        others = [path for _, path in list_checkpoints(folder) if path != target]
        for old in others[: max(len(others) + 1 - total_limit, 0)]:
            _remove_checkpoint(old)
            logger.debug("removed old checkpoint %s", old)
    return target


def _remove_checkpoint(path: str) -> None:
    """Delete a checkpoint folder, its ``trainer_state.pt`` first: a crash mid-way leaves no "complete" remnant."""
    try:
        os.remove(os.path.join(path, STATE_FILE))
    except FileNotFoundError:
        pass
    shutil.rmtree(path, ignore_errors=True)


def _fsync_tree(root: str) -> None:
    """Flush every file and folder under ``root`` to disk (best effort where a platform cannot sync folders)."""
    for current, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(current, name), "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(current)


def _fsync_dir(path: str) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a folder
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


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
