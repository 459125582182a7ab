"""Test helpers: a deterministic hashing encoder with InfEmbed's encode_query / encode_document interface, and
writers for small BEIR / FollowIR folders."""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass
class HashingConfig:
    dim: int = 64
    instruction_weight: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class HashingEncoder:
    """Token counts hashed into ``dim`` buckets; a query's instruction adds ``instruction_weight`` x its counts.

    ``calls`` counts encode_document texts, so tests can tell a cache hit from a re-encode.
    """

    def __init__(self, dim: int = 64, instruction_weight: float = 0.5, seed: int = 0) -> None:
        self.config = HashingConfig(dim, instruction_weight)
        generator = torch.Generator().manual_seed(seed)
        self.scale = torch.rand(dim, generator=generator) + 0.5  # a "weight" for fingerprints
        self.document_calls = 0
        self.query_calls: list[dict[str, Any]] = []

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"scale": self.scale}

    def get_sentence_embedding_dimension(self) -> int:
        return self.config.dim

    def _bag(self, text: str) -> np.ndarray:
        vector = np.zeros(self.config.dim, dtype=np.float32)
        for token in re.findall(r"\w+", text.lower()):
            vector[zlib.crc32(token.encode()) % self.config.dim] += 1.0
        return vector * self.scale.numpy()

    def encode_query(
        self,
        queries: Sequence[str],
        instruction: str | Sequence[str | None] | None = None,
        *,
        normalize_embeddings: bool = False,
        **kwargs: Any,
    ) -> np.ndarray:
        if instruction is None or isinstance(instruction, str):
            instructions = [instruction] * len(queries)
        else:
            instructions = list(instruction)
            assert len(instructions) == len(queries)
        call = {"queries": list(queries), "instruction": instruction, "normalize_embeddings": normalize_embeddings}
        self.query_calls.append({**call, **kwargs})
        rows = [
            self._bag(q) + (self.config.instruction_weight * self._bag(i) if i else 0.0)
            for q, i in zip(queries, instructions)
        ]
        return self._finish(rows, normalize_embeddings)

    def encode_document(
        self, documents: Sequence[str], *, normalize_embeddings: bool = False, **kwargs: Any
    ) -> np.ndarray:
        self.document_calls += len(documents)
        return self._finish([self._bag(d) for d in documents], normalize_embeddings)

    def _finish(self, rows: list[np.ndarray], normalize: bool) -> np.ndarray:
        array = np.stack(rows).astype(np.float32) * 3.0  # deliberately not unit length
        if normalize:
            array /= np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)
        return array


CORPUS = {
    "d1": "solar panels convert sunlight into electricity",
    "d2": "wind turbines generate power from moving air",
    "d3": "rooftop solar panels for homes are cheap",
    "d4": "hydroelectric dams store water to make power",
    "d5": "panels of judges score the competition",
}


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_qrels(path: Path, rows: Sequence[tuple[str, str, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in rows))


def write_beir(root: Path) -> Path:
    """A 5-document BEIR folder; q1 carries a per-query instruction, q3 has no qrels. Titles on d1-d4."""
    write_jsonl(
        root / "corpus.jsonl",
        [{"_id": k, "title": "Energy" if k != "d5" else "", "text": v} for k, v in CORPUS.items()],
    )
    write_jsonl(
        root / "queries.jsonl",
        [
            {"_id": "q1", "text": "how do solar panels work", "instruction": "prefer home rooftop systems"},
            {"_id": "q2", "text": "power from wind"},
            {"_id": "q3", "text": "not judged"},
        ],
    )
    write_qrels(root / "qrels" / "test.tsv", [("q1", "d1", 1), ("q1", "d3", 2), ("q2", "d2", 1)])
    return root


def write_followir(root: Path, *, with_diff: bool = False, with_top_ranked: bool = False) -> Path:
    """Two FollowIR queries in mteb's layout ('<qid>-og' / '<qid>-changed')."""
    write_jsonl(root / "corpus.jsonl", [{"_id": k, "title": "", "text": v} for k, v in CORPUS.items()])
    queries = []
    for qid, text, og, changed in [
        ("a", "solar panels", "any kind of solar installation", "only rooftop installations for homes"),
        ("b", "making power", "wind or water power", "only wind power, not water"),
    ]:
        queries.append({"_id": f"{qid}-og", "text": text, "instruction": og})
        queries.append({"_id": f"{qid}-changed", "text": text, "instruction": changed})
    write_jsonl(root / "queries.jsonl", queries)
    write_qrels(
        root / "qrels" / "test.tsv",
        [
            ("a-og", "d1", 1),
            ("a-og", "d3", 1),
            ("a-changed", "d3", 1),
            ("a-changed", "d1", 0),
            ("b-og", "d2", 1),
            ("b-og", "d4", 1),
            ("b-changed", "d2", 1),
        ],
    )
    if with_diff:
        write_jsonl(root / "qrel_diff.jsonl", [{"query-id": "a", "corpus-ids": ["d1"]}])
    if with_top_ranked:
        write_jsonl(
            root / "top_ranked.jsonl",
            [
                {"query-id": "a-og", "corpus-ids": ["d1", "d3", "d5"]},
                {"query-id": "b-og", "corpus-ids": ["d2", "d4", "d1"]},
            ],
        )
    return root


def infir_records() -> list[dict[str, str]]:
    """Four InF-IR-schema records whose P+ and D- differ in the words of I+ and I-."""
    topics = [
        ("solar", "rooftop homes", "utility farms"),
        ("wind", "offshore turbines", "small home turbines"),
        ("coffee", "espresso brewing", "decaf process"),
        ("tea", "green tea health", "black tea caffeine"),
    ]
    return [
        {
            "id": f"r{i}",
            "document_id": f"p{i}",
            "query_positive": f"what is {topic}",
            "instruction_positive": f"I want details about {good}",
            "document": f"{topic} explained with {good} and more {topic} facts",
            "query_negative": f"what is not {topic} at all",
            "instruction_negative": f"I want details about {bad}",
            "hard_negative_document_1": f"{topic} explained with {bad} only",
        }
        for i, (topic, good, bad) in enumerate(topics)
    ]
