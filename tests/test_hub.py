from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from inf_embed import InfEmbed
from inf_embed import hub as hub_module
from inf_embed.testing import fake_hub, populate_hf_cache

TEXTS = ["what is a neutrophil", "a much longer passage about white blood cells and infections", "x"]


def _embeddings(model: InfEmbed) -> np.ndarray:
    return np.concatenate([model.encode(TEXTS), model.encode_query(TEXTS, instruction="only definitions")])


def test_save_and_reload_gives_bit_identical_embeddings(tiny_model, tmp_path):
    folder = tiny_model.save_pretrained(tmp_path / "saved")
    assert {"config.json", "inf_embed_config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(folder))
    reloaded = InfEmbed.from_pretrained(folder)
    assert reloaded.config == tiny_model.config
    np.testing.assert_array_equal(_embeddings(reloaded), _embeddings(tiny_model))


def test_projection_weights_round_trip(tiny_model_dir, tmp_path):
    model = InfEmbed.from_pretrained(tiny_model_dir, projection_dim=8)
    torch.nn.init.normal_(model.projection.weight)
    folder = model.save_pretrained(tmp_path / "proj")
    assert "inf_embed_modules.safetensors" in os.listdir(folder)
    reloaded = InfEmbed.from_pretrained(folder)
    np.testing.assert_array_equal(reloaded.encode(TEXTS), model.encode(TEXTS))
    assert reloaded.get_sentence_embedding_dimension() == 8


def test_saving_over_a_saved_model_replaces_it(tiny_model, tmp_path):
    target = tmp_path / "m"
    tiny_model.save_pretrained(target)
    (target / "stale.txt").write_text("old")
    tiny_model.save_pretrained(target)
    assert not (target / "stale.txt").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".m.")]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert tiny_model.save_pretrained(empty) == str(empty)


def test_saving_over_other_files_is_refused_and_leaves_them(tiny_model, tmp_path):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "train.py").write_text("print('mine')")
    with pytest.raises(FileExistsError, match=r"save_pretrained: .*project is a non-empty folder .*data, train.py"):
        tiny_model.save_pretrained(project)
    assert sorted(os.listdir(project)) == ["data", "train.py"]
    a_file = tmp_path / "model.bin"
    a_file.write_bytes(b"x")
    with pytest.raises(FileExistsError, match="is a file"):
        tiny_model.save_pretrained(a_file)
    assert a_file.read_bytes() == b"x"
    assert sorted(os.listdir(tmp_path)) == ["model.bin", "project"]


