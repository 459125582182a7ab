"""Post-hoc embedding quantisation, bit-compatible with sentence-transformers' ``quantize_embeddings``."""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np

logger = logging.getLogger(__name__)

Precision = Literal["float32", "int8", "uint8", "binary", "ubinary"]
PRECISIONS: tuple[str, ...] = ("float32", "int8", "uint8", "binary", "ubinary")


def quantize_embeddings(
    embeddings: np.ndarray,
    precision: Precision,
    ranges: np.ndarray | None = None,
    calibration_embeddings: np.ndarray | None = None,
) -> np.ndarray:
    """Quantise float embeddings.

    ``int8`` / ``uint8`` split each dimension's [min, max] range into 256 buckets (the range comes from
    ``ranges`` (2, d), else from ``calibration_embeddings``, else from ``embeddings`` themselves). ``binary`` /
    ``ubinary`` keep the sign bit and pack 8 dimensions per byte: (n, d) -> (n, ceil(d / 8)); ``binary`` is
    offset by -128 into int8.

    Args:
        embeddings: (n, d) float array.
        precision: target precision.
        ranges: optional (2, d) per-dimension minimum and maximum.
        calibration_embeddings: optional (m, d) embeddings to derive the ranges from.

    Returns:
        (n, d) int8/uint8 or (n, ceil(d/8)) packed bits, or float32 for ``precision="float32"``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {list(PRECISIONS)}")
    embeddings = np.asarray(embeddings)
    if embeddings.dtype in (np.int8, np.uint8):
        raise ValueError("embeddings to quantize must be floats, got int8/uint8")
    if precision == "float32":
        return embeddings.astype(np.float32)
    if precision.endswith("int8"):
        if ranges is None:
            source = embeddings if calibration_embeddings is None else np.asarray(calibration_embeddings)
            if source.ndim == 1 or source.shape[0] < 2:
                raise ValueError(
                    f"cannot compute {precision} ranges from a single embedding; pass more inputs, `ranges` or "
                    "`calibration_embeddings`"
                )
            if calibration_embeddings is None and source.shape[0] < 100:
                logger.warning(
                    "Computing %s quantization buckets from only %d embeddings; ranges from more embeddings "
                    "(or calibration_embeddings) are more stable.",
                    precision,
                    source.shape[0],
                )
            ranges = np.vstack((source.min(axis=0), source.max(axis=0)))
        ranges = np.asarray(ranges).astype(np.float32, copy=False)
        starts = ranges[0, :]
        steps = (ranges[1, :] - starts) / 255
        steps = np.where(steps == 0, 1, steps)
        buckets = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
        return buckets.astype(np.uint8) if precision == "uint8" else (buckets - 128).astype(np.int8)
    packed = np.packbits(embeddings > 0, axis=-1)
    return packed if precision == "ubinary" else (packed - 128).astype(np.int8)
