"""Read foreign model folders (sentence-transformers, plain transformers) into an `InfEmbedConfig`.

Only configuration is read here; weights are loaded by :mod:`inf_embed.hub`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from inf_embed.config import InfEmbedConfig

logger = logging.getLogger(__name__)

ST_MODULES_FILE = "modules.json"

# sentence-transformers pooling modes we reproduce exactly, by their 6.x name.
_ST_POOLING_MODES = {"mean": "mean", "cls": "cls", "lasttoken": "last"}
_ST_LEGACY_POOLING_KEYS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_lasttoken": "last",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
}


@dataclass
class ForeignModel:
    """What a foreign folder says about the model, beyond the backbone itself.

    Attributes:
        config: the equivalent InfEmbedConfig.
        backbone_folder: folder holding the transformers backbone (config.json + weights + tokenizer).
        dense_folder: folder of a sentence-transformers Dense module to use as the projection, or None.
    """

    config: InfEmbedConfig
    backbone_folder: str
    dense_folder: str | None = None


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


def is_decoder_config(hf_config: Any) -> bool:
    """Whether a transformers config describes a decoder-only (causal LM) backbone.

    Decided by the model type: a type with a causal-LM head and no masked-LM head (GPT-2, Llama, Qwen2, ...).
    BERT-like types have both and stay encoders.
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if getattr(hf_config, "is_encoder_decoder", False):
        return False
    model_type = getattr(hf_config, "model_type", "")
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return True
    architectures = getattr(hf_config, "architectures", None) or []
    return model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES and any(a.endswith("ForCausalLM") for a in architectures)


def config_from_transformers(folder: str, hf_config: Any) -> InfEmbedConfig:
    """Config for a plain transformers folder: mean pooling for encoders; last token, left padding for decoders."""
    max_positions = getattr(hf_config, "max_position_embeddings", None) or 512
    limit = min(512, int(max_positions))
    decoder = is_decoder_config(hf_config)
    return InfEmbedConfig(
        backbone=os.path.abspath(folder),
        pooling="last" if decoder else "mean",
        padding_side="left" if decoder else "right",
        normalize=False,
        max_query_length=min(256, limit),
        max_instruction_length=min(256, limit),
        max_passage_length=limit,
    )


def read_sentence_transformers_folder(folder: str, hf_config: Any) -> ForeignModel:
    """Map a sentence-transformers folder (modules.json, Pooling, Normalize, Dense) onto an InfEmbedConfig.

    Raises:
        ValueError: a module we cannot reproduce exactly (e.g. max pooling, a Dense layer with an activation),
            naming the module and its file.
    """
    modules_path = os.path.join(folder, ST_MODULES_FILE)
    modules = _read_json(modules_path)
    if not isinstance(modules, list):
        raise ValueError(f"{modules_path} must hold a list of modules")
    base = config_from_transformers(folder, hf_config)
    pooling, normalize, dense_folder, backbone_folder = base.pooling, False, None, folder
    max_length: int | None = None
    seen_dense = False
    normalized_at: str | None = None
    for entry in sorted(modules, key=lambda m: m.get("idx", 0)):
        module_type = str(entry.get("type", ""))
        short = module_type.rsplit(".", 1)[-1]
        path = os.path.join(folder, entry.get("path", ""))
        if normalized_at is not None and short != "Normalize":
            # inf_embed normalises last, after the projection: a module after Normalize would see other inputs
            raise ValueError(
                f"{modules_path}: module {module_type!r} after Normalize ({normalized_at}) is not supported by "
                "inf_embed (it normalises last)"
            )
        if short == "Transformer":
            backbone_folder = path
            max_length = _st_max_length(path)
        elif short == "Pooling":
            pooling = _st_pooling_mode(os.path.join(path, "config.json"))
        elif short == "Normalize":
            normalize = True
            normalized_at = f"idx {entry.get('idx')}"
        elif short == "Dense":
            if seen_dense:
                raise ValueError(f"{modules_path}: more than one Dense module is not supported")
            seen_dense = True
            dense_folder = path
            _check_dense(os.path.join(path, "config.json"))
        else:
            raise ValueError(
                f"{modules_path}: module {module_type!r} is not supported by inf_embed "
                "(supported: Transformer, Pooling, Dense without activation, Normalize)"
            )
    if max_length is None:
        max_length = base.max_passage_length
    config_st_path = os.path.join(folder, "config_sentence_transformers.json")
    prompts = {"query": "", "document": ""}
    similarity_fn_name = "cosine"
    if os.path.exists(config_st_path):
        config_st = _read_json(config_st_path)
        prompts.update({k: v for k, v in (config_st.get("prompts") or {}).items() if isinstance(v, str)})
        similarity_fn_name = config_st.get("similarity_fn_name") or "cosine"
        # sentence-transformers applies these to every encode call; InfEmbed's config has no field for them
        hints = {
            "default_prompt_name": "pass prompt_name={!r} to encode",
            "truncate_dim": "pass truncate_dim={!r} to InfEmbed or encode",
        }
        for key, hint in hints.items():
            if config_st.get(key) is not None:
                logger.warning(
                    "%s sets %s=%r, which inf_embed does not apply by default; %s for sentence-transformers' "
                    "embeddings",
                    config_st_path,
                    key,
                    config_st[key],
                    hint.format(config_st[key]),
                )
    projection_dim = None
    if dense_folder is not None:
        projection_dim = int(_read_json(os.path.join(dense_folder, "config.json"))["out_features"])
    config = InfEmbedConfig(
        backbone=os.path.abspath(folder),
        pooling=pooling,
        padding_side=base.padding_side,
        normalize=normalize,
        max_query_length=max_length,
        max_instruction_length=max_length,
        max_passage_length=max_length,
        projection_dim=projection_dim,
        similarity_fn_name=similarity_fn_name,
        prompts=prompts,
    )
    return ForeignModel(config=config, backbone_folder=backbone_folder, dense_folder=dense_folder)


def _st_max_length(transformer_folder: str) -> int | None:
    """sentence-transformers' max_seq_length: legacy sentence_bert_config.json, else tokenizer_config.json."""
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        path = os.path.join(transformer_folder, name)
        if os.path.exists(path):
            value = _read_json(path).get(key)
            if isinstance(value, int) and 1 < value < 1_000_000:
                return value
    return None


def _st_pooling_mode(path: str) -> str:
    data = _read_json(path)
    modes: list[str]
    if "pooling_mode" in data:
        raw = data["pooling_mode"]
        modes = [raw] if isinstance(raw, str) else list(raw)
    else:
        modes = [mode for key, mode in _ST_LEGACY_POOLING_KEYS.items() if data.get(key)]
    if data.get("include_prompt") is False:
        raise ValueError(f"{path}: include_prompt=false pooling is not supported by inf_embed")
    if len(modes) != 1 or modes[0] not in _ST_POOLING_MODES and modes[0] not in ("mean", "cls", "last"):
        raise ValueError(
            f"{path}: pooling {modes} is not supported by inf_embed; supported: {sorted(_ST_POOLING_MODES)}"
        )
    return _ST_POOLING_MODES.get(modes[0], modes[0])


def _check_dense(path: str) -> None:
    data = _read_json(path)
    activation = str(data.get("activation_function", "torch.nn.modules.linear.Identity"))
    if not activation.endswith("Identity"):
        raise ValueError(f"{path}: Dense with activation {activation!r} is not supported by inf_embed (only Identity)")
