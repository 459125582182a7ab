"""Readers for :func:`inf_embed.data.load_triplets`: every source becomes an iterator of (location, record).

Files: JSON lines (``.jsonl``, ``.ndjson``, or ``.json`` not starting with ``[``), JSON arrays (``.json``),
CSV / TSV (header row; a list column is a JSON array in its cell), each optionally gzip-compressed (``.gz``),
and Parquet (needs ``pyarrow``, imported only here). In memory: ``datasets.Dataset`` / ``IterableDataset``
(recognised without importing ``datasets``), pandas DataFrames and any iterable of dicts.

CSV is parsed strictly (RFC 4180 quoting: a quote that opens a field must close it, quotes inside a quoted field
are doubled), so a stray quote is an error at its line instead of silently joining the following records into one
field. TSV has no quoting: one record per line, every cell kept verbatim (quotes included), so a cell cannot
hold a tab or a line break (MS MARCO ``collection.tsv`` style). Text that is not valid in the given encoding, a
duplicate column in a header and a duplicate key in a JSON record are errors at their line too.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, get_args

logger = logging.getLogger(__name__)

__all__ = ["FileFormat", "Undecodable", "open_source"]

FileFormat = Literal["jsonl", "json", "csv", "tsv", "parquet"]
_SUFFIX_FORMATS: dict[str, FileFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
# csv's default cell limit (128 Ki characters) is below long web documents; 2**31 - 1 fits a C long everywhere
# (csv.field_size_limit rejects sys.maxsize on Windows) and is far above any passage an encoder can read.
_FIELD_SIZE_LIMIT = 2**31 - 1
# Bytes the decoder could not read, kept by errors="surrogateescape" as U+DC80..U+DCFF (a strict decoder never
# produces these lone surrogates from valid text, so they mark exactly the undecodable bytes).
_UNDECODABLE = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A source record that could not be decoded (invalid JSON line or text, duplicate key, CSV error, wrong column
    count)."""

    problem: str


