"""Evaluation: retrieval and instruction-following metrics, exact search with an embedding cache, evaluators for
BEIR, FollowIR, InF-IR and NevIR data, sharded corpus encoding under ``torchrun``, and an MTEB wrapper.

``InfEmbedMTEBWrapper`` and ``inf_embed_model_meta`` need the ``mteb`` extra and are imported on first use.
"""

from __future__ import annotations

from typing import Any

from inf_embed.evaluation.encoders import (
    ConcatInstructionEncoder,
    QueryOnlyEncoder,
    encode_documents,
    encode_queries,
)
from inf_embed.evaluation.evaluators import (
    BEIREvaluator,
    Evaluator,
    FollowIREvaluator,
    InfIREvaluator,
    NevIREvaluator,
    get_evaluator,
    list_evaluators,
    register_evaluator,
)
from inf_embed.evaluation.metrics import (
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    p_mrr,
    p_mrr_per_query,
    paired_accuracy,
    paired_accuracy_from_run,
    rank_score,
    recall_at_k,
    retrieval_metrics,
)
from inf_embed.evaluation.search import (
    CachedEmbeddings,
    EmbeddingCache,
    corpus_fingerprint,
    doc_id_tie_order,
    encode_corpus,
    exact_search,
    model_fingerprint,
    search_to_run,
)

__all__ = [
    "BEIREvaluator",
    "CachedEmbeddings",
    "ConcatInstructionEncoder",
    "QueryOnlyEncoder",
    "EmbeddingCache",
    "Evaluator",
    "FollowIREvaluator",
    "InfEmbedMTEBWrapper",
    "InfIREvaluator",
    "NevIREvaluator",
    "corpus_fingerprint",
    "doc_id_tie_order",
    "encode_corpus",
    "encode_documents",
    "encode_queries",
    "exact_search",
    "get_evaluator",
    "inf_embed_model_meta",
    "list_evaluators",
    "map_at_k",
    "model_fingerprint",
    "mrr_at_k",
    "ndcg_at_k",
    "p_mrr",
    "p_mrr_per_query",
    "paired_accuracy",
    "paired_accuracy_from_run",
    "rank_score",
    "recall_at_k",
    "register_evaluator",
    "retrieval_metrics",
    "search_to_run",
]

_LAZY = {"InfEmbedMTEBWrapper", "inf_embed_model_meta"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from inf_embed.evaluation import mteb as _mteb

        return getattr(_mteb, name)
    raise AttributeError(f"module 'inf_embed.evaluation' has no attribute {name!r}")
