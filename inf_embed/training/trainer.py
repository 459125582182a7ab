"""`Trainer`: fine-tune an :class:`~inf_embed.InfEmbed` on triplets with the paper's losses.

One optimizer step::

    records --(build_text_batch: a record's items stay together)--> texts
            --(tokenise once per distinct text)--> feature groups: passages, queries, instructions | texts
            --(backbone, DDP-wrapped under torchrun)--> representations (pooled, or token states)
            --(head: fusion, projection, L2 normalisation, indexing)--> loss inputs --> loss --> backward

The head computes exactly what ``encode_query`` / ``encode_document`` compute (same prompts, token budgets,
fusion and masking), so training and inference embeddings agree. For the attention fusion the instruction
variants ``n_{i,m}`` of the I term re-use the query token states: each distinct query is encoded once, each
distinct instruction once, and :func:`inf_embed.ops.iq_attention_pool` pairs them through ``y_index``. For the
concat fusion each distinct "query instruction" text is encoded once, for the conditioned fusion each distinct
(query, instruction) text pair.

Data order: epoch ``e`` visits the records in ``randperm(n)`` seeded with ``seed + e``; global micro-batch ``b``
is records ``[b*G, (b+1)*G)`` of that order with ``G = batch_size * world_size``, split into contiguous equal
parts, one per rank. Optimizer step ``s`` consumes up to ``A`` (accumulation steps) consecutive micro-batches of
one epoch: step ``k`` of an epoch takes its micro-batches ``k*A .. k*A+A-1``, the last step of an epoch only those
left (a partial group), so that each epoch is visited once and the step counter alone fixes the next batch (exact
resume).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from inf_embed.data import (
    TextBatch,
    TripletDataset,
    TripletExample,
    build_text_batch,
    load_triplets,
    with_foreign_instructions,
    with_plain_queries,
)
from inf_embed.encode import _resolve_prompt, distinct_with_rows, tokenize, tokenize_pairs
from inf_embed.losses import ContrastiveLoss, get_loss
from inf_embed.losses.cached import CachedLoss
from inf_embed.losses.preservation import PassagePreservationLoss
from inf_embed.modules.fusion import has_instruction_text
from inf_embed.training import checkpoint as ckpt
from inf_embed.training.args import TrainingArguments
from inf_embed.training.distributed import get_local_rank, get_rank, get_world_size, is_distributed

logger = logging.getLogger(__name__)

__all__ = ["BatchPlan", "NonFiniteLossError", "TrainOutput", "Trainer", "plan_batch"]

Evaluator = Callable[[Any], Mapping[str, float]]
GroupKind = Literal["pooled", "tokens"]


class NonFiniteLossError(RuntimeError):
    """Training stopped because the loss (or the gradient norm) became NaN or infinite.

    Attributes:
        step: the 1-based optimizer step being computed.
        value: the offending value.
    """

    def __init__(self, what: str, step: int, value: float, micro_batch: int | None = None) -> None:
        self.step = step
        self.value = value
        where = f"step {step}" + (f" (micro-batch {micro_batch})" if micro_batch is not None else "")
        super().__init__(
            f"{what} is {value} at {where}; training stopped before the optimizer update. Lower the learning "
            "rate, check the data of this step, or disable bf16."
        )


@dataclass
class TrainOutput:
    """What :meth:`Trainer.train` returns.

    Attributes:
        global_step: optimizer steps completed.
        training_loss: mean loss over the steps run in this call.
        metrics: the last evaluation results (empty without an evaluator).
        log_history: one dict per logging / evaluation event.
        train_seconds: wall time of the steps run in this call (evaluation and checkpoint writing left out).
        examples_per_second: training items (per process count times world size) per second.
        model_path: folder of the saved final model, or None.
    """

    global_step: int
    training_loss: float
    metrics: dict[str, float] = field(default_factory=dict)
    log_history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    examples_per_second: float = 0.0
    model_path: str | None = None


# ---------------------------------------------------------------------------------------------------- batch plan


@dataclass
class BatchPlan:
    """Tokenised groups of one batch and the indices that turn their representations into loss inputs.

    Attributes:
        groups: group name -> features; ``passages`` (pooled), and either ``queries`` + ``instructions``
            (token states, attention fusion) or ``texts`` (pooled query-side texts, other fusions; for a text-pair
            fusion one (query, instruction) pair per row, with ``instruction_segment`` among its features).
        kinds: group name -> ``"pooled"`` or ``"tokens"``.
        pair_query: (P,) int64, for attention: row in ``queries`` of each distinct (query, instruction) pair;
            otherwise the row in ``texts``.
        pair_instruction: (P,) int64 row in ``instructions`` (-1: no instruction); attention only.
        pair_anchor: (P,) int64 row in ``anchors`` (the queries alone) of each pair; anchored and gated fusions
            only.
        pair_has_instruction: (P,) bool, whether each pair has an instruction; anchored and gated fusions only.
        pair_gate_instruction: (P,) int64 row in ``gate_instructions`` (the instructions alone) of each pair; gated
            fusion only.
        item_pairs: (N,) pair of each item's query side.
        query_negative_pairs: (G,) pairs of the extra query-side negatives.
        query_negative_passage_rows: (G,) row in ``passages`` of the passage each of them must not retrieve.
        variant_pairs: (N, M) pairs of the instruction variants, or None.
        positive_rows: (N,) row in ``passages`` of each item's positive.
        hard_negative_rows: (H,) rows in ``passages`` of the hard negatives.
        text: the text batch the plan was built from.
        truncated: how many tokenised texts were cut at their token budget.
    """

    groups: dict[str, dict[str, Tensor]]
    kinds: dict[str, GroupKind]
    pair_query: Tensor
    pair_instruction: Tensor | None
    pair_anchor: Tensor | None
    pair_has_instruction: Tensor | None
    pair_gate_instruction: Tensor | None
    item_pairs: Tensor
    query_negative_pairs: Tensor
    query_negative_passage_rows: Tensor
    variant_pairs: Tensor | None
    positive_rows: Tensor
    hard_negative_rows: Tensor
    text: TextBatch
    truncated: int = 0


def plan_batch(model: Any, text: TextBatch, loss: ContrastiveLoss, device: torch.device | str = "cpu") -> BatchPlan:
    """Tokenise the texts of a batch once per distinct text, the way ``encode_query`` / ``encode_document`` do.

    Args:
        model: the ``InfEmbed`` (its tokenizer, config, fusion and prompts are used).
        text: the batch's texts (:func:`inf_embed.data.build_text_batch`).
        loss: the loss; inputs it does not use are not tokenised.
        device: where the tensors go.

    Returns:
        The plan (see :class:`BatchPlan`).
    """
    config, fusion = model.config, model.fusion
    uses_hard = bool(getattr(loss, "uses_hard_negatives", True))
    uses_qneg = bool(getattr(loss, "uses_query_negatives", True))
    uses_variants = bool(getattr(loss, "uses_instruction_variants", False)) and text.variants is not None

    passages = list(text.positives) + (list(text.hard_negatives) if uses_hard else [])
    distinct_passages, passage_rows = distinct_with_rows(passages)
    doc_prompt = _resolve_prompt(model, None, None, "document")
    query_prompt = _resolve_prompt(model, None, None, "query")

    pairs: list[tuple[str, str | None]] = [
        (q, i if has_instruction_text(i) else None) for i, q in zip(text.instructions, text.queries, strict=True)
    ]
    n_items = len(pairs)
    qneg = [(q, i if has_instruction_text(i) else None) for i, q in text.negative_queries] if uses_qneg else []
    pairs += qneg
    variant_shape: tuple[int, int] | None = None
    if uses_variants:
        assert text.variants is not None
        variant_shape = tuple(text.variants.ids.shape)  # type: ignore[assignment]
        for row, query in enumerate(text.queries):
            pairs += [(query, i if has_instruction_text(i) else None) for i in text.variants.texts[row]]
    distinct_pairs, pair_rows = distinct_with_rows(pairs)

    truncated = 0

    def tok(texts: list[str], max_length: int) -> dict[str, Tensor]:
        nonlocal truncated
        features, cut = tokenize(model.tokenizer, texts, max_length)
        truncated += cut
        return {k: v.to(device) for k, v in features.items()}

    groups: dict[str, dict[str, Tensor]] = {
        "passages": tok([doc_prompt + p for p in distinct_passages], config.max_passage_length)
    }
    kinds: dict[str, GroupKind] = {"passages": "pooled"}
    pair_instruction: Tensor | None = None
    pair_anchor: Tensor | None = None
    pair_has_instruction: Tensor | None = None
    pair_gate_instruction: Tensor | None = None
    if fusion.encodes_instruction:
        queries, query_rows = distinct_with_rows([q for q, _ in distinct_pairs])
        instructions, instr_rows = distinct_with_rows([i for _, i in distinct_pairs if i is not None])
        it = iter(instr_rows)
        pair_instruction = torch.tensor(
            [next(it) if i is not None else -1 for _, i in distinct_pairs], dtype=torch.long, device=device
        )
        pair_query = torch.tensor(query_rows, dtype=torch.long, device=device)
        groups["queries"] = tok([query_prompt + q for q in queries], config.max_query_length)
        kinds["queries"] = "tokens"
        if instructions:
            groups["instructions"] = tok(instructions, config.max_instruction_length)
            kinds["instructions"] = "tokens"
    elif fusion.pairs_text:
        # Each distinct pair is one row: the instruction is encoded together with its query, never shared.
        pair_features, cut = tokenize_pairs(
            model.tokenizer,
            [(query_prompt + q, i) for q, i in distinct_pairs],
            config.max_query_length,
            config.max_query_length + config.max_instruction_length,
        )
        truncated += cut
        pair_query = torch.arange(len(distinct_pairs), dtype=torch.long, device=device)
        groups["texts"] = {k: v.to(device) for k, v in pair_features.items()}
        kinds["texts"] = "pooled"
    else:
        max_length = config.max_query_length
        if fusion.joins_text:
            max_length += config.max_instruction_length
        composed = [query_prompt + fusion.compose_text(q, i) for q, i in distinct_pairs]
        distinct_texts, text_rows = distinct_with_rows(composed)
        pair_query = torch.tensor(text_rows, dtype=torch.long, device=device)
        groups["texts"] = tok(distinct_texts, max_length)
        kinds["texts"] = "pooled"
        if fusion.anchors_query:
            anchors, anchor_rows = distinct_with_rows([query_prompt + q for q, _ in distinct_pairs])
            pair_anchor = torch.tensor(anchor_rows, dtype=torch.long, device=device)
            pair_has_instruction = torch.tensor([i is not None for _, i in distinct_pairs], device=device)
            groups["anchors"] = tok(anchors, config.max_query_length)
            kinds["anchors"] = "pooled"
        if fusion.gates_on_instruction:
            alone, alone_rows = distinct_with_rows([query_prompt + (i or "") for _, i in distinct_pairs])
            pair_gate_instruction = torch.tensor(alone_rows, dtype=torch.long, device=device)
            groups["gate_instructions"] = tok(alone, config.max_instruction_length)
            kinds["gate_instructions"] = "pooled"

    rows = torch.tensor(pair_rows, dtype=torch.long, device=device)
    n_qneg = len(qneg)
    passage_row_of = {text: row for row, text in enumerate(distinct_passages)}
    forbidden = text.negative_query_passages if uses_qneg else []
    query_negative_passage_rows = torch.tensor(
        [passage_row_of[passage] for passage in forbidden], dtype=torch.long, device=device
    )
    variant_pairs = None
    if variant_shape is not None:
        variant_pairs = rows[n_items + n_qneg :].reshape(variant_shape)
    passage_index = torch.tensor(passage_rows, dtype=torch.long, device=device)
    return BatchPlan(
        groups=groups,
        kinds=kinds,
        pair_query=pair_query,
        pair_instruction=pair_instruction,
        pair_anchor=pair_anchor,
        pair_has_instruction=pair_has_instruction,
        pair_gate_instruction=pair_gate_instruction,
        item_pairs=rows[:n_items],
        query_negative_pairs=rows[n_items : n_items + n_qneg],
        query_negative_passage_rows=query_negative_passage_rows,
        variant_pairs=variant_pairs,
        positive_rows=passage_index[:n_items],
        hard_negative_rows=passage_index[n_items:],
        text=text,
        truncated=truncated,
    )


class _Encoder(nn.Module):
    """The backbone part of the model (the only part DDP wraps): feature groups -> representations.

    Registers ``model.backbone`` as its only submodule, so DDP synchronises exactly the backbone parameters;
    the model's other parameters (e.g. a projection) are used in the head and synchronised by the trainer.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.backbone = model.backbone
        object.__setattr__(self, "_model", model)  # not a submodule: DDP must not see the head parameters

    def forward(self, groups: Mapping[str, Mapping[str, Tensor]], kinds: Mapping[str, GroupKind]) -> dict[str, Tensor]:
        """Encode each group: ``pooled`` groups give (n, d), ``tokens`` groups (n, L, d). A pooled group with an
        ``instruction_segment`` holds (query, instruction) pairs and is pooled by the fusion's ``pool_pair``."""
        model = self._model
        out: dict[str, Tensor] = {}
        for name, features in groups.items():
            mask = features["attention_mask"]
            states = model.embed_tokens(features["input_ids"], mask, features.get("token_type_ids"))
            if kinds[name] != "pooled":
                out[name] = states
            elif "instruction_segment" in features:
                out[name] = model.fusion.pool_pair(states, mask, features["instruction_segment"])
            else:
                out[name] = model.pool(states, mask)
        return out


