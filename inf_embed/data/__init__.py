"""Training data: typed records, readers for JSONL / CSV / Parquet / datasets, and batching into text columns."""

from __future__ import annotations

from inf_embed.data.batching import InstructionVariants, TextBatch, build_text_batch, sample_instruction_variants
from inf_embed.data.triplets import (
    TripletDataset,
    TripletExample,
    TripletFormatError,
    TripletItem,
    known_columns,
    load_triplets,
    with_foreign_instructions,
    with_plain_queries,
)

__all__ = [
    "InstructionVariants",
    "TextBatch",
    "TripletDataset",
    "TripletExample",
    "TripletFormatError",
    "TripletItem",
    "build_text_batch",
    "known_columns",
    "load_triplets",
    "sample_instruction_variants",
    "with_foreign_instructions",
    "with_plain_queries",
]
