"""Exact top-k search over corpus chunks, and an on-disk cache of corpus embeddings.

Memory stays bounded whatever the corpus size: the corpus is read one chunk of ``corpus_chunk_size`` rows at a
time (from an array, a memory-mapped array or a cached safetensors file), scored against ``query_batch_size``
queries at a time, and merged into a running top-k. Peak extra memory is about
``query_batch_size * corpus_chunk_size * 4`` bytes for the score block, plus the chunk and the (Q, k) result.

Ordering is deterministic: by score descending, then by a tie order, by default the corpus index ascending;
the evaluators pass :func:`doc_id_tie_order` so that the top-k cut breaks exact ties by document id descending,
as the metrics rank ties (trec_eval, mteb). Exact ties are resolved the same way whatever the chunking. Scores
are not bit-identical across chunkings, though: an fp32 matrix product rounds differently with the block shape
(``corpus_chunk_size``, ``query_batch_size``, device), so two documents whose scores differ by about 1e-7 can swap
places when the chunking changes.

The cache stores one safetensors file per (model, corpus) pair, keyed by a fingerprint of the model (class,
config and every weight) and of the corpus (ids and texts), so a changed model or corpus never reuses stale
embeddings. Files are written atomically (temporary file, then ``os.replace``) and read memory-mapped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from inf_embed.hub import current_umask

logger = logging.getLogger(__name__)

ScoreFunction = Literal["cos", "dot"]

# Bumped when the cache layout or what goes into a fingerprint changes.
CACHE_FORMAT_VERSION = "1"
_TENSOR_NAME = "embeddings"

__all__ = [
    "CACHE_FORMAT_VERSION",
    "CachedEmbeddings",
    "EmbeddingCache",
    "RowSource",
    "corpus_fingerprint",
    "doc_id_tie_order",
    "encode_corpus",
    "exact_search",
    "l2_normalize",
    "model_fingerprint",
    "rerank",
    "search_to_run",
]


class RowSource(Protocol):
    """Anything exact_search can read corpus rows from: ``len(x)`` rows, ``x[a:b]`` -> (b - a, d) array."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice, /) -> Any: ...


def _as_float_tensor(rows: Any, device: torch.device) -> torch.Tensor:
    tensor = rows if isinstance(rows, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(rows))
    if tensor.dtype != torch.float64:
        tensor = tensor.to(torch.float32)
    return tensor.to(device)


def _prepare(rows: torch.Tensor, score_function: ScoreFunction) -> torch.Tensor:
    return torch.nn.functional.normalize(rows, p=2, dim=-1) if score_function == "cos" else rows


