"""Exploration for issue 6: train only the query side, with passages encoded by the frozen start backbone.

    python benchmarks/frozen_passage_side.py --loss multi:P+I+IQ+IX+Q \\
        --loss-options instruction_weight=0.1,weight=0.1 [--epochs 3] [--lr 1e-4] [--threads 2] [--json FILE]

Why: every loss term that follows instructions better (IX, Q) has cost SciFact and nDCG@10, and the passages move
with the query side because both share one backbone. A query-side-only model (an asymmetric dual encoder: passages
through the untouched all-MiniLM-L6-v2, queries through the trained copy) keeps the passage embeddings, and so the
corpus index, exactly the backbone's. inf_embed has no such model type yet, so this script emulates it around the
preset's recipe (``inf_embed.training.presets["default"]``: concat fusion, attention weights only, batch 16 records,
10 % warm-up, seed 42; ``--loss``/``--loss-options``/``--lr``/``--epochs`` override it): during training the
trainer's ``passages`` group is encoded by a frozen copy of the start backbone under ``torch.no_grad``, and at
evaluation ``encode_document`` runs on that copy too. It then prints the row of the issue-6 evaluators of
``benchmarks/finetune_vs_st.py`` (InF-IR dev, +msmarco passages, SciFact, NevIR dev).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_vs_st import DATA_ROOT, TASKS, build_evaluators, evaluate, markdown  # noqa: E402


@contextmanager
def _backbone(model: Any, backbone: torch.nn.Module) -> Iterator[None]:
    """Run ``model`` on ``backbone`` for the duration of the block (a module swap, not a weight copy)."""
    live = model._modules["backbone"]
    model._modules["backbone"] = backbone
    try:
        yield
    finally:
        model._modules["backbone"] = live


def freeze_passage_side(model: Any) -> torch.nn.Module:
    """Route ``model``'s passages (training and ``encode_document``) through a frozen copy of its backbone now.

    Returns the frozen copy. Patches the trainer's encoder and ``model.encode_document`` in place.
    """
    from inf_embed.training import trainer as trainer_module

    frozen = copy.deepcopy(model.backbone).eval().requires_grad_(False)
    encode_groups = trainer_module._Encoder.forward

    def forward(self: Any, groups: dict[str, Any], kinds: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = encode_groups(self, {name: group for name, group in groups.items() if name != "passages"}, kinds)
        if "passages" in groups:
            features = groups["passages"]
            mask = features["attention_mask"]
            with torch.no_grad(), _backbone(self._model, frozen):
                states = self._model.embed_tokens(features["input_ids"], mask, features.get("token_type_ids"))
                out["passages"] = self._model.pool(states, mask)
        return out

    trainer_module._Encoder.forward = forward
    encode_document = model.encode_document

    def encode_document_frozen(*args: Any, **kwargs: Any) -> Any:
        with _backbone(model, frozen):
            return encode_document(*args, **kwargs)

    model.encode_document = encode_document_frozen
    return frozen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loss", default=None, help="loss name (default: the preset's)")
    parser.add_argument("--loss-options", default=None, help="the loss's NAME=VALUE[,NAME=VALUE] options")
    parser.add_argument("--epochs", type=float, default=None, help="default: the preset's")
    parser.add_argument("--lr", type=float, default=None, help="default: the preset's")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--output", default=None, help="training output folder (default: a temporary one)")
    parser.add_argument("--json", default=None, help="also write the metrics here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from inf_embed import InfEmbed
    from inf_embed.model import default_model_path
    from inf_embed.training import Trainer, TrainingArguments
    from inf_embed.training.presets import get_preset

    preset = get_preset("default")
    training = dict(preset.training)
    if args.loss is not None:
        training.update(loss=args.loss, loss_options=args.loss_options)
    if args.epochs is not None:
        training["epochs"] = args.epochs
    if args.lr is not None:
        training["learning_rate"] = args.lr
    model = InfEmbed(default_model_path(), **preset.model_overrides)
    freeze_passage_side(model)
    output = args.output or tempfile.mkdtemp(prefix="frozen_passage_side_")
    training_args = TrainingArguments(output_dir=output, show_progress_bar=False, **training)
    result = Trainer(model, training_args, args.data_root / "infir-marco" / "train.jsonl").train()
    model.eval()
    start = time.perf_counter()
    metrics = evaluate(build_evaluators(args.data_root, batch_size=64), model)
    row = {
        "training": training,
        "train_seconds": round(result.train_seconds, 1),
        "eval_seconds": round(time.perf_counter() - start, 1),
        "torch_threads": torch.get_num_threads(),
        **metrics,
    }
    name = f"frozen passages, {training['loss']} {training.get('loss_options') or ''}".strip()
    print(markdown([{"model": name, "train_seconds": row["train_seconds"], "results": metrics}], list(TASKS)))
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
