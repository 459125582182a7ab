"""Encoding throughput: InfEmbed vs sentence-transformers on the same MiniLM backbone, measured in one run.

    python benchmarks/encode_throughput.py [--docs 512] [--queries 512] [--rounds 3] [--batch-size 32]

Prints documents/s of ``InfEmbed.encode_document`` vs ``SentenceTransformer.encode`` on a sample of
``../shared/data/scifact/corpus.jsonl`` (and the largest difference between the two embeddings), and queries/s of
``encode_query`` with one shared instruction (fusion ``attention``: the instruction is encoded once per call) vs
the same queries with the instruction concatenated into each text; also documents/s of the shipped default model,
whose document side is pulled back (``document_delta_scale``). Rounds are interleaved (the order rotates every
round) and the best round of each side is kept, so background load affects both sides alike. Targets: documents
>= 1.0x, shared-instruction queries >= 1.5x.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
INSTRUCTION = (
    "I am a clinician reviewing evidence for a guideline; retrieve only abstracts of randomized controlled trials "
    "or meta-analyses in humans that directly support or refute the claim, not animal studies or opinion pieces."
)


def _read_jsonl(path: Path, limit: int, seed: int) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    random.Random(seed).shuffle(rows)
    return rows[:limit]


def _interleaved(sides: dict, rounds: int) -> dict[str, list[float]]:
    """Time each side once per round; the order rotates every round so no side always runs first."""
    names = list(sides)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(_timed(sides[name]))
    return times


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=512)
    parser.add_argument("--queries", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    from inf_embed import InfEmbed
    from inf_embed.model import default_model_path

    path = default_model_path()
    docs = [
        (d.get("title", "") + " " + d["text"]).strip() for d in _read_jsonl(DATA / "corpus.jsonl", args.docs, args.seed)
    ]
    queries = [q["text"] for q in _read_jsonl(DATA / "queries.jsonl", args.queries, args.seed)]
    # Two instances per side: identical copies of one model differ by a few percent in speed on this machine
    # (memory placement), so each side's time is its best instance and the two ST copies show the noise floor.
    ours_pair = [InfEmbed.from_pretrained(path, fusion="attention") for _ in range(2)]
    st_pair = [SentenceTransformer(path, device="cpu") for _ in range(2)]
    ours, st = ours_pair[0], st_pair[0]
    bs = args.batch_size
    # the shipped model with its document side pulled back (document_delta_scale < 1): its documents run through
    # torch.func.functional_call with interpolated attention weights; same architecture, so same work otherwise
    asymmetric = InfEmbed()

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}"
    )
    print(f"documents: {len(docs)} scifact passages; queries: {len(queries)} scifact claims; batch size {bs}")

    # Warm-up both sides once (allocator, thread pools).
    ours.encode_document(docs[:bs], batch_size=bs)
    st.encode(docs[:bs], batch_size=bs)
    asymmetric.encode_document(docs[:bs], batch_size=bs)
    doc_sides = {"inf_embed asymmetric": lambda: asymmetric.encode_document(docs, batch_size=bs)}
    for copy, (ours_copy, st_copy) in enumerate(zip(ours_pair, st_pair)):
        doc_sides[f"inf_embed/{copy}"] = lambda m=ours_copy: m.encode_document(docs, batch_size=bs)
        doc_sides[f"sentence_transformers/{copy}"] = lambda m=st_copy: m.encode(docs, batch_size=bs)
    doc_times = _interleaved(doc_sides, args.rounds)
    ours_docs, st_docs = ours.encode_document(docs, batch_size=bs), st.encode(docs, batch_size=bs)
    diff = float(np.abs(ours_docs - st_docs).max())
    best = {name: min(times) for name, times in doc_times.items()}
    t_ours = min(best["inf_embed/0"], best["inf_embed/1"])
    t_st = min(best["sentence_transformers/0"], best["sentence_transformers/1"])
    print("\n| documents | docs/s | ratio vs sentence-transformers |\n|---|---|---|")
    print(f"| sentence-transformers encode | {len(docs) / t_st:.1f} | 1.00x |")
    print(f"| inf_embed encode_document | {len(docs) / t_ours:.1f} | {t_st / t_ours:.2f}x |")
    t_asym = best["inf_embed asymmetric"]
    print(
        f"| inf_embed encode_document, shipped model (document_delta_scale "
        f"{asymmetric.config.document_delta_scale:g}) | {len(docs) / t_asym:.1f} | {t_st / t_asym:.2f}x |"
    )
    print(f"max |inf_embed - sentence-transformers| over {ours_docs.size} values: {diff:.2e}")
    spread = best["sentence_transformers/0"] / best["sentence_transformers/1"]
    print(
        f"noise floor: sentence-transformers copy 1 vs copy 0 = {spread:.2f}x; per copy (s): "
        + ", ".join(f"{name} {value:.2f}" for name, value in best.items())
    )

    concatenated = [f"{q} {INSTRUCTION}" for q in queries]
    query_times = _interleaved(
        {
            "shared": lambda: ours.encode_query(queries, instruction=INSTRUCTION, batch_size=bs),
            "concat": lambda: ours.encode(concatenated, batch_size=bs),
            "st_concat": lambda: st.encode(concatenated, batch_size=bs),
        },
        args.rounds,
    )
    t_shared, t_concat, t_st_concat = (min(query_times[k]) for k in ("shared", "concat", "st_concat"))
    print("\n| queries with one instruction | queries/s | ratio vs concatenation |\n|---|---|---|")
    print(f"| instruction concatenated into each text (inf_embed encode) | {len(queries) / t_concat:.1f} | 1.00x |")
    print(
        f"| instruction concatenated (sentence-transformers encode) | {len(queries) / t_st_concat:.1f} | "
        f"{t_concat / t_st_concat:.2f}x |"
    )
    print(
        f"| inf_embed encode_query(instruction=shared), attention | {len(queries) / t_shared:.1f} | "
        f"{t_concat / t_shared:.2f}x |"
    )


if __name__ == "__main__":
    main()
