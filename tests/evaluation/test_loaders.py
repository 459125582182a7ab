"""The BEIR / FollowIR readers reject malformed records with ``path:line`` instead of guessing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inf_embed.evaluation.loaders import read_beir_corpus, read_beir_queries, read_qrels


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(path: Path, *records: object) -> Path:
    return _write(path, "".join(json.dumps(r) + "\n" for r in records))


def test_qrels_header_is_skipped_but_a_typo_in_the_first_data_row_is_an_error(tmp_path):
    header = _write(tmp_path / "a.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    assert read_qrels(header) == {"q1": {"d1": 1}}
    headerless = _write(tmp_path / "b.tsv", "q1\td1\t2\nq1\td2\t0\n")
    assert read_qrels(headerless) == {"q1": {"d1": 2, "d2": 0}}
    typo = _write(tmp_path / "c.tsv", "q1\td1\t1O\nq1\td2\t1\n")
    with pytest.raises(ValueError, match=r"c\.tsv:1: relevance '1O' is not a number"):
        read_qrels(typo)


def test_qrels_ignore_a_trailing_tab_and_accept_integral_floats(tmp_path):
    path = _write(tmp_path / "q.tsv", "q1\td1\t1\t\nq2\td2\t2.0\n")
    assert read_qrels(path) == {"q1": {"d1": 1}, "q2": {"d2": 2}}


@pytest.mark.parametrize("value", ["0.9", "inf", "nan", "-1.5"])
def test_qrels_relevance_must_be_an_integer(tmp_path, value):
    path = _write(tmp_path / "q.tsv", f"query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t{value}\n")
    with pytest.raises(ValueError, match=rf"q\.tsv:3: relevance '{value}' is not an integer"):
        read_qrels(path)


def test_qrels_reject_a_duplicate_pair_and_an_empty_id(tmp_path):
    path = _write(tmp_path / "q.tsv", "q1\td1\t2\nq2\td1\t1\nq1\td1\t0\n")
    with pytest.raises(
        ValueError, match=r"q\.tsv:3: duplicate judgment for query 'q1' and document 'd1' \(first on line 1\)"
    ):
        read_qrels(path)
    path = _write(tmp_path / "e.tsv", "q1\t \t1\n")
    with pytest.raises(ValueError, match=r"e\.tsv:1: empty query or document id"):
        read_qrels(path)


def test_corpus_and_queries_reject_duplicate_ids(tmp_path):
    corpus = _jsonl(
        tmp_path / "corpus.jsonl", {"_id": "d1", "text": "a"}, {"_id": "d2", "text": "b"}, {"_id": "d1", "text": "c"}
    )
    with pytest.raises(ValueError, match=r"corpus\.jsonl:3: duplicate document id 'd1' \(first on line 1\)"):
        read_beir_corpus(corpus)
    queries = _jsonl(tmp_path / "queries.jsonl", {"_id": "q1", "text": "a"}, {"_id": "q1", "text": "b"})
    with pytest.raises(ValueError, match=r"queries\.jsonl:2: duplicate query id 'q1' \(first on line 1\)"):
        read_beir_queries(queries)


@pytest.mark.parametrize(
    "record,message",
    [
        ({"_id": "d1", "text": ["alpha"]}, "field 'text' must be a string, got list"),
        ({"_id": "d1", "text": "alpha", "title": 3}, "field 'title' must be a string, got int"),
        ({"_id": ["d1"], "text": "alpha"}, "field '_id' must be a non-empty string id"),
        ({"_id": "d1"}, "missing field 'text'"),
        ({"text": "alpha"}, "missing field '_id'"),
    ],
)
def test_corpus_rejects_non_string_and_missing_fields_naming_the_line(tmp_path, record, message):
    path = _jsonl(tmp_path / "corpus.jsonl", {"_id": "d0", "text": "fine"}, record)
    with pytest.raises(ValueError, match=rf"corpus\.jsonl:2: {message}"):
        read_beir_corpus(path)


def test_numeric_ids_are_read_as_strings(tmp_path):
    path = _jsonl(tmp_path / "corpus.jsonl", {"_id": 7, "title": "T", "text": "x"})
    assert read_beir_corpus(path) == {"7": "T x"}


def test_queries_reject_a_non_string_instruction(tmp_path):
    path = _jsonl(tmp_path / "queries.jsonl", {"_id": "q1", "text": "a", "instruction": {"x": 1}})
    with pytest.raises(ValueError, match=r"queries\.jsonl:1: field 'instruction' must be a string"):
        read_beir_queries(path)
