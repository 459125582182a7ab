"""The default model's recipe vs what a user does today with sentence-transformers, one run, same data and budget.

    python benchmarks/finetune_vs_st.py [--preset default] [--epochs E] [--st-lr 2e-5] [--seed 42] [--json FILE]
                                        [--max-steps N] [--skip-before] [--tasks infir,infir_x,scifact,nevir]

Both sides start from all-MiniLM-L6-v2 (the ``default`` extra), train on the same ``infir-marco/train.jsonl``
records with the same seed, 10 % warm-up and number of epochs (``--epochs``, default: the preset's), then are
evaluated with the same evaluators:

- sentence-transformers (the peer, what a user does today): rows ``(Q+ I+, P+, D-)`` and ``(Q+ I-, D-, P+)``, the
  instruction appended to the query, ``MultipleNegativesRankingLoss`` (scale 20), every weight trained at
  ``--st-lr`` (default 2e-5), 32 rows per batch, no two rows with the same text in a batch (``NO_DUPLICATES``, as
  the loss's documentation advises). When the preset trains plain-query records (``plain_queries``, the default
  preset), the peer gets the same ones, ``(Q+, P+)`` pairs as a second dataset (each batch from one of the two,
  in proportion), so both sides see the same texts; ``--st-no-plain-queries`` leaves them out (the runs up to
  2026-11-30 did);
- inf_embed: ``inf-embed train --preset NAME`` itself, run in-process with the same data, seed, batch and epochs
  (the preset's recipe: ``inf_embed.training.presets``), 16 records per batch (3 query sides per InF-IR
  record, 1 per plain record); ``--save-ours DIR`` keeps its output folder, whose ``delta/`` is what ships as
  ``inf_embed/resources/default_model``.

The rows record each side's optimizer steps (``train_steps``): the two batch sizes are counted in different units
(rows vs records), so the step counts, not the batch sizes, are what to compare for the budget. Ours' recipe was
chosen on the same dev sets this script reports (BENCHMARKS.md); the peer's learning rate was not tuned.

Evaluations (``--tasks``): ``infir`` = ``infir-marco/dev.jsonl`` with its 400 passages as the corpus (p-MRR for an
instruction change and a query change, paired accuracy, nDCG@10); ``infir_x`` = the same records with the 1,743
``instructir/msmarco_filtered`` passages added (as in ``benchmarks/quality.py``); ``scifact`` = BEIR SciFact test
nDCG@10; ``nevir`` = NevIR dev paired accuracy. The "before" rows evaluate the untouched backbone through both APIs.
``--max-steps N`` trains on the first ``N * 16`` records only, for smoke runs (still ``--epochs`` passes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
TASKS = ("infir", "infir_x", "scifact", "nevir")
# (task, metric, scale, column title)
COLUMNS = [
    ("infir", "p_mrr_instruction", 100, "p-MRR instr"),
    ("infir", "p_mrr_query", 100, "p-MRR query"),
    ("infir", "paired_accuracy", 100, "paired %"),
    ("infir", "ndcg_at_10", 1, "nDCG@10"),
    ("infir_x", "p_mrr_instruction", 100, "+msmarco p-MRR instr"),
    ("infir_x", "p_mrr_query", 100, "+msmarco p-MRR query"),
    ("infir_x", "paired_accuracy", 100, "+msmarco paired %"),
    ("infir_x", "ndcg_at_10", 1, "+msmarco nDCG@10"),
    ("scifact", "ndcg_at_10", 1, "SciFact nDCG@10"),
    ("nevir", "paired_accuracy", 100, "NevIR paired %"),
]
BATCH_RECORDS = 16


def build_evaluators(data: Path, tasks: list[str] | tuple[str, ...] = TASKS, batch_size: int = 32) -> dict[str, Any]:
    """The issue-6 evaluators by task name (also used by ``benchmarks/fusion_sweep.py``)."""
    from inf_embed.evaluation import BEIREvaluator, InfIREvaluator, NevIREvaluator

    options = {"batch_size": batch_size}
    builders = {
        "infir": lambda: InfIREvaluator.from_path(data / "infir-marco", split="dev", **options),
        "infir_x": lambda: InfIREvaluator.from_path(
            data / "infir-marco", split="dev", extra_corpus=data / "instructir" / "msmarco_filtered", **options
        ),
        "scifact": lambda: BEIREvaluator.from_path(data / "scifact", split="test", **options),
        "nevir": lambda: NevIREvaluator.from_path(data / "nevir", **options),
    }
    return {task: builders[task]() for task in tasks}


def add_evaluation_arguments(parser: Any, default_tasks: str = "infir,scifact,nevir") -> None:
    """``--tasks``, ``--data-root``, ``--threads`` and ``--json`` of the scripts that evaluate a saved model."""
    parser.add_argument("--tasks", default=default_tasks, help=f"comma-separated, from {','.join(TASKS)}")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")


def parse_evaluation_arguments(parser: Any) -> tuple[Any, list[str], list[tuple[str, str, int, str]]]:
    """Parse the command line of :func:`add_evaluation_arguments`; returns the arguments, the checked tasks and
    their ``COLUMNS`` (and sets the torch thread count)."""
    args = parser.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        parser.error(f"--tasks: unknown {unknown}; expected some of {list(TASKS)}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return args, tasks, [c for c in COLUMNS if c[0] in tasks]


def write_rows_json(path: Path | None, rows: list[dict[str, Any]], **meta: Any) -> None:
    """``{"meta": meta + torch version + machine, "rows": rows}`` to ``path`` (the ``--json`` of the scripts that
    evaluate a saved model); nothing when ``path`` is None."""
    if path is None:
        return
    meta = {key: str(value) for key, value in meta.items()}
    meta.update(torch=torch.__version__, machine=platform.machine())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


def evaluate(evaluators: dict[str, Any], model: Any) -> dict[str, dict[str, float]]:
    return {task: {k: float(v) for k, v in ev(model).items()} for task, ev in evaluators.items()}


def _st_train(records, args, epochs: float, out_dir: str, plain_queries: bool) -> tuple[object, float, int]:
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    from inf_embed.model import default_model_path

    model = SentenceTransformer(default_model_path(), device="cpu")
    training_args = SentenceTransformerTrainingArguments(
        output_dir=out_dir,
        num_train_epochs=epochs,
        per_device_train_batch_size=2 * BATCH_RECORDS,
        learning_rate=args.st_lr,
        warmup_ratio=0.1,
        seed=args.seed,
        data_seed=args.seed,
        save_strategy="no",
        report_to=[],
        logging_steps=10,
        disable_tqdm=True,
        dataloader_drop_last=False,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
    )
    tables = st_rows(records, plain_queries)
    datasets = {name: Dataset.from_dict(table) for name, table in tables.items()}
    trainer = SentenceTransformerTrainer(
        model=model,
        args=training_args,
        train_dataset=datasets if len(datasets) > 1 else datasets["instructed"],
        loss=MultipleNegativesRankingLoss(model),
    )
    start = time.perf_counter()
    trainer.train()
    return model, time.perf_counter() - start, int(trainer.state.global_step)


def st_rows(records: Any, plain_queries: bool) -> dict[str, dict[str, list[str]]]:
    """The peer's training tables: ``instructed`` rows (anchor, positive, negative), two per InF-IR record, and with
    ``plain_queries`` the ``plain`` (anchor, positive) pairs of :func:`inf_embed.data.with_plain_queries`."""
    from inf_embed.data import with_plain_queries

    instructed: dict[str, list[str]] = {"anchor": [], "positive": [], "negative": []}
    for r in records:
        instructed["anchor"].append(f"{r.query} {r.instruction}")
        instructed["positive"].append(r.positive)
        instructed["negative"].append(r.instruction_negative_passage)
        instructed["anchor"].append(f"{r.query} {r.instruction_negative}")
        instructed["positive"].append(r.instruction_negative_passage)
        instructed["negative"].append(r.positive)
    tables = {"instructed": instructed}
    if plain_queries:
        plain = list(with_plain_queries(records))[len(records) :]
        tables["plain"] = {"anchor": [e.query for e in plain], "positive": [e.positive for e in plain]}
    return tables


def _ours_train(
    records_path: Path, args, epochs: float, limit: int | None, out_dir: str
) -> tuple[object, float, int | None]:
    """Run ``inf-embed train --preset NAME`` itself (in-process), so that this row, and with ``--save-ours`` the
    delta it writes, are exactly what the command produces; returns the trained model and its training seconds."""
    from inf_embed import InfEmbed
    from inf_embed.cli.main import main as cli

    argv = ["train", "--preset", args.preset, "--data", str(records_path), "--output", out_dir]
    argv += ["--epochs", repr(epochs), "--seed", str(args.seed), "--batch-size", str(BATCH_RECORDS)]
    argv += ["--no-show-progress-bar", "--logging-steps", "10"] + ([] if limit is None else ["--limit", str(limit)])
    start = time.perf_counter()
    if cli(argv) != 0:
        raise RuntimeError(f"inf-embed {' '.join(argv)} failed")
    seconds = time.perf_counter() - start
    delta_config = os.path.join(out_dir, "delta", "inf_embed_delta.json")
    if os.path.exists(delta_config):  # the trainer's own clock, without data and model loading
        with open(delta_config, encoding="utf-8") as handle:
            seconds = float(json.load(handle)["metadata"]["train_seconds"])
    steps = None
    if os.path.exists(delta_config):
        with open(delta_config, encoding="utf-8") as handle:
            steps = json.load(handle)["metadata"].get("global_step")
    return InfEmbed(os.path.join(out_dir, "model")), seconds, steps


def markdown(rows: list[dict[str, Any]], tasks: list[str]) -> str:
    columns = [c for c in COLUMNS if c[0] in tasks]
    lines = ["| model | train s | " + " | ".join(c[3] for c in columns) + " |", "|" + "---|" * (len(columns) + 2)]
    for row in rows:
        cells = [f"{row['results'][t][k] * scale:.4g}" for t, k, scale, _ in columns]
        seconds = f"{row['train_seconds']:.0f}" if "train_seconds" in row else ""
        lines.append(f"| {row['model']} | {seconds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--preset", default="default", help="inf_embed recipe (inf_embed.training.presets)")
    parser.add_argument("--epochs", type=float, default=None, help="epochs for both sides (default: the preset's)")
    parser.add_argument("--st-lr", type=float, default=2e-5, help="sentence-transformers learning rate")
    parser.add_argument("--max-steps", type=int, default=None, help="train on this many batches of records only")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {','.join(TASKS)}")
    parser.add_argument("--skip-before", action="store_true", help="do not evaluate the untrained model")
    parser.add_argument("--skip-st", action="store_true", help="do not train the sentence-transformers side")
    parser.add_argument(
        "--st-no-plain-queries",
        action="store_true",
        help="do not give the peer the preset's plain-query pairs (the runs up to 2026-11-30)",
    )
    parser.add_argument(
        "--save-ours", default=None, help="also keep our run's output folder (model/ and, for a preset, delta/) here"
    )
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    from sentence_transformers import SentenceTransformer

    from inf_embed import InfEmbed
    from inf_embed.data import load_triplets
    from inf_embed.evaluation import ConcatInstructionEncoder
    from inf_embed.model import default_model_path
    from inf_embed.training.presets import get_preset

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        parser.error(f"unknown tasks {unknown}; choose from {', '.join(TASKS)}")
    preset = get_preset(args.preset)
    epochs = args.epochs if args.epochs is not None else float(preset.training.get("epochs", 1.0))
    limit = None if args.max_steps is None else args.max_steps * BATCH_RECORDS
    records_path = args.data_root / "infir-marco" / "train.jsonl"
    records = load_triplets(records_path, limit=limit)
    evaluators = build_evaluators(args.data_root, tasks)
    print(
        f"# {len(records)} records, {epochs:g} epochs, batch {BATCH_RECORDS} records, seed {args.seed}, preset "
        f"{args.preset}, torch threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}",
        flush=True,
    )
    rows: list[dict[str, Any]] = []

    def add(row: dict[str, Any], model: Any) -> None:
        start = time.perf_counter()
        row["results"] = evaluate(evaluators, model)
        row["eval_seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print(markdown([row], tasks).splitlines()[-1], flush=True)

    if not args.skip_before:
        st_before = SentenceTransformer(default_model_path(), device="cpu")
        add(
            {"model": "all-MiniLM-L6-v2, sentence-transformers (query + instruction text)"},
            ConcatInstructionEncoder(st_before),
        )
        overrides = preset.model_overrides
        add(
            {"model": f"all-MiniLM-L6-v2, inf_embed untrained ({overrides.get('fusion')})"},
            InfEmbed(default_model_path(), **overrides),
        )
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_st:
            plain = bool(preset.training.get("plain_queries")) and not args.st_no_plain_queries
            st_model, st_seconds, st_steps = _st_train(records, args, epochs, os.path.join(tmp, "st"), plain)
            add(
                {
                    "model": f"sentence-transformers MNRL, instruction appended{', plain pairs' if plain else ''} "
                    f"({epochs:g} ep)",
                    "train_seconds": st_seconds,
                    "train_steps": st_steps,
                },
                ConcatInstructionEncoder(st_model),
            )
        ours_dir = os.path.join(tmp, "ours")
        ours, our_seconds, our_steps = _ours_train(records_path, args, epochs, limit, ours_dir)
        add(
            {
                "model": f"inf_embed --preset {args.preset} ({epochs:g} ep)",
                "train_seconds": our_seconds,
                "train_steps": our_steps,
            },
            ours,
        )
        if args.save_ours:
            shutil.copytree(ours_dir, args.save_ours, dirs_exist_ok=True)
    print()
    print(markdown(rows, tasks))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(
                {"args": {k: str(v) for k, v in vars(args).items()}, "epochs": epochs, "rows": rows}, handle, indent=2
            )


if __name__ == "__main__":
    main()
