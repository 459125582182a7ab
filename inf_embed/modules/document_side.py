"""The document side of an asymmetric model: backbone weights pulled back towards where fine-tuning started.

Fine-tuning the query side to follow instructions moves the passages too, and on other domains (e.g. SciFact)
passages encoded by the start model retrieve better. An :class:`InfEmbed` with ``document_delta_scale`` s < 1
encodes documents with ``anchor + s * (weight - anchor)`` for each backbone weight that has an anchor (the
weight before fine-tuning) and queries with the weights themselves: the WiSE-FT interpolation, on the document
side only. It costs no second model: the anchors are the only extra tensors, and a delta folder
(:mod:`inf_embed.delta`) rebuilds them from its base, so they add nothing to what ships.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = ["DocumentAnchor"]


class DocumentAnchor(nn.Module):
    """The anchors of an asymmetric model's document side, one buffer per anchored backbone parameter.

    The buffers sit at the backbone's own dotted names (``encoder.layer.0.attention.self.query.weight``), so a
    saved model's state holds them as ``document_anchor.<backbone name>``. Empty (no buffers) for a symmetric
    model.

    Args:
        anchors: backbone parameter name -> the tensor the document side is pulled back to.
    """

    def __init__(self, anchors: Mapping[str, Tensor] | None = None) -> None:
        super().__init__()
        self.names: list[str] = []
        for name, value in (anchors or {}).items():
            self._set(name, value.detach().clone())

    def _set(self, name: str, value: Tensor) -> None:
        *path, leaf = name.split(".")
        module: nn.Module = self
        for part in path:
            child = module._modules.get(part)
            if child is None:
                child = nn.Module()
                module.add_module(part, child)
            module = child
        module.register_buffer(leaf, value)
        self.names.append(name)

    def __len__(self) -> int:
        return len(self.names)

    def anchors(self) -> dict[str, Tensor]:
        """Backbone parameter name -> its anchor."""
        return {name: self.get_buffer(name) for name in self.names}

    def document_weights(self, backbone: nn.Module, scale: float) -> dict[str, Tensor]:
        """``anchor + scale * (weight - anchor)`` for each anchored parameter of ``backbone`` (keeps autograd)."""
        params = dict(backbone.named_parameters())
        return {
            name: torch.lerp(anchor.to(params[name].dtype), params[name], scale)
            for name, anchor in self.anchors().items()
        }
