"""Entry point of the ``inf-embed`` console script.

Each subcommand lives in its own module under ``inf_embed.cli`` and exposes
``register(subparsers) -> None``, which adds its parser and sets ``func`` (a callable taking the parsed
namespace and returning an exit code). Modules are imported only when the CLI starts, so importing the
library never imports the CLI.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# Subcommand modules, in the order `inf-embed --help` lists them.
COMMAND_MODULES: tuple[str, ...] = ("demo", "evaluate", "train")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with one subparser per command module that is present."""
    parser = argparse.ArgumentParser(
        prog="inf-embed", description="Instruction-following retrieval embeddings (InF-Embed)."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v INFO, -vv DEBUG)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"inf_embed.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"inf_embed.cli.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
