"""Can a concat model's query be weighted up inside one embedding, without a gate?

    python benchmarks/query_emphasis.py [--model DIR] [--instruction-token-weights 1,0.5,0.25,0.1,0]
                                        [--joined-weights 0.7,0.5,0.3,0.2,0.1,0] [--tasks infir] [--threads 2]
                                        [--json FILE]

The query-change p-MRR of a ``concat`` model stays near 0 because the joined text's embedding follows the
instruction, which describes the record's own passage whatever the query says (BENCHMARKS.md, "Ranking by the
query alone"). Two ways of giving the query more weight in the one query embedding, both applied to a trained
model (default: the shipped default model) without retraining:

- ``--instruction-token-weights`` lambda: the joined text's token states mean-pooled with the instruction's tokens
  at weight lambda and the query's (and the special tokens) at 1; 1 is the model's own ``concat`` embedding, 0
  pools the query's tokens only (which still attended to the instruction).
- ``--joined-weights`` beta: ``normalize(normalize(q) + beta * normalize(j))``, q the query encoded alone and j
  the joined text; 0 ranks by the query alone. (``fusion="anchored"`` is the same mix seen from the other side,
  ``query_weight = 1 / beta``.)

Uninstructed queries and the documents are the model's own. Evaluators and columns are
``benchmarks/finetune_vs_st.py``'s.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import finetune_vs_st  # noqa: E402
from finetune_vs_st import add_evaluation_arguments, build_evaluators, evaluate, parse_evaluation_arguments  # noqa: E402


def _weights(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if any(not value >= 0.0 for value in values):  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected numbers >= 0, got {text!r}")
    return values


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class _Wrapped:
    """The model's own documents and uninstructed queries; instructed queries re-embedded by ``_instructed``."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def encode_document(self, texts: Sequence[str], **kwargs: Any) -> Any:
        return self.model.encode_document(texts, **kwargs)

    def encode_query(self, texts: Sequence[str], instruction: Any = None, **kwargs: Any) -> Any:
        if instruction is None:
            return self.model.encode_query(texts, **kwargs)
        instructions = [instruction] * len(texts) if isinstance(instruction, str) else list(instruction)
        return self._instructed(list(texts), instructions, kwargs.get("batch_size", 32))


class InstructionTokenWeight(_Wrapped):
    """The joined text's token states pooled with the instruction's tokens at ``weight`` (query tokens at 1)."""

    def __init__(self, model: Any, weight: float) -> None:
        super().__init__(model)
        if model.config.fusion != "concat":
            raise ValueError(f"model: expected a concat model, got fusion={model.config.fusion!r}")
        self.weight = weight

    def _instructed(self, texts: list[str], instructions: list[str | None], batch_size: int) -> np.ndarray:
        model = self.model
        states = model.encode_query(
            texts, instruction=instructions, output_value="token_embeddings", batch_size=batch_size
        )  # per query: (L_i, d), the joined text's tokens, special tokens included
        prompt = model.config.prompts.get("query", "")
        budget = model.config.max_query_length + model.config.max_instruction_length
        rows = []
        for index, (text, instruction, tokens) in enumerate(zip(texts, instructions, states)):
            weights = torch.ones(tokens.shape[0])
            if instruction:
                joined = prompt + model.fusion.compose_text(text, instruction)
                # the query's first character in the joined text: what the template puts before it
                start = len(prompt) + len(model.fusion.template.split("{query}")[0].format(instruction=instruction))
                spans = model.tokenizer(joined, return_offsets_mapping=True, truncation=True, max_length=budget)[
                    "offset_mapping"
                ]
                if len(spans) != tokens.shape[0]:
                    raise RuntimeError(f"queries[{index}]: {len(spans)} tokens, the model encoded {tokens.shape[0]}")
                for position, (begin, end) in enumerate(spans):
                    special = begin == end
                    if not special and not (start <= begin and end <= start + len(text)):
                        weights[position] = self.weight
            pooled = (weights[:, None] * tokens.float()).sum(dim=0) / weights.sum()
            rows.append(torch.nn.functional.normalize(pooled, dim=0).numpy())
        return np.stack(rows).astype(np.float32)


class JoinedWeight(_Wrapped):
    """``normalize(normalize(q) + weight * normalize(j))``: the query alone plus the joined text."""

    def __init__(self, model: Any, weight: float) -> None:
        super().__init__(model)
        self.weight = weight

    def _instructed(self, texts: list[str], instructions: list[str | None], batch_size: int) -> np.ndarray:
        joined = self.model.encode_query(texts, instruction=instructions, batch_size=batch_size)
        alone = self.model.encode_query(texts, batch_size=batch_size)
        has = np.asarray([bool(i) for i in instructions])[:, None]
        mixed = _unit_rows(_unit_rows(alone) + self.weight * _unit_rows(joined))
        return np.where(has, mixed, _unit_rows(joined)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a trained concat model's folder (default: the shipped one)")
    parser.add_argument("--instruction-token-weights", type=_weights, default=[1.0, 0.5, 0.25, 0.1, 0.0])
    parser.add_argument("--joined-weights", type=_weights, default=[0.7, 0.5, 0.3, 0.2, 0.1, 0.0])
    add_evaluation_arguments(parser, default_tasks="infir")
    args, tasks, columns = parse_evaluation_arguments(parser)

    from inf_embed import InfEmbed

    model = InfEmbed(args.model) if args.model else InfEmbed()
    evaluators = build_evaluators(args.data_root, tasks)
    variants = [("instruction tokens", w, InstructionTokenWeight(model, w)) for w in args.instruction_token_weights]
    variants += [("query alone + joined", w, JoinedWeight(model, w)) for w in args.joined_weights]
    print("| query embedding | weight | " + " | ".join(c[3] for c in columns) + " |")
    print("|" + "---|" * (len(columns) + 2))
    rows = []
    for kind, weight, wrapped in variants:
        started = time.perf_counter()
        results = evaluate(evaluators, wrapped)
        rows.append({"kind": kind, "weight": weight, "results": results})
        cells = [f"{results[t][k] * s:.4g}" for t, k, s, _ in columns]
        print(
            f"| {kind} | {weight:g} | " + " | ".join(cells) + f" |  ({time.perf_counter() - started:.0f} s)", flush=True
        )
    finetune_vs_st.write_rows_json(args.json, rows, model=args.model or "default")


if __name__ == "__main__":
    main()