def _finish_embeddings(model: Any, pooled: Tensor) -> Tensor:
    """The model's projection (if any) and L2 normalisation of (n, d) pooled states."""
    if model.projection is not None:
        pooled = model.projection(pooled)
    return nn.functional.normalize(pooled, p=2, dim=-1)


def make_head(
    model: Any, plan: BatchPlan, loss: ContrastiveLoss, preservation_targets: Tensor | None = None
) -> Callable[[dict[str, Tensor]], dict[str, Any]]:
    """The function mapping the representations of ``plan``'s groups to the loss's keyword arguments.

    It applies the model's fusion to the (query, instruction) pairs (the attention fusion pairs them through
    ``iq_attention_pool``'s ``y_index``; a pair without instruction keeps its pooled query), the projection and
    L2 normalisation (always on: the losses are cosine / tau), then indexes items, extra negatives and
    instruction variants.
    """

    def finish(x: Tensor) -> Tensor:
        return _finish_embeddings(model, x)

    def head(reps: dict[str, Tensor]) -> dict[str, Any]:
        passages = finish(reps["passages"])
        if plan.pair_instruction is not None:
            q_states, q_mask = reps["queries"], plan.groups["queries"]["attention_mask"]
            instructions = plan.groups.get("instructions")
            pairs = model.fusion(
                q_states,
                q_mask,
                model.pool(q_states, q_mask),
                reps.get("instructions"),
                instructions["attention_mask"] if instructions is not None else None,
                plan.pair_instruction,
                plan.pair_query,
            )  # (P, d)
        else:
            pairs = reps["texts"][plan.pair_query]
            if plan.pair_anchor is not None and plan.pair_has_instruction is not None:
                alone = None
                if plan.pair_gate_instruction is not None:
                    alone = reps["gate_instructions"][plan.pair_gate_instruction]
                pairs = model.fusion.anchor(pairs, reps["anchors"][plan.pair_anchor], plan.pair_has_instruction, alone)
        pairs = finish(pairs)  # (P, d)
        inputs: dict[str, Any] = {
            "query_embeddings": pairs[plan.item_pairs],
            "passage_embeddings": passages[plan.positive_rows],
        }
        if getattr(loss, "uses_hard_negatives", False):
            inputs["hard_negative_embeddings"] = passages[plan.hard_negative_rows]
        if getattr(loss, "uses_query_negatives", False):
            inputs["query_negative_embeddings"] = pairs[plan.query_negative_pairs]
        if getattr(loss, "uses_query_negative_passages", False):
            inputs["query_negative_passage_embeddings"] = passages[plan.query_negative_passage_rows]
        if getattr(loss, "uses_query_negative_exclusions", False):
            excluded_rows, has_excluded = _query_negative_excluded_rows(plan.text)
            rows = torch.as_tensor(excluded_rows, dtype=torch.long, device=passages.device)
            inputs["query_negative_excluded_embeddings"] = inputs["passage_embeddings"][rows]
            inputs["query_negative_excluded_mask"] = torch.as_tensor(
                has_excluded, dtype=torch.bool, device=passages.device
            )
        if getattr(loss, "uses_instruction_negative_items", False):
            own_rows, forbidden_rows = _instruction_negative_rows(plan.text)
            own = torch.as_tensor(own_rows, dtype=torch.long, device=passages.device)
            forbidden = torch.as_tensor(forbidden_rows, dtype=torch.long, device=passages.device)
            inputs["poisoned_instruction_embeddings"] = inputs["query_embeddings"][own]
            inputs["poisoned_instruction_passage_embeddings"] = inputs["passage_embeddings"][own]
            inputs["poisoned_instruction_forbidden_embeddings"] = inputs["passage_embeddings"][forbidden]
        if getattr(loss, "uses_instruction_variants", False):
            variants = plan.text.variants
            if plan.variant_pairs is None or variants is None:
                raise ValueError(f"loss {getattr(loss, 'name', loss)!r} needs instruction variants; none were sampled")
            inputs["instruction_variant_embeddings"] = pairs[plan.variant_pairs]  # (N, M, d)
            inputs["instruction_ids"] = variants.ids.to(pairs.device)
            inputs["instruction_variant_mask"] = variants.mask.to(pairs.device)
        if getattr(loss, "uses_preservation_targets", False):
            if preservation_targets is None:
                raise ValueError("the passage-preservation term needs the starting model's passages; got None")
            inputs["preserved_passage_embeddings"] = passages  # (J, d), the plan's distinct passages
            inputs["preservation_targets"] = preservation_targets
        if not getattr(loss, "uses_query_embeddings", True):
            inputs["query_embeddings"] = None
        return inputs

    return head


