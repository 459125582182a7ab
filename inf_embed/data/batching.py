"""Turn a batch of records into the text columns the losses consume (no tokenisation here).

:func:`build_text_batch` is a ``collate_fn``-ready function: a DataLoader over a
:class:`~inf_embed.data.TripletDataset` fetches whole records, and the expansion into items happens here, so a
record's items are always in the same batch (paper bug B13: no reliance on batched fetch).

What each output column feeds (see :class:`inf_embed.losses.InfIRLoss`):

- ``instructions``, ``queries`` -> ``query_embeddings`` (P, IQ terms);
- ``positives`` -> ``passage_embeddings`` (every term);
- ``hard_negatives`` -> ``hard_negative_embeddings`` (P term);
- ``negative_queries`` -> ``query_negative_embeddings`` (IQ term);
- ``variant_instructions`` (with ``queries``) -> ``instruction_variant_embeddings``, with ``instruction_ids``
  and ``variant_mask`` (I term).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from inf_embed.data.triplets import ItemKind, TripletExample

logger = logging.getLogger(__name__)

__all__ = ["InstructionVariants", "TextBatch", "build_text_batch", "sample_instruction_variants"]


@dataclass(frozen=True)
class InstructionVariants:
    """Instructions to combine with each item's query for the I term.

    Attributes:
        texts: N lists of M instruction texts; ``texts[i][0]`` is item i's own instruction. Padding slots repeat
            it (they are masked out; encoding them is harmless, skipping them is cheaper).
        ids: (N, M) int64, equal ids for equal texts (pass as ``instruction_ids``).
        mask: (N, M) bool, False for padding slots (pass as ``instruction_variant_mask``).
    """

    texts: list[list[str]]
    ids: torch.Tensor
    mask: torch.Tensor


@dataclass(frozen=True)
class TextBatch:
    """The texts of one batch, item-aligned (N items, H hard negatives, G query-side negatives).

    Attributes:
        instructions: (N,) instruction of each item.
        queries: (N,) query of each item.
        positives: (N,) positive passage of each item.
        kinds: (N,) which of its record's items each is.
        record_index: (N,) index of each item's record within the batch.
        hard_negatives: (H,) distinct hard-negative passages, none equal to a positive of the batch.
        negative_queries: (G,) distinct (instruction, query) pairs with no passage, none equal to an item's.
        negative_query_passages: (G,) for each of ``negative_queries``, the positive passage it must not retrieve
            (its record's P+, itself a positive of the batch).
        variants: instruction variants for the I term, or None when not requested.
    """

    instructions: list[str]
    queries: list[str]
    positives: list[str]
    kinds: list[ItemKind]
    record_index: list[int]
    hard_negatives: list[str]
    negative_queries: list[tuple[str, str]]
    negative_query_passages: list[str] = field(default_factory=list)
    variants: InstructionVariants | None = None

    def __len__(self) -> int:
        return len(self.positives)


def sample_instruction_variants(
    instructions: Sequence[str],
    num_variants: int,
    *,
    instruction_negatives: Sequence[Sequence[str]] | None = None,
    generator: torch.Generator | None = None,
) -> InstructionVariants:
    """Pick M instructions per item: its own, then its own instruction negatives, then random in-batch ones.

    Candidates whose text equals the item's own instruction are never drawn (the official code's false
    negatives, bug B5), nor is a text drawn twice for one item. The paper's code draws M = B/2 = 6 of a local
    batch of 12 items.

    Args:
        instructions: (N,) each item's instruction.
        num_variants: M >= 1, variants per item including the item's own instruction.
        instruction_negatives: (N,) sequences of instructions the item's positive fails (e.g. I- for the item
            (I+, Q+)); they come first after the own instruction. None for none.
        generator: random generator for the in-batch draw (reproducible with a seeded generator).

    Returns:
        The variants; rows with fewer than M distinct candidates are padded (``mask`` False).

    Raises:
        ValueError: ``num_variants`` < 1, or ``instruction_negatives`` does not have N entries.
    """
    if isinstance(num_variants, bool) or not isinstance(num_variants, int) or num_variants < 1:
        raise ValueError(f"num_variants: expected an integer >= 1, got {num_variants!r}")
    rows = len(instructions)
    if instruction_negatives is not None and len(instruction_negatives) != rows:
        raise ValueError(
            f"instruction_negatives has {len(instruction_negatives)} entries; expected {rows} (one per instruction)"
        )
    pool = list(dict.fromkeys(instructions))  # distinct batch instructions, in first-seen order
    texts: list[list[str]] = []
    mask: list[list[bool]] = []
    for i, own in enumerate(instructions):
        chosen = [own]
        seen = {own}
        for text in instruction_negatives[i] if instruction_negatives is not None else ():
            if len(chosen) < num_variants and text not in seen:
                chosen.append(text)
                seen.add(text)
        if len(chosen) < num_variants:
            candidates = [text for text in pool if text not in seen]
            order = torch.randperm(len(candidates), generator=generator).tolist()
            chosen.extend(candidates[j] for j in order[: num_variants - len(chosen)])
        real = len(chosen)
        chosen.extend([own] * (num_variants - real))
        texts.append(chosen)
        mask.append([True] * real + [False] * (num_variants - real))
    table: dict[str, int] = {}
    ids = [[table.setdefault(text, len(table)) for text in row] for row in texts]
    return InstructionVariants(
        texts=texts,
        ids=torch.tensor(ids, dtype=torch.int64).reshape(rows, num_variants),
        mask=torch.tensor(mask, dtype=torch.bool).reshape(rows, num_variants),
    )


def build_text_batch(
    examples: Sequence[TripletExample],
    *,
    num_instruction_variants: int | None = None,
    generator: torch.Generator | None = None,
) -> TextBatch:
    """Expand records into items and collect the texts to encode for one batch.

    Hard negatives equal to a positive of the batch are dropped (for that positive's own row they would be a
    false negative), as are repeats; likewise for query-side negatives equal to an item's (instruction, query).

    Args:
        examples: the batch's records (e.g. what a DataLoader over a ``TripletDataset`` hands ``collate_fn``).
        num_instruction_variants: M for the I term (see :func:`sample_instruction_variants`); None skips it.
        generator: random generator for the instruction draw.

    Returns:
        The batch's texts, items of a record adjacent.

    Raises:
        ValueError: ``examples`` is empty or holds something other than ``TripletExample``.
    """
    if len(examples) == 0:
        raise ValueError("examples: expected at least one TripletExample, got an empty batch")
    instructions: list[str] = []
    queries: list[str] = []
    positives: list[str] = []
    kinds: list[ItemKind] = []
    record_index: list[int] = []
    hard: list[str] = []
    pairs: list[tuple[str, str]] = []
    pair_passages: dict[tuple[str, str], str] = {}  # query-side negative -> the passage it must not retrieve
    own_negatives: list[tuple[str, ...]] = []
    for r, example in enumerate(examples):
        if not isinstance(example, TripletExample):
            raise ValueError(f"examples[{r}]: expected a TripletExample, got {type(example).__name__}")
        for item in example.items():
            instructions.append(item.instruction)
            queries.append(item.query)
            positives.append(item.positive)
            kinds.append(item.kind)
            record_index.append(r)
            hard.extend(item.negatives)
            pairs.extend(item.query_negatives)
            for pair in item.query_negatives:
                pair_passages.setdefault(pair, item.positive)
            own_negatives.append(item.instruction_negatives)

    positive_set = set(positives)
    hard_negatives = [text for text in dict.fromkeys(hard) if text not in positive_set]
    item_pairs = set(zip(instructions, queries, strict=True))
    negative_queries = [pair for pair in dict.fromkeys(pairs) if pair not in item_pairs]
    dropped = len(hard) - len(hard_negatives) + len(pairs) - len(negative_queries)
    if dropped:
        logger.debug("build_text_batch: dropped %d duplicate or false-negative candidate(s)", dropped)

    variants = None
    if num_instruction_variants is not None:
        variants = sample_instruction_variants(
            instructions, num_instruction_variants, instruction_negatives=own_negatives, generator=generator
        )
    return TextBatch(
        instructions=instructions,
        queries=queries,
        positives=positives,
        kinds=kinds,
        record_index=record_index,
        hard_negatives=hard_negatives,
        negative_queries=negative_queries,
        negative_query_passages=[pair_passages[pair] for pair in negative_queries],
        variants=variants,
    )
