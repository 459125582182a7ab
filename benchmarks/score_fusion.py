"""Can a concat model's query-change p-MRR rise if a document must also match the query alone (a score-level AND)?

    python benchmarks/score_fusion.py [--model DIR] [--offsets 0,0.05,0.1,0.15,0.2,0.3] [--z-offsets 0,0.5,1,1.5,2]
                                      [--query-top-k 2,3,5,10] [--tasks infir,infir_x] [--threads 2] [--json FILE]

``benchmarks/query_emphasis.py`` mixes the query encoded alone into the one query embedding, a *linear* blend of
the two scores, and the instruction following collapses before the query-change p-MRR moves. Here each instructed
query keeps two embeddings, j (the joined text, the model's own) and q (the query alone), and a document's score is
a *non-linear* rule of s_j and s_q, so that the query can veto a passage the instruction alone would bring up
without taking weight from the instruction where the query agrees:

- ``min(s_j, s_q + c)`` (``--offsets``): the joined score, capped by the query-alone score plus c (cosines). A
  passage the instruction describes but the query does not (a poisoned query Q- with I+) is held down by s_q; for
  passages on the query's topic (P+ and its hard negative D- for Q+) s_q + c stays above s_j and the joined
  score decides. c = +inf is the model as is.
- ``min(z_j, z_q + c)`` (``--z-offsets``): the same on each query's scores standardised over the corpus (mean 0,
  standard deviation 1), so c is in standard deviations.
- query top-k first (``--query-top-k``): the query alone's k best documents rank above every other, each group
  ordered by s_j.

Documents, uninstructed queries (SciFact, NevIR: unchanged by any rule here) and the instructed queries' j are the
model's own; only InF-IR tasks are measured. Scores and metrics: :meth:`InfIREvaluator.evaluate_scores`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_vs_st import add_evaluation_arguments, build_evaluators, parse_evaluation_arguments, write_rows_json  # noqa: E402

INSTRUCTED_TASKS = ("infir", "infir_x")
ScoreRule = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _numbers(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _offsets(text: str) -> list[float]:
    values = _numbers(text)
    if not all(np.isfinite(values)):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    return values


def _top_ks(text: str) -> list[int]:
    values = _numbers(text)
    if any(not (value >= 1 and value == int(value)) for value in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}")
    return [int(value) for value in values]


def standardize(scores: np.ndarray) -> np.ndarray:
    """Each row to mean 0 and standard deviation 1 (a constant row to 0); (Q, C) -> (Q, C)."""
    spread = scores.std(axis=1, keepdims=True)
    return (scores - scores.mean(axis=1, keepdims=True)) / np.where(spread > 0, spread, 1.0)


def capped_by_query(offset: float) -> ScoreRule:
    """``min(s_j, s_q + offset)``."""
    return lambda joined, alone: np.minimum(joined, alone + offset)


def standardized_capped_by_query(offset: float) -> ScoreRule:
    """``min(z_j, z_q + offset)``, each query's scores standardised over the corpus."""
    return lambda joined, alone: np.minimum(standardize(joined), standardize(alone) + offset)


def query_top_k_first(k: int) -> ScoreRule:
    """The query alone's k best documents first (ties by column), each group ordered by the joined score."""

    def rule(joined: np.ndarray, alone: np.ndarray) -> np.ndarray:
        best = np.argsort(-alone, axis=1, kind="stable")[:, :k]
        inside = np.zeros(alone.shape, dtype=bool)
        np.put_along_axis(inside, best, True, axis=1)
        # cosines lie in [-1, 1], so +3 lifts every document of the top k above every other
        return joined + 3.0 * inside

    return rule


def rules_from_arguments(args: Any) -> list[tuple[str, ScoreRule]]:
    """The named score rules of the command line, the model's own (``s_j``) and the query alone first."""
    rules: list[tuple[str, ScoreRule]] = [
        ("s_j (the model as is)", lambda joined, alone: joined),
        ("s_q (the query alone)", lambda joined, alone: alone),
    ]
    rules += [(f"min(s_j, s_q + {c:g})", capped_by_query(c)) for c in args.offsets]
    rules += [(f"min(z_j, z_q + {c:g})", standardized_capped_by_query(c)) for c in args.z_offsets]
    rules += [(f"query top {k} first", query_top_k_first(k)) for k in args.query_top_k]
    return rules


def score_matrices(model: Any, evaluator: Any, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(s_j, s_q): the cosine of every searched query of ``evaluator`` with every corpus document, (3N, C) each,
    j the query with its instruction and q the query alone."""
    texts, instructions = evaluator.query_texts()
    common = {"batch_size": batch_size, "convert_to_numpy": True, "normalize_embeddings": True}
    documents = model.encode_document(list(evaluator.corpus.values()), **common)
    joined = model.encode_query(texts, instruction=instructions, **common)
    alone = model.encode_query(texts, **common)
    return joined @ documents.T, alone @ documents.T


def positive_ranks(evaluator: Any, scores: np.ndarray) -> np.ndarray:
    """P+'s rank (1 = first; ties count against it) in each searched query's ranking, (3N,): rows as
    :meth:`InfIREvaluator.query_texts`."""
    column = {doc_id: i for i, doc_id in enumerate(evaluator.corpus)}
    positives = np.asarray([column[doc_id] for doc_id in evaluator.pos_ids] * 3)
    own = scores[np.arange(len(scores)), positives]
    return (scores >= own[:, None]).sum(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a trained model's folder (default: the shipped one)")
    parser.add_argument("--offsets", type=_offsets, default=[0.0, 0.05, 0.1, 0.15, 0.2, 0.3])
    parser.add_argument("--z-offsets", type=_offsets, default=[0.0, 0.5, 1.0, 1.5, 2.0])
    parser.add_argument("--query-top-k", type=_top_ks, default=[2, 3, 5, 10])
    add_evaluation_arguments(parser, default_tasks="infir")
    args, tasks, columns = parse_evaluation_arguments(parser)
    if not set(tasks) <= set(INSTRUCTED_TASKS):
        parser.error(f"--tasks: expected some of {list(INSTRUCTED_TASKS)} (the rules change instructed queries only)")

    from inf_embed import InfEmbed

    model = InfEmbed(args.model) if args.model else InfEmbed()
    evaluators = build_evaluators(args.data_root, tasks)
    scores = {task: score_matrices(model, evaluator) for task, evaluator in evaluators.items()}
    # where P+ goes on the first task: below rank 2 for (I-, Q+) (under the record's own D-), first for (I+, Q-)
    first = evaluators[tasks[0]]
    n = len(first.rows)
    diagnostics = ["P+ below rank 2 for (I-, Q+)", "P+ first for (I+, Q-)"]
    print("| score | " + " | ".join([c[3] for c in columns] + diagnostics) + " |")
    print("|" + "---|" * (len(columns) + 3))
    rows = []
    for name, rule in rules_from_arguments(args):
        fused = {task: rule(*scores[task]) for task in tasks}
        results = {task: evaluators[task].evaluate_scores(fused[task]) for task in tasks}
        ranks = positive_ranks(first, fused[tasks[0]])
        counts = {
            "below_2_negative_instruction": int((ranks[n : 2 * n] > 2).sum()),
            "first_negative_query": int((ranks[2 * n :] == 1).sum()),
        }
        rows.append({"rule": name, "results": results, "records": n, **counts})
        cells = [f"{results[t][k] * s:.4g}" for t, k, s, _ in columns] + [
            f"{value} of {n}" for value in counts.values()
        ]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    write_rows_json(args.json, rows, model=args.model or "default")


if __name__ == "__main__":
    main()
