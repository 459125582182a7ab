"""Readers for the evaluation data formats: BEIR folders, FollowIR (mteb layout), InF-IR records, NevIR pairs.

Every reader names the file and line of a malformed record. Nothing here is shipped data: paths point at the
user's copies (e.g. ``../shared/data``).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "document_text",
    "read_beir_corpus",
    "read_beir_queries",
    "read_jsonl",
    "read_qrels",
]


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


def _field(record: Mapping[str, Any], name: str, where: str, *, required: bool = True) -> Any:
    if name not in record or record[name] is None:
        if required:
            raise ValueError(f"{where}: missing field {name!r} (fields: {sorted(record)})")
        return None
    return record[name]


def document_text(title: str | None, text: str) -> str:
    """A BEIR document as mteb encodes it: ``title + " " + text`` stripped, or the text alone without a title."""
    return f"{title} {text}".strip() if title else text.strip()


def read_beir_corpus(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a BEIR ``corpus.jsonl`` (``_id``, ``text``, optional ``title``) into ``{doc_id: text}``.

    The text is :func:`document_text` of title and text, as mteb does.
    """
    corpus: dict[str, str] = {}
    for number, record in read_jsonl(path):
        where = f"{path}:{number}"
        doc_id = str(_field(record, "_id", where))
        corpus[doc_id] = document_text(record.get("title"), str(_field(record, "text", where)))
    return corpus


def read_beir_queries(path: str | os.PathLike[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Read a BEIR ``queries.jsonl`` into ``({query_id: text}, {query_id: instruction})``.

    A query's instruction is its top-level ``instruction`` field, if any (the FollowIR / mteb layout).
    """
    queries: dict[str, str] = {}
    instructions: dict[str, str] = {}
    for number, record in read_jsonl(path):
        where = f"{path}:{number}"
        query_id = str(_field(record, "_id", where))
        queries[query_id] = str(_field(record, "text", where))
        instruction = record.get("instruction")
        if instruction:
            instructions[query_id] = str(instruction)
    return queries, instructions


def read_qrels(path: str | os.PathLike[str]) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV (``query-id<TAB>corpus-id<TAB>score``, with or without a header line).

    Also accepts TREC's four-column ``qid 0 docid rel`` (whitespace separated).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming ``path:line`` for a malformed line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if len(row) == 1:
                row = row[0].split()
            if not row or not "".join(row).strip():
                continue
            if len(row) == 4:  # TREC: qid iteration docid rel
                row = [row[0], row[2], row[3]]
            if len(row) != 3:
                raise ValueError(f"{path}:{number}: expected 3 tab-separated columns, got {len(row)}")
            try:
                score = int(float(row[2]))
            except ValueError:
                if number == 1:
                    continue  # header line
                raise ValueError(f"{path}:{number}: relevance {row[2]!r} is not a number") from None
            qrels.setdefault(row[0].strip(), {})[row[1].strip()] = score
    return qrels
