"""An asymmetric model's document side: ``config.document_delta_scale`` pulls the documents' weights back towards
the weights fine-tuning started from, queries keep the fine-tuned weights; saved, delta and reloaded alike."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from inf_embed import InfEmbed
from inf_embed.config import InfEmbedConfig
from inf_embed.delta import DELTA_CONFIG_FILE, DELTA_WEIGHTS_FILE, save_delta
from inf_embed.testing import perturb_weights

DOCS = ["Neutrophils are white blood cells that kill bacteria.", "Python is a programming language.", "Tides"]
QUERIES = ["what is a neutrophil", "python"]


def _tuned(base_dir: str) -> InfEmbed:
    return perturb_weights(InfEmbed.from_pretrained(base_dir, fusion="concat"))


def _lerped(base: InfEmbed, tuned: InfEmbed, scale: float) -> InfEmbed:
    """The tuned model with every backbone weight at base + scale * (tuned - base): what documents should see."""
    model = copy.deepcopy(tuned)
    model.set_document_delta({}, 1.0)  # symmetric: both sides at the lerped weights
    start = dict(base.backbone.named_parameters())
    with torch.no_grad():
        for name, param in model.backbone.named_parameters():
            param.copy_(torch.lerp(start[name], param, scale))
    return model


@pytest.mark.parametrize("scale", [0.0, 0.5, 0.75])
def test_documents_use_the_pulled_back_weights_and_queries_the_tuned_ones(tiny_model_dir, scale):
    base = InfEmbed.from_pretrained(tiny_model_dir, fusion="concat")
    tuned = _tuned(tiny_model_dir)
    asymmetric = copy.deepcopy(tuned)
    asymmetric.set_document_delta(base.backbone, scale)
    assert asymmetric.config.document_delta_scale == scale
    assert len(asymmetric.document_anchor) == sum("attention." in n for n, _ in tuned.backbone.named_parameters())
    expected_docs = _lerped(base, tuned, scale).encode_document(DOCS)
    np.testing.assert_allclose(asymmetric.encode_document(DOCS), expected_docs, atol=1e-6)
    for instruction in (None, "a definition"):
        np.testing.assert_array_equal(
            asymmetric.encode_query(QUERIES, instruction=instruction),
            tuned.encode_query(QUERIES, instruction=instruction),
        )
    assert not np.allclose(asymmetric.encode_document(DOCS), tuned.encode_document(DOCS), atol=1e-4)
    tokens = asymmetric.encode_document(DOCS[:1], output_value="token_embeddings")[0]
    torch.testing.assert_close(
        tokens, _lerped(base, tuned, scale).encode_document(DOCS[:1], output_value="token_embeddings")[0]
    )


def test_scale_one_makes_the_model_symmetric_again(tiny_model_dir):
    base = InfEmbed.from_pretrained(tiny_model_dir, fusion="concat")
    tuned = _tuned(tiny_model_dir)
    model = copy.deepcopy(tuned)
    model.set_document_delta(base.backbone, 0.5)
    model.set_document_delta(base.backbone, 1.0)
    assert len(model.document_anchor) == 0 and model.config.document_delta_scale == 1.0
    np.testing.assert_array_equal(model.encode_document(DOCS), tuned.encode_document(DOCS))


def test_saved_folder_keeps_the_anchors(tiny_model_dir, tmp_path):
    base = InfEmbed.from_pretrained(tiny_model_dir, fusion="concat")
    model = _tuned(tiny_model_dir)
    model.set_document_delta(base.backbone, 0.5)
    loaded = InfEmbed(model.save_pretrained(tmp_path / "m"))
    assert loaded.config.document_delta_scale == 0.5 and len(loaded.document_anchor) == len(model.document_anchor)
    np.testing.assert_array_equal(loaded.encode_document(DOCS), model.encode_document(DOCS))
    np.testing.assert_array_equal(loaded.encode_query(QUERIES), model.encode_query(QUERIES))
    # the anchors travel with the folder; asking for another scale on load keeps them
    symmetric = InfEmbed(tmp_path / "m", document_delta_scale=1.0)
    np.testing.assert_array_equal(symmetric.encode_document(DOCS), model.encode_query(DOCS))
    other = InfEmbed(tmp_path / "m", document_delta_scale=0.25)
    np.testing.assert_allclose(other.encode_document(DOCS), _lerped(base, model, 0.25).encode_document(DOCS), atol=1e-6)


def test_delta_stores_the_scale_not_the_anchors(tiny_model_dir, tmp_path):
    base = InfEmbed.from_pretrained(tiny_model_dir, fusion="concat")
    model = _tuned(tiny_model_dir)
    model.set_document_delta(base.backbone, 0.5)
    folder = save_delta(model, base.backbone, tmp_path / "d", base_name=tiny_model_dir)
    with safe_open(f"{folder}/{DELTA_WEIGHTS_FILE}", "pt") as handle:
        assert not [k for k in handle.keys() if not k.startswith("backbone.")]
    assert json.loads((tmp_path / "d" / DELTA_CONFIG_FILE).read_text())["config"]["document_delta_scale"] == 0.5
    loaded = InfEmbed(folder)
    assert loaded.config.document_delta_scale == 0.5
    np.testing.assert_allclose(loaded.encode_document(DOCS), model.encode_document(DOCS), atol=1e-4)  # float16 deltas
    np.testing.assert_allclose(loaded.encode_query(QUERIES), model.encode_query(QUERIES), atol=1e-4)


def test_a_symmetric_delta_loads_with_a_document_scale(tiny_model_dir, tmp_path):
    base = InfEmbed.from_pretrained(tiny_model_dir, fusion="concat")
    model = _tuned(tiny_model_dir)
    folder = save_delta(model, base.backbone, tmp_path / "d", base_name=tiny_model_dir)
    pulled = InfEmbed(folder, document_delta_scale=0.0)  # documents exactly as the base encodes them
    np.testing.assert_allclose(pulled.encode_document(DOCS), base.encode_document(DOCS), atol=1e-6)
    np.testing.assert_allclose(pulled.encode_query(QUERIES), InfEmbed(folder).encode_query(QUERIES), atol=0)


def test_bad_document_side_settings_are_clear_errors(tiny_model_dir, tmp_path):
    for bad in (1.5, -0.1, True, "0.5", float("nan")):
        with pytest.raises(ValueError, match="document_delta_scale"):
            InfEmbedConfig(document_delta_scale=bad)
    with pytest.raises(ValueError, match="has none"):  # no anchors to pull back to
        InfEmbed(tiny_model_dir, document_delta_scale=0.5)
    base = InfEmbed.from_pretrained(tiny_model_dir, fusion="concat")
    model = _tuned(tiny_model_dir)
    with pytest.raises(ValueError, match="document_delta_scale"):
        model.set_document_delta(base.backbone, 2.0)
    with pytest.raises(ValueError, match="'nope.weight' is not a floating-point parameter"):
        model.set_document_delta({"nope.weight": torch.zeros(1)}, 0.5)
    name, param = next(iter(model.backbone.named_parameters()))
    with pytest.raises(ValueError, match=f"'{name}' has shape"):
        model.set_document_delta({name: torch.zeros(param.numel() + 1)}, 0.5)
    assert model.config.document_delta_scale == 1.0 and len(model.document_anchor) == 0  # unchanged by the errors
    # a delta can only pull the documents back to its own base
    shifted = {n: p.detach() + 1e-2 for n, p in model.backbone.named_parameters() if "attention." in n}
    model.set_document_delta(shifted, 0.5)
    with pytest.raises(ValueError, match="not the base's"):
        save_delta(model, base.backbone, tmp_path / "d", base_name=tiny_model_dir)
    assert not (tmp_path / "d").exists()
    model.config.document_delta_scale = 0.5
    model.document_anchor = type(model.document_anchor)()
    with pytest.raises(ValueError, match="has none"):
        model.encode_document(DOCS)


def test_encode_without_instruction_takes_the_document_side(tiny_model_dir):
    base = InfEmbed.from_pretrained(tiny_model_dir, fusion="concat")
    model = _tuned(tiny_model_dir)
    model.set_document_delta(base.backbone, 0.5)
    np.testing.assert_array_equal(model.encode(DOCS), model.encode_document(DOCS))
    np.testing.assert_array_equal(model.encode(QUERIES, instruction="x"), model.encode_query(QUERIES, instruction="x"))


def test_plain_queries_take_the_document_side_when_asked_and_instructed_ones_the_query_side(tiny_model_dir, tmp_path):
    base = InfEmbed.from_pretrained(tiny_model_dir, fusion="concat")
    tuned = _tuned(tiny_model_dir)
    symmetric_at_half = _lerped(base, tuned, 0.5)
    folder = save_delta(tuned, base.backbone, tmp_path / "d", base_name=tiny_model_dir)
    model = InfEmbed(folder, document_delta_scale=0.5, plain_query_side="document")
    assert "plain_query_side='document'" in repr(model)
    as_tuned = InfEmbed(folder, document_delta_scale=0.5)  # plain_query_side="query": the default
    instruction = "a definition"

    plain = model.encode_query(QUERIES)
    np.testing.assert_allclose(plain, symmetric_at_half.encode_query(QUERIES), atol=1e-4)
    assert not np.allclose(plain, as_tuned.encode_query(QUERIES), atol=1e-3)
    np.testing.assert_allclose(model.encode_document(DOCS), symmetric_at_half.encode_document(DOCS), atol=1e-4)
    np.testing.assert_array_equal(
        model.encode_query(QUERIES, instruction=instruction), as_tuned.encode_query(QUERIES, instruction=instruction)
    )
    # a call mixing instructed and plain queries: each row on its own side, in input order, every output form
    mixed = [instruction, None]
    expected = np.stack([as_tuned.encode_query(QUERIES[:1], instruction=instruction)[0], plain[1]])
    np.testing.assert_allclose(model.encode_query(QUERIES, instruction=mixed), expected, atol=1e-6)
    as_tensor = model.encode_query(QUERIES, instruction=["", instruction], convert_to_tensor=True)
    np.testing.assert_allclose(as_tensor[0].numpy(), plain[0], atol=1e-6)
    tokens = model.encode_query(QUERIES, instruction=mixed, output_value="token_embeddings")
    assert [t.shape[0] for t in tokens] == [
        t.shape[0] for t in as_tuned.encode_query(QUERIES, instruction=mixed, output_value="token_embeddings")
    ]
    # the setting round-trips through a saved folder, and is a no-op on a symmetric model
    saved = model.save_pretrained(tmp_path / "m")
    np.testing.assert_allclose(InfEmbed(saved).encode_query(QUERIES), plain, atol=1e-6)
    symmetric = InfEmbed(folder, plain_query_side="document")
    np.testing.assert_array_equal(symmetric.encode_query(QUERIES), InfEmbed(folder).encode_query(QUERIES))


def test_a_bad_plain_query_side_is_a_clear_error(tiny_model_dir):
    for bad in ("documents", "", None, 1):
        with pytest.raises(ValueError, match="plain_query_side"):
            InfEmbedConfig(plain_query_side=bad)
    with pytest.raises(ValueError, match="plain_query_side"):
        InfEmbed(tiny_model_dir, plain_query_side="passage")


def test_a_document_delta_with_nothing_changed_leaves_the_model_symmetric_and_loadable(tiny_model_dir, tmp_path):
    model = InfEmbed.from_pretrained(tiny_model_dir, fusion="concat")
    model.set_document_delta(copy.deepcopy(model.backbone), 0.5)  # e.g. a training run whose steps changed nothing
    assert model.config.document_delta_scale == 1.0 and len(model.document_anchor) == 0
    reloaded = InfEmbed(model.save_pretrained(tmp_path / "m"))
    np.testing.assert_allclose(reloaded.encode_document(DOCS), model.encode_document(DOCS), atol=1e-6)


def test_perturb_weights_moves_only_the_matching_weights_and_is_seeded(tiny_model_dir):
    start = InfEmbed.from_pretrained(tiny_model_dir, fusion="concat")
    first, second = _tuned(tiny_model_dir), _tuned(tiny_model_dir)
    other_seed = perturb_weights(InfEmbed.from_pretrained(tiny_model_dir, fusion="concat"), seed=1)
    before = dict(start.backbone.named_parameters())
    for (name, a), (_, b), (_, c) in zip(
        first.backbone.named_parameters(), second.backbone.named_parameters(), other_seed.backbone.named_parameters()
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert torch.equal(a, before[name]) != ("attention." in name)
        if "attention." in name:
            assert not torch.equal(a, c)
