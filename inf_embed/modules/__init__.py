"""Building blocks of an `InfEmbed` model, each registered by name: pooling and instruction fusion."""

from __future__ import annotations

from inf_embed.modules.fusion import Fusion, get_fusion, list_fusions, register_fusion
from inf_embed.modules.pooling import get_pooling, list_poolings, register_pooling

__all__ = [
    "Fusion",
    "get_fusion",
    "get_pooling",
    "list_fusions",
    "list_poolings",
    "register_fusion",
    "register_pooling",
]
