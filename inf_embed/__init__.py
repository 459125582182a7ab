"""inf_embed: instruction-following retrieval embeddings (InF-Embed).

``from inf_embed import InfEmbed`` gives a sentence-transformers-compatible encoder whose queries can carry
instructions: ``model.encode_query(queries, instruction="...")``.
"""

from __future__ import annotations

from inf_embed.config import InfEmbedConfig
from inf_embed.data import TripletExample, load_triplets
from inf_embed.losses import get_loss, list_losses
from inf_embed.model import InfEmbed
from inf_embed.training.args import TrainingArguments
from inf_embed.training.trainer import Trainer

__version__ = "0.1.0"

__all__ = [
    "InfEmbed",
    "InfEmbedConfig",
    "Trainer",
    "TrainingArguments",
    "TripletExample",
    "__version__",
    "get_loss",
    "list_losses",
    "load_triplets",
]
