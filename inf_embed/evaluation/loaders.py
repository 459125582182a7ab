"""Readers for the evaluation data formats: BEIR folders, FollowIR (mteb layout), InF-IR records, NevIR pairs.

Every reader names the file and line of a malformed record. Nothing here is shipped data: paths point at the
user's copies (e.g. ``../shared/data``).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "document_text",
    "id_field",
    "read_beir_corpus",
    "read_beir_queries",
    "read_jsonl",
    "read_qrels",
    "record_field",
    "text_field",
]

# Score-column names of a qrels header line (BEIR writes ``query-id corpus-id score``).
_HEADER_SCORE_NAMES = frozenset({"score", "scores", "relevance", "rel", "label", "grade", "judgment"})


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)`` for each non-empty line of a JSON-lines file.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming ``path:line`` for a line that is not a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            yield number, record


def record_field(record: Mapping[str, Any], name: str, where: str, *, required: bool = True) -> Any:
    if name not in record or record[name] is None:
        if required:
            raise ValueError(f"{where}: missing field {name!r} (fields: {sorted(record)})")
        return None
    return record[name]


def id_field(record: Mapping[str, Any], name: str, where: str) -> str:
    """A required id: a non-empty string, or an int (some BEIR exports write numeric ids unquoted)."""
    value = record_field(record, name, where)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise ValueError(f"{where}: field {name!r} must be a non-empty string id, got {value!r}")
    return str(value)


def text_field(record: Mapping[str, Any], name: str, where: str, *, required: bool = True) -> str | None:
    """A text field that must be a string; ``str()`` of a list or a number would be encoded as its repr."""
    value = record_field(record, name, where, required=required)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{where}: field {name!r} must be a string, got {type(value).__name__} {value!r:.80}")
    return value


def document_text(title: str | None, text: str) -> str:
    """A BEIR document as mteb encodes it: ``title + " " + text`` stripped, or the text alone without a title."""
    return f"{title} {text}".strip() if title else text.strip()


def read_beir_corpus(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a BEIR ``corpus.jsonl`` (``_id``, ``text``, optional ``title``) into ``{doc_id: text}``.

    The text is :func:`document_text` of title and text, as mteb does.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming ``path:line`` for a missing ``_id`` or ``text``, a non-string ``text`` or ``title``, or
            an ``_id`` seen before.
    """
    corpus: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, record in read_jsonl(path):
        where = f"{path}:{number}"
        doc_id = id_field(record, "_id", where)
        if doc_id in first_line:
            raise ValueError(f"{where}: duplicate document id {doc_id!r} (first on line {first_line[doc_id]})")
        first_line[doc_id] = number
        text = text_field(record, "text", where)
        corpus[doc_id] = document_text(text_field(record, "title", where, required=False), text or "")
    return corpus


def read_beir_queries(path: str | os.PathLike[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Read a BEIR ``queries.jsonl`` into ``({query_id: text}, {query_id: instruction})``.

    A query's instruction is its top-level ``instruction`` field, if any (the FollowIR / mteb layout).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming ``path:line`` for a missing ``_id`` or ``text``, a non-string ``text`` or
            ``instruction``, or an ``_id`` seen before.
    """
    queries: dict[str, str] = {}
    instructions: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, record in read_jsonl(path):
        where = f"{path}:{number}"
        query_id = id_field(record, "_id", where)
        if query_id in first_line:
            raise ValueError(f"{where}: duplicate query id {query_id!r} (first on line {first_line[query_id]})")
        first_line[query_id] = number
        queries[query_id] = text_field(record, "text", where) or ""
        instruction = text_field(record, "instruction", where, required=False)
        if instruction:
            instructions[query_id] = instruction
    return queries, instructions


def _is_qrels_header(row: Sequence[str]) -> bool:
    """Whether a first line is BEIR's header (``query-id corpus-id score``), not a data row with a typo."""
    return row[2].strip().lower() in _HEADER_SCORE_NAMES


def _relevance(value: str, where: str) -> int:
    """An integer relevance: ``"2"`` and ``"2.0"`` pass; ``"0.9"``, ``"inf"``, ``"nan"`` are errors, not truncated."""
    text = value.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{where}: relevance {value!r} is not a number") from None
    if not math.isfinite(number) or number != int(number):
        raise ValueError(f"{where}: relevance {value!r} is not an integer (qrels grades are ints, as in trec_eval)")
    return int(number)


def read_qrels(path: str | os.PathLike[str]) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV (``query-id<TAB>corpus-id<TAB>score``, with or without a header line).

    Also accepts TREC's four-column ``qid 0 docid rel`` (whitespace separated). Line 1 is skipped as a header only
    if its score column is a header name (``score``, ``relevance``, ...), so a typo in a first data row is an error
    rather than a dropped judgment. Empty trailing columns (a trailing tab) are ignored.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming ``path:line`` for a malformed line, an empty id, a relevance that is not an integer, or
            a (query, document) pair seen before.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    qrels: dict[str, dict[str, int]] = {}
    first_line: dict[tuple[str, str], int] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if len(row) == 1:
                row = row[0].split()
            while row and not row[-1].strip():
                row.pop()
            if not row:
                continue
            where = f"{path}:{number}"
            if len(row) == 4:  # TREC: qid iteration docid rel
                row = [row[0], row[2], row[3]]
            if len(row) != 3:
                raise ValueError(f"{where}: expected 3 tab-separated columns, got {len(row)}")
            if number == 1 and _is_qrels_header(row):
                continue
            query_id, doc_id = row[0].strip(), row[1].strip()
            if not query_id or not doc_id:
                raise ValueError(f"{where}: empty query or document id in {row!r}")
            score = _relevance(row[2], where)
            if (query_id, doc_id) in first_line:
                raise ValueError(
                    f"{where}: duplicate judgment for query {query_id!r} and document {doc_id!r} "
                    f"(first on line {first_line[query_id, doc_id]})"
                )
            first_line[query_id, doc_id] = number
            qrels.setdefault(query_id, {})[doc_id] = score
    return qrels
