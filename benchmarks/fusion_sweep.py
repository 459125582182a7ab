"""Fusion x loss x schedule sweep for the default model (issue 6): train each run, evaluate the quality guards.

    python benchmarks/fusion_sweep.py [--runs NAME,NAME ...] [--base PATH] [--data-root ../shared/data]
                                      [--output benchmarks/out/fusion_sweep.jsonl] [--max-steps N] [--workers W]
                                      [--save-models DIR]

Each run fine-tunes the all-MiniLM-L6-v2 backbone (``--base``, default: the ``default`` extra's folder) on
``infir-marco/train.jsonl`` with :class:`inf_embed.training.Trainer` (seed 42, batch 16 records, 10 % warm-up) and
is evaluated on:

- ``infir-marco/dev.jsonl`` (the 400 P+ / D- passages of its 200 records): p-MRR for an instruction change and a
  query change, paired instruction accuracy, nDCG@10 (:class:`inf_embed.evaluation.InfIREvaluator`); and again
  with the 1,743 ``instructir/msmarco_filtered`` passages added to the corpus (``infir_x``, as in
  ``benchmarks/quality.py``), where a query change has real passages to move P+ below;
- SciFact test nDCG@10 and NevIR dev paired accuracy (guards: general retrieval and negation).

Some runs are also evaluated as *variants* of the trained model, without more training: ``alpha=A`` puts every
backbone weight at ``base + A * (trained - base)`` (weight-space interpolation towards the start model, as in
WiSE-FT), ``rank=R`` keeps the best rank-R approximation (truncated SVD) of each trained matrix's change, which
is the form a whole-encoder fine-tune would ship in under 10 MB (vectors keep their full change).

One JSON line per run goes to ``--output`` as soon as the run ends (so an interrupted sweep keeps what it
measured), and a Markdown table is printed at the end. ``RUNS`` lists the runs in priority order; ``--runs``
picks some by name. Runs on whatever device torch sees (CUDA if available); ``--workers W`` trains W runs at a
time in separate processes (a small encoder leaves a GPU mostly idle, so W runs share it well).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import subprocess
import sys
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
    loss_options: str | None = None
    plain_queries: bool = False
    foreign_instructions: bool = False
    preserve_weight: float = 0.0
    alphas: tuple[float, ...] = ()
    ranks: tuple[int, ...] = ()
    eval_fusions: tuple[str, ...] = ()  # parameter-free fusions the trained model is also evaluated with


ATTENTION_ONLY = r"attention\."  # BERT self-attention and attention-output weights, biases and LayerNorms
ENCODER = r"encoder\."  # every transformer layer (not the embeddings)

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


def poisoned(
    name: str,
    trainable: str,
    lr: float,
    epochs: float,
    ix: float,
    q: float,
    passage_gradient: float = 0.0,
    plain: bool = True,
    alphas: tuple[float, ...] = (0.5, 0.75),
    ranks: tuple[int, ...] = (),
    exclude_record_hard_negative: bool = False,
    eval_fusions: tuple[str, ...] = (),
    preserve_weight: float = 0.0,
    foreign_instructions: bool = False,
) -> Run:
    """A concat run with the IX/Q terms (``multi:P+I+IQ+IX+Q``, ``inf_embed.losses.poisoned_query``)."""
    options = f"instruction_weight={ix},weight={q},passage_gradient={passage_gradient}"
    if exclude_record_hard_negative:
        options += ",exclude_record_hard_negative=1"
    return Run(
        name,
        "concat",
        "multi:P+I+IQ+IX+Q",
        epochs=epochs,
        lr=lr,
        trainable=trainable,
        loss_options=options,
        plain_queries=plain,
        alphas=alphas,
        ranks=ranks,
        eval_fusions=eval_fusions,
        foreign_instructions=foreign_instructions,
        preserve_weight=preserve_weight,
    )


# second sweep (issue 6, criterion 4): the poisoned terms with the whole encoder trained, longer schedules, and
# the trained weights pulled back towards the backbone (alpha) or compressed to a shippable low rank
RUNS += [
    poisoned("attn-IX.1Q.1-pg0-plain", ATTENTION_ONLY, 1e-4, 3, 0.1, 0.1),
    Run(
        "full-PIIQ-plain",
        "concat",
        "multi:P+I+IQ",
        lr=2e-5,
        trainable=ENCODER,
        plain_queries=True,
        alphas=(0.5, 0.75),
        ranks=(32, 128),
    ),
    poisoned("full-IX.1Q.1-pg0-plain", ENCODER, 2e-5, 3, 0.1, 0.1, ranks=(64,)),
    poisoned("full-IX.3Q.5-pg0-plain", ENCODER, 2e-5, 3, 0.3, 0.5, ranks=(64,)),
    poisoned("full-IX.3Q.5-pg1-plain", ENCODER, 2e-5, 3, 0.3, 0.5, passage_gradient=1.0),
    poisoned("full-IX.3Q1-pg0-plain-6ep", ENCODER, 2e-5, 6, 0.3, 1.0, ranks=(64,)),
    poisoned("full-IX1Q1-pg1-plain-6ep", ENCODER, 2e-5, 6, 1.0, 1.0, passage_gradient=1.0, alphas=(0.3, 0.5, 0.75)),
    poisoned("attn-IX.3Q.5-pg0-plain-6ep", ATTENTION_ONLY, 1e-4, 6, 0.3, 0.5),
    poisoned("full-IX.1Q.3-pg0-plain-lr5e-5", ENCODER, 5e-5, 3, 0.1, 0.3, ranks=(64,)),
    poisoned("full-IX.3Q.5-pg0", ENCODER, 2e-5, 3, 0.3, 0.5, plain=False),
    poisoned("full-IX.2Q.3-pg0-plain-lr3e-5-4ep", ENCODER, 3e-5, 4, 0.2, 0.3, ranks=(64,)),
    poisoned("attn-IX.05Q.05-pg0-plain-lr5e-5", ATTENTION_ONLY, 5e-5, 3, 0.05, 0.05),
    poisoned("full-IX.3Q1-pg0-plain-lr5e-5-6ep", ENCODER, 5e-5, 6, 0.3, 1.0),
    poisoned("attn-IX.2Q1-pg0-plain-lr2e-4-6ep", ATTENTION_ONLY, 2e-4, 6, 0.2, 1.0),
    # CPU-sized (no plain records): the whole encoder at the peer's lr, the terms on the passages too
    poisoned(
        "full-IX.3Q.5-pg1", ENCODER, 2e-5, 3, 0.3, 0.5, passage_gradient=1.0, plain=False, alphas=(0.5,), ranks=(64,)
    ),
    poisoned(
        "full-IX1Q1-pg1", ENCODER, 2e-5, 3, 1.0, 1.0, passage_gradient=1.0, plain=False, alphas=(0.3, 0.6), ranks=(64,)
    ),
    # the Q term without the record's own hn1 among its candidates (P+ must fall below other topics, not below D-)
    poisoned(
        "full-IX1Q1-pg1-xhn", ENCODER, 2e-5, 3, 1.0, 1.0, 1.0, False, (), (64,), exclude_record_hard_negative=True
    ),
    poisoned(
        "full-IX.3Q1-pg1-xhn", ENCODER, 2e-5, 3, 0.3, 1.0, 1.0, False, (), (64,), exclude_record_hard_negative=True
    ),
    # shippable (attention weights only) with the exclusion, the terms kept off the passages
    poisoned(
        "attn-IX.1Q.3-pg0-xhn",
        ATTENTION_ONLY,
        1e-4,
        3,
        0.1,
        0.3,
        plain=False,
        alphas=(),
        exclude_record_hard_negative=True,
    ),
    poisoned(
        "attn-IX.05Q.1-pg0-xhn",
        ATTENTION_ONLY,
        1e-4,
        3,
        0.05,
        0.1,
        plain=False,
        alphas=(),
        exclude_record_hard_negative=True,
    ),
    # the best near-miss so far (attn-IX.05Q.05-pg0-plain-lr5e-5) with the exclusion and a stronger Q term
    poisoned(
        "attn-IX.05Q.1-pg0-plain-lr5e-5-xhn", ATTENTION_ONLY, 5e-5, 3, 0.05, 0.1, exclude_record_hard_negative=True
    ),
]


def near_miss(suffix: str, **changes: Any) -> Run:
    """``attn-IX.05Q.1-pg0-plain-lr5e-5-xhn`` (the best instruction follower so far) with ``changes``."""
    return poisoned(
        f"attn-IX.05Q.1-pg0-plain-lr5e-5-xhn{suffix}",
        ATTENTION_ONLY,
        5e-5,
        3,
        0.05,
        0.1,
        alphas=(),
        exclude_record_hard_negative=True,
        **changes,
    )


# the gated fusion (concat, the query alone where the instruction does not fit it): the shipped recipe trained
# through the gate (and evaluated without it), and the best instruction follower so far gated after training
RUNS += [
    Run(
        "gated-attn-PIIQ-lr1e-4",
        "gated",
        "multi:P+I+IQ",
        lr=1e-4,
        trainable=ATTENTION_ONLY,
        eval_fusions=("concat",),
    ),
    near_miss("+gated", eval_fusions=("gated",)),
]

# the best near-miss with its passages held near the backbone's (TrainingArguments.preserve_weight): does SciFact
# hold while the query side learns the instructions?
RUNS += [near_miss("-keep10", preserve_weight=10.0)]

# foreign-instruction records (another record's instruction on each query, that record's passage as negative):
# does the query stop drowning in the instruction, i.e. does the query-change p-MRR rise without a gate? On the
# shipped recipe (concat-attn-PIIQ-lr1e-4) and on the best instruction follower
RUNS += [
    Run(
        "concat-attn-PIIQ-lr1e-4-foreign",
        "concat",
        "multi:P+I+IQ",
        lr=1e-4,
        trainable=ATTENTION_ONLY,
        foreign_instructions=True,
        eval_fusions=("gated",),
    ),
    near_miss("-foreign", foreign_instructions=True, eval_fusions=("gated",)),
]

# the base for a gate: the gate (not the Q term) is to lift the query-change p-MRR, and the Q term costs paired
# accuracy and nDCG@10, so the instruction-negative term alone (IX 0.1) with plain-query records, lr 5e-5
RUNS += [
    Run(
        "attn-IX.1-pg0-plain-lr5e-5",
        "concat",
        "multi:P+I+IQ+IX",
        lr=5e-5,
        trainable=ATTENTION_ONLY,
        loss_options="instruction_weight=0.1,passage_gradient=0",
        plain_queries=True,
        eval_fusions=("gated",),
    )
]

# the passage term alone (the sentence-transformers peer's objective) with the IX term: do the paper's I and IQ
# terms cost the paired accuracy and nDCG@10 by which the peer leads?
RUNS += [
    Run(
        f"attn-P+IX{label}-pg0-plain-lr5e-5",
        "concat",
        "multi:P+IX",
        lr=5e-5,
        trainable=ATTENTION_ONLY,
        loss_options=f"instruction_weight={weight},passage_gradient=0",
        plain_queries=True,
    )
    for label, weight in ((".1", 0.1), (".03", 0.03), (".01", 0.01))
]

# `anchored` trained end to end (it was only ever applied after training): the query encoded alone is added to the
# joined text's embedding, so the query has its own channel into the embedding that the instruction cannot drown;
# the default model's recipe, then with the poisoned-query term (D- left out) that asks (I+, Q-) to drop P+
RUNS += [
    Run(
        f"anchored{weight:g}-attn-IX.1{label}-pg0-plain-lr5e-5",
        "anchored",
        "multi:P+I+IQ+IX+Q" if q else "multi:P+I+IQ+IX",
        lr=5e-5,
        trainable=ATTENTION_ONLY,
        loss_options=f"instruction_weight=0.1,passage_gradient=0{options}",
        plain_queries=True,
        model=(("query_weight", weight),),
        eval_fusions=("concat",),
    )
    for weight, label, q, options in (
        (0.5, "", 0.0, ""),
        (0.5, "Q.3-xhn", 0.3, ",weight=0.3,exclude_record_hard_negative=1"),
    )
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


def variant_state(
    start: dict[str, torch.Tensor], trained: dict[str, torch.Tensor], alpha: float = 1.0, rank: int | None = None
) -> dict[str, torch.Tensor]:
    """``start + alpha * change`` per floating tensor; a matrix's change cut to its best rank-``rank`` part."""
    out = {}
    for name, weight in trained.items():
        change = weight - start[name] if weight.is_floating_point() else None
        if change is None or not bool(change.any()):
            out[name] = weight
            continue
        if rank is not None and change.ndim == 2 and min(change.shape) > rank:
            u, s, vh = torch.linalg.svd(change.float(), full_matrices=False)
            change = ((u[:, :rank] * s[:rank]) @ vh[:rank]).to(change.dtype)
        out[name] = start[name] + alpha * change
    return out


