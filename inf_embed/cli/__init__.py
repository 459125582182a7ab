"""The ``inf-embed`` command line. Only code under this package writes to stdout.

Argument types shared by the subcommands live here: argparse turns the ``ArgumentTypeError`` they raise into
``inf-embed CMD: error: argument --flag: <message>`` and exit code 2, before any model or data is loaded.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def positive_int(value: str) -> int:
    """An integer >= 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value!r}")
    return number


def number_in(low: float, high: float) -> Callable[[str], float]:
    """A type accepting a finite number in ``[low, high]``."""

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or not low <= number <= high:
            raise argparse.ArgumentTypeError(f"expected a number in [{low:g}, {high:g}], got {value!r}")
        return number

    return parse


def torch_device(value: str) -> str:
    """A device torch can parse (``cpu``, ``cuda``, ``cuda:1``, ``mps``, ...) whose backend is available here."""
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"expected a torch device such as cpu, cuda or cuda:0, got {value!r}"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{value!r} needs CUDA, which is not available here")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{value!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return value
