"""``inf-embed train``: fine-tune a model on triplets.

Example::

    inf-embed train --data train.jsonl --output runs/marco --loss multi:P+I --fusion attention \\
        --epochs 1 --batch-size 16 --lr 2e-5 --dev-data dev.jsonl

Under ``torchrun --nproc-per-node N inf-embed train ...`` every rank joins the process group (NCCL on CUDA,
gloo on CPU) and in-batch negatives are gathered across ranks.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from inf_embed.config import FUSION_NAMES
from inf_embed.training.args import add_arguments, from_namespace


def register(subparsers: Any) -> None:
    """Add the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a model on triplets",
        description="Fine-tune an InfEmbed model on instruction-query-passage triplets (JSONL, CSV, Parquet).",
    )
    parser.add_argument("--data", required=True, help="training records (InF-IR or simple schema)")
    parser.add_argument(
        "--model", default=None, help="model name or path to start from (default: the embedded all-MiniLM-L6-v2)"
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
        "--instruction-weight",
        type=float,
        default=None,
        help="fusion conditioned: weight in [0, 1] of the instruction tokens in the pooled query (default: 0)",
    )
    parser.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="malformed records: stop (default) or skip and count them",
    )
    add_arguments(parser, required=("output_dir",))
    parser.set_defaults(func=run)


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


def run(args: argparse.Namespace) -> int:
    """Load data and model, train, print a summary; returns the exit code."""
    from inf_embed import InfEmbed
    from inf_embed.data import load_triplets
    from inf_embed.training import Trainer
    from inf_embed.training.distributed import is_main_process

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
            )
            if getattr(args, name) is not None
        }
        model = InfEmbed(args.model, **overrides) if args.model else InfEmbed(**overrides)
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
            print(json.dumps(summary, indent=2, default=float))
    finally:
        if joined:
            import torch.distributed as dist

            dist.destroy_process_group()
    return 0
