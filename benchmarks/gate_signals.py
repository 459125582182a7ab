"""Can a cheap signal tell an instruction that conflicts with its query from one that fits it?

    python benchmarks/gate_signals.py [--model M] [--fallback-budget 0.05] [--json FILE]

The ``gated`` fusion falls back to the query alone where cos(query, instruction) is low; its losses against an
oracle gate (``benchmarks/gate_threshold.py``) are all detection errors. This script measures, for one model
(default: the shipped default model), how well candidate per-pair signals separate fitting pairs, (Q+, I+) and
(Q+, I-), from misfit pairs, (Q-, I+) (the poisoned query: the instruction describes another query's passage),
and whether the demo's (ambiguous query, disambiguating instruction) pairs count as fitting. Signals, each from
the model's own embeddings (q: the query alone, i: the instruction alone, j: the joined ``concat`` text; all
L2-normalised):

- ``cos(q,i)`` (the ``gated`` fusion's signal), ``cos(j,q)``, ``cos(j,i)``;
- ``coverage min`` / ``coverage mean``: each query token's best cosine with the instruction's tokens (token states
  of the two texts encoded alone, special tokens left out), the minimum / mean over the query's tokens;
- ``joined embedding``: the d coordinates of j itself, the pair encoded jointly, as a logistic probe (L2-penalised):
  whether the model's encoding of the pair already carries the conflict, for a learned gate head to read.

Printed: the ROC AUC of each signal on ``infir-marco/dev.jsonl`` (fitting vs misfit) and of logistic
combinations fitted on ``infir-marco/train.jsonl``; for each, at the threshold where ``--fallback-budget`` of the
training fitting pairs fall back: the share of dev fitting pairs that fall back (instructions wrongly dropped), of
dev misfit pairs that fall back (caught), and of the demo pairs that fall back.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gate_threshold import (
    DATA_ROOT,
    demo_pairs,
    labelled_pairs,
    read_records,
)  # benchmarks/ is on sys.path as the script dir

SIGNALS = ("cos(q,i)", "cos(j,q)", "cos(j,i)", "coverage min", "coverage mean")
COMBINATIONS = ((0, 2), (0, 1, 2), (0, 1, 2, 3, 4))


def pair_signals(model: Any, queries: list[str], instructions: list[str], batch_size: int) -> np.ndarray:
    """(P, 5 + d): the signals of ``SIGNALS`` for each (query, instruction) pair, then the joined embedding j."""
    options = {"batch_size": batch_size, "convert_to_numpy": True, "normalize_embeddings": True}
    q = model.encode_query(queries, **options)
    i = model.encode_query(instructions, **options)  # each side alone, as the gated fusion encodes it
    j = model.encode_query(queries, instruction=instructions, **options)
    query_tokens = model.encode(queries, output_value="token_embeddings", batch_size=batch_size)
    instruction_tokens = model.encode(instructions, output_value="token_embeddings", batch_size=batch_size)
    coverage = []
    for a, b in zip(query_tokens, instruction_tokens):
        a = torch.nn.functional.normalize(a[1:-1].float(), dim=-1)  # without [CLS] and [SEP]
        b = torch.nn.functional.normalize(b[1:-1].float(), dim=-1)
        best = (a @ b.T).max(dim=1).values
        coverage.append([best.min().item(), best.mean().item()])
    cov = np.asarray(coverage)
    dot = lambda x, y: np.einsum("nd,nd->n", x, y)  # noqa: E731
    return np.concatenate([np.stack([dot(q, i), dot(j, q), dot(j, i), cov[:, 0], cov[:, 1]], axis=1), j], axis=1)


def roc_auc(fitting: np.ndarray, misfit: np.ndarray) -> float:
    """P(a fitting pair scores above a misfit pair), ties counted half."""
    greater = (fitting[:, None] > misfit[None, :]).mean()
    return float(greater + 0.5 * (fitting[:, None] == misfit[None, :]).mean())


def fit_logistic(
    features: np.ndarray, labels: np.ndarray, l2: float = 1e-3, steps: int = 200
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logistic regression (standardised features, L2 penalty ``l2`` on the weights, L-BFGS); returns (mean,
    scale, weights then bias) for scoring."""
    mean, scale = features.mean(0), features.std(0) + 1e-8
    x = torch.as_tensor((features - mean) / scale, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.float64)
    w = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w[:-1] + w[-1], y) + l2 * w[:-1].square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return mean, scale, w.detach().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the shipped default model)")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--fallback-budget", type=float, default=0.05, help="share of training fitting pairs dropped")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if not 0.0 < args.fallback_budget < 1.0:
        parser.error(f"--fallback-budget must be between 0 and 1 (a share), got {args.fallback_budget}")

    from inf_embed import InfEmbed

    model = InfEmbed(args.model, fusion="concat")
    model.eval()
    split: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in ("train", "dev"):
        pairs, labels = labelled_pairs(read_records(args.data_root / "infir-marco" / f"{name}.jsonl"))
        signals = pair_signals(model, [q for q, _ in pairs], [i for _, i in pairs], args.batch_size)
        split[name] = (signals[labels == 1], signals[labels == 0])
    demo = pair_signals(model, *map(list, zip(*demo_pairs())), args.batch_size)

    rows = []
    candidates = [((c,), None) for c in range(len(SIGNALS))] + [(cols, "logistic") for cols in COMBINATIONS]
    train_fit, train_mis = split["train"]
    candidates.append((tuple(range(len(SIGNALS), train_fit.shape[1])), "logistic"))
    for cols, kind in candidates:
        cols = list(cols)
        if kind is None:
            score = lambda f, c=cols[0]: f[:, c]  # noqa: E731
        else:
            features = np.concatenate([train_fit, train_mis])[:, cols]
            labels = np.r_[np.ones(len(train_fit)), np.zeros(len(train_mis))]
            mean, scale, w = fit_logistic(features, labels)
            score = lambda f, c=cols, m=mean, s=scale, w=w: ((f[:, c] - m) / s) @ w[:-1] + w[-1]  # noqa: E731
        threshold = np.quantile(score(train_fit), args.fallback_budget)
        dev_fit, dev_mis = (score(f) for f in split["dev"])
        rows.append(
            {
                "signal": (
                    f"joined embedding ({len(cols)} dims)"
                    if cols[0] >= len(SIGNALS)
                    else " + ".join(SIGNALS[c] for c in cols)
                )
                + (" (logistic)" if kind else ""),
                "dev_auc": roc_auc(dev_fit, dev_mis),
                "dev_fitting_fall_back": float((dev_fit < threshold).mean()),
                "dev_misfit_fall_back": float((dev_mis < threshold).mean()),
                "demo_fall_back": float((score(demo) < threshold).mean()),
            }
        )
    print(
        f"\n| signal | dev AUC | dev fitting pairs falling back % | dev misfit pairs falling back % | demo pairs "
        f"falling back % (threshold: {100 * args.fallback_budget:g} % of training fitting pairs fall back) |"
    )
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['signal']} | {row['dev_auc']:.3f} | {100 * row['dev_fitting_fall_back']:.1f} | "
            f"{100 * row['dev_misfit_fall_back']:.1f} | {100 * row['demo_fall_back']:.1f} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": args.model or "default", "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
