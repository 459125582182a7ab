"""Training records: :class:`TripletExample`, the InF-IR expansion into items, and :func:`load_triplets`.

Two schemas are read, field by field (a record may use either name for a field):

======================================  =====================================  ===================================
:class:`TripletExample` field           InF-IR schema (paper §3)               simple schema
======================================  =====================================  ===================================
``instruction`` (I+, required)          ``instruction_positive``               ``instruction``
``query`` (Q+, required)                ``query_positive``                     ``query``
``positive`` (P+, required)             ``document`` or ``document_positive``  ``positive``
``negatives`` (hard negatives of P+)    ``hard_negative_document``             ``negatives`` (list), ``negative``
``instruction_negative`` (I-)           ``instruction_negative``               ``instruction_negative``
``query_negative`` (Q-)                 ``query_negative``                     ``query_negative``
``instruction_negative_passage`` (hn1)  ``hard_negative_document_1``           ``instruction_negative_passage``
``query_negative_passage`` (hn2)        ``hard_negative_document_2``           ``query_negative_passage``
``id``                                  ``id`` or ``_id``                      ``id`` or ``_id``
======================================  =====================================  ===================================

Every negative is optional (``infir-marco`` has no ``hard_negative_document_2``). ``hn1`` is the passage that
answers Q+ under I- (the positive of the item (I-, Q+)); ``hn2`` answers Q- under I+. Without a suffix,
``hard_negative_document`` cannot be tied to a poisoned pair, so it is read as a plain hard negative of
(I+, Q+). A ``hard_negative_document_1`` without ``instruction_negative`` (or ``_2`` without
``query_negative``) is likewise kept as a plain hard negative. Other columns (``query_id``, ...) are ignored.
The instruction may be empty (but must be present); other required texts may not; an empty or null optional
field counts as absent. Texts are kept verbatim (no stripping or re-encoding).

Expansion (paper §2.2, bug B13): :meth:`TripletExample.items` turns one record into its items (I+, Q+, P+),
(I-, Q+, hn1) and (I+, Q-, hn2), the last two only when their passage exists. The unit of a dataset is the
record, so a DataLoader fetching one index at a time gets all of a record's items together; nothing relies on
batched fetch re-splitting rows.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args, overload

from inf_embed.data.readers import FileFormat, Undecodable, open_source

logger = logging.getLogger(__name__)

__all__ = [
    "FileFormat",
    "ItemKind",
    "TripletDataset",
    "TripletExample",
    "TripletFormatError",
    "TripletItem",
    "known_columns",
    "load_triplets",
    "with_foreign_instructions",
    "with_plain_queries",
]

ItemKind = Literal["positive", "instruction_negative", "query_negative"]
OnError = Literal["raise", "skip"]

# TripletExample field -> accepted column names, first the canonical one.
_ALIASES: dict[str, tuple[str, ...]] = {
    "instruction": ("instruction", "instruction_positive"),
    "query": ("query", "query_positive"),
    "positive": ("positive", "document", "document_positive"),
    "instruction_negative": ("instruction_negative",),
    "query_negative": ("query_negative",),
    "instruction_negative_passage": ("instruction_negative_passage", "hard_negative_document_1"),
    "query_negative_passage": ("query_negative_passage", "hard_negative_document_2"),
    "id": ("id", "_id"),
}
# Columns whose values are appended to TripletExample.negatives (a list, or one passage).
_NEGATIVE_COLUMNS: tuple[str, ...] = ("negatives", "negative", "hard_negative_document")
_REQUIRED: tuple[str, ...] = ("instruction", "query", "positive")
# Columns that mark a record as InF-IR schema, and the InF-IR name of each required field (for messages).
_INFIR_MARKERS: tuple[str, ...] = ("instruction_positive", "query_positive", "document", "document_positive")
_INFIR_NAMES: dict[str, str] = {
    "instruction": "instruction_positive",
    "query": "query_positive",
    "positive": "document",
}
# A poisoned item's passage needs its poisoned text; without it the passage is a plain hard negative.
_PASSAGE_NEEDS: dict[str, str] = {
    "instruction_negative_passage": "instruction_negative",
    "query_negative_passage": "query_negative",
}
# Pairs that must differ: equal texts would make contradictory items (one query side, two positives).
_MUST_DIFFER: tuple[tuple[str, str], ...] = (
    ("instruction_negative", "instruction"),
    ("query_negative", "query"),
    ("instruction_negative_passage", "positive"),
    ("query_negative_passage", "positive"),
)
# Optional single-text fields of TripletExample: empty means absent.
_OPTIONAL_TEXTS: tuple[str, ...] = (
    "instruction_negative",
    "query_negative",
    "instruction_negative_passage",
    "query_negative_passage",
)
# Columns of the published InF-IR files that are provenance only: ignored without a warning.
_METADATA_COLUMNS: frozenset[str] = frozenset({"query_id", "document_id"})
# Skipped-record messages kept on the dataset (the count is always exact).
_MAX_KEPT_ERRORS = 100


def known_columns() -> tuple[str, ...]:
    """Every column name :func:`load_triplets` understands (targets allowed in ``column_mapping``)."""
    names = [name for aliases in _ALIASES.values() for name in aliases]
    return tuple(names + list(_NEGATIVE_COLUMNS))


class TripletFormatError(ValueError):
    """A malformed record. The message starts with the location (``file:line``, or ``file, row i``).

    Attributes:
        location: where the record is, e.g. ``"train.jsonl:17"``; lines are 1-based, rows and items 0-based.
        field: the offending column as named in the source, or None for a record-level problem.
        problem: what was wrong and what was expected.
    """

    def __init__(self, location: str, field: str | None, problem: str) -> None:
        self.location = location
        self.field = field
        self.problem = problem
        where = f"{location}: field {field!r}" if field is not None else location
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True, slots=True)
class TripletItem:
    """One training item: a query side (instruction, query) and its positive passage.

    Attributes:
        instruction: the item's instruction (may be empty).
        query: the item's query.
        positive: the passage relevant to (instruction, query).
        negatives: hard-negative passages of this item (candidates of the P term).
        instruction_negatives: instructions that ``positive`` fails for ``query`` (always-included negatives of
            the I term).
        query_negatives: (instruction, query) pairs that must not retrieve ``positive`` and are not items of the
            same record (query-side negatives of the IQ term), e.g. (I+, Q-) when the record has no hn2.
        kind: which of the record's items this is.
        record_id: the record's ``id``, if any.
    """

    instruction: str
    query: str
    positive: str
    negatives: tuple[str, ...] = ()
    instruction_negatives: tuple[str, ...] = ()
    query_negatives: tuple[tuple[str, str], ...] = ()
    kind: ItemKind = "positive"
    record_id: str | None = None


@dataclass(frozen=True, slots=True)
class TripletExample:
    """One training record (InF-IR or simple schema; see the module docstring for the column names).

    Attributes:
        instruction: I+, may be empty.
        query: Q+.
        positive: P+, the passage relevant to (I+, Q+).
        negatives: plain hard-negative passages of (I+, Q+).
        instruction_negative: I-, a poisoned instruction that P+ fails.
        query_negative: Q-, a poisoned query that P+ does not answer.
        instruction_negative_passage: hn1, the passage relevant to (I-, Q+); needs ``instruction_negative``.
        query_negative_passage: hn2, the passage relevant to (I+, Q-); needs ``query_negative``.
        id: the record's id, if any.

    Built in code, a record follows the loader's rules: an empty optional text is None, and an hn1 / hn2 without
    its poisoned text becomes a plain hard negative.
    """

    instruction: str
    query: str
    positive: str
    negatives: tuple[str, ...] = ()
    instruction_negative: str | None = None
    query_negative: str | None = None
    instruction_negative_passage: str | None = None
    query_negative_passage: str | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        # Records built in code (not by load_triplets) follow the loader's rule too: an empty optional text means
        # "absent". Otherwise instruction_negative="" would make "" (the plain query) a poisoned instruction,
        # and an item (I- = "", Q+, hn1) would train the plain query towards hn1.
        for name in _OPTIONAL_TEXTS:
            value = getattr(self, name)
            if isinstance(value, str) and not value.strip():
                object.__setattr__(self, name, None)
        negatives = tuple(text for text in self.negatives if not isinstance(text, str) or text.strip())
        for name, needs in _PASSAGE_NEEDS.items():
            passage = getattr(self, name)
            if passage is not None and getattr(self, needs) is None:  # as the loader does: a plain hard negative
                object.__setattr__(self, name, None)
                if passage not in negatives and passage != self.positive:
                    negatives += (passage,)
        if negatives != self.negatives or not isinstance(self.negatives, tuple):
            object.__setattr__(self, "negatives", negatives)

    def items(self) -> tuple[TripletItem, ...]:
        """Expand the record into its items, in the paper's order (§2.2).

        1. (I+, Q+, P+), with the record's plain ``negatives`` as hard negatives, I- (if any) as an instruction
           negative, and the poisoned pairs that are not items below as query-side negatives;
        2. (I-, Q+, hn1) when both exist, with I+ as an instruction negative (hn1 fails I+);
        3. (I+, Q-, hn2) when both exist.

        Items 2 and 3 are positives of their own; through the in-batch blocks P+ becomes their negative and
        they become negatives of P+. Keep all items of a record in the same batch.

        Returns:
            One to three items.
        """
        has_i_item = self.instruction_negative is not None and self.instruction_negative_passage is not None
        has_q_item = self.query_negative is not None and self.query_negative_passage is not None
        poisoned_pairs: list[tuple[str, str]] = []
        if self.instruction_negative is not None and not has_i_item:
            poisoned_pairs.append((self.instruction_negative, self.query))
        if self.query_negative is not None and not has_q_item:
            poisoned_pairs.append((self.instruction, self.query_negative))
        items = [
            TripletItem(
                self.instruction,
                self.query,
                self.positive,
                negatives=self.negatives,
                instruction_negatives=() if self.instruction_negative is None else (self.instruction_negative,),
                query_negatives=tuple(poisoned_pairs),
                kind="positive",
                record_id=self.id,
            )
        ]
        if has_i_item:
            items.append(
                TripletItem(
                    self.instruction_negative,  # type: ignore[arg-type]
                    self.query,
                    self.instruction_negative_passage,  # type: ignore[arg-type]
                    instruction_negatives=(self.instruction,),
                    kind="instruction_negative",
                    record_id=self.id,
                )
            )
        if has_q_item:
            items.append(
                TripletItem(
                    self.instruction,
                    self.query_negative,  # type: ignore[arg-type]
                    self.query_negative_passage,  # type: ignore[arg-type]
                    kind="query_negative",
                    record_id=self.id,
                )
            )
        return tuple(items)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with the canonical column names (``load_triplets`` reads it back unchanged)."""
        record = asdict(self)
        record["negatives"] = list(self.negatives)
        return record


