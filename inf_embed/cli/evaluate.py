"""``inf-embed evaluate``: run an evaluator (BEIR, FollowIR, InF-IR, NevIR) on a model and print a table."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from inf_embed.config import FUSION_NAMES, PLAIN_QUERY_SIDES

FORMATS = ("beir", "followir", "infir", "nevir")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a model on BEIR, FollowIR, InF-IR or NevIR data",
        description="Evaluate a model on local data and print a metric table. Embeddings are L2-normalised and "
        "scored by cosine. Formats: beir (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv; per-query 'instruction' "
        "field optional), followir (mteb layout: '<qid>-og'/'<qid>-changed' queries with instructions), infir "
        "(InF-IR records, a .jsonl file or a folder with SPLIT.jsonl), nevir (nevir_pairs.jsonl).",
    )
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: the embedded default model)")
    parser.add_argument("--data", required=True, help="data folder or file (see the formats above)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="data format")
    parser.add_argument("--output", default=None, help="also write the results as JSON to this file")
    parser.add_argument(
        "--split",
        default=None,
        help="qrels split for beir/followir (default test), file stem for an infir folder (default dev)",
    )
    parser.add_argument("--instruction", default=None, help="beir/nevir: one instruction for every query")
    parser.add_argument(
        "--extra-corpus",
        default=None,
        help="infir: BEIR folder or corpus.jsonl added to the corpus (e.g. instructir/msmarco_filtered)",
    )
    parser.add_argument(
        "--sentence-transformers",
        action="store_true",
        help="load --model with sentence-transformers and join instructions to queries as "
        "'{query} {instruction}' (the baseline)",
    )
    parser.add_argument(
        "--no-instructions",
        action="store_true",
        help="drop every instruction and rank by the query alone (ablation: how much the instructions add)",
    )
    parser.add_argument(
        "--fusion", default=None, choices=list(FUSION_NAMES), help="override the model's fusion (inf_embed models)"
    )
    parser.add_argument(
        "--gate-threshold",
        type=float,
        default=None,
        help="fusion gated: query-instruction cosine below which the query is embedded alone",
    )
    parser.add_argument(
        "--document-delta-scale",
        type=float,
        default=None,
        help="share in [0, 1] of the fine-tuning change the documents take (needs a delta folder or anchors)",
    )
    parser.add_argument(
        "--plain-query-side",
        default=None,
        choices=list(PLAIN_QUERY_SIDES),
        help="side whose weights encode queries without an instruction in an asymmetric model",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="encode batch size (default 32)")
    parser.add_argument("--top-k", type=int, default=None, help="beir/followir: documents retrieved per query")
    parser.add_argument("--cache-dir", default=None, help="cache corpus embeddings here (keyed by model and corpus)")
    parser.add_argument("--device", default=None, help="device for the model, e.g. cuda or cpu")
    parser.set_defaults(func=run)


def load_model(
    name: str | None,
    *,
    sentence_transformers: bool = False,
    device: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """The model to evaluate: an InfEmbed (``overrides``: config fields, e.g. ``fusion``), or a
    sentence-transformers model wrapped to take instructions."""
    if sentence_transformers:
        if overrides:
            raise ValueError(
                f"config overrides {sorted(overrides)} apply to inf_embed models, not sentence-transformers"
            )
        from sentence_transformers import SentenceTransformer

        from inf_embed.evaluation import ConcatInstructionEncoder

        if name is None:
            from inf_embed.model import default_model_path

            name = default_model_path()
        return ConcatInstructionEncoder(SentenceTransformer(name, device=device), name=name)
    from inf_embed import InfEmbed

    return InfEmbed(name, device=device, **(overrides or {}))


def build_evaluator(args: argparse.Namespace) -> Any:
    """The evaluator for ``args.format`` built from ``args.data``; raises ValueError for options it cannot use."""
    from inf_embed.evaluation import get_evaluator

    options: dict[str, Any] = {"batch_size": args.batch_size, "cache_dir": args.cache_dir}
    if args.top_k is not None:
        if args.format not in ("beir", "followir"):
            raise ValueError(f"--top-k applies to beir and followir, not {args.format}")
        options["top_k"] = args.top_k
    if args.extra_corpus and args.format != "infir":
        raise ValueError(f"--extra-corpus applies to infir, not {args.format}")
    if args.instruction and args.format not in ("beir", "nevir"):
        raise ValueError(f"--instruction applies to beir and nevir, not {args.format}")
    cls = get_evaluator(args.format)
    if args.format == "beir":
        return cls.from_path(args.data, split=args.split or "test", instruction=args.instruction, **options)
    if args.format == "followir":
        return cls.from_path(args.data, split=args.split or "test", **options)
    if args.format == "infir":
        return cls.from_path(args.data, split=args.split or "dev", extra_corpus=args.extra_corpus, **options)
    options.pop("cache_dir")
    return cls.from_path(args.data, instruction=args.instruction, **options)


def format_table(results: dict[str, Any], main_score: str) -> str:
    """Two aligned columns, metric and value; the main score first."""
    names = [main_score] + sorted(n for n in results if n not in (main_score, "main_score"))
    width = max(len(n) for n in names)
    lines = [f"{'metric'.ljust(width)}  value", f"{'-' * width}  {'-' * 8}"]
    for name in names:
        value = results[name]
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"{name.ljust(width)}  {shown}{'  (main)' if name == main_score else ''}")
    return "\n".join(lines)


def _write_json(path: str, payload: dict[str, Any]) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(payload, out, indent=2, sort_keys=True)
        out.write("\n")
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600
    os.replace(tmp, target)


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        print(f"error: --batch-size must be >= 1, got {args.batch_size}", file=sys.stderr)
        return 2
    overrides = {
        name: getattr(args, name)
        for name in ("fusion", "gate_threshold", "document_delta_scale", "plain_query_side")
        if getattr(args, name) is not None
    }
    try:
        evaluator = build_evaluator(args)
        model = load_model(
            args.model, sentence_transformers=args.sentence_transformers, device=args.device, overrides=overrides
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.no_instructions:
        from inf_embed.evaluation import QueryOnlyEncoder

        model = QueryOnlyEncoder(model)
    results = evaluator(model)
    label = args.model or "embedded default"
    kind = " (sentence-transformers, concatenated instructions)" if args.sentence_transformers else ""
    kind += " (instructions dropped)" if args.no_instructions else ""
    print(f"model: {label}{kind}")
    print(f"data: {args.data} ({args.format})\n")
    print(format_table(results, evaluator.main_score))
    if args.output:
        _write_json(
            args.output,
            {
                "model": label,
                "sentence_transformers": args.sentence_transformers,
                "no_instructions": args.no_instructions,
                "data": str(args.data),
                "format": args.format,
                "main_score": evaluator.main_score,
                "results": results,
            },
        )
        print(f"\nwrote {args.output}")
    return 0