def _instruction_negative_rows(text: TextBatch) -> tuple[list[int], list[int]]:
    """Item rows of the (I-, Q+, hn1) items whose record also has its (I+, Q+, P+) item in the batch, and the
    rows of those P+ items (the passage each (I-, Q+) must not retrieve)."""
    positive_of = {r: i for i, (kind, r) in enumerate(zip(text.kinds, text.record_index)) if kind == "positive"}
    pairs = [
        (i, positive_of[r])
        for i, (kind, r) in enumerate(zip(text.kinds, text.record_index))
        if kind == "instruction_negative" and r in positive_of
    ]
    return [i for i, _ in pairs], [j for _, j in pairs]


def _query_negative_excluded_rows(text: TextBatch) -> tuple[list[int], list[bool]]:
    """For each poisoned query (I+, Q-), the item row of its record's (I-, Q+, hn1) item, whose positive hn1 the
    Q term leaves out of its candidates, and whether the batch has one (row 0 and False where it does not).

    A poisoned query's record is the one whose (I+, Q+) item has the passage it must not retrieve (its P+)."""
    record_of_positive: dict[str, int] = {}
    for kind, record, passage in zip(text.kinds, text.record_index, text.positives):
        if kind == "positive":
            record_of_positive.setdefault(passage, record)
    instruction_negative_of = {
        record: row
        for row, (kind, record) in enumerate(zip(text.kinds, text.record_index))
        if kind == "instruction_negative"
    }
    rows = [instruction_negative_of.get(record_of_positive.get(p, -1), -1) for p in text.negative_query_passages]
    return [max(row, 0) for row in rows], [row >= 0 for row in rows]