class TripletDataset(Sequence[TripletExample]):
    """The records read by :func:`load_triplets`: a sequence of :class:`TripletExample`, one per valid record.

    Usable directly as a map-style ``torch.utils.data.Dataset`` (each index is a whole record, so a record's
    items stay together).

    Attributes:
        examples: the records.
        num_skipped: how many malformed records were skipped (``on_error="skip"``).
        errors: messages of the first skipped records (at most 100).
        source: a description of where the records came from.
    """

    def __init__(
        self,
        examples: Iterable[TripletExample],
        *,
        num_skipped: int = 0,
        errors: Sequence[str] = (),
        source: str = "<memory>",
    ) -> None:
        self.examples: list[TripletExample] = list(examples)
        self.num_skipped = num_skipped
        self.errors: tuple[str, ...] = tuple(errors)
        self.source = source

    def __len__(self) -> int:
        return len(self.examples)

    @overload
    def __getitem__(self, index: int) -> TripletExample: ...

    @overload
    def __getitem__(self, index: slice) -> TripletDataset: ...

    def __getitem__(self, index: int | slice) -> TripletExample | TripletDataset:
        if isinstance(index, slice):
            return TripletDataset(self.examples[index], source=self.source)
        return self.examples[index]

    def __iter__(self) -> Iterator[TripletExample]:
        return iter(self.examples)

    def __repr__(self) -> str:
        return f"TripletDataset({len(self)} records from {self.source}, {self.num_skipped} skipped)"

    def items(self) -> list[TripletItem]:
        """All items of all records, each record's items adjacent (see :meth:`TripletExample.items`)."""
        return [item for example in self.examples for item in example.items()]


