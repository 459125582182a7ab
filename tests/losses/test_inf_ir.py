"""InfIRLoss: every named variant against a per-row Python reference, masking, hard negatives, errors."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from inf_embed.losses import InfIRLoss, get_loss, list_losses
from inf_embed.losses.inf_ir import instruction_block, passage_block, query_block

ALL_VARIANTS = [
    "uni:P",
    "uni:IQ",
    "uni:I",
    "uni:P+IQ",
    "uni:P+I",
    "uni:I+IQ",
    "uni:P+I+IQ",
    "multi:P+IQ",
    "multi:P+I",
    "multi:I+IQ",
    "multi:P+I+IQ",
]


def _unit(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1)


def make_inputs(seed: int = 0, rows: int = 5, dim: int = 8, variants: int = 4, hard: int = 3, qneg: int = 2) -> dict:
    """Random unit embeddings; instruction ids with a false negative (same id as column 0) and a padding slot."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.arange(rows * variants).reshape(rows, variants)
    ids[0, 2] = ids[0, 0]  # row 0: variant 2 uses the row's own instruction text (bug B5)
    ids[rows - 1, 1] = ids[rows - 1, 0]
    mask = torch.ones(rows, variants, dtype=torch.bool)
    mask[1, variants - 1] = False  # row 1: last slot is padding
    return {
        "q": _unit(g, rows, dim),
        "p": _unit(g, rows, dim),
        "n": _unit(g, rows, variants, dim),
        "ids": ids,
        "mask": mask,
        "hard": _unit(g, hard, dim) if hard else None,
        "qneg": _unit(g, qneg, dim) if qneg else None,
    }


def reference_loss(name: str, inputs: dict, tau: float = 0.05) -> float:
    """Straightforward per-row computation: list the positive and the negatives of each row, then -log softmax."""
    mode, terms_text = name.split(":")
    terms = set(terms_text.split("+"))
    q, p, n = inputs["q"].tolist(), inputs["p"].tolist(), inputs["n"].tolist()
    ids, mask = inputs["ids"].tolist(), inputs["mask"].tolist()
    hard = inputs["hard"].tolist() if inputs["hard"] is not None else []
    qneg = inputs["qneg"].tolist() if inputs["qneg"] is not None else []

    def s(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True)) / tau

    def nll(positive: float, negatives: list[float]) -> float:
        values = [positive, *negatives]
        top = max(values)
        return -(positive - top - math.log(sum(math.exp(v - top) for v in values)))

    total = 0.0
    rows = len(p)
    for i in range(rows):
        # an item with the same positive passage is neither a P nor an IQ negative of row i
        others = [j for j in range(rows) if j != i and p[j] != p[i]]
        p_negatives = [s(q[i], p[j]) for j in others] + [s(q[i], h) for h in hard]
        iq_negatives = [s(p[i], q[j]) for j in others] + [s(p[i], g) for g in qneg]
        i_negatives = [s(n[i][m], p[i]) for m in range(1, len(n[i])) if mask[i][m] and ids[i][m] != ids[i][0]]
        if mode == "multi":
            row = 0.0
            if "P" in terms:
                row += nll(s(q[i], p[i]), p_negatives)
            if "IQ" in terms:
                row += nll(s(p[i], q[i]), iq_negatives)
            if "I" in terms:
                row += nll(s(n[i][0], p[i]), i_negatives)
        elif terms == {"I"}:
            row = nll(s(n[i][0], p[i]), i_negatives)
        else:
            negatives = (p_negatives if "P" in terms else []) + (iq_negatives if "IQ" in terms else [])
            negatives += i_negatives if "I" in terms else []
            row = nll(s(q[i], p[i]), negatives)
        total += row
    return total / rows


