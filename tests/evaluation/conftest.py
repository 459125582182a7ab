from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _evaluation_fakes import HashingEncoder  # noqa: E402


@pytest.fixture
def hashing_model() -> HashingEncoder:
    """A fresh bag-of-words hashing encoder with InfEmbed's interface (no weights to load)."""
    return HashingEncoder()
