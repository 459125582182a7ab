"""``inf-embed train``: fine-tune a model on triplets.

Example::

    inf-embed train --data train.jsonl --output runs/marco --loss multi:P+I --fusion attention \\
        --epochs 1 --batch-size 16 --lr 2e-5 --dev-data dev.jsonl

Under ``torchrun --nproc-per-node N inf-embed train ...`` every rank joins the process group (NCCL on CUDA,
gloo on CPU) and in-batch negatives are gathered across ranks.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from typing import Any

from inf_embed.config import FUSION_NAMES
from inf_embed.training.args import add_arguments, from_namespace
from inf_embed.training.presets import PRESETS, Preset, get_preset


def register(subparsers: Any) -> None:
    """Add the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a model on triplets",
        description="Fine-tune an InfEmbed model on instruction-query-passage triplets (JSONL, CSV, Parquet).",
    )
    parser.add_argument(
        "--preset",
        default=None,
        choices=sorted(PRESETS),
        help="a named recipe fixing data, model, fusion and training arguments (explicit flags still win); "
        + "; ".join(f"{name}: {preset.description}" for name, preset in PRESETS.items()),
    )
    parser.add_argument(
        "--data", default=None, help="training records (InF-IR or simple schema); required without --preset"
    )
    parser.add_argument(
        "--model",
        default=None,
        help="model name or path to start from (default: the default extra's untrained all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--save-delta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also write <output>/delta, the trained change over the start model (inf_embed.delta); "
        "on for --preset default",
    )
    parser.add_argument(
        "--fusion",
        default=None,
        choices=FUSION_NAMES,
        help="instruction fusion (default: the model's; attention for the default model)",
    )
    parser.add_argument(
        "--dev-data",
        default=None,
        help="InF-IR-schema records evaluated in eval mode every --eval-steps and at the end",
    )
    parser.add_argument("--limit", type=int, default=None, help="read at most this many training records")
    for name in ("max_query_length", "max_instruction_length", "max_passage_length"):
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=int,
            default=None,
            help="token budget override for the model config",
        )
    parser.add_argument(
        "--query-weight",
        type=float,
        default=None,
        help="--fusion anchored only: weight (>= 0) of the query encoded alone (default: 0.5)",
    )
    parser.add_argument(
        "--gate-threshold",
        type=float,
        default=None,
        help="--fusion gated only: query-instruction cosine below which the query is embedded alone (default: 0.3)",
    )
    parser.add_argument(
        "--instruction-weight",
        type=float,
        default=None,
        help="--fusion conditioned only: weight in [0, 1] of the instruction tokens in the pooled query (default: 0); "
        "a fusion weight, not the poisoned-instruction (IX) loss term's weight, which is --loss-options "
        "instruction_weight=VALUE",
    )
    parser.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="malformed records: stop (default) or skip and count them",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def _apply_preset(args: argparse.Namespace) -> Preset | None:
    """Fill what the command line left unset from ``--preset``; check the flags required without one."""
    preset = get_preset(args.preset) if args.preset else None
    if preset is not None:
        for name, value in preset.training.items():
            if not hasattr(args, name):  # training flags default to "absent" (argparse.SUPPRESS)
                setattr(args, name, value)
        if not hasattr(args, "output_dir"):
            args.output_dir = f"runs/{args.preset}"
        args.data = args.data or preset.data
        args.model = args.model or preset.model
        for name, value in preset.model_overrides.items():
            if getattr(args, name, None) is None:
                setattr(args, name, value)
        if args.save_delta is None:
            args.save_delta = preset.save_delta
    missing = [
        flag for flag, present in (("--data", args.data), ("--output", hasattr(args, "output_dir"))) if not present
    ]
    if missing:
        raise SystemExit(f"inf-embed train: error: {' and '.join(missing)} required (or give --preset)")
    return preset


# Model flags that only one fusion reads: with another fusion the value would be stored in the config and ignored.
_FUSION_FLAGS: dict[str, str] = {
    "query_weight": "anchored",
    "gate_threshold": "gated",
    "instruction_weight": "conditioned",
}


