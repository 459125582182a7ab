"""Training throughput: inf_embed's Trainer vs sentence-transformers' MultipleNegativesRankingLoss, one run.

    python benchmarks/train_throughput.py [--steps 4] [--rounds 2] [--batch-size 32] [--json FILE]

Both sides train all-MiniLM-L6-v2 on the same ``infir-marco/train.jsonl`` records with the same batch (32 items =
16 InF-IR records), learning rate and token budget (256 tokens per text: sentence-transformers'
``max_seq_length``; inf_embed's concat text gets ``max_query_length + max_instruction_length = 128 + 128``).

- sentence-transformers: ``SentenceTransformerTrainer`` + ``MultipleNegativesRankingLoss`` on rows
  ``(Q+ I+, P+, D-)`` and ``(Q+ I-, D-, P+)``;
- inf_embed ``concat`` + ``uni:P``: the same objective (see ``finetune_vs_st.py``);
- inf_embed ``attention`` + ``multi:P+I`` (the paper's model and best loss, M = 6 instruction variants), for
  reference: it does more work per item (separate instruction encoding, the I term).

Each round runs ``--steps`` optimizer steps per side (after one untimed warm-up step per side); rounds are
interleaved and the best round of each side is kept, so background load affects all sides alike. Reported:
training items per second of the training loop (each side's own loop time, excluding model loading), and the
ratio to sentence-transformers. Target: concat + uni:P >= 1.0x.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "infir-marco"
LENGTHS = {"max_query_length": 128, "max_instruction_length": 128, "max_passage_length": 256}


def _st_rows(records) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {"anchor": [], "positive": [], "negative": []}
    for r in records:
        rows["anchor"] += [f"{r.query} {r.instruction}", f"{r.query} {r.instruction_negative}"]
        rows["positive"] += [r.positive, r.instruction_negative_passage]
        rows["negative"] += [r.instruction_negative_passage, r.positive]
    return rows


class _STSide:
    def __init__(self, records, args, tmp: str) -> None:
        from datasets import Dataset
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

        from inf_embed.model import default_model_path

        self.model = SentenceTransformer(default_model_path(), device="cpu")
        self.model.max_seq_length = 256
        self.loss = MultipleNegativesRankingLoss(self.model)
        self.dataset = Dataset.from_dict(_st_rows(records))
        self.args, self.tmp = args, tmp

    def run(self, steps: int) -> tuple[float, int]:
        from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

        training_args = SentenceTransformerTrainingArguments(
            output_dir=os.path.join(self.tmp, "st"),
            max_steps=steps,
            per_device_train_batch_size=self.args.batch_size,
            learning_rate=2e-5,
            seed=self.args.seed,
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            logging_steps=1000,
        )
        trainer = SentenceTransformerTrainer(
            model=self.model, args=training_args, train_dataset=self.dataset, loss=self.loss
        )
        metrics = trainer.train().metrics
        return float(metrics["train_runtime"]), steps * self.args.batch_size


class _OurSide:
    def __init__(self, records, args, tmp: str, fusion: str, loss: str) -> None:
        from inf_embed import InfEmbed
        from inf_embed.model import default_model_path

        self.model = InfEmbed(default_model_path(), fusion=fusion, **LENGTHS)
        self.records, self.args, self.tmp, self.loss = records, args, tmp, loss

    def run(self, steps: int) -> tuple[float, int]:
        from inf_embed.training import Trainer, TrainingArguments

        training_args = TrainingArguments(
            output_dir=os.path.join(self.tmp, "ours"),
            loss=self.loss,
            batch_size=self.args.batch_size // 2,
            max_steps=steps,
            learning_rate=2e-5,
            seed=self.args.seed,
            show_progress_bar=False,
            logging_steps=1000,
        )
        out = Trainer(self.model, training_args, self.records).train()
        return out.train_seconds, steps * self.args.batch_size  # 16 InF-IR records = 32 items per step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", default=str(DATA / "train.jsonl"))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32, help="items per step (2 per record)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-attention", action="store_true", help="skip the attention + multi:P+I side")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from inf_embed.data import load_triplets

    records = load_triplets(args.train, limit=args.batch_size // 2 * (args.steps + 1))
    with tempfile.TemporaryDirectory() as tmp:
        sides = {
            "sentence-transformers MNRL": _STSide(records, args, tmp),
            "inf_embed concat uni:P": _OurSide(records, args, tmp, "concat", "uni:P"),
        }
        if not args.no_attention:
            sides["inf_embed attention multi:P+I"] = _OurSide(records, args, tmp, "attention", "multi:P+I")
        for side in sides.values():
            side.run(1)  # warm-up (first-call costs, allocator)
        best: dict[str, float] = {name: 0.0 for name in sides}
        for _ in range(args.rounds):
            for name, side in sides.items():
                seconds, items = side.run(args.steps)
                best[name] = max(best[name], items / seconds)
    baseline = best["sentence-transformers MNRL"]
    print(
        f"# MiniLM-L6, batch {args.batch_size} items, {args.steps} steps x {args.rounds} rounds (best), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}, "
        f"{os.cpu_count()} cpus"
    )
    print("| side | items/s | vs sentence-transformers |")
    print("|---|---|---|")
    for name, value in best.items():
        print(f"| {name} | {value:.2f} | {value / baseline:.2f}x |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"args": vars(args), "items_per_second": best}, handle, indent=2)


if __name__ == "__main__":
    main()
