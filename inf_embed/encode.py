"""The encoding engine behind ``InfEmbed.encode`` / ``encode_query`` / ``encode_document``.

The public methods only forward their arguments here. This module validates inputs (errors name the argument
and the offending index), resolves the sentence-transformers flag interplay in one place, sorts inputs by
length with their instructions attached, encodes an instruction shared by a whole call once, runs under
``torch.inference_mode()`` and restores the input order.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor

from inf_embed.modules.fusion import has_instruction_text
from inf_embed.quantization import PRECISIONS, quantize_embeddings

if TYPE_CHECKING:
    from inf_embed.model import InfEmbed

logger = logging.getLogger(__name__)

Task = Literal["query", "document"] | None
OUTPUT_VALUES = ("sentence_embedding", "token_embeddings", None)


@dataclass(frozen=True)
class _Output:
    """How the result is returned, after the sentence-transformers rules are applied."""

    value: str | None
    to_tensor: bool
    to_numpy: bool


def resolve_output(output_value: str | None, convert_to_numpy: bool, convert_to_tensor: bool) -> _Output:
    """``convert_to_tensor`` wins over ``convert_to_numpy``; anything but sentence embeddings is a list."""
    if output_value not in OUTPUT_VALUES:
        raise ValueError(f"output_value must be one of {list(OUTPUT_VALUES)}, got {output_value!r}")
    if output_value != "sentence_embedding":
        return _Output(output_value, to_tensor=False, to_numpy=False)
    return _Output(
        output_value, to_tensor=bool(convert_to_tensor), to_numpy=bool(convert_to_numpy) and not convert_to_tensor
    )


def _as_text_list(inputs: Any, name: str) -> tuple[list[str], bool]:
    """Normalise the inputs to a list of strings; returns (texts, was_single)."""
    if isinstance(inputs, str):
        return [inputs], True
    if inputs is None:
        raise TypeError(f"{name} must be a string or a sequence of strings, got None")
    if isinstance(inputs, np.ndarray):
        inputs = inputs.tolist()
        if isinstance(inputs, str):  # a 0-d array holds one text, not a sequence of characters
            return [inputs], True
    elif isinstance(inputs, dict) or not hasattr(inputs, "__iter__"):
        raise TypeError(f"{name} must be a string or a sequence of strings, got {type(inputs).__name__}")
    texts = list(inputs)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{index}] must be a string, got {type(text).__name__}")
    return texts, False


def _instruction_list(instruction: Any, count: int) -> tuple[list[str | None] | None, str | None]:
    """Per-item instructions (or None) and the shared instruction text when one string applies to all."""
    if instruction is None:
        return None, None
    if isinstance(instruction, str):
        shared = instruction if has_instruction_text(instruction) else None
        return [shared] * count, shared
    if isinstance(instruction, np.ndarray):
        instruction = instruction.tolist()
        if isinstance(instruction, str):  # a 0-d array: one instruction for all, not one character per input
            return _instruction_list(instruction, count)
    if isinstance(instruction, dict) or not hasattr(instruction, "__len__"):
        raise TypeError(
            f"instruction must be a string, a sequence of strings/None aligned with the inputs, or None; "
            f"got {type(instruction).__name__}"
        )
    items = list(instruction)
    if len(items) != count:
        raise ValueError(f"instruction has {len(items)} items, inputs has {count}; they must be aligned")
    for index, item in enumerate(items):
        if item is not None and not isinstance(item, str):
            raise TypeError(f"instruction[{index}] must be a string or None, got {type(item).__name__}")
    normalised = [item if has_instruction_text(item) else None for item in items]
    return normalised, _shared_instruction(normalised)


def _resolve_prompt(model: InfEmbed, prompt: str | None, prompt_name: str | None, task: Task) -> str:
    if prompt is not None:
        if prompt_name is not None:
            logger.warning("Both prompt and prompt_name were given; using prompt and ignoring prompt_name.")
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        return prompt
    prompts = model.config.prompts
    if prompt_name is not None:
        if not isinstance(prompt_name, str):
            raise TypeError(
                f"prompt_name must be a string (a key of the model's prompts), got {type(prompt_name).__name__}"
            )
        if prompt_name not in prompts:
            raise ValueError(f"prompt_name {prompt_name!r} is not in the model's prompts {sorted(prompts)}")
        return prompts[prompt_name]
    if task == "query":
        return prompts.get("query", "")
    if task == "document":
        for key in ("document", "passage", "corpus"):
            if key in prompts:
                return prompts[key]
    return ""


def is_positive_int(value: Any) -> bool:
    """An integer > 0, numpy integers included (sentence-transformers accepts them), bools not."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value > 0


