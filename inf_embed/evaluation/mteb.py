"""An MTEB encoder (``mteb.EncoderProtocol``, mteb >= 2) that passes query and instruction separately.

mteb's default sentence-transformers wrapper encodes ``batch["text"]``, which for instruction tasks is
``query + " " + instruction``; InfEmbed fuses the instruction through its own path, so this wrapper reads
``batch["query"]`` and ``batch["instruction"]`` and calls ``model.encode_query(queries, instruction=...)``::

    import mteb
    from inf_embed.evaluation import InfEmbedMTEBWrapper

    wrapper = InfEmbedMTEBWrapper(model)               # or InfEmbedMTEBWrapper("path/or/hub-id")
    results = mteb.evaluate(wrapper, mteb.get_tasks(["Core17InstructionRetrieval"]))

Pass the wrapper, not the model, to ``mteb.evaluate``. Needs the ``mteb`` extra (``pip install "inf-embed[mteb]"``);
mteb is imported only when a wrapper is created.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from inf_embed.evaluation.search import l2_normalize

if TYPE_CHECKING:
    from mteb.models.model_meta import ModelMeta

logger = logging.getLogger(__name__)

InstructionMode = Literal["separate", "concat", "none"]

__all__ = ["InfEmbedMTEBWrapper", "inf_embed_model_meta"]

_MTEB_HINT = 'pip install "inf-embed[mteb]"'


def _require_mteb() -> Any:
    try:
        import mteb
    except ImportError:
        raise ImportError(f"the MTEB wrapper needs mteb; install it with: {_MTEB_HINT}") from None
    return mteb


def inf_embed_model_meta(name: str, revision: str | None = None, **overrides: Any) -> ModelMeta:
    """An mteb ``ModelMeta`` for an InfEmbed model: cosine similarity, uses instructions, PyTorch.

    Args:
        name: ``"org/model"`` (mteb requires a slash; ``"inf-embed/"`` is prefixed when missing).
        revision: the model revision, if known.
        **overrides: any other ``ModelMeta`` field (``embed_dim``, ``max_tokens``, ``n_parameters``, ...).

    Returns:
        The ``ModelMeta``.
    """
    _require_mteb()
    from mteb.models.model_meta import ModelMeta

    fields: dict[str, Any] = {
        "name": name if "/" in name else f"inf-embed/{name}",
        "revision": revision,
        "similarity_fn_name": "cosine",
        "use_instructions": True,
        "framework": ["PyTorch"],
        "open_weights": True,
    }
    fields.update(overrides)
    return ModelMeta.create_empty(overwrites=fields)


class InfEmbedMTEBWrapper:
    """mteb encoder around an :class:`~inf_embed.InfEmbed` (or any object with its ``encode_query`` /
    ``encode_document``).

    Args:
        model: the model, or a name / path given to ``InfEmbed.from_pretrained``.
        revision: Hub revision used when ``model`` is a name.
        device: device used when ``model`` is a name.
        instruction_mode: ``"separate"`` (default) passes ``batch["instruction"]`` as ``instruction=``;
            ``"concat"`` encodes mteb's ``query + " " + instruction`` text with no instruction (the baseline);
            ``"none"`` drops instructions.
        task_instructions: ``{task_name: instruction}`` used for queries that carry no per-query instruction
            (e.g. a BEIR task description).
        model_name: the name in result files (default: the name given, or the class name).
        **model_kwargs: passed to ``InfEmbed.from_pretrained`` when ``model`` is a name.
    """

    def __init__(
        self,
        model: Any,
        revision: str | None = None,
        *,
        device: str | None = None,
        instruction_mode: InstructionMode = "separate",
        task_instructions: Mapping[str, str] | None = None,
        model_name: str | None = None,
        **model_kwargs: Any,
    ) -> None:
        _require_mteb()
        if instruction_mode not in ("separate", "concat", "none"):
            raise ValueError(f"instruction_mode must be 'separate', 'concat' or 'none', got {instruction_mode!r}")
        if isinstance(model, str):
            from inf_embed import InfEmbed

            model_name = model_name or model
            model = InfEmbed.from_pretrained(model, revision=revision, device=device, **model_kwargs)
        for method in ("encode_query", "encode_document"):
            if not callable(getattr(model, method, None)):
                raise TypeError(f"model must have `{method}` (InfEmbed's interface), got {type(model).__name__}")
        self.model = model
        self.revision = revision
        self.instruction_mode = instruction_mode
        self.task_instructions = dict(task_instructions or {})
        self.model_name = model_name or type(model).__name__

    # -- mteb.EncoderProtocol -----------------------------------------------------------------------------------------

    def encode(
        self,
        inputs: Iterable[Mapping[str, Any]],
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        prompt_type: Any = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Encode mteb batches: queries with their instructions, documents as text.

        Args:
            inputs: mteb's DataLoader of batches (dicts of lists: ``text``, and for queries ``query`` and optional
                ``instruction``), or a plain list of texts.
            task_metadata: the task's ``TaskMetadata`` (its ``name`` selects ``task_instructions``).
            hf_split: unused.
            hf_subset: unused.
            prompt_type: ``PromptType.query``, ``PromptType.document`` or None (symmetric tasks: plain text).
            **kwargs: mteb's ``EncodeKwargs``: ``batch_size``, ``show_progress_bar`` and ``precision`` are passed on
                to the model.

        Returns:
            (N, d) float32, L2-normalised; with ``precision`` other than float32, the model's quantised rows
            (int8, uint8, or packed bits for binary / ubinary), as mteb's sentence-transformers wrapper returns them.
        """
        encode_kwargs = {"normalize_embeddings": True, "convert_to_numpy": True}
        if "batch_size" in kwargs:
            encode_kwargs["batch_size"] = kwargs["batch_size"]
        if "show_progress_bar" in kwargs:
            encode_kwargs["show_progress_bar"] = kwargs["show_progress_bar"]
        # mteb records `precision` in the result's model metadata (output_dtypes), so it must reach the model
        quantized = kwargs.get("precision") not in (None, "float32")
        if quantized:
            encode_kwargs["precision"] = kwargs["precision"]
        side = getattr(prompt_type, "value", prompt_type)
        task_instruction = self.task_instructions.get(getattr(task_metadata, "name", ""))
        if isinstance(inputs, (list, tuple)) and (not inputs or isinstance(inputs[0], str)):
            inputs = [{"text": list(inputs)}]  # a plain list of texts (mteb 1.x style): one batch, no instructions
        chunks = []
        for batch in inputs:
            texts = list(batch["text"])
            if side == "query":
                chunks.append(self._encode_queries(batch, texts, task_instruction, encode_kwargs))
            elif side == "document" or not callable(getattr(self.model, "encode", None)):
                chunks.append(self._to_numpy(self.model.encode_document(texts, **encode_kwargs)))
            else:
                chunks.append(self._to_numpy(self.model.encode(texts, **encode_kwargs)))
        if not chunks:
            return np.zeros((0, 0), dtype=np.float32)
        if quantized:
            return np.concatenate(chunks)
        return l2_normalize(np.concatenate(chunks).astype(np.float32, copy=False))

    def _encode_queries(
        self, batch: Mapping[str, Any], texts: list[str], task_instruction: str | None, encode_kwargs: dict[str, Any]
    ) -> np.ndarray:
        queries = list(batch.get("query") or texts)
        per_query = batch.get("instruction")
        if per_query is not None:
            instructions: list[str | None] = [i if i else task_instruction for i in per_query]
        else:
            instructions = [task_instruction] * len(queries)
        if self.instruction_mode == "separate":
            instruction: list[str | None] | None = instructions if any(instructions) else None
            return self._to_numpy(self.model.encode_query(queries, instruction=instruction, **encode_kwargs))
        if self.instruction_mode == "concat":
            joined = [f"{q} {i}".strip() if i else q for q, i in zip(queries, instructions)]
            return self._to_numpy(self.model.encode_query(joined, instruction=None, **encode_kwargs))
        return self._to_numpy(self.model.encode_query(queries, instruction=None, **encode_kwargs))

    @staticmethod
    def _to_numpy(embeddings: Any) -> np.ndarray:
        # keeps the dtype: quantised rows (int8, uint8) stay integers; `encode` casts float rows to float32
        if isinstance(embeddings, torch.Tensor):
            embeddings = embeddings.detach().cpu()
            embeddings = (embeddings.float() if embeddings.is_floating_point() else embeddings).numpy()
        return np.asarray(embeddings)

    @staticmethod
    def _unit_rows(embeddings: Any) -> torch.Tensor:
        if isinstance(embeddings, torch.Tensor):
            tensor = embeddings.detach().float().cpu()
        else:
            tensor = torch.from_numpy(np.asarray(embeddings, dtype=np.float32))
        return torch.nn.functional.normalize(tensor.reshape(-1, tensor.shape[-1]), dim=-1)

    def similarity(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
        """Cosine similarity of all pairs: (n1, d), (n2, d) -> (n1, n2)."""
        return self._unit_rows(embeddings1) @ self._unit_rows(embeddings2).T

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
        """Cosine similarity of aligned pairs: (n, d), (n, d) -> (n,)."""
        return (self._unit_rows(embeddings1) * self._unit_rows(embeddings2)).sum(dim=-1)

    @property
    def mteb_model_meta(self) -> ModelMeta:
        """The model's ``ModelMeta`` (name, revision, embedding size, max tokens, parameter count)."""
        overrides: dict[str, Any] = {}
        if callable(getattr(self.model, "get_sentence_embedding_dimension", None)):
            overrides["embed_dim"] = self.model.get_sentence_embedding_dimension()
        max_len = getattr(self.model, "max_seq_length", None)
        if isinstance(max_len, int):
            overrides["max_tokens"] = max_len
        if callable(getattr(self.model, "parameters", None)):
            overrides["n_parameters"] = sum(p.numel() for p in self.model.parameters())
        return inf_embed_model_meta(self.model_name, self.revision, **overrides)