def test_a_crash_while_saving_leaves_the_previous_folder_intact(tiny_model, tmp_path, monkeypatch):
    target = tiny_model.save_pretrained(tmp_path / "m")
    before = sorted(os.listdir(target))

    def crash(model, folder):
        (open(os.path.join(folder, "partial.bin"), "wb")).write(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(hub_module, "_write_folder", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        tiny_model.save_pretrained(target)
    assert sorted(os.listdir(target)) == before
    assert os.listdir(tmp_path) == ["m"]
    InfEmbed.from_pretrained(target)


def test_missing_weights_file_is_an_error_naming_the_file(tiny_model, tmp_path):
    folder = tiny_model.save_pretrained(tmp_path / "m")
    os.remove(os.path.join(folder, "model.safetensors"))
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors is missing"):
        InfEmbed.from_pretrained(folder)


def test_corrupted_weights_file_is_an_error_naming_the_file(tiny_model, tmp_path):
    folder = tiny_model.save_pretrained(tmp_path / "m")
    with open(os.path.join(folder, "model.safetensors"), "wb") as handle:
        handle.write(b"\x00garbage" * 10)
    with pytest.raises(OSError, match=r"model\.safetensors is corrupted"):
        InfEmbed.from_pretrained(folder)


def test_mismatched_weight_keys_are_listed(tiny_model, tmp_path):
    folder = tiny_model.save_pretrained(tmp_path / "m")
    path = os.path.join(folder, "model.safetensors")
    state = load_file(path)
    state["extra.weight"] = state.pop("pooler.dense.weight")
    save_file(state, path)
    with pytest.raises(ValueError, match=r"missing keys \['pooler.dense.weight'\], unexpected keys \['extra.weight'\]"):
        InfEmbed.from_pretrained(folder)


def test_missing_module_weights_are_an_error(tiny_model_dir, tmp_path):
    folder = InfEmbed.from_pretrained(tiny_model_dir, projection_dim=4).save_pretrained(tmp_path / "m")
    os.remove(os.path.join(folder, "inf_embed_modules.safetensors"))
    with pytest.raises(ValueError, match=r"missing keys \['projection.bias', 'projection.weight'\]"):
        InfEmbed.from_pretrained(folder)


def test_saved_model_loads_by_repo_id_from_the_hub_cache_offline(tiny_model, tmp_path, offline_hub):
    folder = tiny_model.save_pretrained(tmp_path / "m")
    cache = tmp_path / "cache"
    populate_hf_cache(folder, cache, "acme/tiny-inf-embed")
    loaded = InfEmbed.from_pretrained("acme/tiny-inf-embed", cache_dir=cache)
    np.testing.assert_array_equal(_embeddings(loaded), _embeddings(tiny_model))


def test_revision_selects_the_cached_snapshot(tiny_model, tmp_path, offline_hub):
    cache = tmp_path / "cache"
    populate_hf_cache(tiny_model.save_pretrained(tmp_path / "a"), cache, "acme/m", revision="main")
    other = InfEmbed.from_pretrained(tmp_path / "a", fusion="none")
    populate_hf_cache(other.save_pretrained(tmp_path / "b"), cache, "acme/m", revision="v2")
    assert InfEmbed.from_pretrained("acme/m", cache_dir=cache).config.fusion == "attention"
    assert InfEmbed.from_pretrained("acme/m", cache_dir=cache, revision="v2").config.fusion == "none"


def test_unknown_repo_offline_raises(tmp_path, offline_hub):
    with pytest.raises(Exception, match="(?i)offline|cannot find|not found|local"):
        InfEmbed.from_pretrained("acme/not-there", cache_dir=tmp_path)


def test_local_files_only_loads_from_the_cache(tiny_model, tmp_path):
    cache = tmp_path / "cache"
    populate_hf_cache(tiny_model.save_pretrained(tmp_path / "m"), cache, "acme/local")
    InfEmbed.from_pretrained("acme/local", cache_dir=cache, local_files_only=True)


def test_push_to_hub_uploads_a_loadable_model(tiny_model, tmp_path, offline_hub):
    cache = tmp_path / "cache"
    with fake_hub(cache) as uploads:
        url = tiny_model.push_to_hub("acme/pushed", commit_message="first")
    assert uploads[0]["repo_id"] == "acme/pushed" and uploads[0]["commit_message"] == "first"
    assert "acme/pushed" in url
    loaded = InfEmbed.from_pretrained("acme/pushed", cache_dir=cache)
    np.testing.assert_array_equal(_embeddings(loaded), _embeddings(tiny_model))


def test_file_path_and_missing_folder_errors(tmp_path):
    file_path = tmp_path / "f.txt"
    file_path.write_text("x")
    with pytest.raises(NotADirectoryError):
        InfEmbed.from_pretrained(file_path)
    with pytest.raises(FileNotFoundError):
        InfEmbed.from_pretrained(str(tmp_path / "a" / "b" / "c"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="is not a model folder"):
        InfEmbed.from_pretrained(empty)


def test_config_overrides_unknown_field_is_an_error(tiny_model_dir):
    with pytest.raises(ValueError, match="unknown InfEmbedConfig keys \\['fusoin'\\]"):
        InfEmbed.from_pretrained(tiny_model_dir, fusoin="concat")


def test_plain_transformers_folder_uses_mean_pooling_without_normalisation(tiny_model_dir):
    model = InfEmbed.from_pretrained(tiny_model_dir)
    assert (model.config.pooling, model.config.normalize, model.config.padding_side) == ("mean", False, "right")


def test_decoder_backbone_uses_last_token_pooling_and_left_padding(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        architectures=["LlamaForCausalLM"],
    )
    folder = tmp_path / "llama"
    LlamaModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    model = InfEmbed.from_pretrained(folder)
    assert (model.config.pooling, model.config.padding_side) == ("last", "left")
    texts = ["a short one", "a rather longer input text with more tokens"]
    batched = model.encode(texts)
    one_by_one = np.stack([model.encode(t) for t in texts])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_sentence_transformers_folder_with_dense_and_cls_pooling(tmp_path, tiny_model_dir, bias):
    from sentence_transformers import SentenceTransformer, models

    transformer = models.Transformer(tiny_model_dir, max_seq_length=64)
    pooling = models.Pooling(32, pooling_mode="cls")
    dense = models.Dense(32, 16, bias=bias, activation_function=torch.nn.Identity())
    st = SentenceTransformer(modules=[transformer, pooling, dense, models.Normalize()])
    st.save(str(tmp_path / "st"))
    model = InfEmbed.from_pretrained(tmp_path / "st")
    assert (model.config.pooling, model.config.projection_dim, model.config.normalize) == ("cls", 16, True)
    assert model.max_seq_length == 64
    np.testing.assert_allclose(model.encode(TEXTS), st.encode(TEXTS), atol=1e-5)


def test_sentence_transformers_folder_with_unsupported_pooling_is_a_clear_error(tmp_path, tiny_model_dir):
    from sentence_transformers import SentenceTransformer, models

    st = SentenceTransformer(modules=[models.Transformer(tiny_model_dir), models.Pooling(32, pooling_mode="max")])
    st.save(str(tmp_path / "st"))
    with pytest.raises(ValueError, match="pooling \\['max'\\] is not supported"):
        InfEmbed.from_pretrained(tmp_path / "st")
    modules = json.loads((tmp_path / "st" / "modules.json").read_text())
    assert modules[1]["path"] == "1_Pooling"