def _check_arguments(batch_size: Any, precision: Any, truncate_dim: Any) -> tuple[int, int | None]:
    """Validate the numeric and precision options; returns (batch_size, truncate_dim) as Python ints."""
    if not is_positive_int(batch_size):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if truncate_dim is not None and not is_positive_int(truncate_dim):
        raise ValueError(f"truncate_dim must be a positive integer or None, got {truncate_dim!r}")
    return int(batch_size), None if truncate_dim is None else int(truncate_dim)


def distinct_with_rows(values: Sequence[Any]) -> tuple[list[Any], list[int]]:
    """Distinct values in first-seen order and the position of each input among them."""
    table: dict[Any, int] = {}
    rows = [table.setdefault(v, len(table)) for v in values]
    return list(table), rows


def tokenize(tokenizer: Any, texts: list[str], max_length: int) -> tuple[dict[str, Tensor], int]:
    """Tokenise with truncation and padding; returns (features, number of texts that were cut).

    Fast (Rust) tokenizers report what truncation dropped in each encoding's ``overflowing`` list, so counting
    is free. For slow tokenizers only the texts that fill the whole budget can have been cut, and only those
    are tokenised a second time, without truncation, to count them.
    """
    features = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    encodings = getattr(features, "encodings", None)
    if encodings:
        return dict(features), sum(bool(encoding.overflowing) for encoding in encodings)
    lengths = features["attention_mask"].sum(dim=1)
    candidates = [texts[i] for i in torch.nonzero(lengths >= max_length).flatten().tolist()]
    cut = 0
    if candidates:
        full = tokenizer(candidates, truncation=False, verbose=False)["input_ids"]
        cut = sum(len(ids) > max_length for ids in full)
    return dict(features), cut


def _pair_columns(
    tokenizer: Any, pairs: list[tuple[str, str | None]], max_query_length: int, max_pair_length: int
) -> tuple[dict[str, list[list[int]]], list[bool]]:
    """Unpadded token columns of (query, instruction-or-None) rows, plus which rows truncation cut.

    Rows with an instruction are tokenised as a text pair (``truncation="longest_first"`` to
    ``max_pair_length``), rows without one as the query alone (to ``max_query_length``, as ``encode_query``
    would). Besides the tokenizer's columns, ``instruction_segment`` marks with 1 the instruction's tokens and
    every special token after them (the query segment keeps the leading special tokens, the query and the
    separator that follows it).
    """
    with_instruction = [row for row, (_, instruction) in enumerate(pairs) if instruction is not None]
    without = [row for row, (_, instruction) in enumerate(pairs) if instruction is None]
    columns: dict[str, list[Any]] = {}
    flags: list[bool] = [False] * len(pairs)
    for rows, is_pair in ((with_instruction, True), (without, False)):
        if not rows:
            continue
        queries = [pairs[row][0] for row in rows]
        if is_pair:
            instructions = [pairs[row][1] for row in rows]
            encoded = tokenizer(queries, instructions, truncation="longest_first", max_length=max_pair_length)
            encodings = getattr(encoded, "encodings", None)
            if not encodings:
                raise ValueError(
                    "fusion 'conditioned' needs a fast (Rust) tokenizer to find the instruction segment of a "
                    f"text pair; {type(tokenizer).__name__} is not one"
                )
            segments = []
            for encoding in encodings:
                ids = encoding.sequence_ids
                first = next((t for t, sequence in enumerate(ids) if sequence == 1), len(ids))
                segments.append([0] * first + [1] * (len(ids) - first))
            cut = [bool(encoding.overflowing) for encoding in encodings]
        else:
            encoded = tokenizer(queries, truncation=True, max_length=max_query_length)
            segments = [[0] * len(ids) for ids in encoded["input_ids"]]
            cut = _cut_flags(tokenizer, encoded, queries, max_query_length)
        for key in [*encoded.keys(), "instruction_segment"]:
            values = segments if key == "instruction_segment" else encoded[key]
            column = columns.setdefault(key, [None] * len(pairs))
            for row, value in zip(rows, values):
                column[row] = value
        for row, flag in zip(rows, cut):
            flags[row] = flag
    missing = [key for key, column in columns.items() if any(value is None for value in column)]
    if missing:
        raise ValueError(f"the tokenizer returned {missing} for only some rows of a (query, instruction) batch")
    return columns, flags


