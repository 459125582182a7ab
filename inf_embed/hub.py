"""Model I/O: name -> folder (local or Hub), strict safetensors loading, atomic saving, Hub upload.

This is the only module that imports ``huggingface_hub``. A saved InfEmbed folder is::

    inf_embed_config.json          InfEmbedConfig
    config.json                    backbone transformers config
    model.safetensors              backbone weights, under the backbone's own names (AutoModel can read it)
    inf_embed_modules.safetensors  weights of our own modules (projection, ...), only when there are any
    tokenizer files
    README.md                      short model card

Loading is strict: a missing, corrupted or mismatching weights file raises with the file and the keys.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from inf_embed.compat import ST_MODULES_FILE, config_from_transformers, read_sentence_transformers_folder
from inf_embed.config import CONFIG_FILE_NAME, InfEmbedConfig

logger = logging.getLogger(__name__)

BACKBONE_WEIGHTS_FILE = "model.safetensors"
MODULES_WEIGHTS_FILE = "inf_embed_modules.safetensors"
DELTA_CONFIG_FILE = "inf_embed_delta.json"  # a delta folder (inf_embed.delta), told apart from a model folder


@dataclass
class LoadedParts:
    """Everything `InfEmbed` is built from."""

    config: InfEmbedConfig
    backbone: nn.Module
    tokenizer: Any
    module_state: dict[str, torch.Tensor]
    source: str
    # Our own folders must hold every module weight; a foreign backbone may get new, freshly initialised modules.
    strict_modules: bool = True


def resolve_folder(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: bool | str | None = None,
) -> str:
    """Return a local folder for a path or a Hub repo id (through ``snapshot_download``).

    Honours ``revision``, ``cache_dir``, ``token`` and offline mode (``HF_HUB_OFFLINE=1`` or
    ``local_files_only=True``), in which case the Hub cache must already hold the snapshot.
    """
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        return name
    if os.path.exists(name):
        raise NotADirectoryError(f"model path {name!r} is a file; expected a model folder or a Hub repo id")
    if name.count("/") > 1 or name.startswith((".", os.sep)):
        raise FileNotFoundError(f"model folder {name!r} does not exist")
    from huggingface_hub import snapshot_download

    return snapshot_download(
        repo_id=name,
        revision=revision,
        cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
        local_files_only=local_files_only,
        token=token,
    )


def load_parts(folder: str, config_overrides: dict[str, Any] | None = None) -> LoadedParts:
    """Load config, backbone, tokenizer and module weights from a local folder of any supported format."""
    from transformers import AutoConfig, AutoTokenizer

    overrides = dict(config_overrides or {})
    if os.path.exists(os.path.join(folder, CONFIG_FILE_NAME)):
        config = _apply_overrides(InfEmbedConfig.load(folder), overrides)
        backbone = _load_own_backbone(folder)
        module_state = _load_module_state(folder)
        tokenizer_folder = folder
        strict_modules = True
    elif os.path.exists(os.path.join(folder, "config.json")) or os.path.exists(os.path.join(folder, ST_MODULES_FILE)):
        if os.path.exists(os.path.join(folder, ST_MODULES_FILE)):
            hf_config = AutoConfig.from_pretrained(_st_backbone_folder(folder))
            foreign = read_sentence_transformers_folder(folder, hf_config)
            backbone_folder, config = foreign.backbone_folder, foreign.config
            module_state = _load_dense(foreign.dense_folder) if foreign.dense_folder else {}
        else:
            hf_config = AutoConfig.from_pretrained(folder)
            backbone_folder, config, module_state = folder, config_from_transformers(folder, hf_config), {}
        config = _apply_overrides(config, overrides)
        backbone = _load_foreign_backbone(backbone_folder)
        tokenizer_folder = backbone_folder
        strict_modules = False
    else:
        raise FileNotFoundError(
            f"{folder} is not a model folder: it has no {CONFIG_FILE_NAME} (inf_embed), {ST_MODULES_FILE} "
            "(sentence-transformers) or config.json (transformers)"
        )
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(tokenizer_folder), config.padding_side)
    return LoadedParts(config, backbone, tokenizer, module_state, source=folder, strict_modules=strict_modules)


def prepare_tokenizer(tokenizer: Any, padding_side: str) -> Any:
    """Set the padding side, and a pad token where the tokenizer has none (decoder tokenizers often do not).

    Raises:
        ValueError: the tokenizer has no pad, end-of-sequence or unknown token to pad with.
    """
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        # padding is masked out, so any id will do
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise ValueError(
                f"tokenizer {type(tokenizer).__name__} has no pad token and no eos or unk token to pad with; "
                "set tokenizer.pad_token before building the model"
            )
        tokenizer.pad_token = fallback
    return tokenizer


def _apply_overrides(config: InfEmbedConfig, overrides: dict[str, Any]) -> InfEmbedConfig:
    if not overrides:
        return config
    data = config.to_dict()
    data.update(overrides)
    return InfEmbedConfig.from_dict(data)


def _st_backbone_folder(folder: str) -> str:
    from inf_embed.compat import _read_json

    for entry in _read_json(os.path.join(folder, ST_MODULES_FILE)):
        if str(entry.get("type", "")).endswith("Transformer"):
            return os.path.join(folder, entry.get("path", ""))
    return folder


def _read_safetensors(path: str) -> dict[str, torch.Tensor]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights file {path} is missing")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise OSError(f"weights file {path} is corrupted or not a safetensors file: {error}") from None


def _key_mismatch_message(path: str, missing: list[str], unexpected: list[str]) -> str:
    return (
        f"weights in {path} do not match the model: missing keys {sorted(missing)}, "
        f"unexpected keys {sorted(unexpected)}"
    )


def _load_own_backbone(folder: str) -> nn.Module:
    """Build the backbone from its config.json and load model.safetensors strictly."""
    from transformers import AutoConfig, AutoModel

    path = os.path.join(folder, BACKBONE_WEIGHTS_FILE)
    state = _read_safetensors(path)
    hf_config = AutoConfig.from_pretrained(folder)
    float_dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
    dtype = float_dtypes.pop() if len(float_dtypes) == 1 else torch.float32
    backbone = AutoModel.from_config(hf_config, dtype=dtype)
    expected = set(backbone.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(_key_mismatch_message(path, missing, unexpected))
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"weights in {path} do not match the model: {error}") from None
    return backbone.eval()


def _load_foreign_backbone(folder: str) -> nn.Module:
    """AutoModel.from_pretrained, refusing any missing weight (except an unused BERT-style pooler)."""
    from transformers import AutoModel

    try:
        with _quiet_transformers_progress():
            backbone, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    except (OSError, ValueError, SafetensorError) as error:
        raise OSError(f"could not load backbone weights from {folder}: {error}") from None
    missing = [key for key in info.get("missing_keys", []) if not key.startswith("pooler.")]
    mismatched = info.get("mismatched_keys", [])
    if missing or mismatched:
        raise ValueError(
            f"weights in {folder} do not match the backbone: missing keys {sorted(missing)}, "
            f"mismatched keys {sorted(str(m) for m in mismatched)}"
        )
    ignored = info.get("unexpected_keys", [])
    if ignored:
        logger.debug("ignored %d checkpoint keys not used by the encoder: %s", len(ignored), sorted(ignored)[:10])
    return backbone.eval()


@contextlib.contextmanager
def _quiet_transformers_progress() -> Iterator[None]:
    """Hide transformers' per-load "Loading weights" bar (a library should not draw on stderr unasked)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _load_module_state(folder: str) -> dict[str, torch.Tensor]:
    path = os.path.join(folder, MODULES_WEIGHTS_FILE)
    return _read_safetensors(path) if os.path.exists(path) else {}


