"""Training: :class:`Trainer`, :class:`TrainingArguments`, checkpoints and distributed helpers.

Names are imported lazily: ``inf_embed.losses`` imports ``inf_embed.training.distributed``, and the trainer
imports the losses, so an eager import here would be circular.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["NonFiniteLossError", "TrainOutput", "Trainer", "TrainingArguments"]

_LAZY = {
    "Trainer": "inf_embed.training.trainer",
    "TrainOutput": "inf_embed.training.trainer",
    "NonFiniteLossError": "inf_embed.training.trainer",
    "TrainingArguments": "inf_embed.training.args",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'inf_embed.training' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