def call(loss: InfIRLoss, inputs: dict, **overrides: object) -> torch.Tensor:
    kwargs = {
        "instruction_ids": inputs["ids"],
        "instruction_variant_mask": inputs["mask"],
        "hard_negative_embeddings": inputs["hard"] if loss.uses_hard_negatives else None,
        "query_negative_embeddings": inputs["qneg"] if loss.uses_query_negatives else None,
    }
    kwargs.update(overrides)
    q = inputs["q"] if loss.uses_query_embeddings else None
    n = inputs["n"] if loss.uses_instruction_variants else None
    return loss(q, inputs["p"], n, **kwargs)


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_variant_matches_per_row_reference_with_hard_and_query_negatives(name: str) -> None:
    inputs = make_inputs(seed=1)
    loss = get_loss(name)
    assert loss.name == name
    assert call(loss, inputs).item() == pytest.approx(reference_loss(name, inputs), rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_variant_matches_reference_without_optional_inputs(name: str) -> None:
    inputs = make_inputs(seed=2, hard=0, qneg=0)
    inputs["mask"] = torch.ones_like(inputs["mask"])
    loss = get_loss(name)
    value = call(loss, inputs, instruction_variant_mask=None)
    assert value.item() == pytest.approx(reference_loss(name, inputs), rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_items_sharing_a_positive_passage_are_not_each_others_negatives(name: str) -> None:
    # items 0 and 3 share a passage (a record and its plain-query copy, whose passage the trainer encodes once)
    inputs = make_inputs(seed=4)
    inputs["p"][3] = inputs["p"][0]
    loss = get_loss(name)
    assert call(loss, inputs).item() == pytest.approx(reference_loss(name, inputs), rel=1e-10, abs=1e-10)


def test_a_shared_passage_leaves_no_floor_on_the_loss() -> None:
    # perfect embeddings (each query side on its own orthogonal passage): without the masking, the two items
    # sharing a passage each kept log 2 in each of the P and IQ terms whatever the model did
    passages = torch.eye(4, dtype=torch.float64)[[0, 1, 0, 2]]
    for mode in ("uni", "multi"):
        assert InfIRLoss(mode, ("P", "IQ"), temperature=0.01)(passages.clone(), passages).item() < 1e-20


@pytest.mark.parametrize("name", ["uni:P+I", "multi:I+IQ"])
def test_temperature_is_exact_inverse_scale(name: str) -> None:
    inputs = make_inputs(seed=3)
    loss = get_loss(name, temperature=0.1)
    assert loss.scale == pytest.approx(10.0)
    assert call(loss, inputs).item() == pytest.approx(reference_loss(name, inputs, tau=0.1), rel=1e-10)


def test_default_temperature_is_0_05() -> None:
    assert get_loss("uni:P").temperature == 0.05
    assert InfIRLoss().temperature == 0.05


@pytest.mark.parametrize("name", ["uni:P+I+IQ", "multi:P+I+IQ"])
def test_gradients_pass_gradcheck(name: str) -> None:
    inputs = make_inputs(seed=4, rows=3, dim=4, variants=3, hard=2, qneg=1)
    loss = get_loss(name)
    leaves = [inputs[k].clone().requires_grad_(True) for k in ("q", "p", "n", "hard", "qneg")]

    def fn(q: torch.Tensor, p: torch.Tensor, n: torch.Tensor, hard: torch.Tensor, qneg: torch.Tensor) -> torch.Tensor:
        return loss(
            q,
            p,
            n,
            instruction_ids=inputs["ids"],
            instruction_variant_mask=inputs["mask"],
            hard_negative_embeddings=hard,
            query_negative_embeddings=qneg,
        )

    assert torch.autograd.gradcheck(fn, tuple(leaves))


@pytest.mark.parametrize("name", [v for v in ALL_VARIANTS if "I" in v.split(":")[1].split("+")])
def test_instruction_equal_to_own_is_masked_out(name: str) -> None:
    inputs = make_inputs(seed=5)
    loss = get_loss(name)
    base = call(loss, inputs)
    # Row 0, slot 2 carries the row's own instruction id: moving its embedding must change nothing.
    moved = dict(inputs, n=inputs["n"].clone())
    moved["n"][0, 2] = inputs["p"][0]  # would be a maximal (false) negative if it were used
    assert call(loss, moved).item() == pytest.approx(base.item(), rel=1e-12)
    # The same slot with a distinct id is a real negative and does change the loss.
    distinct = dict(moved, ids=inputs["ids"].clone())
    distinct["ids"][0, 2] = 10_000
    assert call(loss, distinct).item() > base.item()


def test_instruction_texts_work_as_ids_and_mask_equal_text() -> None:
    inputs = make_inputs(seed=6, rows=2, variants=3)
    texts = [["find recipes", "find news", "find recipes"], ["cite sources", "find news", "no ads"]]
    ids = torch.tensor([[0, 1, 0], [2, 1, 3]])
    loss = get_loss("multi:P+I")
    n = inputs["n"].clone().requires_grad_(True)
    by_text = loss(inputs["q"], inputs["p"], n, instruction_ids=texts)
    by_id = loss(inputs["q"], inputs["p"], inputs["n"], instruction_ids=ids)
    assert by_text.item() == pytest.approx(by_id.item(), rel=1e-12)
    by_text.backward()
    assert torch.count_nonzero(n.grad[0, 2]) == 0  # masked false negative: no gradient
    assert torch.count_nonzero(n.grad[0, 1]) > 0


def test_padding_variants_are_ignored() -> None:
    inputs = make_inputs(seed=7)
    loss = get_loss("uni:I")
    moved = dict(inputs, n=inputs["n"].clone())
    moved["n"][1, -1] = -moved["n"][1, -1]  # row 1's last slot is padding
    assert call(loss, moved).item() == pytest.approx(call(loss, inputs).item(), rel=1e-12)


def test_hard_negative_passages_enter_the_p_term() -> None:
    inputs = make_inputs(seed=8)
    loss = get_loss("uni:P")
    hard = inputs["hard"].clone().requires_grad_(True)
    with_hard = call(loss, inputs, hard_negative_embeddings=hard)
    without = call(loss, inputs, hard_negative_embeddings=None)
    assert with_hard.item() > without.item()
    with_hard.backward()
    assert torch.all(hard.grad.norm(dim=1) > 0)  # every hard negative is a candidate of every row


def test_hard_negative_identical_to_positive_direction_raises_the_loss_most() -> None:
    inputs = make_inputs(seed=9, hard=0)
    loss = get_loss("multi:P+I")
    close = inputs["q"][:1].clone()  # a hard negative right on top of row 0's query side
    far = -close
    assert (
        call(loss, inputs, hard_negative_embeddings=close).item()
        > call(loss, inputs, hard_negative_embeddings=far).item()
    )


@pytest.mark.parametrize("name", ["uni:IQ", "uni:P+IQ", "multi:P+IQ", "uni:I+IQ", "multi:P+I+IQ"])
def test_poisoned_query_sides_are_negatives_of_the_iq_term(name: str) -> None:
    inputs = make_inputs(seed=10)
    loss = get_loss(name)
    qneg = inputs["qneg"].clone().requires_grad_(True)
    value = call(loss, inputs, query_negative_embeddings=qneg)
    assert value.item() > call(loss, inputs, query_negative_embeddings=None).item()
    value.backward()
    assert torch.all(qneg.grad.norm(dim=1) > 0)


def test_poisoned_items_in_batch_are_iq_negatives_of_the_positive_passage() -> None:
    # Items (I+,Q+,P+) and (I-,Q+,hn1) of one record: P+ must prefer q(I+,Q+) over q(I-,Q+).
    g = torch.Generator().manual_seed(11)
    p = _unit(g, 2, 6)
    q_good = torch.nn.functional.normalize(p + 0.1 * _unit(g, 2, 6), dim=-1)
    q_swapped = q_good.flip(0)  # each passage now closest to the other item's query side
    loss = get_loss("uni:IQ")
    assert loss(q_good, p).item() < loss(q_swapped, p).item()


def test_unused_inputs_are_ignored_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    inputs = make_inputs(seed=12)
    loss = get_loss("uni:IQ")
    with caplog.at_level(logging.WARNING, logger="inf_embed.losses.inf_ir"):
        a = loss(inputs["q"], inputs["p"], hard_negative_embeddings=inputs["hard"])
        b = loss(inputs["q"], inputs["p"], hard_negative_embeddings=inputs["hard"])
    assert a.item() == pytest.approx(loss(inputs["q"], inputs["p"]).item())
    assert b.item() == a.item()
    messages = [r.getMessage() for r in caplog.records if "hard_negative_embeddings" in r.getMessage()]
    assert len(messages) == 1


def test_i_only_loss_needs_no_query_embeddings() -> None:
    inputs = make_inputs(seed=13)
    loss = get_loss("uni:I")
    assert loss.required_inputs == {"passage_embeddings", "instruction_variant_embeddings", "instruction_ids"}
    value = loss(None, inputs["p"], inputs["n"], instruction_ids=inputs["ids"], instruction_variant_mask=inputs["mask"])
    assert value.item() == pytest.approx(reference_loss("uni:I", inputs), rel=1e-10)


def test_missing_instruction_ids_raise_naming_b5() -> None:
    inputs = make_inputs(seed=14)
    with pytest.raises(ValueError, match="instruction_ids is required"):
        get_loss("multi:P+I")(inputs["q"], inputs["p"], inputs["n"])


@pytest.mark.parametrize(
    ("overrides", "argument"),
    [
        ({"q": torch.zeros(4, 8)}, "query_embeddings"),
        ({"n": torch.zeros(5, 3, 7)}, "instruction_variant_embeddings"),
        ({"hard": torch.zeros(2, 3)}, "hard_negative_embeddings"),
        ({"qneg": torch.zeros(2)}, "query_negative_embeddings"),
        ({"ids": torch.zeros(5, 2, dtype=torch.int64)}, "instruction_ids"),
        ({"mask": torch.ones(4, 4, dtype=torch.bool)}, "instruction_variant_mask"),
    ],
)
def test_shape_errors_name_the_argument(overrides: dict, argument: str) -> None:
    inputs = dict(make_inputs(seed=15), **overrides)
    inputs = {k: v.to(torch.float64) if k in ("q", "n", "hard", "qneg") else v for k, v in inputs.items()}
    with pytest.raises(ValueError, match=argument):
        call(get_loss("multi:P+I+IQ"), inputs)


def test_missing_query_embeddings_raise_for_p_term() -> None:
    inputs = make_inputs(seed=16)
    with pytest.raises(ValueError, match="query_embeddings is required"):
        get_loss("uni:P")(None, inputs["p"])


@pytest.mark.parametrize("temperature", [0.0, -0.05, float("nan"), float("inf"), "0.05"])
def test_invalid_temperature_raises(temperature: object) -> None:
    with pytest.raises(ValueError, match="temperature"):
        get_loss("uni:P", temperature=temperature)


def test_invalid_mode_or_terms_raise_listing_choices() -> None:
    with pytest.raises(ValueError, match="uni, multi"):
        InfIRLoss(mode="both")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="P, I, IQ"):
        InfIRLoss(terms=("P", "Q"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        InfIRLoss(terms=())


def test_bfloat16_inputs_are_scored_in_float32() -> None:
    inputs = make_inputs(seed=17)
    loss = get_loss("multi:P+I+IQ")
    low = {k: v.to(torch.bfloat16) if k in ("q", "p", "n", "hard", "qneg") else v for k, v in inputs.items()}
    value = call(loss, low)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(reference_loss("multi:P+I+IQ", inputs), rel=0.05)


def test_block_helpers_have_documented_shapes() -> None:
    inputs = make_inputs(seed=18)
    assert passage_block(inputs["q"], inputs["p"], inputs["hard"]).shape == (5, 5 + 3)
    assert query_block(inputs["q"], inputs["p"], inputs["qneg"]).shape == (5, 5 + 2)
    assert instruction_block(inputs["n"], inputs["p"]).shape == (5, 4)


def test_every_registered_variant_documents_its_formula() -> None:
    from inf_embed.losses import registry

    assert list_losses()[: len(ALL_VARIANTS)] == ALL_VARIANTS
    for name in ALL_VARIANTS:
        doc = registry._REGISTRY[name].__doc__ or ""
        assert "-log" in doc and "s(" in doc, name