def _check_fusion_flags(args: argparse.Namespace, fusion: str) -> None:
    """Reject a fusion-specific flag given for a fusion that does not use it (it would silently do nothing)."""
    for name, owner in _FUSION_FLAGS.items():
        if getattr(args, name, None) is None or fusion == owner:
            continue
        flag = "--" + name.replace("_", "-")
        message = (
            f"inf-embed train: error: {flag} applies to --fusion {owner} only; this run's fusion is {fusion}, "
            "which would ignore it"
        )
        if name == "instruction_weight":
            message += (
                ". It is a fusion weight, not the poisoned-instruction (IX) loss term's weight: for that use "
                "--loss-options instruction_weight=VALUE"
            )
        raise SystemExit(message)


def _start_model(name: str | None, overrides: dict[str, Any]) -> Any:
    from inf_embed import InfEmbed
    from inf_embed.model import DEFAULT_BACKBONE_NAME, default_model_path

    if name is None or name == "default-backbone":
        model = InfEmbed(default_model_path(), **overrides)
        model.config.backbone = DEFAULT_BACKBONE_NAME  # provenance: the public name, not a site-packages path
        return model
    return InfEmbed(name, **overrides)


def _init_distributed() -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); returns True if joined."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return True


def _write_delta(
    model: Any, base_backbone: Any, args: argparse.Namespace, preset: Preset | None, result: Any, records: int
) -> str:
    """Write ``<output>/delta`` (the trained change over the start model) with the run's provenance."""
    import platform

    import torch

    from inf_embed.delta import save_delta

    base_name = "default" if args.model in (None, "default-backbone") else args.model
    metadata = {
        "preset": args.preset,
        "data": os.path.basename(args.data),
        "records": records,
        "training_arguments": {k: v for k, v in from_namespace(args).to_dict().items() if k != "output_dir"},
        "global_step": result.global_step,
        "train_seconds": round(result.train_seconds, 1),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "command": "inf-embed train --preset " + args.preset if preset is not None else None,
    }
    return save_delta(
        model, base_backbone, os.path.join(args.output_dir, "delta"), base_name=base_name, metadata=metadata
    )


def run(args: argparse.Namespace) -> int:
    """Load data and model, train, print a summary; returns the exit code."""
    from inf_embed.data import load_triplets
    from inf_embed.training import Trainer
    from inf_embed.training.distributed import is_main_process

    preset = _apply_preset(args)
    if args.fusion is not None:  # known now; otherwise the model's own, checked once it is loaded
        _check_fusion_flags(args, args.fusion)
    training_args = from_namespace(args)
    if training_args.show_progress_bar is None:
        training_args.show_progress_bar = True  # the CLI shows the bar unless --no-show-progress-bar
    joined = _init_distributed()
    try:
        data = load_triplets(args.data, on_error=args.on_error, limit=args.limit)
        overrides = {
            name: getattr(args, name)
            for name in (
                "fusion",
                "max_query_length",
                "max_instruction_length",
                "max_passage_length",
                "instruction_weight",
                "query_weight",
                "gate_threshold",
            )
            if getattr(args, name, None) is not None
        }
        model = _start_model(args.model, overrides)
        if args.fusion is None:
            _check_fusion_flags(args, model.config.fusion)
        base_backbone = copy.deepcopy(model.backbone) if args.save_delta else None
        evaluator = None
        if args.dev_data:
            from inf_embed.evaluation import InfIREvaluator

            evaluator = InfIREvaluator.from_path(args.dev_data)
        trainer = Trainer(model, training_args, data, evaluator=evaluator)
        result = trainer.train()
        if is_main_process():
            summary = {
                "model": result.model_path,
                "steps": result.global_step,
                "training_loss": round(result.training_loss, 6),
                "train_seconds": round(result.train_seconds, 2),
                "examples_per_second": round(result.examples_per_second, 2),
                "records": len(data),
                "skipped_records": data.num_skipped,
                **({"metrics": result.metrics} if result.metrics else {}),
            }
            if base_backbone is not None:
                summary["delta"] = _write_delta(model, base_backbone, args, preset, result, len(data))
            print(json.dumps(summary, indent=2, default=float))
    finally:
        if joined:
            import torch.distributed as dist

            dist.destroy_process_group()
    return 0
