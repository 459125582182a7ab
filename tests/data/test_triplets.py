"""load_triplets and TripletExample: formats, both schemas, column mapping, errors, skipping, expansion."""

from __future__ import annotations

import csv
import gzip
import json
import logging
import sys
from pathlib import Path

import pytest

from inf_embed.data import (
    TripletDataset,
    TripletExample,
    TripletFormatError,
    known_columns,
    load_triplets,
    with_foreign_instructions,
    with_plain_queries,
)

DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "infir-marco"

INFIR_RECORD = {
    "id": "r1",
    "query_positive": "q+",
    "instruction_positive": "i+",
    "document": "p+",
    "query_negative": "q-",
    "instruction_negative": "i-",
    "hard_negative_document_1": "hn1",
    "hard_negative_document_2": "hn2",
    "query_id": "17",
}
SIMPLE_RECORD = {"instruction": "i", "query": "q", "positive": "p", "negatives": ["n1", "n2"]}


def write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_infir_record_maps_every_field(tmp_path: Path) -> None:
    data = load_triplets(write_jsonl(tmp_path / "d.jsonl", [INFIR_RECORD]))
    assert isinstance(data, TripletDataset) and len(data) == 1 and data.num_skipped == 0
    assert data[0] == TripletExample(
        instruction="i+",
        query="q+",
        positive="p+",
        instruction_negative="i-",
        query_negative="q-",
        instruction_negative_passage="hn1",
        query_negative_passage="hn2",
        id="r1",
    )


def test_infir_record_accepts_document_positive_and_missing_negatives() -> None:
    record = {"query_positive": "q", "instruction_positive": "i", "document_positive": "p"}
    (example,) = load_triplets([record])
    assert (example.positive, example.negatives, example.instruction_negative, example.query_negative_passage) == (
        "p",
        (),
        None,
        None,
    )


def test_unsuffixed_hard_negative_document_is_a_plain_negative() -> None:
    (example,) = load_triplets([{**INFIR_RECORD, "hard_negative_document": "hn"}])
    assert example.negatives == ("hn",)


def test_passage_without_its_poisoned_text_becomes_a_plain_negative() -> None:
    record = {k: v for k, v in INFIR_RECORD.items() if k not in ("instruction_negative", "query_negative")}
    (example,) = load_triplets([record])
    assert example.negatives == ("hn1", "hn2")
    assert example.instruction_negative_passage is None and example.query_negative_passage is None


def test_simple_schema_reads_negatives_list_and_single_negative() -> None:
    data = load_triplets([SIMPLE_RECORD, {"instruction": "", "query": "q2", "positive": "p2", "negative": "n"}])
    assert data[0].negatives == ("n1", "n2")
    assert data[1].instruction == "" and data[1].negatives == ("n",)


def test_to_dict_round_trips() -> None:
    (example,) = load_triplets([INFIR_RECORD])
    assert load_triplets([example.to_dict()])[0] == example


def test_csv_and_tsv_with_json_negatives_list(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["instruction", "query", "positive", "negatives"])
        writer.writerow(["i", "q", "multi\nline passage", json.dumps(["n1", "n2"])])
        writer.writerow(["i2", "q2", "p2", ""])
    data = load_triplets(path)
    assert [e.positive for e in data] == ["multi\nline passage", "p2"]
    assert data[0].negatives == ("n1", "n2") and data[1].negatives == ()
    # TSV has no quoting: one record per line, the JSON list's quotes as they are
    tsv = tmp_path / "d.tsv"
    rows = [
        ["instruction", "query", "positive", "negatives"],
        ["i", "q", "p", json.dumps(["n1", "n2"])],
        ["i2", "q2", "p2", ""],
    ]
    tsv.write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")
    data = load_triplets(tsv)
    assert [e.positive for e in data] == ["p", "p2"]
    assert data[0].negatives == ("n1", "n2") and data[1].negatives == ()


