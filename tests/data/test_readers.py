"""File readers of load_triplets: verbatim TSV, strict CSV, undecodable text, long cells, duplicate columns."""

from __future__ import annotations

import csv
import gzip
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from inf_embed.data import TripletFormatError, load_triplets, readers

RECORD = {"instruction": "find a definition", "query": "what is x", "positive": "X is a thing."}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_tsv_keeps_quotes_verbatim_and_never_joins_lines(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "d.tsv",
        [
            "instruction\tquery\tpositive",
            'find a definition\twhat is ides\t"Ides" is the 15th day of March.',
            'find a date\twhen is easter\t"Easter falls on a Sunday',
            "find a place\twhere is rome\tRome is in Italy.",
            'find a person\twho was caesar\tCaesar said "veni, vidi, vici"',
        ],
    )
    data = load_triplets(path)
    assert [e.positive for e in data] == [
        '"Ides" is the 15th day of March.',
        '"Easter falls on a Sunday',
        "Rome is in Italy.",
        'Caesar said "veni, vidi, vici"',
    ]


def test_tsv_written_with_csv_quoting_is_read_verbatim_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_lines(tmp_path / "d.tsv", ["instruction\tquery\tpositive", 'i\tq\t"He said ""hi"""', "i\tq2\tp"])
    with caplog.at_level(logging.WARNING, logger="inf_embed.data.readers"):
        data = load_triplets(path)
    assert data[0].positive == '"He said ""hi"""'
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "line 2" in warning and "verbatim" in warning


@pytest.mark.parametrize(
    ("lines", "span", "kept"),
    [
        # an unclosed quote would swallow the two records after it (non-strict csv joined them silently)
        (['a,q1,"Ides is the 15th day, of March.', "b,q2,Rome is in Italy.", "c,q3,Caesar was a general."], "2-4", []),
        # a quote inside a quoted field must be doubled
        (['a,q1,"Ides" is the 15th day', "b,q2,Rome is in Italy."], "2", ["Rome is in Italy."]),
    ],
)
def test_csv_quoting_error_names_the_file_and_line_and_never_merges_records(
    tmp_path: Path, lines: list[str], span: str, kept: list[str]
) -> None:
    path = write_lines(tmp_path / "d.csv", ["instruction,query,positive", *lines])
    with pytest.raises(TripletFormatError, match=rf"d\.csv:2: invalid CSV in lines? {span} \(") as error:
        load_triplets(path)
    assert error.value.location == f"{path}:2"
    data = load_triplets(path, on_error="skip")
    assert data.num_skipped == 1 and [e.positive for e in data] == kept


def test_csv_reading_resumes_after_a_skipped_quoting_error(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.csv", ["instruction,query,positive", 'a,q1,"x"y', "b,q2,p2", 'c,q3,"p3, quoted"'])
    data = load_triplets(path, on_error="skip")
    assert [(e.query, e.positive) for e in data] == [("q2", "p2"), ("q3", "p3, quoted")]
    assert data.num_skipped == 1 and data.errors[0].startswith(f"{path}:2: invalid CSV in line 2")


def test_long_csv_cell_is_read(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerows([["instruction", "query", "positive"], ["a", "q1", "short"], ["a", "q2", "x" * 200_000]])
    assert [len(e.positive) for e in load_triplets(path)] == [5, 200_000]


def assert_bad_line_then_skipped(path: Path, match: str, kept: list[str]) -> None:
    """Reading ``path`` fails with a format error matching ``match``; with on_error="skip" only that record goes."""
    with pytest.raises(TripletFormatError, match=match):
        load_triplets(path)
    data = load_triplets(path, on_error="skip")
    assert [e.query for e in data] == kept and data.num_skipped == 1


@pytest.fixture
def small_field_limit(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """csv's cell limit lowered to 1000 characters for one test (it is process-wide), then restored."""
    before = csv.field_size_limit()
    monkeypatch.setattr(readers, "_FIELD_SIZE_LIMIT", 1000)
    csv.field_size_limit(1000)
    try:
        yield 1000
    finally:
        csv.field_size_limit(before)


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_cell_over_the_field_limit_is_a_format_error_at_its_line(
    tmp_path: Path, small_field_limit: int, suffix: str
) -> None:
    sep = "," if suffix == ".csv" else "\t"
    rows = [["instruction", "query", "positive"], ["a", "q1", "p1"], ["a", "q2", "x" * 5000], ["a", "q3", "p3"]]
    path = write_lines(tmp_path / f"d{suffix}", [sep.join(row) for row in rows])
    assert_bad_line_then_skipped(path, rf"d\{suffix}:3: invalid [CT]SV in line 3 \(field larger than", ["q1", "q3"])


def test_invalid_utf8_in_jsonl_names_the_line_and_can_be_skipped(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    good = [json.dumps({**RECORD, "query": f"q{i}"}).encode() + b"\n" for i in range(2)]
    path.write_bytes(good[0] + b'{"instruction": "a", "query": "caf\xe9", "positive": "X."}\n' + good[1])
    assert_bad_line_then_skipped(path, r"d\.jsonl:2: invalid utf-8 text: cannot decode byte 0xe9", ["q0", "q1"])
    # the same byte in latin-1 is valid text
    assert load_triplets(path, encoding="latin-1")[1].query == "caf\xe9"


def test_invalid_utf8_in_gzipped_csv_names_the_line_and_can_be_skipped(tmp_path: Path) -> None:
    path = tmp_path / "d.csv.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(b'instruction,query,positive\na,q1,p1\na,"caf\xe9\nmenu",p2\na,q3,p3\n')
    assert_bad_line_then_skipped(path, r"d\.csv\.gz:3: invalid utf-8 text: .* of lines 3-4", ["q1", "q3"])


def test_invalid_utf8_in_a_json_array_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_bytes(b'[\n{"instruction": "a", "query": "q", "positive": "p"},\n{"query": "caf\xe9"}\n]\n')
    with pytest.raises(ValueError, match=r"d\.json:3: invalid utf-8 text"):
        load_triplets(path)


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_duplicate_header_column_is_an_error_naming_it(tmp_path: Path, suffix: str) -> None:
    sep = "," if suffix == ".csv" else "\t"
    rows = [["instruction", "query", "positive", "query"], ["i", "q", "p", "q2"]]
    path = write_lines(tmp_path / f"d{suffix}", [sep.join(row) for row in rows])
    with pytest.raises(TripletFormatError, match=rf"d\{suffix}:1: field 'query': duplicate column") as error:
        load_triplets(path, on_error="skip")  # a broken header is not one record to skip
    assert error.value.field == "query"


def test_duplicate_json_key_is_a_record_error_naming_it(tmp_path: Path) -> None:
    lines = [json.dumps(RECORD), '{"instruction": "a", "query": "what is x", "positive": "X.", "query": "what is y"}']
    path = write_lines(tmp_path / "d.jsonl", lines)
    with pytest.raises(TripletFormatError, match=r"d\.jsonl:2: duplicate key 'query'"):
        load_triplets(path)
    assert load_triplets(path, on_error="skip").num_skipped == 1
    array = tmp_path / "d.json"
    array.write_text("[" + ", ".join(lines) + "]", encoding="utf-8")
    with pytest.raises(TripletFormatError, match=r"d\.json, item 1: duplicate key 'query'"):
        load_triplets(array)


def test_repeated_keys_inside_a_nested_value_do_not_reject_the_record(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "d.jsonl", ['{"instruction": "a", "query": "q", "positive": "p", "meta": {"k": 1, "k": 2}}']
    )
    assert load_triplets(path)[0].query == "q"
