"""`inf-embed evaluate` end to end on a tiny model."""

from __future__ import annotations

import json

import pytest
from _evaluation_fakes import write_beir

from inf_embed.cli.main import main


def test_evaluate_beir_prints_a_table_and_writes_json(tiny_model_dir, tmp_path, capsys):
    data = write_beir(tmp_path / "beir")
    output = tmp_path / "out" / "results.json"
    code = main(
        [
            "evaluate",
            "--model",
            tiny_model_dir,
            "--data",
            str(data),
            "--format",
            "beir",
            "--output",
            str(output),
            "--batch-size",
            "4",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "metric" in out and "ndcg_at_10" in out and "(main)" in out
    saved = json.loads(output.read_text())
    assert saved["format"] == "beir" and saved["main_score"] == "ndcg_at_10"
    assert 0 <= saved["results"]["ndcg_at_10"] <= 1 and saved["results"]["num_queries"] == 2


def test_evaluate_nevir_on_the_shared_dev_pairs(tiny_model_dir, shared_data, capsys):
    assert main(["evaluate", "--model", tiny_model_dir, "--data", str(shared_data / "nevir"), "--format", "nevir"]) == 0
    out = capsys.readouterr().out
    assert "paired_accuracy" in out and "num_pairs" in out


def test_evaluate_reports_a_missing_data_folder_with_exit_code_1(tiny_model_dir, tmp_path, capsys):
    assert main(["evaluate", "--model", tiny_model_dir, "--data", str(tmp_path / "nope"), "--format", "beir"]) == 1
    assert "error:" in capsys.readouterr().err


def test_evaluate_rejects_options_that_do_not_apply_to_the_format(tmp_path, capsys):
    data = write_beir(tmp_path / "beir")
    assert main(["evaluate", "--data", str(data), "--format", "beir", "--extra-corpus", str(data)]) == 2
    assert "--extra-corpus applies to infir" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--cache-dir", "c"], "--cache-dir applies to beir, followir and infir, not nevir"),
        (["--split", "dev"], "--split applies to beir, followir and infir, not nevir"),
        (["--top-k", "5"], "--top-k applies to beir and followir, not nevir"),
        (["--instruction", "x", "--no-instructions"], "--instruction and --no-instructions contradict each other"),
        (["--sentence-transformers", "--gate-threshold", "0.5"], "--gate-threshold applies to inf_embed models"),
    ],
)
def test_evaluate_refuses_options_it_would_ignore_before_loading_anything(extra, message, capsys, monkeypatch):
    from inf_embed.cli import evaluate as evaluate_cli

    monkeypatch.setattr(evaluate_cli, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["evaluate", "--data", "missing", "--format", "nevir", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--top-k", "0"], "argument --top-k: expected an integer >= 1, got '0'"),
        (["--batch-size", "-1"], "argument --batch-size: expected an integer >= 1, got '-1'"),
        (["--gate-threshold", "nan"], "argument --gate-threshold: expected a number in [-1, 1], got 'nan'"),
        (["--document-delta-scale", "x"], "argument --document-delta-scale: expected a number in [0, 1], got 'x'"),
        (["--device", "bogus"], "argument --device: expected a torch device such as cpu, cuda or cuda:0"),
    ],
)
def test_evaluate_bad_values_are_usage_errors_naming_the_flag(extra, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--data", "d", "--format", "beir", *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_evaluate_gate_threshold_needs_the_gated_fusion(tiny_model_dir, tmp_path, capsys):
    data = write_beir(tmp_path / "beir")
    argv = ["evaluate", "--model", tiny_model_dir, "--data", str(data), "--format", "beir", "--gate-threshold", "0.5"]
    assert main(argv) == 2  # the tiny model's fusion is not gated: the threshold would change nothing
    assert "--gate-threshold applies to the gated fusion" in capsys.readouterr().err


def test_evaluate_output_problems_are_found_before_the_evaluation(tmp_path, capsys, monkeypatch):
    from inf_embed.cli import evaluate as evaluate_cli

    data = write_beir(tmp_path / "beir")
    monkeypatch.setattr(evaluate_cli, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    argv = ["evaluate", "--data", str(data), "--format", "beir"]
    assert main([*argv, "--output", str(tmp_path)]) == 2
    assert "is a directory; expected the path of a JSON file" in capsys.readouterr().err
    assert main([*argv, "--output", str(data / "corpus.jsonl" / "results.json")]) == 2
    assert "is not a writable directory" in capsys.readouterr().err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_evaluate_says_when_it_replaces_an_output_file(tiny_model_dir, tmp_path, capsys):
    data = write_beir(tmp_path / "beir")
    output = tmp_path / "results.json"
    output.write_text("{}")
    argv = ["evaluate", "--model", tiny_model_dir, "--data", str(data), "--format", "beir", "--output", str(output)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert f"--output {output} exists and will be replaced" in captured.err
    assert "(replaced the previous file)" in captured.out
    assert json.loads(output.read_text())["format"] == "beir"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["beir", "results.json"]


def test_write_json_leaves_no_temporary_file_when_it_fails(tmp_path):
    from inf_embed.cli.evaluate import _write_json

    target = tmp_path / "results.json"
    target.write_text('{"old": true}')
    with pytest.raises(TypeError):
        _write_json(str(target), {"results": object()})  # not JSON-serialisable, found mid-write
    assert json.loads(target.read_text()) == {"old": True}  # the previous file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_evaluate_rejects_an_unknown_format():
    with pytest.raises(SystemExit):
        main(["evaluate", "--data", ".", "--format", "bright"])


def test_top_level_parser_offers_the_evaluate_command():
    from inf_embed.cli.main import build_parser

    args = build_parser().parse_args(["evaluate", "--data", "d", "--format", "infir", "--extra-corpus", "c"])
    assert args.command == "evaluate" and args.format == "infir" and args.extra_corpus == "c"
    assert callable(args.func)


def test_evaluate_no_instructions_ranks_by_the_query_alone(tiny_model_dir, shared_data, tmp_path, capsys):
    from inf_embed import InfEmbed
    from inf_embed.evaluation import InfIREvaluator, QueryOnlyEncoder

    lines = (shared_data / "infir-marco" / "dev.jsonl").read_text(encoding="utf-8").splitlines()[:6]
    records = tmp_path / "dev.jsonl"
    records.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output = tmp_path / "results.json"
    argv = ["evaluate", "--model", tiny_model_dir, "--data", str(records), "--format", "infir"]
    assert main([*argv, "--no-instructions", "--output", str(output)]) == 0
    assert "(instructions dropped)" in capsys.readouterr().out
    saved = json.loads(output.read_text())
    assert saved["no_instructions"] is True
    dropped = saved["results"]
    # I+ and I- give the same query embedding, so the instruction changes nothing and every pair ties
    assert dropped["p_mrr_instruction"] == 0.0 and dropped["paired_accuracy"] == 0.0

    model = InfEmbed.from_pretrained(tiny_model_dir)
    evaluator = InfIREvaluator.from_path(records)
    assert dropped["p_mrr_query"] == pytest.approx(evaluator(QueryOnlyEncoder(model))["p_mrr_query"])


def test_query_only_encoder_ignores_the_instruction_and_keeps_documents(tiny_model_dir):
    import numpy as np

    from inf_embed import InfEmbed
    from inf_embed.evaluation import QueryOnlyEncoder

    model = InfEmbed.from_pretrained(tiny_model_dir)
    wrapped = QueryOnlyEncoder(model)
    queries = ["what is a neutrophil", "zip code of harahan"]
    plain = model.encode_query(queries, convert_to_numpy=True)
    np.testing.assert_allclose(wrapped.encode_query(queries, instruction="only counts", convert_to_numpy=True), plain)
    np.testing.assert_allclose(
        wrapped.encode_document(["a passage"], convert_to_numpy=True),
        model.encode_document(["a passage"], convert_to_numpy=True),
    )
    with pytest.raises(TypeError, match="encode_query"):
        QueryOnlyEncoder(object())


def test_evaluate_fusion_override_matches_the_evaluator_on_the_overridden_model(tiny_model_dir, shared_data, tmp_path):
    from inf_embed import InfEmbed
    from inf_embed.evaluation import InfIREvaluator

    lines = (shared_data / "infir-marco" / "dev.jsonl").read_text(encoding="utf-8").splitlines()[:6]
    records = tmp_path / "dev.jsonl"
    records.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output = tmp_path / "results.json"
    argv = ["evaluate", "--model", tiny_model_dir, "--data", str(records), "--format", "infir", "--output", str(output)]
    assert main([*argv, "--fusion", "gated", "--gate-threshold", "0.9"]) == 0
    got = json.loads(output.read_text())["results"]
    model = InfEmbed.from_pretrained(tiny_model_dir, fusion="gated", gate_threshold=0.9)
    expected = InfIREvaluator.from_path(records)(model)
    for name in ("p_mrr_instruction", "p_mrr_query", "paired_accuracy", "ndcg_at_10"):
        assert got[name] == pytest.approx(expected[name]), name


def test_evaluate_rejects_a_bad_override_and_overrides_of_sentence_transformers(tiny_model_dir, tmp_path, capsys):
    data = write_beir(tmp_path / "beir")
    argv = ["evaluate", "--model", tiny_model_dir, "--data", str(data), "--format", "beir"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--fusion", "gated", "--gate-threshold", "2"])
    assert exit_info.value.code == 2
    assert "argument --gate-threshold: expected a number in [-1, 1], got '2'" in capsys.readouterr().err
    assert main([*argv, "--sentence-transformers", "--fusion", "concat"]) == 2
    assert "--fusion applies to inf_embed models" in capsys.readouterr().err


def test_evaluate_document_side_overrides_match_the_evaluator_on_the_overridden_model(
    tiny_model_dir, tmp_path, capsys, monkeypatch
):
    from inf_embed import InfEmbed
    from inf_embed.cli import evaluate as evaluate_cli
    from inf_embed.delta import save_delta
    from inf_embed.evaluation import BEIREvaluator
    from inf_embed.testing import perturb_weights

    base = InfEmbed.from_pretrained(tiny_model_dir, fusion="concat")
    tuned = perturb_weights(InfEmbed.from_pretrained(tiny_model_dir, fusion="concat"))
    folder = save_delta(tuned, base.backbone, tmp_path / "delta", base_name=tiny_model_dir)
    data = write_beir(tmp_path / "beir")
    output = tmp_path / "results.json"
    argv = ["evaluate", "--model", str(folder), "--data", str(data), "--format", "beir", "--output", str(output)]
    overrides = ["--document-delta-scale", "0.25", "--plain-query-side", "document"]
    loaded = []
    load_model = evaluate_cli.load_model
    monkeypatch.setattr(evaluate_cli, "load_model", lambda *a, **k: loaded.append(load_model(*a, **k)) or loaded[0])
    assert main([*argv, *overrides]) == 0
    assert (loaded[0].config.document_delta_scale, loaded[0].config.plain_query_side) == (0.25, "document")
    assert len(loaded[0].document_anchor) > 0  # the delta's base became the documents' anchor
    got = json.loads(output.read_text())["results"]
    expected = BEIREvaluator.from_path(data)(InfEmbed(folder, document_delta_scale=0.25, plain_query_side="document"))
    assert got["ndcg_at_10"] == pytest.approx(expected["ndcg_at_10"])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([*argv, "--document-delta-scale", "1.5"])
    assert "argument --document-delta-scale: expected a number in [0, 1], got '1.5'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--plain-query-side", "passage"])
    assert "--plain-query-side" in capsys.readouterr().err
