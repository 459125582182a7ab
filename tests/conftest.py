"""Shared fixtures: seeding, one tiny random BERT per session, the real MiniLM folder, the shared data."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from inf_embed import InfEmbed
from inf_embed.testing import make_tiny_model

# pytest runs with `-n 2` on 2 cores: one intra-op thread per worker avoids oversubscription (10x slower tiny-model
# tests otherwise). Subprocesses started by tests keep torch's default.
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The real all-MiniLM-L6-v2 sentence-transformers folder from the `default` extra."""
    from inf_embed.model import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random BERT saved as a plain transformers folder (hidden size 32)."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture(scope="session")
def _tiny_model_session(tiny_model_dir: str) -> InfEmbed:
    return InfEmbed.from_pretrained(tiny_model_dir, fusion="attention", normalize=True)


@pytest.fixture()
def tiny_model(_tiny_model_session: InfEmbed) -> InfEmbed:
    """A fresh copy of the tiny model (attention fusion, normalised) for each test."""
    return copy.deepcopy(_tiny_model_session)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the repository (CI lays it out the same way)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data folder {SHARED_DATA} is missing; the tests expect ../shared/data beside the repo")
    return SHARED_DATA


@pytest.fixture()
def offline_hub(monkeypatch: pytest.MonkeyPatch):
    """huggingface_hub in offline mode, as HF_HUB_OFFLINE=1 would set it at import."""
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    yield