def test_csv_error_names_the_line_of_the_record(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('instruction,query,positive\ni,q,"two\nlines"\ni,q,\n', encoding="utf-8")
    with pytest.raises(TripletFormatError, match=r"d\.csv:4: field 'positive'"):
        load_triplets(path)


def test_gzipped_jsonl_and_json_array(tmp_path: Path) -> None:
    gz = tmp_path / "d.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps(SIMPLE_RECORD) + "\n")
    assert len(load_triplets(gz)) == 1
    array = tmp_path / "d.json"
    array.write_text(json.dumps([SIMPLE_RECORD, SIMPLE_RECORD]), encoding="utf-8")
    assert len(load_triplets(array)) == 2
    lines = write_jsonl(tmp_path / "lines.json", [SIMPLE_RECORD])
    assert len(load_triplets(lines)) == 1


def test_format_argument_overrides_suffix(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.txt", [SIMPLE_RECORD])
    with pytest.raises(ValueError, match="format="):
        load_triplets(path)
    assert len(load_triplets(path, format="jsonl")) == 1
    with pytest.raises(ValueError, match="format: expected one of"):
        load_triplets(path, format="xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="file paths only"):
        load_triplets([SIMPLE_RECORD], format="jsonl")


def test_generator_and_limit() -> None:
    data = load_triplets((dict(SIMPLE_RECORD, query=f"q{i}") for i in range(5)), limit=3)
    assert [e.query for e in data] == ["q0", "q1", "q2"]


def test_column_mapping_renames_and_drops(tmp_path: Path) -> None:
    record = {"question": "q", "answer": "p", "task": "i", "query": "unused", "negatives": ["n"]}
    data = load_triplets(
        [record], column_mapping={"question": "query", "answer": "positive", "task": "instruction", "query": None}
    )
    assert (data[0].query, data[0].positive, data[0].instruction, data[0].negatives) == ("q", "p", "i", ("n",))


def test_column_mapping_unknown_target_lists_known_names() -> None:
    with pytest.raises(ValueError, match="column_mapping\\['question'\\] = 'qry'") as error:
        load_triplets([SIMPLE_RECORD], column_mapping={"question": "qry"})
    assert "query_positive" in str(error.value)
    assert set(known_columns()) >= {"document", "hard_negative_document_2", "negatives"}


def test_unknown_columns_are_a_warning_naming_the_likely_typo(caplog: pytest.LogCaptureFixture) -> None:
    record = dict(SIMPLE_RECORD, instruction_negatve="typo", query_id="7", notes="x")
    with caplog.at_level(logging.WARNING, logger="inf_embed.data.triplets"):
        load_triplets([record])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'instruction_negatve' (did you mean 'instruction_negative'?)" in warnings[0]
    assert "'notes'" in warnings[0] and "query_id" not in warnings[0]  # InF-IR's provenance column is expected
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="inf_embed.data.triplets"):
        load_triplets([record], column_mapping={"instruction_negatve": None, "notes": None})
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_column_mapping_collision_is_a_record_error() -> None:
    with pytest.raises(TripletFormatError, match="'question': maps to 'query'"):
        load_triplets([dict(SIMPLE_RECORD, question="q")], column_mapping={"question": "query"})


@pytest.mark.parametrize(
    ("record", "field", "problem"),
    [
        ({k: v for k, v in INFIR_RECORD.items() if k != "document"}, "document", "missing"),
        (dict(INFIR_RECORD, query_positive="  "), "query_positive", "non-empty"),
        (dict(INFIR_RECORD, instruction_positive=3), "instruction_positive", "expected a string, got int"),
        (dict(INFIR_RECORD, document_positive="other"), "document", "ambiguous"),
        (dict(INFIR_RECORD, instruction_negative="i+"), "instruction_negative", "identical to 'instruction_positive'"),
        (dict(INFIR_RECORD, hard_negative_document_1="p+"), "hard_negative_document_1", "identical to 'document'"),
        (dict(SIMPLE_RECORD, negatives=["n", 5]), "negatives[1]", "expected a string"),
        (dict(SIMPLE_RECORD, negatives={"a": 1}), "negatives", "expected a list"),
        (dict(SIMPLE_RECORD, negatives=["p"]), "negatives", "identical to 'positive'"),
        ({k: v for k, v in SIMPLE_RECORD.items() if k != "instruction"}, "instruction", "missing"),
    ],
)
def test_malformed_record_error_names_file_line_and_field(
    tmp_path: Path, record: dict, field: str, problem: str
) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [SIMPLE_RECORD, record])
    with pytest.raises(TripletFormatError) as error:
        load_triplets(path)
    assert isinstance(error.value, ValueError)
    assert error.value.location == f"{path}:2"
    assert error.value.field == field
    assert str(error.value).startswith(f"{path}:2: field '{field}': ")
    assert problem in str(error.value)


def test_invalid_json_line_and_non_object_are_record_errors(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(SIMPLE_RECORD) + "\n\n{not json\n[1, 2]\n", encoding="utf-8")
    with pytest.raises(TripletFormatError, match=r"d\.jsonl:3: invalid JSON"):
        load_triplets(path)
    data = load_triplets(path, on_error="skip")
    assert len(data) == 1 and data.num_skipped == 2
    assert "d.jsonl:4: expected a record of named fields, got list" in data.errors[1]


def test_skip_counts_and_warns_once_with_the_count(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = {k: v for k, v in SIMPLE_RECORD.items() if k != "positive"}
    path = write_jsonl(tmp_path / "d.jsonl", [SIMPLE_RECORD, bad, SIMPLE_RECORD, bad, bad])
    with caplog.at_level(logging.WARNING, logger="inf_embed.data.triplets"):
        data = load_triplets(path, on_error="skip")
    assert (len(data), data.num_skipped, len(data.errors)) == (2, 3, 3)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipped 3 malformed record(s)" in warnings[0].getMessage()
    assert f"{path}:2: field 'positive'" in warnings[0].getMessage()


def test_iterable_error_location_is_the_item_index() -> None:
    with pytest.raises(TripletFormatError, match=r"^list item 1: field 'query'"):
        load_triplets([SIMPLE_RECORD, dict(SIMPLE_RECORD, query=None)])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"on_error": "ignore"}, "on_error"), ({"limit": -1}, "limit"), ({"column_mapping": ["a"]}, "column_mapping")],
)
def test_invalid_arguments_raise_naming_them(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_triplets([SIMPLE_RECORD], **kwargs)


def test_unsupported_sources_raise(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_triplets(tmp_path / "missing.jsonl")
    with pytest.raises(TypeError, match="one dict per record"):
        load_triplets(SIMPLE_RECORD)
    with pytest.raises(TypeError, match="unsupported source type int"):
        load_triplets(3)


def test_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow", reason="pyarrow not installed (extra inf-embed[data])")
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([INFIR_RECORD, dict(INFIR_RECORD, hard_negative_document_2=None)]), path)
    data = load_triplets(path)
    assert [len(e.items()) for e in data] == [3, 2]
    with pytest.raises(TripletFormatError, match=r"d\.parquet, row 1: field 'document'"):
        pq.write_table(pa.Table.from_pylist([INFIR_RECORD, dict(INFIR_RECORD, document="")]), path)
        load_triplets(path)


def test_parquet_without_pyarrow_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r'pip install "inf-embed\[data\]"'):
        load_triplets(path)


