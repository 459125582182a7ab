"""Contrastive losses on embeddings, addressed by name.

>>> from inf_embed.losses import get_loss, list_losses
>>> loss_fn = get_loss("multi:P+I", temperature=0.05)
>>> list_losses()[:3]
['uni:P', 'uni:IQ', 'uni:I']

Every loss takes embeddings, never a model; see :class:`InfIRLoss` for the call signature and the inputs each
term needs.
"""

from __future__ import annotations

from inf_embed.losses import inf_ir as _inf_ir  # noqa: F401  (registers the paper's eleven variants)
from inf_embed.losses import poisoned_query as _poisoned_query  # noqa: F401  (registers multi:P+I+IQ+Q, ours)
from inf_embed.losses.base import ContrastiveLoss, instruction_negative_mask, masked_cross_entropy
from inf_embed.losses.inf_ir import InfIRLoss
from inf_embed.losses.poisoned_query import PoisonedQueryLoss
from inf_embed.losses.preservation import PassagePreservationLoss
from inf_embed.losses.registry import canonical_loss_name, get_loss, list_losses, register_loss

__all__ = [
    "ContrastiveLoss",
    "InfIRLoss",
    "PassagePreservationLoss",
    "PoisonedQueryLoss",
    "canonical_loss_name",
    "get_loss",
    "instruction_negative_mask",
    "list_losses",
    "masked_cross_entropy",
    "register_loss",
]
