"""Record expansion into items, batches that keep a record's items together (bug B13), instruction variants."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from inf_embed.data import TripletExample, build_text_batch, load_triplets, sample_instruction_variants


def full_record(k: int) -> TripletExample:
    return TripletExample(
        instruction=f"i+{k}",
        query=f"q+{k}",
        positive=f"p+{k}",
        instruction_negative=f"i-{k}",
        query_negative=f"q-{k}",
        instruction_negative_passage=f"hn1{k}",
        query_negative_passage=f"hn2{k}",
    )


def test_full_record_expands_into_the_papers_three_items() -> None:
    items = full_record(0).items()
    assert [(i.instruction, i.query, i.positive, i.kind) for i in items] == [
        ("i+0", "q+0", "p+0", "positive"),
        ("i-0", "q+0", "hn10", "instruction_negative"),
        ("i+0", "q-0", "hn20", "query_negative"),
    ]
    assert items[0].instruction_negatives == ("i-0",) and items[1].instruction_negatives == ("i+0",)
    assert items[0].query_negatives == ()  # both poisoned pairs are items of their own


def test_missing_hn2_turns_the_poisoned_query_into_a_query_side_negative() -> None:
    example = TripletExample(
        "i+", "q+", "p+", instruction_negative="i-", query_negative="q-", instruction_negative_passage="hn1"
    )
    items = example.items()
    assert [i.kind for i in items] == ["positive", "instruction_negative"]
    assert items[0].query_negatives == (("i+", "q-"),)


def test_missing_hn1_turns_the_poisoned_instruction_into_a_query_side_negative() -> None:
    items = TripletExample("i+", "q+", "p+", negatives=("n",), instruction_negative="i-").items()
    assert len(items) == 1
    assert items[0].query_negatives == (("i-", "q+"),) and items[0].negatives == ("n",)


def test_dataloader_with_per_index_fetch_keeps_every_records_items_together() -> None:
    data = load_triplets([full_record(k).to_dict() for k in range(5)])
    loader = DataLoader(data, batch_size=2, shuffle=False, collate_fn=build_text_batch)
    batches = list(loader)
    assert [len(b) for b in batches] == [6, 6, 3]
    for batch in batches:
        assert batch.kinds == ["positive", "instruction_negative", "query_negative"] * (len(batch) // 3)
        assert batch.record_index == [r for r in range(len(batch) // 3) for _ in range(3)]


def test_text_batch_drops_hard_negatives_equal_to_a_positive_and_repeats() -> None:
    a = TripletExample("i", "q", "p1", negatives=("p2", "n", "n"), query_negative="q-")
    b = TripletExample("j", "r", "p2", query_negative="q-", instruction_negative="i")
    batch = build_text_batch([a, b])
    assert batch.hard_negatives == ["n"]
    # (i, q-) from a; (j, q-) and (i, r) from b; none equals an item's (instruction, query).
    assert batch.negative_queries == [("i", "q-"), ("i", "r"), ("j", "q-")]


def test_variants_never_repeat_the_own_instruction_and_put_own_negatives_first() -> None:
    instructions = ["a", "b", "a", "c", "d"]
    negatives = [("x",), (), ("a", "y"), (), ()]
    generator = torch.Generator().manual_seed(0)
    variants = sample_instruction_variants(instructions, 4, instruction_negatives=negatives, generator=generator)
    for i, row in enumerate(variants.texts):
        assert row[0] == instructions[i]
        real = [t for t, keep in zip(row, variants.mask[i].tolist(), strict=True) if keep]
        assert len(set(real)) == len(real) and instructions[i] not in real[1:]
    assert variants.texts[0][1] == "x"
    assert variants.texts[2][1] == "y"  # "a" is row 2's own instruction: not a negative
    assert variants.ids.shape == variants.mask.shape == (5, 4)
    for i, row in enumerate(variants.texts):  # equal texts get equal ids
        for m, text in enumerate(row):
            assert (variants.ids[i, m] == variants.ids[i, 0]) == (text == row[0])


def test_variants_are_padded_and_masked_when_the_batch_is_small() -> None:
    variants = sample_instruction_variants(["a", "a", "b"], 4)
    assert variants.mask.tolist() == [[True, True, False, False]] * 2 + [[True, True, False, False]]
    assert variants.texts[0] == ["a", "b", "a", "a"]


def test_variants_are_reproducible_with_a_seeded_generator() -> None:
    instructions = [f"i{k}" for k in range(12)]
    first = sample_instruction_variants(instructions, 6, generator=torch.Generator().manual_seed(42))
    second = sample_instruction_variants(instructions, 6, generator=torch.Generator().manual_seed(42))
    assert first.texts == second.texts


def test_build_text_batch_with_variants_matches_the_loss_inputs() -> None:
    from inf_embed.losses import get_loss

    generator = torch.Generator().manual_seed(0)
    batch = build_text_batch([full_record(k) for k in range(3)], num_instruction_variants=4, generator=generator)
    assert batch.variants is not None and batch.variants.ids.shape == (9, 4)
    assert batch.variants.texts[0][:2] == ["i+0", "i-0"]
    g = torch.Generator().manual_seed(1)

    def emb(*shape: int) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.randn(*shape, generator=g), dim=-1)

    value = get_loss("multi:P+I")(
        emb(9, 8),
        emb(9, 8),
        emb(9, 4, 8),
        instruction_ids=batch.variants.ids,
        instruction_variant_mask=batch.variants.mask,
    )
    assert torch.isfinite(value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"num_variants": 0}, "num_variants"), ({"num_variants": 2, "instruction_negatives": [()]}, "has 1 entries")],
)
def test_invalid_variant_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sample_instruction_variants(["a", "b"], **kwargs)


def test_empty_batch_raises() -> None:
    with pytest.raises(ValueError, match="empty batch"):
        build_text_batch([])


def test_text_batch_drops_poisoned_pairs_equal_to_an_item_and_keeps_the_rest() -> None:
    # record 0's poisoned pair (j, q) is record 1's item: it must not be a query-side negative of p
    batch = build_text_batch([TripletExample("i", "q", "p", instruction_negative="j"), TripletExample("j", "q", "p3")])
    assert batch.negative_queries == []
    batch = build_text_batch([TripletExample("i", "q", "p", instruction_negative="j"), TripletExample("k", "q", "p3")])
    assert batch.negative_queries == [("j", "q")] and batch.negative_query_passages == ["p"]
