r"""Passage preservation (ours): keep the passage embeddings near the model's starting point.

Fine-tuning on a small set of instruction triplets moves the passage encoder, and retrieval without instructions
(e.g. BEIR SciFact) drifts with it. This term anchors each passage of the batch to its embedding under a frozen
copy of the starting model:

``L = L_base + weight · (1/J) Σ_j (1 − cos(p_j, p⁰_j))``

over the batch's J distinct passages, ``p_j`` from the model being trained and ``p⁰_j`` from the starting model
(both L2-normalised, so ``1 − cos`` is half the squared distance). The query side stays free: an instructed query
is a new input, so the model can learn what the instruction asks for while the passage geometry that serves plain
queries changes only where the instruction loss pays for it. The trainer computes ``p⁰`` per batch
(``TrainingArguments.preserve_weight``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from inf_embed.losses.base import ContrastiveLoss

__all__ = ["PassagePreservationLoss"]


class PassagePreservationLoss(ContrastiveLoss):
    """A contrastive loss plus the passage-preservation term (module docstring).

    Call it like the wrapped loss, with two more keywords: ``preserved_passage_embeddings`` (J, d), the batch's
    distinct passages under the model being trained, and ``preservation_targets`` (J, d), the same passages
    under the starting model (no gradient). Every input flag of the wrapped loss (``uses_hard_negatives``, ...)
    is passed through, so the trainer feeds it exactly what the wrapped loss needs.

    Args:
        base: the loss to extend.
        weight: the term's weight (a finite number >= 0).

    Raises:
        ValueError: ``weight`` is negative, not finite or not a number.
    """

    uses_preservation_targets = True

    def __init__(self, base: ContrastiveLoss, weight: float) -> None:
        super().__init__(base.temperature, gather_across_ranks=base.gather_across_ranks)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weight: expected a finite number >= 0, got {weight!r}")
        self.base = base
        self.weight = float(weight)

    @property
    def name(self) -> str:
        return getattr(self.base, "name", type(self.base).__name__)

    def __getattr__(self, attribute: str) -> Any:
        # the wrapped loss's input flags (uses_*) and its required_inputs; nn.Module resolves modules first
        if attribute.startswith("uses_") or attribute == "required_inputs":
            return getattr(self._modules["base"], attribute)
        return super().__getattr__(attribute)

    def get_config_dict(self) -> dict[str, Any]:
        return {**self.base.get_config_dict(), "passage_preservation_weight": self.weight}

    def forward(
        self,
        *args: Any,
        preserved_passage_embeddings: torch.Tensor | None = None,
        preservation_targets: torch.Tensor | None = None,
        **inputs: Any,
    ) -> torch.Tensor:
        """Wrapped loss + ``weight`` x mean ``1 - cos`` between (J, d) passages and their (J, d) targets."""
        if preserved_passage_embeddings is None or preservation_targets is None:
            raise ValueError(
                "preserved_passage_embeddings and preservation_targets: required by the passage-preservation term "
                "(the trainer passes them), got None"
            )
        if preserved_passage_embeddings.shape != preservation_targets.shape:
            raise ValueError(
                f"preservation_targets: expected the shape of preserved_passage_embeddings "
                f"{tuple(preserved_passage_embeddings.shape)}, got {tuple(preservation_targets.shape)}"
            )
        value = self.base(*args, **inputs)
        if self.weight == 0.0 or preserved_passage_embeddings.shape[0] == 0:
            return value
        cosine = torch.nn.functional.cosine_similarity(
            preserved_passage_embeddings.float(), preservation_targets.detach().float(), dim=-1
        )
        return value + self.weight * (1.0 - cosine).mean()
