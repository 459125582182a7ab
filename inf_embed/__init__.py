"""inf_embed: instruction-following retrieval embeddings (InF-Embed).

``from inf_embed import InfEmbed`` gives a sentence-transformers-compatible encoder whose queries can carry
instructions: ``model.encode_query(queries, instruction="...")``.
"""

from __future__ import annotations

from inf_embed.config import InfEmbedConfig
from inf_embed.model import InfEmbed

__version__ = "0.1.0"

__all__ = ["InfEmbed", "InfEmbedConfig", "__version__"]