def _load_dense(dense_folder: str) -> dict[str, torch.Tensor]:
    """sentence-transformers Dense weights (``linear.weight`` / ``linear.bias``) as our ``projection.*``."""
    path = os.path.join(dense_folder, BACKBONE_WEIGHTS_FILE)
    if os.path.exists(path):
        state = _read_safetensors(path)
    else:
        bin_path = os.path.join(dense_folder, "pytorch_model.bin")
        if not os.path.exists(bin_path):
            raise FileNotFoundError(f"Dense module {dense_folder} has no model.safetensors or pytorch_model.bin")
        state = torch.load(bin_path, map_location="cpu", weights_only=True)
    state = {key.replace("linear.", "projection.", 1): value for key, value in state.items()}
    weight = state.get("projection.weight")
    if weight is not None and "projection.bias" not in state:
        # a Dense saved with bias=False: our projection always has one, and a zero bias is the same map
        state["projection.bias"] = weight.new_zeros(weight.shape[0])
    return state


def check_module_state(
    model: nn.Module, module_state: dict[str, torch.Tensor], source: str, strict: bool = True
) -> None:
    """Load our own (non-backbone) weights into ``model``.

    With ``strict`` (our own folders) every module weight must be present; otherwise (a foreign backbone with
    new modules, e.g. a projection asked for through a config override) absent ones keep their fresh
    initialisation. Unexpected keys are always an error.
    """
    expected = {key for key in model.state_dict() if not key.startswith("backbone.")}
    missing, unexpected = sorted(expected - set(module_state)), sorted(set(module_state) - expected)
    if missing and not strict:
        logger.info("new modules initialised from scratch (not in %s): %s", source, missing)
        missing = []
    if missing or unexpected:
        raise ValueError(_key_mismatch_message(os.path.join(source, MODULES_WEIGHTS_FILE), missing, unexpected))
    try:
        model.load_state_dict(module_state, strict=False)
    except RuntimeError as error:
        raise ValueError(f"weights in {os.path.join(source, MODULES_WEIGHTS_FILE)} do not match: {error}") from None


