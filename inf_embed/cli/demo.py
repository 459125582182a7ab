"""``inf-embed demo``: instruction-aware search over the bundled corpus with the default model."""

from __future__ import annotations

import argparse
import sys
import textwrap

from inf_embed.cli import positive_int
from inf_embed.config import FUSION_NAMES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="instruction-aware search over a small bundled corpus",
        description="Rank a small bundled corpus for ambiguous queries, with and without instructions, and show "
        "how each instruction moves the document it asks for.",
    )
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: the embedded default model)")
    parser.add_argument("--fusion", default=None, choices=list(FUSION_NAMES), help="override the fusion")
    parser.add_argument("--top-k", type=positive_int, default=3, help="documents shown per ranking (default 3)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inf_embed import InfEmbed
    from inf_embed.demo import run_demo

    overrides = {"fusion": args.fusion} if args.fusion else {}
    try:
        model = InfEmbed(args.model, **overrides) if args.model else InfEmbed(**overrides)
    except (ValueError, OSError) as error:  # a missing folder or Hub id, or weights that do not fit
        print(f"error: --model {args.model or 'default'}: {error}", file=sys.stderr)
        return 1
    name = args.model or "shipped default (instruction-following all-MiniLM-L6-v2, inf_embed/resources/default_model)"
    print(f"model: {name}; fusion: {model.config.fusion}\n")
    hits = total = 0
    for rankings in run_demo(model):
        baseline = rankings[0]
        print(f"query: {baseline.query!r}")
        print(f"  no instruction      -> {', '.join(baseline.ranked_ids[: args.top_k])}")
        for ranking in rankings[1:]:
            before, after = baseline.rank_of(ranking.target), ranking.rank_of(ranking.target)
            hits += after == 1
            total += 1
            move = "stays" if before == after else ("up" if after < before else "down")
            print(textwrap.indent(textwrap.fill(f"instruction: {ranking.instruction}", 100), "  "))
            print(
                f"    -> {', '.join(ranking.ranked_ids[: args.top_k])}\n"
                f"    wanted {ranking.target}: rank {before} -> {after} ({move})"
            )
        print()
    print(f"instructions whose wanted document ranks first: {hits}/{total}")
    return 0
