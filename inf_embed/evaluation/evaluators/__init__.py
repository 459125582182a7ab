"""Evaluators: BEIR retrieval, FollowIR (p-MRR), InF-IR records and NevIR pairs, built from search + metrics.

Each evaluator is built from in-memory data or with ``from_path``, and called on a model::

    evaluator = BEIREvaluator.from_path("../shared/data/scifact", split="test")
    results = evaluator(model)            # {"ndcg_at_10": ..., "main_score": ..., ...}

A model is anything with InfEmbed's ``encode_query(queries, instruction=...)`` and ``encode_document(docs)``
(see :mod:`inf_embed.evaluation.encoders`). Embeddings are always L2-normalised and scored by cosine.

Under ``torchrun`` (an initialised process group), corpus encoding is sharded over the ranks and gathered on
rank 0, which searches and scores; every rank returns the same results.

Evaluators register by name (``beir``, ``followir``, ``infir``, ``nevir``): :func:`get_evaluator`,
:func:`list_evaluators`.
"""

from __future__ import annotations

from inf_embed.evaluation.evaluators.base import (
    Evaluator,
    get_evaluator,
    list_evaluators,
    register_evaluator,
)
from inf_embed.evaluation.evaluators.beir import BEIREvaluator
from inf_embed.evaluation.evaluators.followir import FollowIREvaluator
from inf_embed.evaluation.evaluators.infir import InfIREvaluator
from inf_embed.evaluation.evaluators.nevir import NevIREvaluator

__all__ = [
    "BEIREvaluator",
    "Evaluator",
    "FollowIREvaluator",
    "InfIREvaluator",
    "NevIREvaluator",
    "get_evaluator",
    "list_evaluators",
    "register_evaluator",
]
