"""Fixtures and environment for the op tests.

Without a CUDA device the Triton kernels can only run in Triton's interpreter, and ``TRITON_INTERPRET`` is read
when ``@triton.jit`` decorates them, i.e. when ``inf_embed.ops._triton`` is imported. Set it here, before any test
module imports that module. On a GPU machine it is left alone, so ``tests/ops/test_gpu.py`` compiles for real.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def no_disable_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make sure ``INF_EMBED_DISABLE_KERNELS`` does not leak in from the caller's environment."""
    monkeypatch.delenv("INF_EMBED_DISABLE_KERNELS", raising=False)