def tokenize_pairs(
    tokenizer: Any, pairs: list[tuple[str, str | None]], max_query_length: int, max_pair_length: int
) -> tuple[dict[str, Tensor], int]:
    """Tokenise (query, instruction-or-None) rows for ``fusion="conditioned"``: padded (B, L) int64 features
    (``input_ids``, ``attention_mask``, the tokenizer's other columns and ``instruction_segment``) and the number
    of rows that truncation cut. See :func:`_pair_columns` for the budgets."""
    columns, flags = _pair_columns(tokenizer, pairs, max_query_length, max_pair_length)
    return _pad(tokenizer, columns), sum(flags)


def _empty_result(model: InfEmbed, output: _Output, precision: str, truncate_dim: int | None) -> Any:
    dim = model.get_sentence_embedding_dimension()
    if truncate_dim:
        dim = min(dim, truncate_dim)
    if output.value != "sentence_embedding" or not (output.to_numpy or output.to_tensor):
        return []
    if precision.endswith("binary"):
        array = np.zeros((0, (dim + 7) // 8), dtype=np.int8 if precision == "binary" else np.uint8)
    elif precision.endswith("int8"):
        array = np.zeros((0, dim), dtype=np.int8 if precision == "int8" else np.uint8)
    else:
        array = np.zeros((0, dim), dtype=np.float32)
    return torch.from_numpy(array) if output.to_tensor else array


def encode(
    model: InfEmbed,
    inputs: Any,
    *,
    task: Task,
    instruction: Any,
    prompt_name: str | None,
    prompt: str | None,
    batch_size: int,
    show_progress_bar: bool | None,
    output_value: str | None,
    precision: str,
    convert_to_numpy: bool,
    convert_to_tensor: bool,
    device: Any,
    normalize_embeddings: bool,
    truncate_dim: int | None,
) -> Any:
    """Validate, dispatch and convert; see ``InfEmbed.encode`` for the arguments and return types."""
    name = {"query": "queries", "document": "documents"}.get(task or "", "sentences")
    texts, single = _as_text_list(inputs, name)
    batch_size, truncate_dim = _check_arguments(batch_size, precision, truncate_dim)
    output = resolve_output(output_value, convert_to_numpy, convert_to_tensor)
    instructions, shared = _instruction_list(instruction, len(texts))
    # instructions make the inputs queries (query weights and budget below), so they take the query prompt too
    prompt_text = _resolve_prompt(model, prompt, prompt_name, "query" if instructions is not None else task)
    truncate_dim = truncate_dim if truncate_dim is not None else model.truncate_dim
    if show_progress_bar is None:
        show_progress_bar = logger.getEffectiveLevel() <= logging.INFO
    if not texts:
        return _empty_result(model, output, precision, truncate_dim)
    is_query = task == "query" or instructions is not None
    run = dict(
        prompt=prompt_text,
        is_query=is_query,
        batch_size=batch_size,
        show_progress_bar=show_progress_bar,
        output_value=output.value,
        normalize_embeddings=normalize_embeddings,
        truncate_dim=truncate_dim,
        to_cpu=output.to_numpy or precision != "float32",
    )
    if device is not None and not isinstance(device, (list, tuple)):
        model.to(device)
    parts = []
    for side, rows in _sides(model, is_query, instructions, len(texts)):
        whole = len(rows) == len(texts)
        # a call splits only when it has per-row instructions, so a part's rows index them
        part_instructions = instructions if whole else [instructions[i] for i in rows]  # type: ignore[index]
        part_shared = shared if whole else _shared_instruction(part_instructions)
        part_texts = texts if whole else [texts[i] for i in rows]
        side_run = dict(run, task=side, instructions=part_instructions, shared_instruction=part_shared)
        if isinstance(device, (list, tuple)):
            from inf_embed.multiprocess import encode_multi_process

            parts.append((rows, encode_multi_process(model, part_texts, list(device), **side_run)))
        else:
            parts.append((rows, run_inference(model, part_texts, **side_run)))
    results = parts[0][1] if len(parts) == 1 else _merge_parts(parts, len(texts))

    if output.value != "sentence_embedding":
        return results[0] if single else results
    embeddings: Tensor = results
    if precision != "float32":
        if single and precision.endswith("int8"):
            raise ValueError(
                f"precision={precision!r} calibrates its ranges on the encoded batch and cannot quantise a single "
                "input; pass a list of inputs"
            )
        quantized = quantize_embeddings(embeddings.float().cpu().numpy(), precision)
        result: Any = (
            torch.from_numpy(quantized)
            if output.to_tensor
            else quantized
            if output.to_numpy
            else list(torch.from_numpy(quantized))
        )
    elif output.to_tensor:
        result = embeddings
    elif output.to_numpy:
        result = embeddings.float().cpu().numpy()
    else:
        result = list(embeddings)
    return result[0] if single else result


def _sides(
    model: InfEmbed, is_query: bool, instructions: list[str | None] | None, count: int
) -> list[tuple[str, list[int]]]:
    """(side, input rows) for each side whose weights encode part of a call: queries, and instructed texts, on
    the query side; documents and plain ``encode()`` on the document side (sentence-transformers' ``Router``
    defaults to its document route too); queries without an instruction on the document side when the model is
    asymmetric and ``config.plain_query_side == "document"``."""
    every = list(range(count))
    config = model.config
    if not is_query:
        return [("document", every)]
    if config.plain_query_side != "document" or config.document_delta_scale == 1.0:
        return [("query", every)]
    if instructions is None:
        return [("document", every)]
    instructed = [i for i, item in enumerate(instructions) if item is not None]
    plain = [i for i, item in enumerate(instructions) if item is None]
    return [(side, rows) for side, rows in (("query", instructed), ("document", plain)) if rows]


def _shared_instruction(instructions: list[str | None] | None) -> str | None:
    """The one instruction of (part of) a call when all its items have the same one (None for none)."""
    if not instructions or len(set(instructions)) != 1:
        return None
    return instructions[0]


def _merge_parts(parts: list[tuple[list[int], Any]], count: int) -> Any:
    """The results of each side's rows put back in input order: one (N, d) tensor, or a list."""
    if isinstance(parts[0][1], Tensor):
        first = parts[0][1]
        merged = first.new_empty((count, *first.shape[1:]))
        for rows, result in parts:
            merged[rows] = result
        return merged
    restored: list[Any] = [None] * count
    for rows, result in parts:
        for row, item in zip(rows, result):
            restored[row] = item
    return restored


def run_inference(
    model: InfEmbed,
    texts: list[str],
    *,
    task: Task = None,
    instructions: list[str | None] | None,
    shared_instruction: str | None,
    prompt: str,
    is_query: bool,
    batch_size: int,
    show_progress_bar: bool,
    output_value: str | None,
    normalize_embeddings: bool,
    truncate_dim: int | None,
    to_cpu: bool,
) -> Tensor | list[Any]:
    """Encode in length-sorted batches; returns the stacked (N, d) embeddings or the per-input list."""
    from tqdm.auto import tqdm

    config = model.config
    fusion = model.fusion
    max_length = config.max_query_length if is_query else config.max_passage_length
    use_instruction_tokens = instructions is not None and fusion.encodes_instruction
    use_pairs = instructions is not None and fusion.pairs_text
    anchor_queries = None
    if instructions is not None and not fusion.encodes_instruction and not use_pairs:
        if fusion.anchors_query:
            anchor_queries = [prompt + text for text in texts]
        texts = [fusion.compose_text(text, instr) for text, instr in zip(texts, instructions)]
        if fusion.joins_text:
            max_length = config.max_query_length + config.max_instruction_length
    if prompt:
        texts = [prompt + text for text in texts]

    model.eval()
    device = model.device
    truncated = 0
    outputs: list[Any] = []
    positions: list[int] = []
    with torch.inference_mode():
        shared_states = None
        if use_instruction_tokens and shared_instruction is not None:
            # One instruction for the whole call: run it through the backbone once, not once per batch.
            shared_states, cut = _encode_instructions(model, [shared_instruction], device)
            truncated += cut
        if use_pairs:
            assert instructions is not None
            pair_length = config.max_query_length + config.max_instruction_length
            batches = _length_sorted_pair_batches(
                model.tokenizer, list(zip(texts, instructions)), batch_size, max_length, pair_length
            )
            max_length = pair_length
        else:
            batches = _length_sorted_batches(model.tokenizer, texts, batch_size, max_length)
        total = math.ceil(len(texts) / batch_size)
        for batch_index, features, cut in tqdm(batches, total=total, desc="Batches", disable=not show_progress_bar):
            truncated += cut
            positions.extend(batch_index.tolist())
            features = {key: value.to(device) for key, value in features.items()}
            if use_instruction_tokens:
                batch_instructions = [instructions[i] for i in batch_index]
                if shared_states is not None:
                    states, mask = shared_states
                    index = torch.zeros(len(batch_index), dtype=torch.long, device=device)
                else:
                    (states, mask), index, cut = _batch_instruction_states(model, batch_instructions, device)
                    truncated += cut
                if states is not None:
                    features.update(instr_token_embeddings=states, instr_mask=mask, instr_index=index)
            if anchor_queries is not None:
                assert instructions is not None
                anchor_features, cut = tokenize(
                    model.tokenizer, [anchor_queries[i] for i in batch_index], config.max_query_length
                )
                truncated += cut
                features.update({f"anchor_{key}": value.to(device) for key, value in anchor_features.items()})
                features["anchor_has_instruction"] = torch.tensor(
                    [has_instruction_text(instructions[i]) for i in batch_index], dtype=torch.bool, device=device
                )
                if fusion.gates_on_instruction:
                    # Each distinct instruction of the batch once; rows without one point at any row (unused).
                    distinct, gate_index = distinct_with_rows([prompt + (instructions[i] or "") for i in batch_index])
                    gate_features, cut = tokenize(model.tokenizer, distinct, config.max_instruction_length)
                    truncated += cut
                    features.update({f"gate_{key}": value.to(device) for key, value in gate_features.items()})
                    features["gate_index"] = torch.tensor(gate_index, dtype=torch.long, device=device)
            features = model(features, task=task)
            embeddings = features["sentence_embedding"]
            if truncate_dim is not None:
                embeddings = embeddings[:, :truncate_dim]
            if normalize_embeddings:
                embeddings = torch.nn.functional.normalize(embeddings, p=2, dim=1)
            features["sentence_embedding"] = embeddings
            outputs.extend(_split_outputs(features, output_value, len(batch_index), to_cpu))
    if truncated:
        logger.warning(
            "%d of %d %s longer than the token budget and were truncated (max_length=%d)",
            truncated,
            len(texts),
            "inputs or instructions were" if use_instruction_tokens else "inputs were",
            max_length,
        )
    restored = [None] * len(texts)
    for original, output in zip(positions, outputs):
        restored[original] = output
    if output_value == "sentence_embedding":
        return torch.stack(restored)
    return restored


# Texts are tokenised a window of this many batches at a time, so memory stays bounded for any corpus size.
_SORT_WINDOW_BATCHES = 16


def _length_sorted_batches(
    tokenizer: Any, texts: list[str], batch_size: int, max_length: int
) -> Iterator[tuple[np.ndarray, dict[str, Tensor], int]]:
    """Yield (input positions, padded features, number cut) per batch, longest texts first.

    Texts are ordered by character length (as sentence-transformers does), then, a window of
    ``_SORT_WINDOW_BATCHES`` batches at a time, tokenised once and re-ordered by their token count, so each batch
    holds texts of nearly equal token length and little compute is spent on padding.
    """
    order = np.argsort([-len(text) for text in texts], kind="stable")
    window = batch_size * _SORT_WINDOW_BATCHES
    for start in range(0, len(texts), window):
        window_index = order[start : start + window]
        window_texts = [texts[i] for i in window_index]
        encoded = tokenizer(window_texts, truncation=True, max_length=max_length)
        cut_flags = _cut_flags(tokenizer, encoded, window_texts, max_length)
        yield from _window_batches(tokenizer, window_index, encoded, cut_flags, batch_size)


def _length_sorted_pair_batches(
    tokenizer: Any,
    pairs: list[tuple[str, str | None]],
    batch_size: int,
    max_query_length: int,
    max_pair_length: int,
) -> Iterator[tuple[np.ndarray, dict[str, Tensor], int]]:
    """:func:`_length_sorted_batches` for (query, instruction-or-None) rows tokenised by :func:`_pair_columns`
    (features include ``instruction_segment``); rows are ordered by the character length of query and
    instruction together."""
    order = np.argsort([-(len(query) + len(instruction or "")) for query, instruction in pairs], kind="stable")
    window = batch_size * _SORT_WINDOW_BATCHES
    for start in range(0, len(pairs), window):
        window_index = order[start : start + window]
        window_pairs = [pairs[i] for i in window_index]
        columns, cut_flags = _pair_columns(tokenizer, window_pairs, max_query_length, max_pair_length)
        yield from _window_batches(tokenizer, window_index, columns, cut_flags, batch_size)


def _window_batches(
    tokenizer: Any, window_index: np.ndarray, columns: Any, cut_flags: list[bool], batch_size: int
) -> Iterator[tuple[np.ndarray, dict[str, Tensor], int]]:
    """Re-order one tokenised window by token count and cut it into padded batches."""
    lengths = np.array([len(ids) for ids in columns["input_ids"]])
    local_order = np.argsort(-lengths, kind="stable")
    for batch_start in range(0, len(local_order), batch_size):
        rows = local_order[batch_start : batch_start + batch_size]
        features = _pad(tokenizer, {key: [columns[key][r] for r in rows] for key in columns.keys()})
        yield window_index[rows], features, int(sum(cut_flags[r] for r in rows))


def _cut_flags(tokenizer: Any, encoded: Any, texts: list[str], max_length: int) -> list[bool]:
    """Which texts truncation shortened: free with fast tokenizers (``overflowing``), else re-tokenise the texts
    that fill the budget."""
    encodings = getattr(encoded, "encodings", None)
    if encodings:
        return [bool(encoding.overflowing) for encoding in encodings]
    flags = [False] * len(texts)
    full = [i for i, ids in enumerate(encoded["input_ids"]) if len(ids) >= max_length]
    if full:
        lengths = [
            len(ids) for ids in tokenizer([texts[i] for i in full], truncation=False, verbose=False)["input_ids"]
        ]
        for i, length in zip(full, lengths):
            flags[i] = length > max_length
    return flags


def _pad(tokenizer: Any, columns: dict[str, list[list[int]]]) -> dict[str, Tensor]:
    """Pad token-id lists to the longest row on the tokenizer's padding side: (B, L) int64 tensors."""
    width = max(len(ids) for ids in columns["input_ids"])
    pad_values = {"input_ids": tokenizer.pad_token_id, "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0)}
    left = tokenizer.padding_side == "left"
    features = {}
    for key, rows in columns.items():
        tensor = torch.full((len(rows), width), pad_values.get(key, 0), dtype=torch.long)
        for i, row in enumerate(rows):
            if row:
                if left:
                    tensor[i, width - len(row) :] = torch.tensor(row)
                else:
                    tensor[i, : len(row)] = torch.tensor(row)
        features[key] = tensor
    return features


def _split_outputs(features: dict[str, Tensor], output_value: str | None, count: int, to_cpu: bool) -> list[Any]:
    if output_value == "sentence_embedding":
        embeddings = features["sentence_embedding"]
        return list(embeddings.cpu() if to_cpu else embeddings)
    if output_value == "token_embeddings":
        mask = features["attention_mask"].bool()
        return [features["token_embeddings"][i][mask[i]] for i in range(count)]
    items = []
    for i in range(count):
        item = {}
        for key, value in features.items():
            table_index = _INSTRUCTION_TABLES.get(key)
            if table_index is not None and table_index in features:
                # one row per distinct instruction (U, ...), not per input: the row's own instruction, if any
                row = int(features[table_index][i])
                item[key] = value[row] if row >= 0 else None
            elif isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == count:
                item[key] = value[i]
            else:
                item[key] = value
        items.append(item)
    return items


# features holding one row per distinct instruction, and the (B,) feature that points each input at its row
_INSTRUCTION_TABLES = {
    **dict.fromkeys(("instr_ids", "instr_mask", "instr_token_type_ids", "instr_token_embeddings"), "instr_index"),
    **dict.fromkeys(("gate_input_ids", "gate_attention_mask", "gate_token_type_ids"), "gate_index"),
}


def _encode_instructions(
    model: InfEmbed, instructions: list[str], device: torch.device
) -> tuple[tuple[Tensor, Tensor], int]:
    """Backbone states of distinct instruction texts: ((U, Li, d) states, (U, Li) mask), number cut."""
    features, cut = tokenize(model.tokenizer, instructions, model.config.max_instruction_length)
    features = {key: value.to(device) for key, value in features.items()}
    states = model.embed_tokens(features["input_ids"], features["attention_mask"], features.get("token_type_ids"))
    return (states, features["attention_mask"]), cut


def _batch_instruction_states(
    model: InfEmbed, batch_instructions: list[str | None], device: torch.device
) -> tuple[tuple[Tensor | None, Tensor | None], Tensor, int]:
    """Encode each distinct instruction of a batch once; returns (states, mask), the (B,) row index (-1: none)
    and the number of instructions cut by truncation."""
    distinct = sorted({text for text in batch_instructions if text is not None})
    row_of = {text: row for row, text in enumerate(distinct)}
    index = torch.tensor([row_of.get(text, -1) for text in batch_instructions], dtype=torch.long, device=device)
    if not distinct:
        return (None, None), index, 0
    (states, mask), cut = _encode_instructions(model, distinct, device)
    return (states, mask), index, cut