def open_source(
    source: object,
    format: FileFormat | None,  # noqa: A002 (the load_triplets argument name)
    encoding: str,
) -> tuple[str, Iterator[tuple[str, object]]]:
    """Open any supported source as (description, iterator of (location, record)).

    Locations name the file and a 1-based line (JSON lines, CSV), or a 0-based row / item index (Parquet, JSON
    arrays, datasets, DataFrames, iterables). A record is a Mapping, or an :class:`Undecodable`, or whatever an
    iterable yielded (checked by the caller).

    Raises:
        FileNotFoundError: a path that is not a file.
        ValueError: unknown format, or ``format`` given for a non-path source.
        TypeError: an unsupported source type.
        ImportError: Parquet without pyarrow.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"load_triplets: no such file: {str(path)!r}")
        file_format = _file_format(path, format)
        if file_format == "parquet":
            return str(path), _read_parquet(path)
        return str(path), _read_text(path, file_format, encoding)
    if format is not None:
        raise ValueError(f"format={format!r} applies to file paths only; got a {type(source).__name__}")
    module = type(source).__module__.split(".")[0]
    name = type(source).__name__
    if isinstance(source, (bytes, Mapping)) and module != "datasets":
        raise TypeError(
            f"load_triplets: source is a {name}; expected a path, a datasets.Dataset, a DataFrame or an iterable "
            "of dicts (one dict per record)"
        )
    if module == "datasets":
        if name in ("DatasetDict", "IterableDatasetDict"):
            splits = ", ".join(repr(s) for s in source)  # type: ignore[attr-defined]
            raise TypeError(f"load_triplets: got a {name}; pass one split, e.g. source[split] with split in {splits}")
        rows = enumerate(source)  # type: ignore[arg-type]
        return f"datasets.{name}", ((f"datasets.{name} row {i}", row) for i, row in rows)
    if module == "pandas" and name == "DataFrame":
        rows = source.to_dict("records")  # type: ignore[attr-defined]
        return "pandas.DataFrame", ((f"DataFrame row {i}", row) for i, row in enumerate(rows))
    if isinstance(source, Iterable):
        return f"<{name}>", ((f"{name} item {i}", row) for i, row in enumerate(source))
    raise TypeError(
        f"load_triplets: unsupported source type {name}; expected a path, a datasets.Dataset, a DataFrame or an "
        "iterable of dicts"
    )


def _file_format(path: Path, format: FileFormat | None) -> FileFormat:  # noqa: A002
    if format is not None:
        if format not in get_args(FileFormat):
            raise ValueError(f"format: expected one of {', '.join(get_args(FileFormat))}, got {format!r}")
        return format
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    detected = _SUFFIX_FORMATS.get(suffixes[-1]) if suffixes else None
    if detected is None:
        raise ValueError(
            f"load_triplets: cannot tell the format of {str(path)!r} from its suffix; pass format= one of "
            f"{', '.join(get_args(FileFormat))}"
        )
    return detected


def _open_text(path: Path, encoding: str) -> IO[str]:
    # surrogateescape: an undecodable byte becomes a marker character instead of an exception raised mid-file at
    # a buffer offset, so the reader can name its line and on_error="skip" can drop just that record.
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, errors="surrogateescape", newline="")
    return open(path, encoding=encoding, errors="surrogateescape", newline="")


def _undecodable(text: str, encoding: str) -> str | None:
    """The problem with ``text`` if it holds bytes that were not valid ``encoding``, else None."""
    match = _UNDECODABLE.search(text)
    if match is None:
        return None
    byte = ord(match.group()) - 0xDC00
    return f"invalid {encoding} text: cannot decode byte 0x{byte:02x} at column {match.start() + 1}"


class _DuplicateKeys(dict):  # type: ignore[type-arg]
    """A JSON object with a repeated key (``json`` would keep the last value silently); ``key`` is the first."""

    key: str


def _json_object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """``object_pairs_hook`` of ``json.loads``: a dict, marked as :class:`_DuplicateKeys` if a key repeats."""
    record = dict(pairs)
    if len(record) == len(pairs):
        return record
    duplicates = _DuplicateKeys(record)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            duplicates.key = key
            break
        seen.add(key)
    return duplicates


def _json_record(record: object) -> object:
    """``record``, or an :class:`Undecodable` if it is an object with a repeated key."""
    if isinstance(record, _DuplicateKeys):
        return Undecodable(f"duplicate key {record.key!r} in the JSON object; keep one")
    return record


def _read_text(path: Path, file_format: FileFormat, encoding: str) -> Iterator[tuple[str, object]]:
    with _open_text(path, encoding) as handle:
        if file_format in ("csv", "tsv"):
            yield from _read_csv(handle, path, file_format, encoding)
            return
        if file_format == "json":
            head = handle.read(4096)
            if head.lstrip().startswith("["):
                text = head + handle.read()
                problem = _undecodable(text, encoding)
                if problem is not None:  # one document: no record boundary to skip to
                    line = text.count("\n", 0, _UNDECODABLE.search(text).start()) + 1  # type: ignore[union-attr]
                    raise ValueError(f"{path}:{line}: {problem}")
                try:
                    array = json.loads(text, object_pairs_hook=_json_object)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}: invalid JSON array: {error}") from None
                if not isinstance(array, list):
                    raise ValueError(f"{path}: expected a JSON array of records")
                yield from ((f"{path}, item {i}", _json_record(record)) for i, record in enumerate(array))
                return
            handle = io.StringIO(head + handle.read())
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            problem = _undecodable(line, encoding)
            if problem is not None:
                yield f"{path}:{number}", Undecodable(problem)
                continue
            try:
                record: object = _json_record(json.loads(line, object_pairs_hook=_json_object))
            except json.JSONDecodeError as error:
                record = Undecodable(f"invalid JSON ({error.msg} at column {error.colno})")
            yield f"{path}:{number}", record


def _read_csv(handle: IO[str], path: Path, file_format: FileFormat, encoding: str) -> Iterator[tuple[str, object]]:
    """Rows of a CSV / TSV file as dicts keyed by the header; a bad row becomes an :class:`Undecodable`.

    Raises:
        TripletFormatError: a column name repeated in the header (every row would lose one of its cells).
    """
    if csv.field_size_limit() < _FIELD_SIZE_LIMIT:
        csv.field_size_limit(_FIELD_SIZE_LIMIT)
    if file_format == "tsv":
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(handle, delimiter=",", strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as error:
        raise ValueError(f"{path}:{reader.line_num}: invalid {file_format.upper()} header ({error})") from None
    problem = next((p for p in (_undecodable(name, encoding) for name in header) if p is not None), None)
    if problem is not None:
        raise ValueError(f"{path}:{reader.line_num}: header: {problem}")
    seen: set[str] = set()
    for name in header:
        if name in seen:
            # imported here: triplets imports this module
            from inf_embed.data.triplets import TripletFormatError

            location = f"{path}:{reader.line_num}"
            raise TripletFormatError(location, name, "duplicate column in the header; every column needs its own name")
        seen.add(name)
    start = reader.line_num + 1
    warned_quoting = False
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            # The parser resumes at the next line, so on_error="skip" drops this record only (its lines up to the
            # error, which a stray quote may have joined, are one skipped record).
            first, end = start, reader.line_num
            start = end + 1
            span = f"line {end}" if end == first else f"lines {first}-{end}"
            quoting = file_format == "csv" and "field limit" not in str(error)
            hint = (
                "; a quote that opens a CSV field must close it, and a quote inside one is doubled" if quoting else ""
            )
            yield f"{path}:{first}", Undecodable(f"invalid {file_format.upper()} in {span} ({error}){hint}")
            continue
        first, end = start, reader.line_num
        start = end + 1
        if not any(cell.strip() for cell in row):
            continue
        location = f"{path}:{first}"
        problem = next((p for p in (_undecodable(cell, encoding) for cell in row) if p is not None), None)
        if problem is not None:
            yield (
                location,
                Undecodable(problem if end == first else f"{problem} (in the record of lines {first}-{end})"),
            )
            continue
        if file_format == "tsv" and not warned_quoting and any(_looks_csv_quoted(cell) for cell in row):
            warned_quoting = True
            logger.warning(
                "%s: TSV cells are read verbatim, without CSV quoting, but the record at line %d has a cell like "
                '"...""..."" (CSV-style quoted); write TSV without quoting (csv.QUOTE_NONE) or name the file .csv',
                path,
                first,
            )
        if len(row) != len(header):
            yield location, Undecodable(f"{len(row)} columns, expected {len(header)} as in the header")
            continue
        yield location, dict(zip(header, row, strict=True))


def _looks_csv_quoted(cell: str) -> bool:
    """Whether a TSV cell looks like a CSV writer quoted it: ``"..."`` around text with doubled quotes."""
    return len(cell) > 2 and cell[0] == cell[-1] == '"' and '""' in cell[1:-1]


def _read_parquet(path: Path) -> Iterator[tuple[str, object]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(f'reading Parquet ({path}) needs pyarrow: pip install "inf-embed[data]"') from None
    index = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            yield f"{path}, row {index}", row
            index += 1