def test_huggingface_dataset_and_dataset_dict() -> None:
    datasets = pytest.importorskip("datasets", reason="datasets not installed (extra inf-embed[data])")
    dataset = datasets.Dataset.from_list([INFIR_RECORD, dict(INFIR_RECORD, query_negative=None)])
    data = load_triplets(dataset)
    assert len(data) == 2 and data[1].query_negative is None
    with pytest.raises(TypeError, match="pass one split"):
        load_triplets(datasets.DatasetDict({"train": dataset}))
    with pytest.raises(TripletFormatError, match=r"datasets\.Dataset row 0: field 'document'"):
        load_triplets(datasets.Dataset.from_list([dict(INFIR_RECORD, document=None)]))


def test_pandas_dataframe_with_missing_values() -> None:
    pd = pytest.importorskip("pandas", reason="pandas not installed")
    frame = pd.DataFrame([INFIR_RECORD, {k: v for k, v in INFIR_RECORD.items() if k != "hard_negative_document_2"}])
    data = load_triplets(frame)
    assert data[1].query_negative_passage is None  # NaN means absent


def test_dataset_slicing_keeps_type() -> None:
    data = load_triplets([dict(SIMPLE_RECORD, query=f"q{i}") for i in range(4)])
    assert isinstance(data[1:3], TripletDataset) and [e.query for e in data[1:3]] == ["q1", "q2"]
    assert "4 records" in repr(data)


@pytest.mark.skipif(not (DATA_DIR / "train.jsonl").is_file(), reason="shared infir-marco data not present")
def test_real_infir_marco_splits_load_without_errors() -> None:
    train = load_triplets(DATA_DIR / "train.jsonl")
    dev = load_triplets(DATA_DIR / "dev.jsonl")
    assert (len(train), len(dev), train.num_skipped, dev.num_skipped) == (1243, 200, 0, 0)
    assert all(e.query_negative_passage is None and e.instruction_negative_passage for e in train)
    assert len(train.items()) == 2 * 1243
    assert train[0].id and train[0].id.startswith("msmarco-")


