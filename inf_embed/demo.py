"""The bundled demo corpus and the instruction-aware search behind ``inf-embed demo``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from inf_embed.model import InfEmbed


@dataclass(frozen=True)
class DemoRanking:
    """Ranking of the demo corpus for one query under one instruction (``None``: no instruction)."""

    query: str
    instruction: str | None
    target: str | None
    ranked_ids: list[str]
    scores: list[float]

    def rank_of(self, doc_id: str) -> int:
        """1-based rank of a document."""
        return self.ranked_ids.index(doc_id) + 1


def load_demo_corpus() -> dict[str, Any]:
    """The corpus shipped in ``inf_embed/resources/demo_corpus.json``: documents and instruction examples."""
    text = resources.files("inf_embed").joinpath("resources/demo_corpus.json").read_text(encoding="utf-8")
    return json.loads(text)


def run_demo(model: InfEmbed, corpus: dict[str, Any] | None = None) -> list[list[DemoRanking]]:
    """Rank the demo documents for each example query: without instruction, then under each instruction.

    Returns one list per example: the un-instructed ranking first, then one ranking per instruction.
    """
    corpus = corpus or load_demo_corpus()
    doc_ids = [doc["id"] for doc in corpus["documents"]]
    doc_embeddings = model.encode_document([doc["text"] for doc in corpus["documents"]], convert_to_tensor=True)
    results = []
    for example in corpus["examples"]:
        query = example["query"]
        variants: list[tuple[str | None, str | None]] = [(None, None)]
        variants += [(item["text"], item["target"]) for item in example["instructions"]]
        query_embeddings = model.encode_query(
            [query] * len(variants), instruction=[text for text, _ in variants], convert_to_tensor=True
        )
        scores = model.similarity(query_embeddings, doc_embeddings)  # (variants, docs)
        rankings = []
        for (instruction, target), row in zip(variants, scores):
            order = torch.argsort(row, descending=True, stable=True).tolist()
            rankings.append(
                DemoRanking(query, instruction, target, [doc_ids[i] for i in order], [float(row[i]) for i in order])
            )
        results.append(rankings)
    return results