def save_folder(model: Any, path: str | os.PathLike) -> str:
    """Write ``model`` to ``path`` atomically: build in a temporary sibling folder, then rename into place.

    A crash while writing leaves any previous folder at ``path`` untouched. ``path`` must be new, empty, or a
    folder this library saved (a model or a delta), which is replaced whole.

    Raises:
        FileExistsError: ``path`` is a file, or a non-empty folder that holds no inf_embed model.
    """
    target = os.path.abspath(os.fspath(path))
    check_replaceable(target, "save_pretrained")
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.tmp-", dir=parent)
    try:
        _write_folder(model, staging)
        _replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _write_folder(model: Any, folder: str) -> None:
    model.config.save(folder)
    model.backbone.config.save_pretrained(folder)
    backbone_state = {k: v.detach().contiguous().cpu() for k, v in model.backbone.state_dict().items()}
    save_file(_untie(backbone_state), os.path.join(folder, BACKBONE_WEIGHTS_FILE), metadata={"format": "pt"})
    module_state = {
        k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if not k.startswith("backbone.")
    }
    if module_state:
        save_file(module_state, os.path.join(folder, MODULES_WEIGHTS_FILE), metadata={"format": "pt"})
    model.tokenizer.save_pretrained(folder)
    with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as handle:
        handle.write(_model_card(model.config))


def _untie(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights): store each one separately."""
    seen: set[int] = set()
    result = {}
    for key, value in state.items():
        pointer = value.untyped_storage().data_ptr()
        result[key] = value.clone() if pointer in seen else value
        seen.add(pointer)
    return result


# a folder holding one of these was written by this library (a model or a delta), so a new save may replace it
SAVED_FOLDER_MARKERS = (CONFIG_FILE_NAME, DELTA_CONFIG_FILE)


def check_replaceable(target: str, caller: str) -> None:
    """Refuse to save over a file or over a folder with someone else's files (a save replaces the whole folder).

    Args:
        target: absolute path the caller will replace.
        caller: the public function's name, for the message.

    Raises:
        FileExistsError: ``target`` is a file, or a non-empty folder without any of ``SAVED_FOLDER_MARKERS``.
    """
    if not os.path.lexists(target):
        return
    if not os.path.isdir(target):
        raise FileExistsError(f"{caller}: {target} is a file; expected the path of a folder to write")
    entries = sorted(os.listdir(target))
    if entries and not any(marker in entries for marker in SAVED_FOLDER_MARKERS):
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise FileExistsError(
            f"{caller}: {target} is a non-empty folder that holds no inf_embed model ({shown}); saving replaces "
            "the whole folder, so choose a new or empty folder"
        )


def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def give_plain_permissions(root: str) -> None:
    """Modes of ``root`` and everything under it as the umask gives new files and folders.

    ``tempfile.mkdtemp`` makes a staging folder private (0700) and some writers create private files; what a save
    publishes should be as readable as anything else the user writes.
    """
    umask = current_umask()
    os.chmod(root, 0o777 & ~umask)
    for current, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(current, name), 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(current, name), 0o666 & ~umask)


def _replace_dir(staging: str, target: str) -> None:
    """Move the finished ``staging`` folder to ``target`` (replacing it), with the permissions of a plain folder."""
    give_plain_permissions(staging)
    if not os.path.exists(target):
        os.replace(staging, target)
        return
    # a crash between the two renames leaves the previous folder at the hidden backup path beside ``target``
    backup = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.old-", dir=os.path.dirname(target))
    os.rmdir(backup)
    os.replace(target, backup)
    os.replace(staging, target)
    shutil.rmtree(backup, ignore_errors=True)


def _model_card(config: InfEmbedConfig) -> str:
    return (
        "---\nlibrary_name: inf-embed\npipeline_tag: sentence-similarity\ntags:\n- inf-embed\n"
        "- sentence-similarity\n- instruction-following\n---\n\n"
        "# InfEmbed model\n\n"
        f"Backbone: `{config.backbone}`; pooling `{config.pooling}`; instruction fusion `{config.fusion}`; "
        f"normalize `{config.normalize}`.\n\n"
        '```python\nfrom inf_embed import InfEmbed\n\nmodel = InfEmbed.from_pretrained("PATH_OR_REPO_ID")\n'
        'queries = model.encode_query(["..."], instruction="...")\n'
        'docs = model.encode_document(["..."])\nscores = model.similarity(queries, docs)\n```\n'
    )


def push_folder(
    model: Any,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    exist_ok: bool = True,
) -> str:
    """Save ``model`` to a temporary folder and upload it with ``HfApi.upload_folder``; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id=repo_id, private=private, exist_ok=exist_ok, repo_type="model")
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_folder(model, os.path.join(tmp, "model"))
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message or "Upload InfEmbed model",
            revision=revision,
            create_pr=create_pr,
            repo_type="model",
        )
    return (
        str(getattr(info, "pr_url", None) or getattr(info, "commit_url", info))
        if create_pr
        else str(getattr(info, "commit_url", info))
    )
