"""``inf-embed evaluate``: run an evaluator (BEIR, FollowIR, InF-IR, NevIR) on a model and print a table."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from inf_embed.cli import number_in, positive_int, torch_device
from inf_embed.config import FUSION_NAMES, PLAIN_QUERY_SIDES
from inf_embed.hub import current_umask

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
        type=number_in(-1.0, 1.0),
        default=None,
        help="fusion gated: query-instruction cosine below which the query is embedded alone",
    )
    parser.add_argument(
        "--document-delta-scale",
        type=number_in(0.0, 1.0),
        default=None,
        help="share in [0, 1] of the fine-tuning change the documents take (needs a delta folder or anchors)",
    )
    parser.add_argument(
        "--plain-query-side",
        default=None,
        choices=list(PLAIN_QUERY_SIDES),
        help="side whose weights encode queries without an instruction in an asymmetric model",
    )
    parser.add_argument("--batch-size", type=positive_int, default=32, help="encode batch size (default 32)")
    parser.add_argument("--top-k", type=positive_int, default=None, help="beir/followir: documents retrieved per query")
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="beir/followir/infir: cache corpus embeddings here (keyed by model and corpus)",
    )
    parser.add_argument("--device", type=torch_device, default=None, help="device for the model, e.g. cuda or cpu")
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


# Options that only some formats read; any other format would silently ignore them.
_FORMAT_OPTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "top_k": ("--top-k", ("beir", "followir")),
    "extra_corpus": ("--extra-corpus", ("infir",)),
    "instruction": ("--instruction", ("beir", "nevir")),
    "split": ("--split", ("beir", "followir", "infir")),
    "cache_dir": ("--cache-dir", ("beir", "followir", "infir")),
}
_OVERRIDE_FLAGS = {
    "fusion": "--fusion",
    "gate_threshold": "--gate-threshold",
    "document_delta_scale": "--document-delta-scale",
    "plain_query_side": "--plain-query-side",
}


def usage_error(args: argparse.Namespace) -> str | None:
    """The first option that contradicts another or does nothing for ``args.format``, as a one-line message
    naming the flag; None when every option given applies."""
    for name, (flag, formats) in _FORMAT_OPTIONS.items():
        if getattr(args, name) is not None and args.format not in formats:
            names = formats[0] if len(formats) == 1 else f"{', '.join(formats[:-1])} and {formats[-1]}"
            return f"{flag} applies to {names}, not {args.format}"
    if args.instruction is not None and args.no_instructions:
        return "--instruction and --no-instructions contradict each other (--no-instructions drops every instruction)"
    if args.sentence_transformers:
        for name, flag in _OVERRIDE_FLAGS.items():
            if getattr(args, name) is not None:
                return f"{flag} applies to inf_embed models, not to --sentence-transformers"
    if args.output is not None:
        target = Path(args.output)
        if target.is_dir():
            return f"--output {args.output} is a directory; expected the path of a JSON file"
        parent = next((p for p in (target.parent, *target.parent.parents) if p.exists()), Path("."))
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            return f"--output {args.output}: {parent} is not a writable directory"
    return None


def build_evaluator(args: argparse.Namespace) -> Any:
    """The evaluator for ``args.format`` built from ``args.data``; raises ValueError for options it cannot use."""
    from inf_embed.evaluation import get_evaluator

    error = usage_error(args)
    if error:
        raise ValueError(error)
    options: dict[str, Any] = {"batch_size": args.batch_size, "cache_dir": args.cache_dir}
    if args.top_k is not None:
        options["top_k"] = args.top_k
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
    """Write ``payload`` to ``path`` atomically: readers see the old file or the new one, never a partial one, and
    a failure leaves no temporary file behind."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(payload, out, indent=2, sort_keys=True)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _error(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    # usage errors (exit 2) are found before any data or model is loaded
    problem = usage_error(args)
    if problem:
        return _error(problem, 2)
    if args.output is not None and Path(args.output).exists():
        print(f"note: --output {args.output} exists and will be replaced", file=sys.stderr)
    overrides = {name: getattr(args, name) for name in _OVERRIDE_FLAGS if getattr(args, name) is not None}
    try:
        evaluator = build_evaluator(args)
    except (ValueError, OSError) as error:
        return _error(f"--data {args.data}: {error}", 1)
    try:
        model = load_model(
            args.model, sentence_transformers=args.sentence_transformers, device=args.device, overrides=overrides
        )
    except (ValueError, OSError) as error:
        return _error(f"--model {args.model or 'default'}: {error}", 1)
    fusion = getattr(getattr(model, "config", None), "fusion", None)
    if args.gate_threshold is not None and fusion != "gated":
        # only the gated fusion reads the threshold; any other would run as if it had not been given
        return _error(
            f"--gate-threshold applies to the gated fusion, the model's is {fusion!r} (add --fusion gated)", 2
        )
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
        replaced = Path(args.output).exists()
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
        print(f"\nwrote {args.output}" + (" (replaced the previous file)" if replaced else ""))
    return 0