def evaluate_variants(
    run: Run, model: Any, start: dict[str, torch.Tensor], evaluators: dict[str, Any]
) -> dict[str, dict[str, dict[str, float]]]:
    """The run's ``alpha=A`` and ``rank=R`` variants of the trained model, and the trained model with each of
    ``run.eval_fusions`` in place of its fusion, each evaluated like the model itself."""
    from inf_embed.modules import get_fusion

    trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    settings = [(f"alpha={a:g}", {"alpha": a}) for a in run.alphas] + [(f"rank={r}", {"rank": r}) for r in run.ranks]
    results = {}
    for label, options in settings:
        model.load_state_dict(variant_state(start, trained, **options))
        results[label] = evaluate(model, evaluators)
    model.load_state_dict(trained)
    config, fusion = model.config, model.fusion
    for name in run.eval_fusions:
        model.config = dataclasses.replace(config, fusion=name)
        model.fusion = get_fusion(name)(model.config, fusion.hidden_size)
        if any(True for _ in model.fusion.parameters()):
            raise ValueError(f"eval_fusions: {name!r} has parameters, which training did not fit")
        results[f"fusion={name}"] = evaluate(model, evaluators)
    model.config, model.fusion = config, fusion
    return results


def train_run(
    run: Run, base: str, data: Path, max_steps: int | None, seed: int
) -> tuple[Any, dict[str, Any], dict[str, torch.Tensor]]:
    """Train ``run`` from ``base``; returns the model, training info and the start weights (for the variants)."""
    from inf_embed import InfEmbed
    from inf_embed.training import Trainer, TrainingArguments

    model = InfEmbed(base, fusion=run.fusion, **dict(run.model))
    if torch.cuda.is_available():
        model.to("cuda")
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            loss=run.loss,
            loss_options=run.loss_options,
            plain_queries=run.plain_queries,
            foreign_instructions=run.foreign_instructions,
            preserve_weight=run.preserve_weight,
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
    return model, info, start


