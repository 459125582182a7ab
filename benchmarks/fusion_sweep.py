"""Fusion x loss x schedule sweep for the default model (issue 6): train each run, evaluate the quality guards.

    python benchmarks/fusion_sweep.py [--runs NAME,NAME ...] [--base PATH] [--data-root ../shared/data]
                                      [--output benchmarks/out/fusion_sweep.jsonl] [--max-steps N]

Each run fine-tunes the all-MiniLM-L6-v2 backbone (``--base``, default: the ``default`` extra's folder) on
``infir-marco/train.jsonl`` with :class:`inf_embed.training.Trainer` (seed 42, batch 16 records, 10 % warm-up) and
is evaluated on:

- ``infir-marco/dev.jsonl`` (the 400 P+ / D- passages of its 200 records): p-MRR for an instruction change and a
  query change, paired instruction accuracy, nDCG@10 (:class:`inf_embed.evaluation.InfIREvaluator`); and again
  with the 1,743 ``instructir/msmarco_filtered`` passages added to the corpus (``infir_x``, as in
  ``benchmarks/quality.py``), where a query change has real passages to move P+ below;
- SciFact test nDCG@10 and NevIR dev paired accuracy (guards: general retrieval and negation).

One JSON line per run goes to ``--output`` as soon as the run ends (so an interrupted sweep keeps what it
measured), and a Markdown table is printed at the end. ``RUNS`` lists the runs in priority order; ``--runs``
picks some by name. Runs on whatever device torch sees (CUDA if available).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"


@dataclasses.dataclass(frozen=True)
class Run:
    """One sweep entry: model overrides and training arguments."""

    name: str
    fusion: str
    loss: str
    epochs: float = 3.0
    lr: float = 2e-5
    head_lr: float | None = None
    trainable: str | None = None
    model: tuple[tuple[str, Any], ...] = ()


ATTENTION_ONLY = r"attention\."  # BERT self-attention and attention-output weights, biases and LayerNorms

RUNS = [
    # attention-only fine-tuning: the delta stays under 10 MB, so these are the shippable candidates
    Run("concat-attn-PIIQ", "concat", "multi:P+I+IQ", lr=5e-5, trainable=ATTENTION_ONLY),
    Run("conditioned-attn-PIIQ", "conditioned", "multi:P+I+IQ", lr=5e-5, trainable=ATTENTION_ONLY),
    Run("residual-attn-PIIQ", "residual", "multi:P+I+IQ", lr=5e-5, head_lr=1e-3, trainable=ATTENTION_ONLY),
    Run("attention-attn-PIIQ", "attention", "multi:P+I+IQ", lr=5e-5, trainable=ATTENTION_ONLY),
    Run("conditioned-attn-PI", "conditioned", "multi:P+I", lr=5e-5, trainable=ATTENTION_ONLY),
    Run("concat-attn-PI", "concat", "multi:P+I", lr=5e-5, trainable=ATTENTION_ONLY),
    Run(
        "conditioned-w05-attn-PIIQ",
        "conditioned",
        "multi:P+I+IQ",
        lr=5e-5,
        trainable=ATTENTION_ONLY,
        model=(("instruction_weight", 0.5),),
    ),
    Run("conditioned-attn-PIIQ-lr1e-4", "conditioned", "multi:P+I+IQ", lr=1e-4, trainable=ATTENTION_ONLY),
    Run("concat-attn-PIIQ-lr1e-4", "concat", "multi:P+I+IQ", lr=1e-4, trainable=ATTENTION_ONLY),
    # whole-backbone fine-tuning, for reference (too large to ship as a delta)
    Run("conditioned-full-PIIQ", "conditioned", "multi:P+I+IQ"),
    Run("concat-full-PIIQ", "concat", "multi:P+I+IQ"),
    Run("conditioned-attn-uni-PIIQ", "conditioned", "uni:P+I+IQ", lr=5e-5, trainable=ATTENTION_ONLY),
    Run("conditioned-attn-PIIQ-5ep", "conditioned", "multi:P+I+IQ", epochs=5.0, lr=5e-5, trainable=ATTENTION_ONLY),
    Run("residual-attn-PI", "residual", "multi:P+I", lr=5e-5, head_lr=1e-3, trainable=ATTENTION_ONLY),
    Run("attention-attn-PI", "attention", "multi:P+I", lr=5e-5, trainable=ATTENTION_ONLY),
]

METRICS = (
    ("infir", "p_mrr_instruction", 100.0),
    ("infir", "p_mrr_query", 100.0),
    ("infir", "paired_accuracy", 100.0),
    ("infir", "ndcg_at_10", 1.0),
    ("infir_x", "p_mrr_instruction", 100.0),
    ("infir_x", "p_mrr_query", 100.0),
    ("infir_x", "ndcg_at_10", 1.0),
    ("scifact", "ndcg_at_10", 1.0),
    ("nevir", "paired_accuracy", 100.0),
)


def build_evaluators(data: Path, batch_size: int) -> dict[str, Any]:
    from finetune_vs_st import build_evaluators as issue6_evaluators  # benchmarks/ is on sys.path as the script dir

    return issue6_evaluators(data, batch_size=batch_size)


def evaluate(model: Any, evaluators: dict[str, Any]) -> dict[str, dict[str, float]]:
    model.eval()
    return {task: {k: float(v) for k, v in ev(model).items()} for task, ev in evaluators.items()}


def train_run(run: Run, base: str, data: Path, max_steps: int | None, seed: int) -> tuple[Any, dict[str, Any]]:
    from inf_embed import InfEmbed
    from inf_embed.training import Trainer, TrainingArguments

    model = InfEmbed(base, fusion=run.fusion, **dict(run.model))
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            loss=run.loss,
            batch_size=16,
            learning_rate=run.lr,
            head_learning_rate=run.head_lr,
            trainable_parameters=run.trainable,
            warmup_ratio=0.1,
            epochs=run.epochs,
            max_steps=max_steps,
            seed=seed,
            show_progress_bar=False,
            logging_steps=50,
        )
        out = Trainer(model, args, str(data / "infir-marco" / "train.jsonl")).train()
    info = {"steps": out.global_step, "train_seconds": round(out.train_seconds, 1), "loss": out.training_loss}
    return model, info


def table(rows: list[dict[str, Any]]) -> str:
    titles = ["p-MRR instr", "p-MRR query", "paired %", "nDCG@10", "+msmarco p-MRR instr", "+msmarco p-MRR query"]
    titles += ["+msmarco nDCG@10", "SciFact", "NevIR %"]
    lines = ["| run | fusion | loss | epochs | lr | " + " | ".join(titles) + " | train s |"]
    lines.append("|" + "---|" * (len(titles) + 6))
    for row in rows:
        cells = [f"{row['results'][t][k] * scale:.4g}" for t, k, scale in METRICS]
        run = row["run"]
        lines.append(
            f"| {run['name']} | {run['fusion']} | {run['loss']} | {run['epochs']:g} | {run['lr']:g} | "
            + " | ".join(cells)
            + f" | {row['train']['train_seconds']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=None, help="comma-separated run names (default: all, in order)")
    parser.add_argument("--base", default=None, help="backbone folder (default: the 'default' extra's MiniLM)")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "out" / "fusion_sweep.jsonl")
    parser.add_argument("--max-steps", type=int, default=None, help="cap each run's steps (smoke runs)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--batch-size", type=int, default=128, help="evaluation batch size")
    parser.add_argument("--budget-seconds", type=float, default=None, help="start no run after this much time")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from inf_embed.model import default_model_path

    base = args.base or default_model_path()
    runs = RUNS
    if args.runs:
        by_name = {r.name: r for r in RUNS}
        unknown = [n for n in args.runs.split(",") if n not in by_name]
        if unknown:
            parser.error(f"unknown runs {unknown}; choose from {', '.join(by_name)}")
        runs = [by_name[n] for n in args.runs.split(",")]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    print(f"# {len(runs)} runs on {device}, torch {torch.__version__}", flush=True)
    evaluators = build_evaluators(args.data_root, args.batch_size)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for run in runs:
        if args.budget_seconds is not None and time.perf_counter() - start > args.budget_seconds:
            print(f"# budget spent; skipping {run.name} and later runs", flush=True)
            break
        try:
            model, info = train_run(run, base, args.data_root, args.max_steps, args.seed)
            t0 = time.perf_counter()
            results = evaluate(model, evaluators)
            info["eval_seconds"] = round(time.perf_counter() - t0, 1)
        except Exception as error:  # a broken run must not cost the rest of the sweep
            logging.exception("run %s failed", run.name)
            print(f"# {run.name} FAILED: {error!r}", flush=True)
            continue
        row = {"run": dataclasses.asdict(run), "device": device, "train": info, "results": results}
        rows.append(row)
        with open(args.output, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        print(table([row]).splitlines()[-1], flush=True)
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