def test_with_plain_queries_appends_one_plain_record_per_instructed_record() -> None:
    data = load_triplets(
        [
            INFIR_RECORD,
            {**SIMPLE_RECORD, "id": "s"},
            {**SIMPLE_RECORD, "instruction": "another instruction"},  # same (query, positive): no second plain
            {"instruction": "", "query": "bare", "positive": "pb"},  # already plain: nothing added
        ]
    )
    out = with_plain_queries(data)
    assert isinstance(out, TripletDataset) and list(out[:4]) == list(data)
    assert [(e.instruction, e.query, e.positive, e.negatives, e.id) for e in out[4:]] == [
        ("", "q+", "p+", (), "r1-plain"),
        ("", "q", "p", (), "s-plain"),
    ]
    plain = out[4]
    assert plain.instruction_negative is None and plain.query_negative is None
    assert [item.kind for item in plain.items()] == ["positive"]
    assert len(with_plain_queries([])) == 0


def _topic(name: str, **extra) -> dict:
    return {"instruction": f"about {name}", "query": f"q {name}", "positive": f"p {name}", "id": name, **extra}


def test_with_foreign_instructions_gives_each_query_another_records_instruction_and_passage() -> None:
    data = load_triplets([_topic(name) for name in "abcdef"] + [{"instruction": "", "query": "bare", "positive": "pb"}])
    out = with_foreign_instructions(data, seed=3)
    assert isinstance(out, TripletDataset) and list(out[:7]) == list(data)
    foreign = list(out[7:])
    assert [e.id for e in foreign] == [f"{name}-foreign" for name in "abcdef"]  # record order, plain record skipped
    by_instruction = {e.instruction: e for e in data}
    for e in foreign:
        donor = by_instruction[e.instruction]
        assert donor.query != e.query and e.positive == f"p {e.query[2:]}"  # someone else's instruction, own passage
        assert e.negatives == (donor.positive,) and e.instruction_negative is None and e.query_negative is None
        assert [item.kind for item in e.items()] == ["positive"]
    assert sorted(e.instruction for e in foreign) == sorted(e.instruction for e in data[:6])  # each donates once
    assert [e.instruction for e in with_foreign_instructions(data, seed=3)[7:]] == [e.instruction for e in foreign]
    assert [e.instruction for e in with_foreign_instructions(data, seed=4)[7:]] != [e.instruction for e in foreign]


def test_with_foreign_instructions_skips_donors_with_the_same_instruction_query_or_passage() -> None:
    same_query = load_triplets([_topic("a"), {**_topic("b"), "query": "q a"}])
    assert len(with_foreign_instructions(same_query)) == 2
    same_passage = load_triplets([_topic("a"), {**_topic("b"), "positive": "p a"}])
    assert len(with_foreign_instructions(same_passage)) == 2
    same_instruction = load_triplets([_topic("a"), {**_topic("b"), "instruction": "about a"}])
    assert len(with_foreign_instructions(same_instruction)) == 2
    assert len(with_foreign_instructions(load_triplets([_topic("a")]))) == 1  # no other record to borrow from
    assert len(with_foreign_instructions([])) == 0


def test_example_built_in_code_treats_empty_optional_texts_as_absent() -> None:
    example = TripletExample("i+", "q+", "p+", instruction_negative="", instruction_negative_passage="hn1")
    items = example.items()
    # "" is the plain query's instruction: it must not become a poisoned instruction or an item of its own
    assert [item.instruction for item in items] == ["i+"]
    assert items[0].instruction_negatives == ()
    assert items[0].negatives == ("hn1",)  # orphan hn1: a plain hard negative, as load_triplets reads it
    assert example == load_triplets([example.to_dict()])[0]
    spaced = TripletExample("i+", "q+", "p+", negatives=["n", " "], query_negative="  ", query_negative_passage="hn2")
    assert spaced.query_negative is None and spaced.items()[0].query_negatives == ()
    assert spaced.negatives == ("n", "hn2")


def test_with_foreign_instructions_warns_when_it_can_make_none(caplog: pytest.LogCaptureFixture) -> None:
    same_instruction = [TripletExample("i", f"q{k}", f"p{k}") for k in range(3)]
    with caplog.at_level(logging.WARNING, logger="inf_embed.data.triplets"):
        assert len(with_foreign_instructions(same_instruction)) == 3
    assert "no foreign-instruction record" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="inf_embed.data.triplets"):
        with_foreign_instructions([TripletExample("a", "q1", "p1"), TripletExample("b", "q2", "p2")])
    assert caplog.text == ""
