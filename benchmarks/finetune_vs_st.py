"""Like-for-like check of the trainer: inf_embed's Trainer vs sentence-transformers' MultipleNegativesRankingLoss.

    python benchmarks/finetune_vs_st.py [--max-steps N] [--batch-size 32] [--lr 2e-5] [--seed 42] [--json FILE]

Both sides fine-tune all-MiniLM-L6-v2 on the same InF-IR records with the same seed, learning rate, 10 % warm-up,
batch of 32 items and number of steps, then are evaluated on ``infir-marco/dev.jsonl`` with
``inf_embed.evaluation.InfIREvaluator`` (p-MRR for an instruction and a query change, paired accuracy, nDCG@10).

- sentence-transformers (what a user does today): rows ``(Q+ I+, P+, D-)`` and ``(Q+ I-, D-, P+)``, the instruction
  appended to the query, ``MultipleNegativesRankingLoss`` (scale 20), default random row sampler.
- inf_embed: ``fusion="concat"`` (same "{query} {instruction}" text), loss ``uni:P`` (tau 0.05 = scale 20): the
  same in-batch InfoNCE over passages with the poisoned-instruction passage as a hard negative. The one
  difference is batch composition: inf_embed keeps a record's two items in one batch (paper B13), so D- is always
  a candidate of (I+, Q+) as the other item's positive (MNRL would list it twice, which only adds log 2 to the
  loss); sentence-transformers' random row sampler usually puts the two rows in different batches, where D- is
  still the explicit hard negative of its own row.

``--max-steps`` trains on the first ``max_steps * batch_size / 2`` records only (one pass), for a measured subset
on a slow machine; without it, one full epoch. The "before" rows evaluate the untouched model through both APIs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "infir-marco"
METRICS = ("p_mrr_instruction", "p_mrr_query", "paired_accuracy", "ndcg_at_10")


def _evaluate(evaluator, model) -> dict[str, float]:
    results = evaluator(model)
    return {k: float(results[k]) for k in (*METRICS, "eval_seconds")}


def _st_train(records, args, out_dir: str) -> tuple[object, float]:
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from inf_embed.model import default_model_path

    rows: dict[str, list[str]] = {"anchor": [], "positive": [], "negative": []}
    for r in records:
        rows["anchor"].append(f"{r.query} {r.instruction}")
        rows["positive"].append(r.positive)
        rows["negative"].append(r.instruction_negative_passage)
        rows["anchor"].append(f"{r.query} {r.instruction_negative}")
        rows["positive"].append(r.instruction_negative_passage)
        rows["negative"].append(r.positive)
    model = SentenceTransformer(default_model_path(), device="cpu")
    training_args = SentenceTransformerTrainingArguments(
        output_dir=out_dir,
        num_train_epochs=1,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_ratio=0.1,
        seed=args.seed,
        data_seed=args.seed,
        save_strategy="no",
        report_to=[],
        logging_steps=10,
        disable_tqdm=True,
        dataloader_drop_last=False,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=training_args, train_dataset=Dataset.from_dict(rows), loss=MultipleNegativesRankingLoss(model)
    )
    start = time.perf_counter()
    trainer.train()
    return model, time.perf_counter() - start


def _ours_train(records, args, out_dir: str) -> tuple[object, float]:
    from inf_embed import InfEmbed
    from inf_embed.training import Trainer, TrainingArguments

    model = InfEmbed(fusion="concat")
    training_args = TrainingArguments(
        output_dir=out_dir,
        loss="uni:P",
        batch_size=args.batch_size // 2,
        learning_rate=args.lr,
        warmup_ratio=0.1,
        epochs=1,
        seed=args.seed,
        show_progress_bar=False,
        logging_steps=10,
    )
    out = Trainer(model, training_args, records).train()
    return model, out.train_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", default=str(DATA / "train.jsonl"))
    parser.add_argument("--dev", default=str(DATA / "dev.jsonl"))
    parser.add_argument("--max-steps", type=int, default=None, help="train on this many batches of records only")
    parser.add_argument("--batch-size", type=int, default=32, help="items per batch (2 per InF-IR record)")
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dev-limit", type=int, default=None, help="evaluate on the first N dev records (smoke runs)")
    parser.add_argument("--skip-before", action="store_true", help="do not evaluate the untrained model")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    from sentence_transformers import SentenceTransformer

    from inf_embed import InfEmbed
    from inf_embed.data import load_triplets
    from inf_embed.evaluation import ConcatInstructionEncoder, InfIREvaluator
    from inf_embed.model import default_model_path

    limit = None if args.max_steps is None else args.max_steps * (args.batch_size // 2)
    records = load_triplets(args.train, limit=limit)
    with open(args.dev, encoding="utf-8") as handle:
        dev_records = [json.loads(line) for line in handle if line.strip()][: args.dev_limit]
    evaluator = InfIREvaluator(dev_records, show_progress_bar=False)
    rows: list[dict[str, object]] = []
    print(
        f"# {len(records)} records ({2 * len(records)} items), batch {args.batch_size} items, lr {args.lr}, "
        f"seed {args.seed}, torch threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}"
    )
    if not args.skip_before:
        st_before = SentenceTransformer(default_model_path(), device="cpu")
        rows.append(
            {
                "model": "MiniLM before (sentence-transformers, concat)",
                **_evaluate(evaluator, ConcatInstructionEncoder(st_before)),
            }
        )
        rows.append(
            {"model": "MiniLM before (inf_embed, fusion concat)", **_evaluate(evaluator, InfEmbed(fusion="concat"))}
        )
    with tempfile.TemporaryDirectory() as tmp:
        st_model, st_seconds = _st_train(records, args, os.path.join(tmp, "st"))
        rows.append(
            {
                "model": "sentence-transformers MNRL",
                "train_seconds": st_seconds,
                "examples_per_second": 2 * len(records) / st_seconds,
                **_evaluate(evaluator, ConcatInstructionEncoder(st_model)),
            }
        )
        ours, our_seconds = _ours_train(records, args, os.path.join(tmp, "ours"))
        rows.append(
            {
                "model": "inf_embed Trainer, concat, uni:P",
                "train_seconds": our_seconds,
                "examples_per_second": 2 * len(records) / our_seconds,
                **_evaluate(evaluator, ours),
            }
        )
    header = ("model", "train_seconds", "examples_per_second", *METRICS)
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        cells = []
        for key in header:
            value = row.get(key, "")
            cells.append(f"{value:.4g}" if isinstance(value, float) else str(value))
        print("| " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"args": vars(args), "records": len(records), "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
