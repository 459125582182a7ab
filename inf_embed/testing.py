"""Helpers for tests (ours and users' CI): tiny models and an offline Hugging Face Hub.

Nothing here touches the network: models are built from a ``BertConfig`` with random weights, and the Hub is a
local cache folder laid out as ``huggingface_hub`` expects.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any


def make_tiny_model(
    path: str | os.PathLike,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    max_position_embeddings: int = 128,
    tokenizer_source: str | os.PathLike | None = None,
    seed: int = 0,
) -> str:
    """Write a tiny random BERT (transformers folder: config, safetensors, tokenizer) to ``path``.

    The tokenizer is all-MiniLM-L6-v2's (from the ``default`` extra) unless ``tokenizer_source`` names a folder.
    Returns the folder path.
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    if tokenizer_source is None:
        from inf_embed.model import default_model_path

        tokenizer_source = default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(os.fspath(tokenizer_source))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=hidden_size * 2,
        max_position_embeddings=max_position_embeddings,
    )
    torch.manual_seed(seed)
    model = BertModel(config).eval()
    tokenizer.model_max_length = max_position_embeddings
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return os.fspath(path)


def perturb_weights(model: Any, pattern: str = r"attention\.", std: float = 0.05, seed: int = 0) -> Any:
    """Add seeded Gaussian noise (``std``) to the backbone weights whose names match ``pattern``, in place, as a
    stand-in for fine-tuning them (e.g. to test deltas and asymmetric document sides). Returns ``model``."""
    import re

    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.backbone.named_parameters():
            if re.search(pattern, name):
                noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
                param.add_(noise.to(param.device, param.dtype) * std)
    return model


def populate_hf_cache(
    model_dir: str | os.PathLike,
    cache_dir: str | os.PathLike,
    repo_id: str,
    *,
    commit: str | None = None,
    revision: str = "main",
) -> Path:
    """Copy a model folder into a Hugging Face cache as ``repo_id`` at ``revision``; returns the snapshot path."""
    commit = commit or uuid.uuid4().hex + uuid.uuid4().hex[:8]
    repo_folder = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_folder / "snapshots" / commit
    if snapshot.exists():
        shutil.rmtree(snapshot)
    shutil.copytree(model_dir, snapshot)
    (repo_folder / "refs").mkdir(parents=True, exist_ok=True)
    (repo_folder / "refs" / revision).write_text(commit)
    return snapshot


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Put ``huggingface_hub`` (and so transformers) in offline mode for the duration of the block."""
    import huggingface_hub.constants as constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


@contextlib.contextmanager
def fake_hub(cache_dir: str | os.PathLike) -> Iterator[list[dict[str, Any]]]:
    """Redirect ``HfApi.create_repo`` / ``HfApi.upload_folder`` into a local cache folder.

    Each upload becomes a new snapshot of the repo in ``cache_dir`` (loadable offline afterwards). Yields the
    list of recorded upload calls.
    """
    from huggingface_hub import HfApi

    uploads: list[dict[str, Any]] = []
    original_create, original_upload = HfApi.create_repo, HfApi.upload_folder

    def create_repo(self: HfApi, repo_id: str, **kwargs: Any) -> Any:
        return SimpleNamespace(repo_id=repo_id, url=f"https://huggingface.co/{repo_id}")

    def upload_folder(
        self: HfApi, *, repo_id: str, folder_path: str, revision: str | None = None, **kwargs: Any
    ) -> Any:
        commit = uuid.uuid4().hex + uuid.uuid4().hex[:8]
        populate_hf_cache(folder_path, cache_dir, repo_id, commit=commit, revision=revision or "main")
        uploads.append({"repo_id": repo_id, "folder_path": folder_path, "revision": revision, **kwargs})
        url = f"https://huggingface.co/{repo_id}/commit/{commit}"
        return SimpleNamespace(commit_url=url, pr_url=None, oid=commit)

    HfApi.create_repo, HfApi.upload_folder = create_repo, upload_folder  # type: ignore[method-assign]
    try:
        yield uploads
    finally:
        HfApi.create_repo, HfApi.upload_folder = original_create, original_upload  # type: ignore[method-assign]