def table(rows: list[dict[str, Any]]) -> str:
    titles = ["p-MRR instr", "p-MRR query", "paired %", "nDCG@10", "+msmarco p-MRR instr", "+msmarco p-MRR query"]
    titles += ["+msmarco nDCG@10", "SciFact", "NevIR %"]
    lines = ["| run | fusion | loss | options | epochs | lr | " + " | ".join(titles) + " | train s |"]
    lines.append("|" + "---|" * (len(titles) + 7))
    for row in rows:
        run = row["run"]
        options = ", ".join(
            part
            for part in (
                run.get("loss_options") or "",
                "plain queries" if run.get("plain_queries") else "",
                "foreign instructions" if run.get("foreign_instructions") else "",
                f"preserve {run['preserve_weight']:g}" if run.get("preserve_weight") else "",
                "trained " + ("attention" if run.get("trainable") == ATTENTION_ONLY else run.get("trainable") or "all"),
            )
            if part
        )
        versions = [("", row["results"], row["train"]["train_seconds"])]
        versions += [(f" @ {label}", results, "–") for label, results in row.get("variants", {}).items()]
        for label, results, seconds in versions:
            cells = [f"{results[t][k] * scale:.4g}" for t, k, scale in METRICS]
            lines.append(
                f"| {run['name']}{label} | {run['fusion']} | {run['loss']} | {options} | {run['epochs']:g} | "
                f"{run['lr']:g} | " + " | ".join(cells) + f" | {seconds} |"
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
    parser.add_argument("--workers", type=int, default=1, help="runs trained at a time, one process each")
    parser.add_argument(
        "--save-models", type=Path, default=None, help="save each trained model to DIR/<run name> (later evaluations)"
    )
    args = parser.parse_args()
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
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
    if args.workers > 1:
        rows = run_in_workers(runs, args)
        print()
        print(table(rows))
        return
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    print(f"# {len(runs)} runs on {device}, torch {torch.__version__}", flush=True)
    evaluators = build_evaluators(args.data_root, args.batch_size)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    start = time.perf_counter()
    for run in runs:
        if args.budget_seconds is not None and time.perf_counter() - start > args.budget_seconds:
            print(f"# budget spent; skipping {run.name} and later runs", flush=True)
            break
        try:
            model, info, start_weights = train_run(run, base, args.data_root, args.max_steps, args.seed)
            if args.save_models is not None:
                model.save_pretrained(args.save_models / run.name)
            t0 = time.perf_counter()
            results = evaluate(model, evaluators)
            variants = evaluate_variants(run, model, start_weights, evaluators)
            info["eval_seconds"] = round(time.perf_counter() - t0, 1)
        except Exception as error:  # a broken run must not cost the rest of the sweep
            logging.exception("run %s failed", run.name)
            print(f"# {run.name} FAILED: {error!r}", flush=True)
            continue
        row = {"run": dataclasses.asdict(run), "device": device, "train": info, "results": results}
        if variants:
            row["variants"] = variants
        rows.append(row)
        with open(args.output, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        print("\n".join(table([row]).splitlines()[2:]), flush=True)
        del model, start_weights
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    print()
    print(table(rows))


def run_in_workers(runs: list[Run], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each run in its own process, ``args.workers`` at a time; returns the rows they appended to the output."""
    common = [sys.executable, str(Path(__file__).resolve()), "--data-root", str(args.data_root)]
    common += ["--output", str(args.output), "--seed", str(args.seed), "--batch-size", str(args.batch_size)]
    if args.base:
        common += ["--base", args.base]
    if args.max_steps is not None:
        common += ["--max-steps", str(args.max_steps)]
    if args.save_models is not None:
        common += ["--save-models", str(args.save_models)]
    pending, running = list(runs), []
    start = time.perf_counter()
    while pending or running:
        running = [proc for proc in running if proc.poll() is None]
        over_budget = args.budget_seconds is not None and time.perf_counter() - start > args.budget_seconds
        if pending and over_budget:
            print(f"# budget spent; skipping {', '.join(r.name for r in pending)}", flush=True)
            pending = []
        while pending and len(running) < args.workers:
            running.append(subprocess.Popen([*common, "--runs", pending.pop(0).name]))
        time.sleep(1.0)
    names = {run.name for run in runs}
    rows = []
    if args.output.exists():
        for line in args.output.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row["run"]["name"] in names:
                rows.append(row)
    return rows


if __name__ == "__main__":
    main()