def load_triplets(
    source: str | os.PathLike[str] | Iterable[Mapping[str, Any]] | object,
    *,
    format: FileFormat | None = None,  # noqa: A002 (mirrors pandas / datasets naming)
    column_mapping: Mapping[str, str | None] | None = None,
    on_error: OnError = "raise",
    limit: int | None = None,
    encoding: str = "utf-8",
) -> TripletDataset:
    """Read training triplets from a file, a Hugging Face dataset, a DataFrame or an iterable of dicts.

    Args:
        source: a path to a ``.jsonl`` / ``.ndjson``, ``.json`` (JSON lines or one array), ``.csv``, ``.tsv``
            (each optionally ``.gz``) or ``.parquet`` file; a ``datasets.Dataset`` / ``IterableDataset``; a
            pandas DataFrame; or any iterable of dicts.
        format: the file format when the suffix does not tell; only for paths.
        column_mapping: source column -> column name understood here (:func:`known_columns`), applied before
            reading, e.g. ``{"question": "query", "answer": "positive"}``; map a column to None to ignore it.
        on_error: ``"raise"`` stops at the first malformed record with a :class:`TripletFormatError` (a
            ValueError naming the file, line and field); ``"skip"`` drops malformed records, counts them in
            ``num_skipped`` and logs one warning with the count.
        limit: read at most this many source records.
        encoding: text encoding of JSON / CSV files.

    Returns:
        A :class:`TripletDataset`, one :class:`TripletExample` per valid source record, in source order.

    Raises:
        TripletFormatError: a malformed record with ``on_error="raise"``.
        ValueError: an invalid argument, an unknown file format, or a bad ``column_mapping``.
        FileNotFoundError: the path does not exist.
        ImportError: Parquet without ``pyarrow`` (``pip install "inf-embed[data]"``).
        TypeError: ``source`` is not a supported type.
    """
    if on_error not in get_args(OnError):
        raise ValueError(f"on_error: expected 'raise' or 'skip', got {on_error!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit: expected a non-negative integer or None, got {limit!r}")
    mapping = _check_column_mapping(column_mapping)

    description, records = open_source(source, format, encoding)
    examples: list[TripletExample] = []
    errors: list[str] = []
    num_skipped = 0
    ignored: set[str] = set()
    for count, (location, record) in enumerate(records):
        if limit is not None and count >= limit:
            break
        try:
            examples.append(_parse_record(record, location, mapping, ignored))
        except TripletFormatError as error:
            if on_error == "raise":
                raise
            num_skipped += 1
            if len(errors) < _MAX_KEPT_ERRORS:
                errors.append(str(error))
    if ignored - _METADATA_COLUMNS:
        # a typo'd optional column (e.g. "instruction_negatve") silently drops that field from every record
        logger.warning(
            "load_triplets(%s): ignored unknown column(s) %s; map a column with column_mapping, or map it to None "
            "to ignore it silently",
            description,
            ", ".join(_describe_unknown(name) for name in sorted(ignored - _METADATA_COLUMNS)),
        )
    if num_skipped:
        logger.warning(
            "load_triplets(%s): skipped %d malformed record(s), kept %d; first: %s",
            description,
            num_skipped,
            len(examples),
            errors[0],
        )
    return TripletDataset(examples, num_skipped=num_skipped, errors=errors, source=description)


