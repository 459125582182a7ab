"""The ``gated`` fusion's threshold: how often it falls back, and what that does to instruction following.

    python benchmarks/gate_threshold.py [--model M] [--thresholds 0.2,0.25,0.3,0.35,0.4] [--json FILE]

``gated`` embeds ``concat``'s joined text, or the query alone when the query and the instruction, each encoded
alone, have a cosine below ``gate_threshold``. For one model (default: the shipped default model) and each
threshold this prints, next to plain ``concat``:

- the gate on ``infir-marco/train.jsonl`` (the threshold is chosen there, not on dev): the share of fitting pairs
  ``(Q+, I+)`` and ``(Q+, I-)`` that fall back (instruction wrongly dropped) and of misfit pairs ``(Q-, I+)``
  (the poisoned query: the instruction describes another query's passage) that fall back (caught);
- InF-IR dev (``infir-marco/dev.jsonl``, its 400 passages; ``+msmarco``: the 1,743
  ``instructir/msmarco_filtered`` passages added): p-MRR for an instruction change and a query change, paired
  accuracy, nDCG@10, all through ``InfIREvaluator`` and the real ``encode_query`` path;
- ``unrelated nDCG@10``: nDCG@10 of each dev record's P+ when its query comes with another record's instruction
  (a fixed derangement, seed 0): what one instruction applied to queries it does not fit does to retrieval;
- ``demo top-1``: of the 12 (ambiguous query, disambiguating instruction) examples of ``inf-embed demo`` (e.g.
  "python" + "I am a software developer ... the programming language"), how many rank the document the
  instruction asks for first. Such instructions share few words with their query, so the gate can drop them.

A last row, ``oracle gate``, is the ceiling of any gate on this model: ``concat``, with the query alone exactly
for the misfit pairs of the evaluation (each dev record's (Q-, I+) and each unrelated pair) and nowhere else;
no demo pair is a misfit, so its demo top-1 is ``concat``'s.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

import numpy as np

from inf_embed.evaluation import QueryOnlyEncoder

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"


def read_records(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def derangement(count: int, seed: int) -> list[int]:
    """A permutation of ``range(count)`` with no fixed point (each record gets another record's instruction)."""
    rng = random.Random(seed)
    while True:
        order = list(range(count))
        rng.shuffle(order)
        if all(i != j for i, j in enumerate(order)):
            return order


Pair = tuple[str, str]  # (query, instruction)


EXTRA_MISFITS = ("negative-instruction", "foreign")


def labelled_pairs(
    records: list[dict[str, Any]], extra_misfits: tuple[str, ...] = (), seed: int = 0
) -> tuple[list[Pair], np.ndarray]:
    """Fitting pairs (label 1) then misfit pairs (label 0) of ``records``: (Q-, I+), plus (Q-, I-) for
    ``"negative-instruction"`` (I- is about Q+'s topic too) and (Q+_b, I+_a) for ``"foreign"``."""
    fitting = [(r["query_positive"], r[f]) for f in ("instruction_positive", "instruction_negative") for r in records]
    misfit = [(r["query_negative"], r["instruction_positive"]) for r in records]
    if "negative-instruction" in extra_misfits:
        misfit += [(r["query_negative"], r["instruction_negative"]) for r in records]
    if "foreign" in extra_misfits:
        order = list(range(len(records)))
        random.Random(seed).shuffle(order)
        shifted = order[1:] + order[:1]
        misfit += [(records[b]["query_positive"], records[a]["instruction_positive"]) for a, b in zip(order, shifted)]
    return fitting + misfit, np.r_[np.ones(len(fitting)), np.zeros(len(misfit))]


def demo_pairs() -> list[Pair]:
    from inf_embed.demo import load_demo_corpus

    return [(e["query"], x["text"]) for e in load_demo_corpus()["examples"] for x in e["instructions"]]


def gate_rates(model: Any, records: list[dict[str, Any]], thresholds: list[float]) -> dict[float, dict[str, float]]:
    """Per threshold: the share (%) of fitting and of misfit (query, instruction) pairs that fall back."""
    pairs, labels = labelled_pairs(records)
    texts = sorted({text for pair in pairs for text in pair})
    # encode_query without instruction is how the gated fusion encodes each side alone (query prompt, pooled)
    embedded = dict(zip(texts, model.encode_query(texts, batch_size=64, normalize_embeddings=True)))
    cosines = np.array([float(embedded[q] @ embedded[i]) for q, i in pairs])
    fitting, misfit = cosines[labels == 1], cosines[labels == 0]
    return {
        t: {
            "fitting_fall_back": 100 * float((fitting < t).mean()),
            "misfit_fall_back": 100 * float((misfit < t).mean()),
        }
        for t in thresholds
    }


def gate_evaluators(data_root: Path, batch_size: int) -> tuple[dict[str, Any], set[tuple[str, str]]]:
    """The InF-IR dev evaluators ``dev``, ``dev+msmarco`` and ``unrelated`` (each dev query with another record's
    instruction), and the (query, instruction) pairs of theirs that are misfits: each (Q-, I+) and unrelated pair."""
    from inf_embed.evaluation import InfIREvaluator

    data = data_root / "infir-marco"
    dev = read_records(data / "dev.jsonl")
    order = derangement(len(dev), seed=0)
    unrelated = [{**r, "instruction_positive": dev[j]["instruction_positive"]} for r, j in zip(dev, order)]
    extra = data_root / "instructir" / "msmarco_filtered"
    evaluators = {
        "dev": InfIREvaluator(dev, batch_size=batch_size),
        "dev+msmarco": InfIREvaluator.from_path(data, split="dev", extra_corpus=extra, batch_size=batch_size),
        "unrelated": InfIREvaluator(unrelated, batch_size=batch_size),
    }
    misfits = {(r["query_negative"], r["instruction_positive"]) for r in dev}
    misfits |= {(r["query_positive"], r["instruction_positive"]) for r in unrelated}
    return evaluators, misfits


class PairGate(QueryOnlyEncoder):
    """``model`` (``concat``) with the query encoded alone for the (query, instruction) pairs that :meth:`keeps`
    rejects; a subclass decides."""

    def keeps(self, pairs: list[tuple[str, str]]) -> list[bool]:
        """Whether each (query, instruction) pair keeps its instruction."""
        raise NotImplementedError

    def encode_query(self, queries: list[str], instruction: str | list[str | None] | None = None, **kwargs: Any) -> Any:
        if instruction is None:
            return self.model.encode_query(queries, **kwargs)
        if isinstance(instruction, str):
            instruction = [instruction] * len(queries)
        fits = iter(self.keeps([(q, i) for q, i in zip(queries, instruction) if i]))
        kept = [i if i and next(fits) else None for i in instruction]
        return self.model.encode_query(list(queries), instruction=kept, **kwargs)

    def similarity(self, a: Any, b: Any) -> Any:
        return self.model.similarity(a, b)


class OracleGate(PairGate):
    """The query encoded alone exactly for the given misfit (query, instruction) pairs."""

    def __init__(self, model: Any, misfits: set[tuple[str, str]]) -> None:
        super().__init__(model)
        self.misfits = misfits

    def keeps(self, pairs: list[tuple[str, str]]) -> list[bool]:
        return [pair not in self.misfits for pair in pairs]


GATE_METRIC_COLUMNS = (
    "p-MRR instr | p-MRR query | paired % | nDCG@10 | +msmarco p-MRR instr | +msmarco p-MRR query | +msmarco nDCG@10 | "
    "unrelated nDCG@10 | demo top-1 (of 12)"
)


def gate_metric_cells(results: dict[str, dict[str, float]], demo: int) -> list[str]:
    """The cells of ``GATE_METRIC_COLUMNS`` from the results of :func:`gate_evaluators`' evaluators."""
    dev, extra, unrelated = results["dev"], results["dev+msmarco"], results["unrelated"]
    cells = [f"{100 * dev['p_mrr_instruction']:.1f}", f"{100 * dev['p_mrr_query']:.1f}"]
    cells += [f"{100 * dev['paired_accuracy']:.1f}", f"{dev['ndcg_at_10']:.4f}"]
    cells += [f"{100 * extra['p_mrr_instruction']:.1f}", f"{100 * extra['p_mrr_query']:.1f}"]
    cells += [f"{extra['ndcg_at_10']:.4f}", f"{unrelated['ndcg_at_10']:.4f}", str(demo)]
    return cells


def demo_top1(model: Any) -> int:
    """How many instructed demo examples rank their target document first."""
    from inf_embed.demo import run_demo

    return sum(r.ranked_ids[0] == r.target for rankings in run_demo(model) for r in rankings if r.target is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the shipped default model)")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--thresholds", default="0.2,0.25,0.3,0.35,0.4")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    thresholds = [float(t) for t in args.thresholds.split(",")]

    from inf_embed import InfEmbed

    data = args.data_root / "infir-marco"
    evaluators, misfits = gate_evaluators(args.data_root, args.batch_size)
    rates = gate_rates(InfEmbed(args.model), read_records(data / "train.jsonl"), thresholds)

    rows = []
    for threshold in [None, *thresholds]:
        fusion = {"fusion": "concat"} if threshold is None else {"fusion": "gated", "gate_threshold": threshold}
        model = InfEmbed(args.model, **fusion)
        results = {name: ev(model) for name, ev in evaluators.items()}
        row = {"threshold": threshold, "train_gate": rates.get(threshold), "results": results}
        rows.append({**row, "demo_top1": demo_top1(model)})
        print(f"# {fusion} done", flush=True)
    oracle = OracleGate(InfEmbed(args.model, fusion="concat"), misfits)
    results = {name: ev(oracle) for name, ev in evaluators.items()}
    rows.append({"threshold": "oracle", "train_gate": None, "results": results, "demo_top1": rows[0]["demo_top1"]})

    print(
        "\n| fusion | train: fitting pairs falling back % | train: misfit pairs falling back % | "
        f"{GATE_METRIC_COLUMNS} |"
    )
    print("|" + "---|" * 12)
    for row in rows:
        gate = row["train_gate"]
        name = {None: "concat", "oracle": "oracle gate"}.get(row["threshold"]) or f"gated {row['threshold']:g}"
        cells = ["–", "–"] if gate is None else [f"{gate['fitting_fall_back']:.1f}", f"{gate['misfit_fall_back']:.1f}"]
        cells += gate_metric_cells(row["results"], row["demo_top1"])
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": args.model or "default", "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