def _chunk_top_k(block: torch.Tensor, k: int, tie_order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of each row of ``block`` (B, C), by value descending then ``tie_order`` (C,) ascending.

    ``torch.topk`` picks an arbitrary subset of values tied at the k-th place, so rows with such a tie are
    re-ranked with a full stable sort; elsewhere topk's candidates are re-ordered by tie order, then stably by value.
    """
    values, columns = torch.topk(block, k, dim=1)  # (B, k)
    order = torch.argsort(tie_order[columns], dim=1)  # tie orders are distinct, so no stability needed
    values, columns = torch.gather(values, 1, order), torch.gather(columns, 1, order)
    values, order = torch.sort(values, dim=1, descending=True, stable=True)
    columns = torch.gather(columns, 1, order)
    kth = values[:, -1:]  # (B, 1)
    boundary_tie = (block == kth).sum(dim=1) > (values == kth).sum(dim=1)
    if bool(boundary_tie.any()):
        rows = boundary_tie.nonzero().squeeze(1)
        by_tie = torch.argsort(tie_order)  # (C,) columns in tie order
        full_values, full_order = torch.sort(block[rows][:, by_tie], dim=1, descending=True, stable=True)
        values[rows], columns[rows] = full_values[:, :k], by_tie[full_order[:, :k]]
    return values, columns


def _check_finite(rows: torch.Tensor, what: str) -> None:
    """Raise if ``rows`` (n, d) holds NaN or infinity: ``torch.topk`` would rank a NaN score above every number."""
    bad = ~torch.isfinite(rows).all(dim=1)
    if bool(bad.any()):
        _raise_non_finite(what, int(bad.sum()), rows.shape[0], int(bad.nonzero()[0, 0]))


def _raise_non_finite(what: str, bad: int, total: int, first: int) -> None:
    raise ValueError(
        f"{what}: {bad} of {total} rows hold NaN or infinity (first: row {first}); check the encoder (e.g. an "
        "fp16 overflow)"
    )


def doc_id_tie_order(doc_ids: Sequence[str]) -> np.ndarray:
    """The tie order that makes :func:`exact_search` break exact ties by document id, descending.

    That is how the metrics rank tied documents (trec_eval's ``comp_sim_docno``, mteb >= 2), so the top-k cut keeps
    the same tied documents as a ranking of the whole corpus would, whatever the corpus order.

    Args:
        doc_ids: N distinct ids, one per corpus row.

    Returns:
        (N,) int64: the position of each row when the ids are sorted in descending order.
    """
    by_id = sorted(range(len(doc_ids)), key=lambda row: doc_ids[row], reverse=True)
    order = np.empty(len(doc_ids), dtype=np.int64)
    order[by_id] = np.arange(len(doc_ids), dtype=np.int64)
    return order


def exact_search(
    query_embeddings: np.ndarray | torch.Tensor,
    corpus_embeddings: np.ndarray | torch.Tensor | RowSource,
    top_k: int | None = 100,
    *,
    score_function: ScoreFunction = "cos",
    corpus_chunk_size: int = 16384,
    query_batch_size: int = 1024,
    device: str | torch.device | None = None,
    show_progress_bar: bool | None = None,
    tie_order: np.ndarray | Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k retrieval of every query against the whole corpus, chunk by chunk.

    Args:
        query_embeddings: (Q, d) float queries.
        corpus_embeddings: (N, d) float corpus: an array, a tensor, a ``np.memmap`` or a :class:`CachedEmbeddings`;
            only ``corpus_chunk_size`` rows are materialised at a time.
        top_k: results per query; ``None`` or a value above N ranks the whole corpus.
        score_function: ``"cos"`` (both sides L2-normalised in fp32) or ``"dot"``.
        corpus_chunk_size: corpus rows scored per step.
        query_batch_size: queries scored per step.
        device: where the scoring runs (default CPU).
        show_progress_bar: a tqdm bar over corpus chunks; default on when this logger is at INFO.
        tie_order: (N,) distinct ints; among exactly tied scores the row with the smaller value ranks first (and
            survives the top-k cut). Default: the corpus index. :func:`doc_id_tie_order` gives the metrics' order.

    Returns:
        ``(scores, indices)``: (Q, k) float32 scores and (Q, k) int64 corpus row indices, k = min(top_k, N), each
        row sorted by score descending with ties by ``tie_order`` ascending. Exact ties are resolved the same way
        whatever the chunking; scores within about 1e-7 of each other may swap when the chunking changes (fp32
        rounding depends on the block shape).

    Raises:
        ValueError: for a bad shape or option, or embeddings holding NaN or infinity (naming the side and the
            number of rows).
    """
    if score_function not in ("cos", "dot"):
        raise ValueError(f"score_function must be 'cos' or 'dot', got {score_function!r}")
    for name, value in (("corpus_chunk_size", corpus_chunk_size), ("query_batch_size", query_batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    run_device = torch.device(device) if device is not None else torch.device("cpu")
    raw_queries = _as_float_tensor(query_embeddings, run_device)
    if raw_queries.ndim != 2:
        raise ValueError(f"query_embeddings must be 2-D (Q, d), got shape {tuple(raw_queries.shape)}")
    _check_finite(raw_queries, "query_embeddings")
    queries = _prepare(raw_queries, score_function)
    num_docs = len(corpus_embeddings)
    num_queries, dim = queries.shape
    if tie_order is None:
        ties = torch.arange(num_docs, dtype=torch.int64, device=run_device)
    else:
        ties = torch.as_tensor(np.asarray(tie_order, dtype=np.int64), device=run_device)
        if ties.shape != (num_docs,) or torch.unique(ties).numel() != num_docs:
            raise ValueError(
                f"tie_order must hold {num_docs} distinct ints, one per corpus row, got {tuple(ties.shape)}"
            )
    k = num_docs if top_k is None else min(top_k, num_docs)
    best_values = torch.empty((num_queries, 0), dtype=queries.dtype, device=run_device)
    best_indices = torch.empty((num_queries, 0), dtype=torch.int64, device=run_device)
    if k == 0 or num_queries == 0:
        return best_values.cpu().numpy().astype(np.float32), best_indices.cpu().numpy()

    starts = range(0, num_docs, corpus_chunk_size)
    with torch.inference_mode():
        for start in _progress(starts, show_progress_bar, "search"):
            raw_chunk = _as_float_tensor(corpus_embeddings[start : start + corpus_chunk_size], run_device)
            if raw_chunk.ndim != 2 or raw_chunk.shape[1] != dim:
                raise ValueError(
                    f"corpus_embeddings rows must have dimension {dim} like the queries, "
                    f"got shape {tuple(raw_chunk.shape)}"
                )
            _check_corpus_finite(corpus_embeddings, raw_chunk, start, corpus_chunk_size, run_device)
            chunk = _prepare(raw_chunk, score_function).to(queries.dtype)
            chunk_ties = ties[start : start + chunk.shape[0]]
            chunk_k = min(k, chunk.shape[0])
            new_values, new_indices = [], []
            for q_start in range(0, num_queries, query_batch_size):
                block = queries[q_start : q_start + query_batch_size] @ chunk.T  # (B, C)
                values, columns = _chunk_top_k(block, chunk_k, chunk_ties)
                merged_values = torch.cat([best_values[q_start : q_start + query_batch_size], values], dim=1)
                merged_indices = torch.cat([best_indices[q_start : q_start + query_batch_size], columns + start], dim=1)
                # Both halves are already in (score, tie order) order, but interleaving them needs both keys.
                order = torch.argsort(ties[merged_indices], dim=1)
                merged_values, merged_indices = (
                    torch.gather(merged_values, 1, order),
                    torch.gather(merged_indices, 1, order),
                )
                merged_values, order = torch.sort(merged_values, dim=1, descending=True, stable=True)
                new_values.append(merged_values[:, :k])
                new_indices.append(torch.gather(merged_indices, 1, order)[:, :k])
            best_values, best_indices = torch.cat(new_values), torch.cat(new_indices)
    return best_values.to(torch.float32).cpu().numpy(), best_indices.cpu().numpy()


def _check_corpus_finite(corpus: Any, chunk: torch.Tensor, start: int, chunk_size: int, device: torch.device) -> None:
    """Raise on the first corpus chunk with NaN or infinity, counting the bad rows of the whole corpus."""
    if bool(torch.isfinite(chunk).all()):
        return
    bad, first = 0, None
    for begin in range(start, len(corpus), chunk_size):  # only on failure: one more read to report the full count
        rows = _as_float_tensor(corpus[begin : begin + chunk_size], device)
        bad_rows = ~torch.isfinite(rows).all(dim=1)
        if first is None and bool(bad_rows.any()):
            first = begin + int(bad_rows.nonzero()[0, 0])
        bad += int(bad_rows.sum())
    _raise_non_finite("corpus_embeddings", bad, len(corpus), first)


def rerank(
    query_embeddings: np.ndarray | torch.Tensor,
    corpus_embeddings: np.ndarray | torch.Tensor | RowSource,
    candidates: Sequence[Sequence[int]],
    *,
    score_function: ScoreFunction = "cos",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Score each query against its own candidate rows only (the reranking setting of FollowIR).

    Args:
        query_embeddings: (Q, d) float.
        corpus_embeddings: (N, d) float, any :class:`RowSource`.
        candidates: Q lists of corpus row indices.
        score_function: ``"cos"`` or ``"dot"``.

    Returns:
        Q pairs ``(scores, indices)``, each sorted by score descending, ties in candidate-list order.

    Raises:
        ValueError: if the queries or a query's candidate rows hold NaN or infinity.
    """
    raw_queries = _as_float_tensor(query_embeddings, torch.device("cpu"))
    _check_finite(raw_queries, "query_embeddings")
    queries = _prepare(raw_queries, score_function)
    if len(candidates) != queries.shape[0]:
        raise ValueError(f"candidates has {len(candidates)} lists, query_embeddings has {queries.shape[0]} rows")
    results = []
    with torch.inference_mode():
        for qi, rows in enumerate(candidates):
            index = np.asarray(rows, dtype=np.int64)
            if index.size == 0:
                results.append((np.zeros(0, np.float32), index))
                continue
            if isinstance(corpus_embeddings, torch.Tensor):
                docs = corpus_embeddings[torch.from_numpy(index)]
            elif isinstance(corpus_embeddings, np.ndarray):
                docs = corpus_embeddings[index]
            else:
                docs = np.stack([np.asarray(corpus_embeddings[int(i) : int(i) + 1])[0] for i in index])
            raw_docs = _as_float_tensor(docs, torch.device("cpu"))
            _check_finite(raw_docs, f"corpus_embeddings (candidates of query {qi})")
            docs_t = _prepare(raw_docs, score_function).to(queries.dtype)
            scores = docs_t @ queries[qi]
            scores, order = torch.sort(scores, descending=True, stable=True)
            results.append((scores.to(torch.float32).numpy(), index[order.numpy()]))
    return results


def search_to_run(
    query_ids: Sequence[str], doc_ids: Sequence[str], scores: np.ndarray, indices: np.ndarray
) -> dict[str, dict[str, float]]:
    """Turn :func:`exact_search` output into a run ``{query_id: {doc_id: score}}`` inserted in rank order.

    Args:
        query_ids: Q ids, one per row.
        doc_ids: N ids, one per corpus row.
        scores: (Q, k) float.
        indices: (Q, k) int corpus rows.

    Returns:
        The run; insertion order is the ranking, which mteb's stable sorts (MRR, p-MRR) then keep.
    """
    if len(query_ids) != len(scores):
        raise ValueError(f"query_ids has {len(query_ids)} items, scores has {len(scores)} rows")
    return {
        qid: {doc_ids[int(i)]: float(s) for s, i in zip(row_scores, row_indices)}
        for qid, row_scores, row_indices in zip(query_ids, scores, indices)
    }


def _progress(iterable: Any, show: bool | None, desc: str) -> Any:
    if show is None:
        show = logger.isEnabledFor(logging.INFO)
    if not show:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        logger.debug("tqdm is not installed; no progress bar (pip install 'inf-embed[progress]')")
        return iterable
    return tqdm(iterable, desc=desc)


# ----------------------------------------------------------------------------------------------------------------
# Fingerprints and the embedding cache
# ----------------------------------------------------------------------------------------------------------------


def _hash_tensor(digest: Any, name: str, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().to("cpu").contiguous()
    digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    if tensor.numel():
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)


def model_fingerprint(model: Any) -> str:
    """A hex digest identifying a model's behaviour: its class, its config and every weight.

    Uses ``model.config.to_dict()`` (or ``model.config`` if it is a dict) and ``model.state_dict()``. Objects
    without a config contribute ``repr(model)`` instead (a sentence-transformers model's repr lists its modules,
    pooling and max length).

    Args:
        model: an :class:`~inf_embed.InfEmbed`, a ``torch.nn.Module`` or any object with ``state_dict()``.

    Returns:
        A 32-character hex string.

    Raises:
        TypeError: if the model has neither a config nor a ``state_dict``.
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{type(model).__module__}.{type(model).__qualname__}|".encode())
    config = getattr(model, "config", None)
    has_state = callable(getattr(model, "state_dict", None))
    if config is None and not has_state:
        raise TypeError(
            f"model_fingerprint: {type(model).__name__} has neither `config` nor `state_dict()`; "
            "pass an explicit fingerprint instead"
        )
    if config is not None:
        as_dict = config.to_dict() if callable(getattr(config, "to_dict", None)) else config
        digest.update(json.dumps(as_dict, sort_keys=True, default=str).encode())
    else:
        digest.update(repr(model).encode())
    if has_state:
        for name, tensor in sorted(model.state_dict().items()):
            if isinstance(tensor, torch.Tensor):
                _hash_tensor(digest, name, tensor)
    return digest.hexdigest()


def corpus_fingerprint(doc_ids: Sequence[str], texts: Sequence[str]) -> str:
    """A hex digest of a corpus: its ids and texts, in order.

    Args:
        doc_ids: N ids.
        texts: N texts.

    Returns:
        A 32-character hex string.
    """
    if len(doc_ids) != len(texts):
        raise ValueError(f"doc_ids has {len(doc_ids)} items, texts has {len(texts)}")
    digest = hashlib.blake2b(digest_size=16)
    for doc_id, text in zip(doc_ids, texts):
        for part in (str(doc_id), text):
            raw = part.encode("utf-8", "surrogatepass")
            digest.update(len(raw).to_bytes(8, "little"))
            digest.update(raw)
    return digest.hexdigest()


class CachedEmbeddings:
    """Memory-mapped (N, d) float32 embeddings in a safetensors file; slicing reads only those rows.

    Args:
        path: a file written by :class:`EmbeddingCache`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from safetensors import SafetensorError, safe_open

        self.path = Path(path)
        try:
            self._file = safe_open(str(self.path), framework="np")
        except SafetensorError as error:
            raise ValueError(f"{self.path} is not a readable safetensors file: {error}") from error
        if _TENSOR_NAME not in self._file.keys():
            raise ValueError(f"{self.path} holds no '{_TENSOR_NAME}' tensor (keys: {list(self._file.keys())})")
        self._slice = self._file.get_slice(_TENSOR_NAME)
        self.shape: tuple[int, int] = tuple(self._slice.get_shape())  # type: ignore[assignment]
        self.metadata: dict[str, str] = self._file.metadata() or {}

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: slice) -> np.ndarray:
        if not isinstance(index, slice):
            raise TypeError(f"CachedEmbeddings supports row slices only, got {type(index).__name__}")
        start, stop, step = index.indices(len(self))  # safetensors rejects out-of-range bounds; numpy clips
        if stop <= start:
            return np.zeros((0, *self.shape[1:]), dtype=np.float32)
        rows = self._slice[start:stop]
        return rows if step == 1 else rows[::step]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = self._slice[:]
        return array if dtype is None else array.astype(dtype)

    def to_numpy(self) -> np.ndarray:
        """All rows as one (N, d) array in memory."""
        return self._slice[:]


class EmbeddingCache:
    """A folder of safetensors files of corpus embeddings, one per (model fingerprint, corpus fingerprint, options).

    Args:
        cache_dir: the folder; created on first write.
    """

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.cache_dir = Path(cache_dir)

    @staticmethod
    def key(model_fp: str, corpus_fp: str, options: Mapping[str, Any] | None = None) -> str:
        """The file stem for a model, a corpus and the encode options that change embeddings."""
        from inf_embed import __version__

        payload = json.dumps(
            {
                "model": model_fp,
                "corpus": corpus_fp,
                "options": dict(options or {}),
                "version": __version__,
                "format": CACHE_FORMAT_VERSION,
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()

    def path(self, key: str) -> Path:
        """Where the embeddings of ``key`` live."""
        return self.cache_dir / f"corpus-{key}.safetensors"

    def load(self, key: str, *, expected_rows: int | None = None) -> CachedEmbeddings | None:
        """The cached embeddings of ``key``, or None if absent or unreadable (which is logged)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            cached = CachedEmbeddings(path)
        except (OSError, ValueError) as error:  # a torn or foreign file: re-encode rather than fail
            logger.warning("ignoring unreadable embedding cache %s: %s", path, error)
            return None
        if cached.metadata.get("key") != key or (expected_rows is not None and len(cached) != expected_rows):
            logger.warning("ignoring embedding cache %s: it does not match key %s / %s rows", path, key, expected_rows)
            return None
        logger.info("loaded %d cached corpus embeddings from %s", len(cached), path)
        return cached

    def save(self, key: str, embeddings: np.ndarray, metadata: Mapping[str, str] | None = None) -> Path:
        """Write (N, d) embeddings atomically; returns the file path."""
        from safetensors.numpy import save_file

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        target = self.path(key)
        meta = {str(k): str(v) for k, v in (metadata or {}).items()}
        meta["key"] = key
        handle, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=self.cache_dir)
        os.close(handle)
        try:
            save_file({_TENSOR_NAME: np.ascontiguousarray(embeddings, dtype=np.float32)}, tmp_name, metadata=meta)
            os.chmod(tmp_name, 0o666 & ~current_umask())  # mkstemp makes 0600; a shared cache should follow the umask
            os.replace(tmp_name, target)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
        logger.info("cached %d corpus embeddings in %s", len(embeddings), target)
        return target


def l2_normalize(embeddings: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float32; zero rows stay zero. (N, d) -> (N, d)."""
    array = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(array, axis=-1, keepdims=True)
    return array / np.maximum(norms, 1e-12)


def encode_corpus(
    encode_fn: Callable[[list[str]], np.ndarray],
    texts: Sequence[str],
    *,
    doc_ids: Sequence[str] | None = None,
    model: Any = None,
    model_fp: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    options: Mapping[str, Any] | None = None,
    block_size: int = 8192,
    distributed: bool | None = None,
) -> np.ndarray | CachedEmbeddings | None:
    """Encode a corpus (L2-normalised float32), reusing cached embeddings when model and corpus are unchanged.

    Args:
        encode_fn: maps a list of texts to an (n, d) array; called on blocks of ``block_size`` texts.
        texts: N document texts.
        doc_ids: N ids (default: the row numbers); part of the cache key.
        model: the model behind ``encode_fn``, fingerprinted for the cache key (ignored if ``model_fp`` is given).
        model_fp: an explicit model fingerprint.
        cache_dir: cache folder; None disables the cache.
        options: encode options that change embeddings (e.g. prompt, max length), part of the cache key.
        block_size: texts per ``encode_fn`` call, bounding the memory of one call.
        distributed: shard the encoding over the ranks of the initialised process group (rank 0 gathers);
            None means yes when a group with more than one rank is initialised.

    Returns:
        (N, d) float32 embeddings (a :class:`CachedEmbeddings` on a cache hit). Under a process group, ranks
        other than 0 return None.
    """
    from inf_embed.evaluation import distributed as dist_utils

    ids = [str(i) for i in range(len(texts))] if doc_ids is None else [str(i) for i in doc_ids]
    use_dist = dist_utils.is_distributed() if distributed is None else distributed
    is_main = not use_dist or dist_utils.get_rank() == 0
    cache = key = None
    if cache_dir is not None:
        fingerprint = model_fp or model_fingerprint(model)
        cache = EmbeddingCache(cache_dir)
        key = cache.key(fingerprint, corpus_fingerprint(ids, list(texts)), options)
        hit = cache.load(key, expected_rows=len(texts)) if is_main else None
        if use_dist:
            hit_everywhere = dist_utils.broadcast_flag(hit is not None)
            if hit_everywhere:
                return hit if is_main else None
        elif hit is not None:
            return hit

    def encode_all(items: Sequence[str]) -> np.ndarray:
        blocks = [l2_normalize(encode_fn(list(items[s : s + block_size]))) for s in range(0, len(items), block_size)]
        if not blocks:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(blocks)

    if use_dist:
        embeddings = dist_utils.encode_sharded(encode_all, list(texts))
    else:
        embeddings = encode_all(list(texts))
    if embeddings is None:
        return None
    if cache is not None and key is not None and len(texts):
        cache.save(key, embeddings, {"rows": str(len(texts)), "format": CACHE_FORMAT_VERSION})
    return embeddings