# ----------------------------------------------------------------------------------------------------------------
# Parsing one record.
# ----------------------------------------------------------------------------------------------------------------


def _describe_unknown(name: str) -> str:
    """``name`` quoted, with the closest known column name when one is close (a likely typo)."""
    close = difflib.get_close_matches(name, known_columns(), n=1)
    return f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)


def _check_column_mapping(column_mapping: Mapping[str, str | None] | None) -> dict[str, str | None]:
    if column_mapping is None:
        return {}
    if not isinstance(column_mapping, Mapping):
        raise ValueError(f"column_mapping: expected a dict of source column -> column name, got {column_mapping!r}")
    known = known_columns()
    mapping: dict[str, str | None] = {}
    for source_name, target in column_mapping.items():
        if target is not None and target not in known:
            raise ValueError(
                f"column_mapping[{source_name!r}] = {target!r}: unknown column name; expected None or one of "
                f"{', '.join(known)}"
            )
        mapping[str(source_name)] = target
    return mapping


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _parse_record(
    record: object, location: str, mapping: Mapping[str, str | None], ignored: set[str]
) -> TripletExample:
    """Validate one source record and build its TripletExample; raises TripletFormatError."""
    if isinstance(record, Undecodable):
        raise TripletFormatError(location, None, record.problem)
    if not isinstance(record, Mapping):
        raise TripletFormatError(location, None, f"expected a record of named fields, got {type(record).__name__}")
    columns = _rename_columns(record, mapping, location)
    values, used = _read_text_fields(columns, location)
    negatives = _read_negatives(columns, values, used, location)
    for attribute, other in _MUST_DIFFER:
        if values[attribute] is not None and values[attribute] == values[other]:
            problem = f"identical to {used[other]!r}; expected a different text"
            raise TripletFormatError(location, used[attribute], problem)
    for text, column in negatives:
        if text == values["positive"]:
            raise TripletFormatError(location, column, f"identical to {used['positive']!r} (the positive passage)")
    known = set(known_columns())
    ignored.update(source_name for column, (_, source_name) in columns.items() if column not in known)
    return TripletExample(
        instruction=values["instruction"],  # type: ignore[arg-type]  # required fields are checked
        query=values["query"],  # type: ignore[arg-type]
        positive=values["positive"],  # type: ignore[arg-type]
        negatives=tuple(text for text, _ in negatives),
        instruction_negative=values["instruction_negative"],
        query_negative=values["query_negative"],
        instruction_negative_passage=values["instruction_negative_passage"],
        query_negative_passage=values["query_negative_passage"],
        id=values["id"],
    )


