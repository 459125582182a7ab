"""Small in-memory InF-IR-like records and model builders shared by the training tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from inf_embed import InfEmbed
from inf_embed.data import TripletExample
from inf_embed.training import TrainingArguments

LENGTHS = {"max_query_length": 24, "max_instruction_length": 24, "max_passage_length": 32}


def records(count: int = 8) -> list[TripletExample]:
    """InF-IR-shaped records (I+, Q+, P+, I-, Q-, hn1); record 0 shares its instruction with record 1."""
    topics = [
        "neutrophils",
        "zip codes",
        "solar panels",
        "tax forms",
        "river deltas",
        "violin bows",
        "vaccines",
        "coffee roasting",
        "bridges",
        "tides",
        "volcanoes",
        "bees",
    ]
    out = []
    for k in range(count):
        t = topics[k % len(topics)] + ("" if k < len(topics) else f" {k}")
        instruction = "I want a plain definition" if k < 2 else f"I want a definition of {t} for a beginner"
        out.append(
            TripletExample(
                instruction=instruction,
                query=f"what is {t}",
                positive=f"{t.capitalize()} are explained here in simple terms with an example.",
                instruction_negative=f"I want statistics and numbers about {t}",
                query_negative=f"what is not {t}",
                instruction_negative_passage=f"Statistics about {t}: counts, ranges and trends by year.",
                id=f"r{k}",
            )
        )
    return out


def tiny(path: str, fusion: str = "attention", **overrides: object) -> InfEmbed:
    return InfEmbed.from_pretrained(path, fusion=fusion, **{"normalize": True, **LENGTHS, **overrides})


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and two threads per test process oversubscribe the 2-core CI
    machine under ``pytest -n 2`` (a 10x slowdown measured on the cached-loss tests)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_args(tmp_path: object, **overrides: object) -> TrainingArguments:
    """Arguments for a few quick steps on the tiny model (batch 3, 3 variants, lr 1e-3, logging every step)."""
    base = dict(
        output_dir=str(tmp_path),
        batch_size=3,
        max_steps=3,
        num_instruction_variants=3,
        logging_steps=1,
        learning_rate=1e-3,
        show_progress_bar=False,
        save_total_limit=None,
    )
    return TrainingArguments(**{**base, **overrides})


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every tensor of ``model``'s state."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
