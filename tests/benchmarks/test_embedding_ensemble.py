"""benchmarks/embedding_ensemble.py: each side takes its own weights, plain and instructed queries are routed."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def ensemble_module(load_benchmark):
    return load_benchmark("embedding_ensemble")


class _Fixed:
    """A model whose embedding of any text is one fixed direction per kind (query with / without instruction,
    document), scaled by an arbitrary length so the ensemble's normalisation is exercised."""

    def __init__(self, with_instruction, plain, document):
        self.vectors = {"instructed": with_instruction, "plain": plain, "document": document}
        self.calls = []

    def encode_query(self, queries, instruction=None, **kwargs):
        self.calls.append(("query", list(queries), instruction))
        if instruction is None:
            return np.stack([3.0 * self.vectors["plain"]] * len(queries))
        assert all(instruction), "the ensemble passes only instructed items with instructions"
        return np.stack([2.0 * self.vectors["instructed"]] * len(queries))

    def encode_document(self, documents, **kwargs):
        self.calls.append(("document", list(documents), None))
        return np.stack([5.0 * self.vectors["document"]] * len(documents))


def _unit(*values):
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_sides_are_routed_and_mixed(ensemble_module):
    e = np.eye(4, dtype=np.float32)
    trained = ensemble_module.CachedEncoder(_Fixed(e[0], e[1], e[2]))
    backbone = ensemble_module.CachedEncoder(_Fixed(e[3], e[3], e[3]))
    model = ensemble_module.EmbeddingEnsemble(trained, backbone, instructed=(1, 0), plain=(0, 1), documents=(1, 1))

    queries = model.encode_query(["a", "b", "c"], instruction=["x", None, ""])
    np.testing.assert_allclose(queries[0], e[0], atol=1e-6)  # instructed: trained alone
    np.testing.assert_allclose(queries[1], e[3], atol=1e-6)  # plain (None): backbone alone
    np.testing.assert_allclose(queries[2], e[3], atol=1e-6)  # plain (empty instruction)
    np.testing.assert_allclose(model.encode_document(["d"])[0], _unit(0, 0, 1, 1), atol=1e-6)

    shared = model.encode_query(["a", "b"], instruction="x")
    np.testing.assert_allclose(shared, np.stack([e[0], e[0]]), atol=1e-6)
    np.testing.assert_allclose(model.encode_query(["a"])[0], e[3], atol=1e-6)


def test_each_text_is_encoded_once(ensemble_module):
    e = np.eye(2, dtype=np.float32)
    fixed = _Fixed(e[0], e[1], e[0])
    trained = ensemble_module.CachedEncoder(fixed)
    backbone = ensemble_module.CachedEncoder(_Fixed(e[1], e[0], e[1]))
    for beta in (0.5, 1.0):
        model = ensemble_module.EmbeddingEnsemble(trained, backbone, (1, beta), (1, beta), (1, beta))
        model.encode_document(["d1", "d2"])
        model.encode_query(["q"], instruction=["i"])
    assert len(fixed.calls) == 2


def test_beta_weights_the_backbone(ensemble_module):
    e = np.eye(2, dtype=np.float32)
    trained = ensemble_module.CachedEncoder(_Fixed(e[0], e[0], e[0]))
    backbone = ensemble_module.CachedEncoder(_Fixed(e[1], e[1], e[1]))
    model = ensemble_module.EmbeddingEnsemble(trained, backbone, (1, 0.5), (1, 0.5), (1, 0.5))
    np.testing.assert_allclose(model.encode_document(["d"])[0], _unit(1, 0.5), atol=1e-6)


def test_betas_argument_is_checked(ensemble_module):
    assert ensemble_module._betas("0.25, 1") == [0.25, 1.0]
    for bad in ("", "a", "0", "-1", "nan"):
        with pytest.raises(Exception, match="expected"):
            ensemble_module._betas(bad)