def _rename_columns(
    record: Mapping[Any, object], mapping: Mapping[str, str | None], location: str
) -> dict[str, tuple[object, str]]:
    """Apply the column mapping: column name -> (value, name in the source), dropping columns mapped to None."""
    columns: dict[str, tuple[object, str]] = {}
    for key, value in record.items():
        source_name = str(key)
        target = mapping.get(source_name, source_name)
        if target is None:
            continue
        if target in columns:
            other = columns[target][1]
            raise TripletFormatError(location, source_name, f"maps to {target!r}, which column {other!r} also gives")
        columns[target] = (value, source_name)
    return columns


def _read_text_fields(
    columns: Mapping[str, tuple[object, str]], location: str
) -> tuple[dict[str, str | None], dict[str, str]]:
    """Read the single-text fields. Returns (attribute -> text or None, attribute -> source column name)."""
    values: dict[str, str | None] = {}
    used: dict[str, str] = {}
    for attribute, aliases in _ALIASES.items():
        present = [a for a in aliases if a in columns and not _is_missing(columns[a][0])]
        if len(present) > 1:
            found = " and ".join(repr(columns[a][1]) for a in present)
            raise TripletFormatError(location, columns[present[0]][1], f"ambiguous: both {found} are given; keep one")
        values[attribute] = None
        if not present:
            continue
        value, source_name = columns[present[0]]
        used[attribute] = source_name
        if attribute == "id" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise TripletFormatError(location, source_name, f"expected a string, got {type(value).__name__}")
        if attribute != "instruction" and not value.strip():
            if attribute in _REQUIRED:
                raise TripletFormatError(location, source_name, "expected a non-empty string, got an empty one")
            continue  # an empty optional field means "absent"
        values[attribute] = value
    infir_schema = any(column in columns for column in _INFIR_MARKERS)
    for attribute in _REQUIRED:
        if values[attribute] is None:
            column = _INFIR_NAMES[attribute] if infir_schema else attribute
            expected = " or ".join(repr(a) for a in _ALIASES[attribute])
            raise TripletFormatError(location, column, f"missing; expected a string column {expected}")
    return values, used


def _read_negatives(
    columns: Mapping[str, tuple[object, str]],
    values: dict[str, str | None],
    used: Mapping[str, str],
    location: str,
) -> list[tuple[str, str]]:
    """Collect plain hard negatives as (text, source column); moves orphan hn1 / hn2 out of ``values``."""
    negatives: list[tuple[str, str]] = []
    for column in _NEGATIVE_COLUMNS:
        if column in columns and not _is_missing(columns[column][0]):
            value, source_name = columns[column]
            parsed = _parse_negatives(value, column == "negatives", location, source_name)
            negatives.extend((text, source_name) for text in parsed)
    for attribute, needs in _PASSAGE_NEEDS.items():
        passage = values[attribute]
        if passage is not None and values[needs] is None:
            negatives.append((passage, used[attribute]))  # no poisoned text: a plain hard negative
            values[attribute] = None
    return negatives


def _parse_negatives(value: object, is_list_column: bool, location: str, column: str) -> list[str]:
    if isinstance(value, str):
        if is_list_column and value.lstrip().startswith("["):  # a JSON list, e.g. from a CSV cell
            try:
                value = json.loads(value)
            except json.JSONDecodeError as error:
                raise TripletFormatError(location, column, f"invalid JSON list ({error.msg})") from None
        else:
            return [value] if value.strip() else []
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):
        value = value.tolist()  # numpy arrays from pandas / pyarrow
    if not isinstance(value, (list, tuple)):
        raise TripletFormatError(location, column, f"expected a list of strings, got {type(value).__name__}")
    negatives: list[str] = []
    for i, item in enumerate(value):
        if _is_missing(item):
            continue
        if not isinstance(item, str):
            raise TripletFormatError(location, f"{column}[{i}]", f"expected a string, got {type(item).__name__}")
        if item.strip():
            negatives.append(item)
    return negatives


