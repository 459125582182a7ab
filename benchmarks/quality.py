"""Retrieval and instruction-following quality: InfEmbed models vs sentence-transformers on the same backbone.

    python benchmarks/quality.py [--model PATH_OR_ID ...] [--no-default] [--st-baseline PATH_OR_ID]
                                 [--tasks scifact,nevir,infir,msmarco] [--data-root ../shared/data]
                                 [--cache-dir benchmarks/out/cache] [--output benchmarks/out/quality.json]

Rows: the embedded default ``InfEmbed()`` (unless ``--no-default``), each ``--model`` (``InfEmbed.from_pretrained``),
and the sentence-transformers baseline (default: the all-MiniLM-L6-v2 folder of the ``default`` extra), whose
instructions are joined to queries as ``"{query} {instruction}"`` (mteb's default). Columns:

- SciFact nDCG@10: BEIR scifact, the 300 test claims against the 5,183 abstracts (no instruction);
- NevIR paired accuracy: the 113 dev pairs in ``nevir/``;
- InF-IR dev: p-MRR when I+ becomes I-, p-MRR when Q+ becomes Q-, paired instruction accuracy and nDCG@10 of P+,
  over ``infir-marco/dev.jsonl`` with ``instructir/msmarco_filtered`` passages added to the corpus;
- msmarco_filtered nDCG@10: 1,743 MS MARCO queries against their 1,743 passages (no instruction).

Every number comes from :mod:`inf_embed.evaluation` (cosine on L2-normalised embeddings). Corpus embeddings are
cached under ``--cache-dir`` keyed by model weights and corpus, so a second run only re-encodes queries. Prints a
Markdown table (the one in BENCHMARKS.md) and writes every metric to ``--output``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
TASKS = ("scifact", "nevir", "infir", "msmarco")

# (task, metric key, column title)
COLUMNS = [
    ("scifact", "ndcg_at_10", "SciFact nDCG@10"),
    ("nevir", "paired_accuracy", "NevIR paired acc"),
    ("infir", "p_mrr_instruction", "InF-IR p-MRR (I+→I-)"),
    ("infir", "p_mrr_query", "InF-IR p-MRR (Q+→Q-)"),
    ("infir", "paired_accuracy", "InF-IR paired acc"),
    ("infir", "ndcg_at_10", "InF-IR nDCG@10"),
    ("msmarco", "ndcg_at_10", "msmarco_filtered nDCG@10"),
]


def build_evaluators(data: Path, tasks: list[str], cache_dir: str | None, batch_size: int) -> dict[str, Any]:
    from inf_embed.evaluation import BEIREvaluator, InfIREvaluator, NevIREvaluator

    options = {"batch_size": batch_size, "cache_dir": cache_dir}
    builders = {
        "scifact": lambda: BEIREvaluator.from_path(data / "scifact", split="test", **options),
        "nevir": lambda: NevIREvaluator.from_path(data / "nevir", batch_size=batch_size),
        "infir": lambda: InfIREvaluator.from_path(
            data / "infir-marco", split="dev", extra_corpus=data / "instructir" / "msmarco_filtered", **options
        ),
        "msmarco": lambda: BEIREvaluator.from_path(data / "instructir" / "msmarco_filtered", split="test", **options),
    }
    return {task: builders[task]() for task in tasks}


def load_models(args: argparse.Namespace) -> list[tuple[str, Any]]:
    from sentence_transformers import SentenceTransformer

    from inf_embed import InfEmbed
    from inf_embed.evaluation import ConcatInstructionEncoder
    from inf_embed.model import default_model_path

    models: list[tuple[str, Any]] = []
    if not args.no_default:
        default = InfEmbed(device=args.device)
        models.append((f"InfEmbed() default (fusion={default.config.fusion})", default))
    for name in args.model:
        model = InfEmbed.from_pretrained(name, device=args.device)
        models.append((f"InfEmbed {name} (fusion={model.config.fusion})", model))
    baseline = args.st_baseline or default_model_path()
    label = "all-MiniLM-L6-v2" if args.st_baseline is None else args.st_baseline
    st = SentenceTransformer(baseline, device=args.device or "cpu")
    models.append((f"sentence-transformers {label} (query + instruction text)", ConcatInstructionEncoder(st)))
    return models


def markdown_table(rows: list[dict[str, Any]], tasks: list[str]) -> str:
    columns = [c for c in COLUMNS if c[0] in tasks]
    header = "| model | " + " | ".join(title for _, _, title in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for row in rows:
        cells = []
        for task, key, _ in columns:
            value = row["results"].get(task, {}).get(key)
            cells.append("–" if value is None else f"{value:.4f}")
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], help="an InfEmbed folder or Hub id (repeatable)")
    parser.add_argument("--no-default", action="store_true", help="skip the embedded default InfEmbed()")
    parser.add_argument("--st-baseline", default=None, help="sentence-transformers model (default: all-MiniLM-L6-v2)")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {','.join(TASKS)}")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--cache-dir", default=str(REPO / "benchmarks" / "out" / "cache"), help="corpus-embedding cache ('' disables)"
    )
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "out" / "quality.json")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        parser.error(f"unknown tasks {unknown}; choose from {', '.join(TASKS)}")
    evaluators = build_evaluators(args.data_root, tasks, args.cache_dir or None, args.batch_size)
    rows = []
    for label, model in load_models(args):
        row: dict[str, Any] = {"model": label, "results": {}, "seconds": {}}
        for task, evaluator in evaluators.items():
            start = time.perf_counter()
            row["results"][task] = evaluator(model)
            row["seconds"][task] = round(time.perf_counter() - start, 1)
            print(
                f"{label} | {task}: {evaluator.main_score} = {row['results'][task]['main_score']:.4f} "
                f"({row['seconds'][task]} s)",
                flush=True,
            )
        rows.append(row)

    table = markdown_table(rows, tasks)
    print()
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "data_root": str(args.data_root),
        "rows": rows,
        "table": table,
    }
    args.output.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
