"""Named training recipes: ``inf-embed train --preset NAME`` reproduces a shipped model from its data.

A preset fixes everything a run needs (start model, data, model config, training arguments, seed) and whether
the result is also written as a compact delta (:mod:`inf_embed.delta`). Explicit command-line flags still win
over a preset's values.

``default`` is the recipe of the model that ``InfEmbed()`` loads (``inf_embed/resources/default_model``); its
numbers are in the README's model card and ``BENCHMARKS.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["PRESETS", "Preset", "get_preset"]


@dataclass(frozen=True)
class Preset:
    """A reproducible training recipe.

    Attributes:
        description: one line for ``--help``.
        data: training records, relative to the current directory (the repository root, beside ``../shared``).
        model: start model; ``"default-backbone"`` is the ``default`` extra's all-MiniLM-L6-v2.
        model_overrides: :class:`~inf_embed.config.InfEmbedConfig` fields set on the start model.
        training: :class:`~inf_embed.training.TrainingArguments` fields.
        save_delta: also write ``<output>/delta``, the trained change over the start model, ready to ship.
    """

    description: str
    data: str
    model: str
    model_overrides: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    save_delta: bool = False


PRESETS: dict[str, Preset] = {
    "default": Preset(
        description=(
            "the shipped default model: all-MiniLM-L6-v2, concat fusion, multi:P+I+IQ+IX (poisoned instructions "
            "as negatives, 0.1) on infir-marco train plus its plain queries, 3 epochs, attention weights only (a "
            "7 MB delta), documents and uninstructed queries on 0.75 of the trained change"
        ),
        data="../shared/data/infir-marco/train.jsonl",
        model="default-backbone",
        model_overrides={"fusion": "concat"},
        training={
            "loss": "multi:P+I+IQ+IX",
            "loss_options": "instruction_weight=0.1,passage_gradient=0",
            "plain_queries": True,
            "epochs": 3.0,
            "batch_size": 16,
            "learning_rate": 5e-5,
            "warmup_ratio": 0.1,
            "trainable_parameters": r"attention\.",
            "seed": 42,
            "document_delta_scale": 0.75,
            "plain_query_side": "document",
        },
        save_delta=True,
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; unknown names list the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}") from None
