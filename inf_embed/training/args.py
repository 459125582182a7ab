"""`TrainingArguments`: every training hyper-parameter in one dataclass.

Each field is one ``inf-embed train`` flag: ``field_name`` becomes ``--field-name`` (a few fields also accept a
short alias, listed in the field's ``metadata["aliases"]``, e.g. ``--output`` for ``output_dir`` and ``--lr``
for ``learning_rate``). :func:`add_arguments` builds the flags from the dataclass, so the two never drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from inf_embed.config import PLAIN_QUERY_SIDES

__all__ = ["TrainingArguments", "add_arguments", "from_namespace"]


def _opt(default: Any, help: str, *aliases: str) -> Any:  # noqa: A002 (argparse naming)
    return field(default=default, metadata={"help": help, "aliases": aliases})


@dataclass
class TrainingArguments:
    """Hyper-parameters of :class:`inf_embed.training.Trainer`.

    Batches are counted in **records** (an InF-IR record expands into up to three items, all kept in the same
    batch, paper bug B13). ``batch_size`` is per process; the global batch under ``torchrun`` is
    ``batch_size * world_size`` records, contrasted together (in-batch negatives are gathered across ranks).

    Attributes:
        output_dir: folder for checkpoints (``checkpoint-<step>/``) and the final model (``model/``).
        loss: loss name (see ``inf_embed.losses.list_losses()``), e.g. ``"multi:P+I"`` (the paper's best).
        loss_options: the loss's own numeric options as ``"NAME=VALUE[,NAME=VALUE]"`` (e.g.
            ``"weight=0.5,instruction_weight=0.3"`` for ``multi:P+I+IQ+IX+Q``); see :meth:`loss_kwargs`.
        plain_queries: also train each record's query without its instruction, ``("", Q+, P+)``, as a record of
            its own (:func:`inf_embed.data.with_plain_queries`), so that queries without instruction keep
            retrieving their passages.
        foreign_instructions: also train each record's query with another record's instruction, the other
            record's passage as hard negative (:func:`inf_embed.data.with_foreign_instructions`, seeded by
            ``seed``), so that the query, not an instruction about something else, decides the topic.
        preserve_weight: weight (>= 0) of a term that keeps the passage embeddings near the starting model's:
            ``preserve_weight * mean_j (1 - cos(p_j, p0_j))`` over the batch's distinct passages, ``p0_j`` from a
            frozen copy of the model as it was when the trainer was built
            (:class:`inf_embed.losses.PassagePreservationLoss`). 0 (default) leaves it out. It protects
            retrieval without instructions (e.g. BEIR) from drifting while the query side learns instructions.
        document_delta_scale: the share in [0, 1] of the trained change that the document side keeps when
            training ends (:meth:`inf_embed.InfEmbed.set_document_delta`, anchored at the weights the trainer was
            given): documents are then encoded with ``start + s * (trained - start)``, queries with the trained
            weights. Training itself runs both sides alike. 1 (default) keeps the model symmetric.
        plain_query_side: with ``document_delta_scale`` < 1, the side whose weights encode a query that comes
            without an instruction in the saved model (``InfEmbedConfig.plain_query_side``): ``"query"``
            (default) or ``"document"`` (uninstructed search is then a symmetric model at the document side's
            weights).
        temperature: tau of the contrastive loss.
        num_instruction_variants: M, instruction variants per item for the I term (own instruction included).
        epochs: passes over the data (ignored when ``max_steps`` is set).
        max_steps: optimizer steps to run; overrides ``epochs``.
        batch_size: records per process per micro-batch.
        gradient_accumulation_steps: micro-batches per optimizer step.
        learning_rate: peak AdamW learning rate.
        head_learning_rate: peak learning rate of the parameters outside the backbone (a fusion's projection,
            the output projection); None uses ``learning_rate``. Zero-initialised fusion weights start far from
            where they end, so they usually want a larger rate than the pretrained backbone.
        trainable_parameters: regular expression (``re.search``) over backbone parameter names, e.g.
            ``"attention"``; only matching backbone parameters are trained, the rest are frozen (parameters
            outside the backbone always train). None trains the whole backbone. Freezing most of the backbone
            keeps the trained change small enough to ship as a compact delta (see ``inf_embed.delta``).
        weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
        adam_beta1, adam_beta2, adam_epsilon: AdamW constants.
        warmup_ratio: fraction of the steps with linear warm-up (used when ``warmup_steps`` is None).
        warmup_steps: warm-up steps; overrides ``warmup_ratio``.
        max_grad_norm: gradient-norm clip; None or 0 disables clipping.
        bf16: run the encoder under ``torch.autocast`` with bfloat16 (the loss stays float32).
        gradient_checkpointing: recompute backbone activations in backward to save memory.
        cache_chunk_size: GradCache mini-batch size in sequences; None trains uncached (see
            :class:`inf_embed.losses.cached.CachedLoss`).
        seed: seed of the data order, dropout and instruction sampling.
        logging_steps: log loss, learning rate and speed every N steps.
        save_steps: write a checkpoint every N steps; None writes none (the final model is always saved).
        save_total_limit: keep only the newest N checkpoints; None keeps all.
        eval_steps: run the evaluator every N steps (and at the end); None runs it only at the end.
        resume: continue from the newest checkpoint in ``output_dir`` (starts fresh, with a warning, if none).
        show_progress_bar: tqdm bar with loss and speed; None shows it when logging is at INFO or below.
    """

    output_dir: str = _opt("output", "output folder: checkpoint-<step>/ and the final model/", "--output")
    loss: str = _opt("multi:P+I", "loss name, e.g. multi:P+I, uni:P (see inf_embed.losses.list_losses())")
    loss_options: str | None = _opt(
        None, "the loss's own options, NAME=VALUE[,NAME=VALUE] numbers, e.g. weight=0.5,instruction_weight=0.3"
    )
    plain_queries: bool = _opt(False, "also train each record's query without its instruction (Q+ -> P+) as a record")
    foreign_instructions: bool = _opt(
        False, "also train each record's query with another record's instruction (that record's passage as negative)"
    )
    preserve_weight: float = _opt(0.0, "weight of 1 - cos(passage, starting model's passage); 0 leaves it out")
    document_delta_scale: float = _opt(
        1.0, "share in [0, 1] of the trained change the document side keeps at the end (1: both sides alike)"
    )
    plain_query_side: str = _opt(
        "query", "with --document-delta-scale < 1: the side (query or document) encoding queries without instruction"
    )
    temperature: float = _opt(0.05, "temperature tau of the contrastive loss")
    num_instruction_variants: int = _opt(6, "instruction variants per item for the I term (M, own included)")
    epochs: float = _opt(1.0, "passes over the training data (ignored when --max-steps is set)")
    max_steps: int | None = _opt(None, "optimizer steps to run (overrides --epochs)")
    batch_size: int = _opt(16, "records per process per micro-batch (each record gives up to 3 items)")
    gradient_accumulation_steps: int = _opt(1, "micro-batches per optimizer step")
    learning_rate: float = _opt(2e-5, "peak learning rate of AdamW", "--lr")
    head_learning_rate: float | None = _opt(None, "peak learning rate of the non-backbone parameters (fusion)")
    trainable_parameters: str | None = _opt(None, "regex of the backbone parameter names to train (others frozen)")
    weight_decay: float = _opt(0.0, "AdamW weight decay (not on biases and LayerNorm weights)")
    adam_beta1: float = _opt(0.9, "AdamW beta1")
    adam_beta2: float = _opt(0.999, "AdamW beta2")
    adam_epsilon: float = _opt(1e-8, "AdamW epsilon")
    warmup_ratio: float = _opt(0.1, "fraction of the steps with linear warm-up")
    warmup_steps: int | None = _opt(None, "warm-up steps (overrides --warmup-ratio)")
    max_grad_norm: float | None = _opt(1.0, "gradient-norm clipping; 0 disables it")
    bf16: bool = _opt(False, "bfloat16 autocast for the encoder")
    gradient_checkpointing: bool = _opt(False, "recompute backbone activations in backward (saves memory)")
    cache_chunk_size: int | None = _opt(None, "GradCache chunk size in sequences (effective batch > memory)")
    seed: int = _opt(42, "seed of data order, dropout and instruction sampling")
    logging_steps: int = _opt(10, "log loss and speed every N steps")
    save_steps: int | None = _opt(None, "checkpoint every N steps")
    save_total_limit: int | None = _opt(2, "keep the newest N checkpoints")
    eval_steps: int | None = _opt(None, "evaluate every N steps (and at the end)")
    resume: bool = _opt(False, "resume from the newest checkpoint in the output folder")
    show_progress_bar: bool | None = _opt(None, "progress bar with loss and speed")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field; raises ValueError naming the field and the expected value."""
        _positive_int(self, "batch_size")
        _positive_int(self, "gradient_accumulation_steps")
        _positive_int(self, "num_instruction_variants")
        _positive_int(self, "logging_steps")
        for name in ("max_steps", "save_steps", "eval_steps", "cache_chunk_size", "save_total_limit"):
            if getattr(self, name) is not None:
                _positive_int(self, name)
        if self.warmup_steps is not None and (
            isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0
        ):
            raise ValueError(f"warmup_steps: expected an integer >= 0 or None, got {self.warmup_steps!r}")
        # NumPy's global seed (set from it at the start of training) must lie in [0, 2**32).
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ValueError(f"seed: expected an integer in [0, 2**32), got {self.seed!r}")
        if not isinstance(self.loss, str) or not self.loss.strip():
            raise ValueError(f"loss: expected a loss name such as 'multi:P+I', got {self.loss!r}")
        _finite(self, "learning_rate", minimum=0.0, strict=True)
        if self.head_learning_rate is not None:
            _finite(self, "head_learning_rate", minimum=0.0, strict=True)
        if self.trainable_parameters is not None:
            if not isinstance(self.trainable_parameters, str) or not self.trainable_parameters:
                raise ValueError(
                    f"trainable_parameters: expected a non-empty regular expression or None, "
                    f"got {self.trainable_parameters!r}"
                )
            try:
                re.compile(self.trainable_parameters)
            except re.error as error:
                raise ValueError(
                    f"trainable_parameters: {self.trainable_parameters!r} is not a valid regular expression ({error})"
                ) from None
        for flag in ("plain_queries", "foreign_instructions", "bf16", "gradient_checkpointing", "resume"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag}: expected True or False, got {getattr(self, flag)!r}")
        if self.show_progress_bar is not None and not isinstance(self.show_progress_bar, bool):
            raise ValueError(f"show_progress_bar: expected True, False or None, got {self.show_progress_bar!r}")
        self.loss_kwargs()  # raises on a malformed value
        _finite(self, "preserve_weight", minimum=0.0)
        _finite(self, "document_delta_scale", minimum=0.0)
        if self.document_delta_scale > 1.0:
            raise ValueError(f"document_delta_scale: expected a value in [0, 1], got {self.document_delta_scale!r}")
        if self.plain_query_side not in PLAIN_QUERY_SIDES:
            raise ValueError(
                f"plain_query_side: expected one of {list(PLAIN_QUERY_SIDES)}, got {self.plain_query_side!r}"
            )
        if self.plain_query_side == "document" and self.document_delta_scale == 1.0:
            raise ValueError(
                "plain_query_side='document' needs an asymmetric result: set document_delta_scale below 1 (with 1 "
                "both sides have the same weights)"
            )
        _finite(self, "temperature", minimum=0.0, strict=True)
        _finite(self, "epochs", minimum=0.0, strict=True)
        _finite(self, "weight_decay", minimum=0.0)
        _finite(self, "adam_epsilon", minimum=0.0, strict=True)
        _finite(self, "warmup_ratio", minimum=0.0)  # a non-number must fail with the field's name, not a TypeError
        if self.warmup_ratio > 1.0:
            raise ValueError(f"warmup_ratio: expected a value in [0, 1], got {self.warmup_ratio!r}")
        for name in ("adam_beta1", "adam_beta2"):
            _finite(self, name, minimum=0.0)
            if getattr(self, name) >= 1.0:
                raise ValueError(f"{name}: expected a value in [0, 1), got {getattr(self, name)!r}")
        if self.max_grad_norm is not None:
            _finite(self, "max_grad_norm", minimum=0.0)
        if not isinstance(self.output_dir, str) or not self.output_dir:
            raise ValueError(f"output_dir: expected a non-empty path, got {self.output_dir!r}")

    def loss_kwargs(self) -> dict[str, float]:
        """``loss_options`` parsed: ``"weight=0.5,instruction_weight=0.3"`` -> ``{"weight": 0.5, ...}``."""
        if self.loss_options is None:
            return {}
        if not isinstance(self.loss_options, str):
            raise ValueError(
                f"loss_options: expected a string NAME=VALUE[,NAME=VALUE] or None, got {self.loss_options!r}"
            )
        options: dict[str, float] = {}
        for part in self.loss_options.split(","):
            name, sep, value = (piece.strip() for piece in part.partition("="))
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not sep or not name.isidentifier() or not math.isfinite(number) or name in options:
                raise ValueError(
                    f"loss_options: {part.strip()!r} in {self.loss_options!r} is not NAME=NUMBER "
                    "(a distinct identifier and a finite number), e.g. 'weight=0.5,instruction_weight=0.3'"
                )
            options[name] = number
        return options

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (JSON-serialisable)."""
        return dataclasses.asdict(self)


def _positive_int(args: TrainingArguments, name: str) -> None:
    value = getattr(args, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")


def _finite(args: TrainingArguments, name: str, *, minimum: float, strict: bool = False) -> None:
    value = getattr(args, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"{name}: expected a value {relation} {minimum}, got {value!r}")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, required: tuple[str, ...] = ()) -> None:
    """Add one flag per :class:`TrainingArguments` field (``--field-name`` plus its aliases).

    ``required`` names fields whose flag must be given (e.g. ``("output_dir",)`` for the CLI).

    Defaults are left as ``None`` sentinels (argparse.SUPPRESS), so :func:`from_namespace` applies the
    dataclass defaults and an explicit flag always wins.
    """
    group = parser.add_argument_group("training arguments")
    for spec in dataclasses.fields(TrainingArguments):
        flags = [*spec.metadata.get("aliases", ()), _flag(spec.name)]
        help_text = f"{spec.metadata['help']} (default: {spec.default})"
        annotation = str(spec.type)  # a string under `from __future__ import annotations`
        if annotation.startswith("bool"):
            group.add_argument(
                *flags, dest=spec.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text
            )
            continue
        kind: Any = int if annotation.startswith("int") else float if annotation.startswith("float") else str
        group.add_argument(
            *flags,
            dest=spec.name,
            type=kind,
            default=argparse.SUPPRESS,
            help=help_text,
            metavar=spec.name.upper(),
            required=spec.name in required,
        )


def from_namespace(namespace: argparse.Namespace) -> TrainingArguments:
    """Build :class:`TrainingArguments` from the flags present in ``namespace`` (others keep their defaults).

    ``--max-grad-norm 0`` disables clipping (stored as None).
    """
    names = {spec.name for spec in dataclasses.fields(TrainingArguments)}
    values = {name: value for name, value in vars(namespace).items() if name in names}
    if values.get("max_grad_norm") == 0:
        values["max_grad_norm"] = None
    return TrainingArguments(**values)
