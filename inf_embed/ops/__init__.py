"""Custom ops. The public surface is :func:`iq_attention_pool`.

Importing this package registers ``torch.ops.inf_embed.iq_attention_pool`` (and its backward op) and, when
``triton`` is installed and ``INF_EMBED_DISABLE_KERNELS`` is unset, their CUDA Triton kernels.
"""

from __future__ import annotations

from inf_embed.ops import _dispatch
from inf_embed.ops.iq_attention import iq_attention_pool

__all__ = ["iq_attention_pool"]

_dispatch.register_kernels()