def with_plain_queries(examples: Sequence[TripletExample]) -> TripletDataset:
    """The records, then one plain-query record ``("", Q+, P+)`` per record that has an instruction.

    The plain records keep the query without instruction (BEIR / MTEB retrieval, ``encode_query`` with no
    ``instruction``) in the training signal: the query alone must still retrieve its passage. On infir-marco
    they raise instruction following but do not hold SciFact (BENCHMARKS.md, "Plain-query records"). They carry
    no negatives (a plain hard negative of (I+, Q+), or hn1, may well answer Q+ without the instruction) and are
    records of their own, so they usually land in other batches than their instructed record. A (query,
    positive) pair seen twice gives one plain record.

    Args:
        examples: the training records.

    Returns:
        ``len(examples)`` records plus at most as many plain ones (id ``"<id>-plain"`` when the record has one).
    """
    plain: list[TripletExample] = []
    seen: set[tuple[str, str]] = {(e.query, e.positive) for e in examples if not e.instruction}
    for example in examples:
        key = (example.query, example.positive)
        if example.instruction and key not in seen:
            seen.add(key)
            record_id = None if example.id is None else f"{example.id}-plain"
            plain.append(TripletExample(instruction="", query=example.query, positive=example.positive, id=record_id))
    source = getattr(examples, "source", "<memory>")
    return TripletDataset([*examples, *plain], num_skipped=getattr(examples, "num_skipped", 0), source=source)


def with_foreign_instructions(examples: Sequence[TripletExample], seed: int = 0) -> TripletDataset:
    """The records, then one *foreign-instruction* record ``(I+_a, Q+_b, P+_b; hard negative P+_a)`` per record.

    In InF-IR the instruction restates its query's topic, so the instruction alone identifies the passage and a
    model trained on it learns to ignore the query: a joined ``concat`` embedding ends up nearly the
    instruction's (the query "drowns"), and a changed query, or an instruction that does not fit the query,
    still retrieves what the instruction describes. A foreign-instruction record pairs record b's query with
    the instruction of another record a (a seeded cyclic shift of a shuffled order, so no record gets its own)
    and asks that b's passage rank above a's: when the instruction is about something else, the query decides.
    Donors a whose instruction, query or passage equals b's are skipped (that pair would not be foreign).
    The records carry no poisoned texts, so the paper's I term treats the foreign instruction as the record's own
    and contrasts it with random in-batch instructions, a preference between two foreign instructions that the
    measured runs include (BENCHMARKS.md, "Foreign-instruction records").

    Args:
        examples: the training records.
        seed: seed of the shuffle that picks each record's foreign instruction.

    Returns:
        ``len(examples)`` records plus at most as many foreign ones (id ``"<id>-foreign"`` when the record has
        one), each with the foreign instruction's passage as its one plain hard negative.
    """
    instructed = [e for e in examples if e.instruction]
    order = list(range(len(instructed)))
    random.Random(seed).shuffle(order)
    donor_of = {b: order[(k + 1) % len(order)] for k, b in enumerate(order)}
    foreign: list[TripletExample] = []
    for b, host in enumerate(instructed):
        donor = instructed[donor_of[b]]
        if any(getattr(donor, f) == getattr(host, f) for f in ("instruction", "query", "positive")):  # incl. itself
            continue
        record_id = None if host.id is None else f"{host.id}-foreign"
        foreign.append(
            TripletExample(
                instruction=donor.instruction,
                query=host.query,
                positive=host.positive,
                negatives=(donor.positive,),
                id=record_id,
            )
        )
    if instructed and not foreign:
        # e.g. one instructed record, or one instruction shared by all: the caller asked for foreign records and
        # would otherwise train without them unknowingly
        logger.warning(
            "with_foreign_instructions: no foreign-instruction record could be made from %d instructed record(s); "
            "it needs at least two records whose instructions, queries and passages differ",
            len(instructed),
        )
    source = getattr(examples, "source", "<memory>")
    return TripletDataset([*examples, *foreign], num_skipped=getattr(examples, "num_skipped", 0), source=source)
