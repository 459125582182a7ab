"""Readers for :func:`inf_embed.data.load_triplets`: every source becomes an iterator of (location, record).

Files: JSON lines (``.jsonl``, ``.ndjson``, or ``.json`` not starting with ``[``), JSON arrays (``.json``),
CSV / TSV (header row; a list column is a JSON array in its cell), each optionally gzip-compressed (``.gz``),
and Parquet (needs ``pyarrow``, imported only here). In memory: ``datasets.Dataset`` / ``IterableDataset``
(recognised without importing ``datasets``), pandas DataFrames and any iterable of dicts.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
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


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A source record that could not be decoded (invalid JSON line, wrong CSV column count)."""

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
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")


def _read_text(path: Path, file_format: FileFormat, encoding: str) -> Iterator[tuple[str, object]]:
    with _open_text(path, encoding) as handle:
        if file_format in ("csv", "tsv"):
            yield from _read_csv(handle, path, "\t" if file_format == "tsv" else ",")
            return
        if file_format == "json":
            head = handle.read(4096)
            if head.lstrip().startswith("["):
                try:
                    array = json.loads(head + handle.read())
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}: invalid JSON array: {error}") from None
                if not isinstance(array, list):
                    raise ValueError(f"{path}: expected a JSON array of records")
                yield from ((f"{path}, item {i}", record) for i, record in enumerate(array))
                return
            handle = io.StringIO(head + handle.read())
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record: object = json.loads(line)
            except json.JSONDecodeError as error:
                record = Undecodable(f"invalid JSON ({error.msg} at column {error.colno})")
            yield f"{path}:{number}", record


def _read_csv(handle: IO[str], path: Path, delimiter: str) -> Iterator[tuple[str, object]]:
    reader = csv.reader(handle, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    start = reader.line_num + 1
    for row in reader:
        location = f"{path}:{start}"
        start = reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            yield location, Undecodable(f"{len(row)} columns, expected {len(header)} as in the header")
            continue
        yield location, dict(zip(header, row, strict=True))


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