# ---------------------------------------------------------------------------------------------------- trainer


def _linear_schedule(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return float(step) / float(max(1, warmup))
        return max(0.0, float(total - step) / float(max(1, total - warmup)))

    return factor


# Training arguments a checkpoint fixes (besides the data order's seed, batch size and accumulation): the optimizer
# state holds the learning rates, weight decay and Adam constants of its parameter groups (which
# trainable_parameters selects), and the loss arguments define what its moments were accumulated for. The schedule
# (warm-up and total steps) is compared as the step counts it gives, in Trainer._changed_on_resume.
_FIXED_ON_RESUME: tuple[str, ...] = (
    "learning_rate",
    "head_learning_rate",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "trainable_parameters",
    "loss",
    "temperature",
    "num_instruction_variants",
    "preserve_weight",
    "plain_queries",
    "foreign_instructions",
)


def _warmup_steps(warmup_steps: int | None, warmup_ratio: float, total: int) -> int:
    """Warm-up steps of a run of ``total`` steps: ``warmup_steps`` when given, else the ratio's share."""
    return warmup_steps if warmup_steps is not None else math.ceil(warmup_ratio * total)


def _total_steps(max_steps: int | None, epochs: float, steps_per_epoch: int) -> int:
    """Optimizer steps of a run: ``max_steps`` when given, else ``epochs`` passes (at least one step)."""
    return max_steps if max_steps is not None else max(1, math.ceil(epochs * steps_per_epoch))


class Trainer:
    """Fine-tune an ``InfEmbed`` with a contrastive InF-IR loss (single process, or DDP under ``torchrun``).

    Features: AdamW with linear warm-up and decay, gradient accumulation, bf16 autocast, gradient
    checkpointing, GradCache (``cache_chunk_size``), tqdm progress bar with loss and speed, periodic evaluation
    (in eval mode), atomic checkpoints, exact resume, deterministic results for a fixed seed, and a
    :class:`NonFiniteLossError` naming the step on a NaN or infinite loss.

    Under ``torchrun`` initialise the process group first (``torch.distributed.init_process_group``); each rank
    passes the same data and arguments. Without a process group training is single-process (paper bug B11).

    Args:
        model: the model to train, in place.
        args: hyper-parameters.
        train_data: records (a ``TripletDataset``, a sequence of ``TripletExample``) or anything
            :func:`inf_embed.load_triplets` reads.
        loss: a loss module or name; default ``args.loss`` with ``args.temperature``.
        evaluator: ``evaluator(model) -> {metric: value}`` called in eval mode every ``args.eval_steps`` and at
            the end, e.g. ``inf_embed.evaluation.InfIREvaluator.from_path(".../dev.jsonl")``.
        device: training device; default CUDA (this rank's ``LOCAL_RANK``) when available, else CPU.

    Raises:
        ValueError: empty data, or fewer records than processes.
    """

    def __init__(
        self,
        model: Any,
        args: TrainingArguments,
        train_data: Any,
        *,
        loss: ContrastiveLoss | str | None = None,
        evaluator: Evaluator | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if getattr(model.config, "document_delta_scale", 1.0) != 1.0:
            raise ValueError(
                f"model: its document side is pulled back (document_delta_scale={model.config.document_delta_scale}), "
                "and training updates one set of weights for both sides; load it with document_delta_scale=1 to "
                "fine-tune it, and set TrainingArguments.document_delta_scale to pull the result's document side back"
            )
        self.model = model
        self.args = args
        if not isinstance(train_data, TripletDataset) and not (
            isinstance(train_data, Sequence) and all(isinstance(x, TripletExample) for x in train_data[:1])
        ):
            train_data = load_triplets(train_data)
        if args.foreign_instructions:
            train_data = with_foreign_instructions(train_data, seed=args.seed)
        if args.plain_queries:
            train_data = with_plain_queries(train_data)
        self.train_data: Sequence[TripletExample] = train_data
        if isinstance(loss, str) or loss is None:
            name, options = loss or args.loss, args.loss_kwargs()
            try:
                loss = get_loss(name, temperature=args.temperature, **options)
            except TypeError as error:  # an option the loss's factory does not take
                raise ValueError(f"loss_options: loss {name!r} does not accept {sorted(options)} ({error})") from None
        elif args.loss_options is not None:
            raise ValueError(
                "loss_options: only applies to a loss given by name; a loss object carries its own options"
            )
        if args.preserve_weight > 0:
            loss = PassagePreservationLoss(loss, args.preserve_weight)
        self.loss = loss
        self.start_model: Any = None  # frozen copy of the model at the start of training (passage preservation)
        self.evaluator = evaluator
        self.world_size = get_world_size()
        self.rank = get_rank()
        if device is None:
            device = f"cuda:{get_local_rank()}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if len(self.train_data) < self.world_size:
            raise ValueError(
                f"train_data has {len(self.train_data)} records; expected at least one per process ({self.world_size})"
            )
        self.generator = torch.Generator().manual_seed(args.seed)
        self.global_step = 0
        self.log_history: list[dict[str, Any]] = []
        self.metrics: dict[str, float] = {}
        self._truncated = 0

    # -- schedule -------------------------------------------------------------------------------------------------

    @property
    def records_per_global_batch(self) -> int:
        return self.args.batch_size * self.world_size

    @property
    def micro_batches_per_epoch(self) -> int:
        n, g = len(self.train_data), self.records_per_global_batch
        return n // g + (1 if n % g >= self.world_size else 0)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.micro_batches_per_epoch / self.args.gradient_accumulation_steps)

    @property
    def total_steps(self) -> int:
        return _total_steps(self.args.max_steps, self.args.epochs, self.steps_per_epoch)

    def step_micro_batches(self, step: int) -> range:
        """Global micro-batch indices (over the concatenated epochs) of optimizer step ``step`` (0-based).

        A group never crosses an epoch boundary: ``steps_per_epoch`` rounds up, so the last step of an epoch takes
        only the micro-batches left in it; taking a full group there would run ``epochs`` past its value and shift
        every later epoch's groups.
        """
        per_epoch, accumulation = self.micro_batches_per_epoch, self.args.gradient_accumulation_steps
        epoch, within = divmod(step, self.steps_per_epoch)
        first = epoch * per_epoch + within * accumulation
        return range(first, epoch * per_epoch + min((within + 1) * accumulation, per_epoch))

    def micro_batch_records(self, index: int, rank: int | None = None) -> list[int]:
        """Record indices of global micro-batch ``index`` (over the concatenated epochs) held by ``rank``."""
        rank = self.rank if rank is None else rank
        epoch, within = divmod(index, self.micro_batches_per_epoch)
        order = torch.randperm(len(self.train_data), generator=torch.Generator().manual_seed(self.args.seed + epoch))
        g = self.records_per_global_batch
        chunk = order[within * g : (within + 1) * g]
        parts = torch.tensor_split(chunk, self.world_size)
        return parts[rank].tolist()

    # -- setup ----------------------------------------------------------------------------------------------------

    def _freeze_backbone(self) -> None:
        """Freeze the backbone parameters that ``args.trainable_parameters`` does not match."""
        pattern = self.args.trainable_parameters
        if pattern is None:
            return
        regex = re.compile(pattern)
        trained = 0
        for name, param in self.model.backbone.named_parameters():
            keep = regex.search(name) is not None
            param.requires_grad_(keep)
            trained += keep
        if not trained:
            names = [name for name, _ in self.model.backbone.named_parameters()][:6]
            raise ValueError(
                f"trainable_parameters: {pattern!r} matches no backbone parameter (names look like {names})"
            )

    def _build_optimizer(self) -> None:
        args = self.args
        head_lr = args.head_learning_rate if args.head_learning_rate is not None else args.learning_rate
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            is_head = not name.startswith("backbone.")
            decays = not (param.ndim < 2 or "norm" in name.lower())
            groups.setdefault((is_head, decays), []).append(param)
        self.optimizer = torch.optim.AdamW(
            [
                {
                    "params": params,
                    "weight_decay": args.weight_decay if decays else 0.0,
                    "lr": head_lr if is_head else args.learning_rate,
                }
                for (is_head, decays), params in sorted(groups.items())
            ],
            lr=args.learning_rate,
            betas=(args.adam_beta1, args.adam_beta2),
            eps=args.adam_epsilon,
        )
        total = self.total_steps
        warmup = _warmup_steps(args.warmup_steps, args.warmup_ratio, total)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _linear_schedule(warmup, total))

    def _setup(self) -> None:
        self.model.to(self.device)
        if getattr(self.loss, "uses_preservation_targets", False):
            # the weights the trainer was given, before any resumed checkpoint replaces them
            self.start_model = copy.deepcopy(self.model).eval().requires_grad_(False)
        if self.args.gradient_checkpointing:
            backbone = self.model.backbone
            if not getattr(backbone, "supports_gradient_checkpointing", False):
                raise ValueError(
                    f"gradient_checkpointing: the backbone {type(backbone).__name__} does not support it; "
                    "expected a transformers model with supports_gradient_checkpointing"
                )
            if hasattr(backbone, "activation_checkpointing_enable"):  # transformers >= 5.x name
                backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self._freeze_backbone()
        if self.args.document_delta_scale != 1.0:
            # the weights the trainer was given, which the document side is pulled back to at the end
            self._document_anchor = {
                n: p.detach().clone() for n, p in self.model.backbone.named_parameters() if p.requires_grad
            }
        encoder: nn.Module = _Encoder(self.model)
        self._head_params = [
            p for n, p in self.model.named_parameters() if p.requires_grad and not n.startswith("backbone.")
        ]
        if is_distributed() and self.world_size > 1:
            import torch.distributed as dist

            for p in self._head_params:
                dist.broadcast(p.data, src=0)
            encoder = nn.parallel.DistributedDataParallel(
                encoder,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,  # e.g. a BERT pooler the embeddings never use
            )
        self.encoder = encoder
        self._build_optimizer()

    def _sync(self, last: bool) -> AbstractContextManager[Any]:
        if isinstance(self.encoder, nn.parallel.DistributedDataParallel) and not last:
            return self.encoder.no_sync()
        return contextlib.nullcontext()

    def _autocast(self) -> AbstractContextManager[Any]:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.args.bf16)

    # -- one step -------------------------------------------------------------------------------------------------

    def _text_batch(self, micro_index: int) -> TextBatch:
        examples = [self.train_data[i] for i in self.micro_batch_records(micro_index)]
        wants_variants = getattr(self.loss, "uses_instruction_variants", False)
        variants = self.args.num_instruction_variants if wants_variants else None
        return build_text_batch(examples, num_instruction_variants=variants, generator=self.generator)

    def _preservation_targets(self, plan: BatchPlan) -> Tensor | None:
        """(J, d) the plan's distinct passages under the starting model (no gradient); None without preservation."""
        if self.start_model is None:
            return None
        passages = plan.groups["passages"]
        with torch.no_grad(), self._autocast():
            states = self.start_model.embed_tokens(
                passages["input_ids"], passages["attention_mask"], passages.get("token_type_ids")
            )
            return _finish_embeddings(self.start_model, self.start_model.pool(states, passages["attention_mask"]))

    def _forward_backward(self, text: TextBatch, *, scale: float, last: bool, step: int, micro: int) -> float:
        plan = plan_batch(self.model, text, self.loss, self.device)
        self._truncated += plan.truncated
        head = make_head(self.model, plan, self.loss, preservation_targets=self._preservation_targets(plan))

        def check(value: Tensor) -> None:
            if not torch.isfinite(value.detach()).item():
                raise NonFiniteLossError("loss", step, float(value.detach()), micro)

        if self.args.cache_chunk_size is not None:
            cached = CachedLoss(self.loss, self.args.cache_chunk_size)

            def encode(name: str, chunk: Mapping[str, Tensor]) -> Tensor:
                with self._autocast():
                    return self.encoder({name: chunk}, {name: plan.kinds[name]})[name]

            def cached_head(reps: dict[str, Tensor]) -> dict[str, Any]:
                with self._autocast():
                    return head(reps)

            value = cached.backward(
                encode,
                plan.groups,
                cached_head,
                scale=scale,
                check=check,
                sync=lambda is_last: self._sync(last and is_last),
            )
            return float(value)
        with self._sync(last):
            with self._autocast():
                reps = self.encoder(plan.groups, plan.kinds)
                inputs = head(reps)
            value = self.loss(**inputs)
            check(value)
            (value * scale).backward()
        return float(value.detach())

    def _sync_head_grads(self) -> None:
        """Average the gradients of the parameters outside DDP (e.g. a projection) over the ranks."""
        if not (is_distributed() and self.world_size > 1):
            return
        import torch.distributed as dist

        for p in self._head_params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= self.world_size

    def training_step(self, step: int) -> tuple[float, int]:
        """Run optimizer step ``step`` (0-based): its micro-batches, clipping, update. Returns (loss, items)."""
        args = self.args
        micro_batches = self.step_micro_batches(step)
        count = len(micro_batches)  # fewer than the accumulation steps for an epoch's last, partial group
        losses, items = [], 0
        for micro, index in enumerate(micro_batches):
            text = self._text_batch(index)
            items += len(text)
            # 1/count, not 1/accumulation: the gradient is the mean over the micro-batches this step actually ran
            losses.append(
                self._forward_backward(text, scale=1.0 / count, last=micro == count - 1, step=step + 1, micro=micro)
            )
        self._sync_head_grads()
        params = [p for p in self.model.parameters() if p.requires_grad]
        if args.max_grad_norm:
            norm = torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
        else:  # no clipping, but a non-finite gradient must still stop the run before the update
            norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        if not torch.isfinite(norm).item():
            raise NonFiniteLossError("gradient norm", step + 1, float(norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return sum(losses) / len(losses), items

    # -- evaluation and checkpoints -------------------------------------------------------------------------------

    def evaluate(self) -> dict[str, float]:
        """Run the evaluator in eval mode (no dropout, paper bug B14) without autograd, then restore the previous
        mode and every random state, so that a run with evaluation trains the same weights as one without (the
        dropout masks and instruction-variant sampling after it draw from the same streams)."""
        if self.evaluator is None:
            return {}
        was_training = self.model.training
        rng = ckpt.capture_rng_state(self.generator)
        self.model.eval()
        try:
            with torch.no_grad():  # no graph kept alive through the evaluator's outputs, no gradient left behind
                results = dict(self.evaluator(self.model))
        finally:
            self.model.train(was_training)
            ckpt.restore_rng_state(rng, self.generator)
        self.metrics = results
        self.log_history.append({"step": self.global_step, **{f"eval_{k}": v for k, v in results.items()}})
        logger.info("step %d evaluation: %s", self.global_step, results)
        return results

    def _summary(self) -> dict[str, Any]:
        return {
            "global_step": self.global_step,
            "total_steps": self.total_steps,
            "world_size": self.world_size,
            "args": self.args.to_dict(),
            "loss": getattr(self.loss, "name", type(self.loss).__name__),
            "log_history": self.log_history,
        }

    def save_checkpoint(self) -> str | None:
        """Write ``checkpoint-<global_step>`` (rank 0; all ranks wait). Returns its path on rank 0."""
        path = None
        rng = ckpt.capture_rng_state(self.generator)
        if is_distributed() and self.world_size > 1:
            import torch.distributed as dist

            rng_states: list[Any] = [None] * self.world_size
            dist.all_gather_object(rng_states, rng)  # every rank's dropout and sampling streams differ
        else:
            rng_states = [rng]
        if self.rank == 0:
            state = {
                "global_step": self.global_step,
                "world_size": self.world_size,
                "data_fingerprint": self._data_fingerprint(),
                "args": self.args.to_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": rng_states,
                "log_history": self.log_history,
            }
            path = ckpt.save_checkpoint(
                self.args.output_dir,
                self.global_step,
                self.model,
                state,
                self._summary(),
                total_limit=self.args.save_total_limit,
            )
        self._barrier()
        return path

    def _barrier(self) -> None:
        if is_distributed():
            import torch.distributed as dist

            dist.barrier()

    def _data_fingerprint(self) -> list[Any]:
        n = len(self.train_data)
        first = self.train_data[0]
        return [n, first.query, first.positive[:64]]

    def resume_from(self, checkpoint: str) -> None:
        """Load weights, optimizer, scheduler, random states and the step from ``checkpoint``.

        Raises:
            ValueError: the checkpoint was written with a different data order (seed, batch size, accumulation,
                world size) or different data, so the run could not continue exactly.
        """
        from inf_embed.model import InfEmbed

        state = ckpt.load_trainer_state(checkpoint)
        saved = state["args"]
        for name in ("seed", "batch_size", "gradient_accumulation_steps"):
            if saved[name] != getattr(self.args, name):
                raise ValueError(
                    f"{name}: the checkpoint {checkpoint} was trained with {name}={saved[name]!r}, got "
                    f"{getattr(self.args, name)!r}; exact resume needs the same value"
                )
        if state["world_size"] != self.world_size:
            raise ValueError(
                f"world size: the checkpoint {checkpoint} was trained on {state['world_size']} processes, this run "
                f"has {self.world_size}; exact resume needs the same number"
            )
        if state["data_fingerprint"] != self._data_fingerprint():
            raise ValueError(f"train_data: differs from the data the checkpoint {checkpoint} was trained on")
        changed = self._changed_on_resume(saved)
        if changed:
            raise ValueError(
                f"resume: the checkpoint {checkpoint} was trained with different optimizer, schedule or loss "
                f"arguments: {'; '.join(changed)}. Its optimizer and scheduler states hold the old values, so the "
                "run would mix them with the new ones; resume with the checkpoint's values, or start a new run in "
                "another output folder"
            )
        loaded = InfEmbed.from_pretrained(os.path.join(checkpoint, ckpt.MODEL_FOLDER))
        self.model.load_state_dict(loaded.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        ckpt.restore_rng_state(state["rng"][self.rank], self.generator)
        self.global_step = int(state["global_step"])
        self.log_history = list(state["log_history"])
        logger.info("resumed from %s at step %d", checkpoint, self.global_step)

    def _changed_on_resume(self, saved: dict[str, Any]) -> list[str]:
        """The arguments fixed by a checkpoint that this run changes, each as ``"name: old -> new"``.

        The optimizer state holds each parameter group's learning rate, weight decay and Adam constants, the
        scheduler state its base learning rates and step, and the schedule's shape comes from the warm-up and the
        total step count; the loss arguments define what the saved moments were accumulated for. A checkpoint
        from an older version may lack a field: it is compared with that field's default. Arguments that do not
        change the maths (logging, output, checkpoints, evaluation, progress bar, GradCache and gradient
        checkpointing) may change.
        """
        new = self.args.to_dict()
        old = {spec.name: saved.get(spec.name, spec.default) for spec in fields(TrainingArguments)}
        changed = [f"{name}: {old[name]!r} -> {new[name]!r}" for name in _FIXED_ON_RESUME if old[name] != new[name]]
        try:  # compared parsed, so that "weight=0.5" and "weight=0.50" are the same options
            same_options = replace(self.args, loss_options=old["loss_options"]).loss_kwargs() == self.args.loss_kwargs()
        except ValueError:
            same_options = False
        if not same_options:
            changed.append(f"loss_options: {old['loss_options']!r} -> {new['loss_options']!r}")

        def given(*names: str) -> str:  # the arguments behind a step count: those that differ, else all
            differ = [name for name in names if old[name] != new[name]] or list(names)
            return ", ".join(f"{name}: {old[name]!r} -> {new[name]!r}" for name in differ)

        # epochs count only without max_steps, warmup_ratio only without warmup_steps: compare the steps they give
        # (the data, batch size, accumulation and world size are already checked equal, so steps_per_epoch is too)
        old_total = _total_steps(old["max_steps"], old["epochs"], self.steps_per_epoch)
        if old_total != self.total_steps:
            changed.append(f"total steps: {old_total} -> {self.total_steps} ({given('max_steps', 'epochs')})")
        old_warmup = _warmup_steps(old["warmup_steps"], old["warmup_ratio"], old_total)
        new_warmup = _warmup_steps(new["warmup_steps"], new["warmup_ratio"], self.total_steps)
        if old_warmup != new_warmup:
            changed.append(f"warm-up steps: {old_warmup} -> {new_warmup} ({given('warmup_steps', 'warmup_ratio')})")
        return changed

    # -- the loop -------------------------------------------------------------------------------------------------

    def _seed(self) -> None:
        seed = self.args.seed
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.generator.manual_seed(seed)

    def train(self) -> TrainOutput:
        """Train for ``args.max_steps`` (or ``args.epochs``), evaluating and checkpointing as configured.

        Returns:
            A :class:`TrainOutput`; the final model is saved to ``<output_dir>/model`` (rank 0).

        Raises:
            NonFiniteLossError: the loss or gradient norm became NaN or infinite (no update is applied).
        """
        from tqdm.auto import tqdm

        args = self.args
        self._seed()
        self._setup()
        if args.resume:
            found = ckpt.latest_checkpoint(args.output_dir)
            if found is None:
                logger.warning("resume: no checkpoint in %s; starting from scratch", args.output_dir)
            else:
                self.resume_from(found)
        elif ckpt.list_checkpoints(args.output_dir):
            # a fresh run would interleave its checkpoints with the earlier run's, and a later resume would pick
            # whichever has the highest step, possibly the stale one
            raise ValueError(
                f"output_dir: {args.output_dir} holds checkpoints of an earlier run "
                f"({', '.join(os.path.basename(path) for _, path in ckpt.list_checkpoints(args.output_dir))}); "
                "continue it with resume=True (--resume), or train into another folder"
            )
        total = self.total_steps
        self.model.train()
        show = args.show_progress_bar
        if show is None:
            show = logger.getEffectiveLevel() <= logging.INFO
        bar = tqdm(
            total=total, initial=self.global_step, desc="Training", disable=not show or self.rank != 0, unit="step"
        )
        window: list[float] = []
        all_losses: list[float] = []
        items_done, window_items = 0, 0
        start = window_start = time.perf_counter()
        logger.info(
            "training %d steps (%d per epoch), %d records, %d process(es)",
            total,
            self.steps_per_epoch,
            len(self.train_data),
            self.world_size,
        )
        while self.global_step < total:
            loss_value, items = self.training_step(self.global_step)
            self.global_step += 1
            items *= self.world_size  # global count (ranks hold near-equal shares)
            items_done += items
            window_items += items
            window.append(loss_value)
            all_losses.append(loss_value)
            elapsed = time.perf_counter() - start
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", ex_per_s=f"{items_done / max(elapsed, 1e-9):.1f}")
            if self.global_step % args.logging_steps == 0 or self.global_step == total:
                now = time.perf_counter()
                entry = {
                    "step": self.global_step,
                    "epoch": round(self.global_step / self.steps_per_epoch, 4),
                    "loss": sum(window) / len(window),
                    "learning_rate": self.scheduler.get_last_lr()[0],
                    "examples_per_second": window_items / max(now - window_start, 1e-9),
                }
                self.log_history.append(entry)
                logger.info(
                    "step %d: loss %.4f, lr %.3g, %.1f examples/s",
                    entry["step"],
                    entry["loss"],
                    entry["learning_rate"],
                    entry["examples_per_second"],
                )
                window, window_items, window_start = [], 0, now
            paused = time.perf_counter()
            if args.eval_steps and self.global_step % args.eval_steps == 0 and self.global_step != total:
                self.evaluate()
            if args.save_steps and self.global_step % args.save_steps == 0:
                self.save_checkpoint()
            # evaluation and checkpoints are not training: leave their time out of the speed and train_seconds
            paused = time.perf_counter() - paused
            start += paused
            window_start += paused
        bar.close()
        train_seconds = time.perf_counter() - start
        if self._truncated:
            logger.warning(
                "%d training texts were longer than their token budget and were truncated "
                "(max_query_length / max_instruction_length / max_passage_length)",
                self._truncated,
            )
        if args.gradient_checkpointing:
            backbone = self.model.backbone
            disable = (
                getattr(backbone, "activation_checkpointing_disable", None) or backbone.gradient_checkpointing_disable
            )
            disable()
        if args.document_delta_scale != 1.0:
            self.model.set_document_delta(self._document_anchor, args.document_delta_scale)
            self.model.config.plain_query_side = args.plain_query_side
        if self.evaluator is not None:
            self.evaluate()
        model_path = None
        if self.rank == 0:
            model_path = self.model.save_pretrained(os.path.join(args.output_dir, "model"))
            with open(os.path.join(args.output_dir, "trainer_state.json"), "w", encoding="utf-8") as handle:
                json.dump(self._summary(), handle, indent=2, default=str)
        self._barrier()
        self.model.eval()
        return TrainOutput(
            global_step=self.global_step,
            training_loss=sum(all_losses) / len(all_losses) if all_losses else float("nan"),
            metrics=dict(self.metrics),
            log_history=list(self.log_history),
            train_seconds=train_seconds,
            examples_per_second=items_done / max(train_seconds, 1e-9),
            model_path=model_path,
        )
