"""inf_embed: instruction-following retrieval embeddings (InF-Embed)."""

from __future__ import annotations

__version__ = "0.1.0"
