"""Loss registry: names, normalisation, errors, and the inputs each variant declares."""

from __future__ import annotations

import pytest

from inf_embed.losses import InfIRLoss, canonical_loss_name, get_loss, list_losses, register_loss


def test_list_losses_has_the_papers_eleven_variants_then_ours() -> None:
    names = list_losses()
    # ours: the poisoned-query (Q) and poisoned-instruction (IX) ranking terms
    assert names[-4:] == ["multi:P+I+IQ+Q", "multi:P+I+IQ+IX", "multi:P+IX", "multi:P+I+IQ+IX+Q"]
    names = names[:-4]
    assert len(names) == 11
    assert sum(n.startswith("uni:") for n in names) == 7
    assert sum(n.startswith("multi:") for n in names) == 4


@pytest.mark.parametrize(
    ("written", "canonical"),
    [("multi:P+I", "multi:P+I"), ("Multi: I + P", "multi:P+I"), ("uni:iq+p", "uni:P+IQ"), ("UNI:IQ+I+P", "uni:P+I+IQ")],
)
def test_names_are_normalised(written: str, canonical: str) -> None:
    assert canonical_loss_name(written) == canonical
    assert get_loss(written).name == canonical


@pytest.mark.parametrize("name", ["multi:P", "uni:Q", "infonce", "uni:P+P2"])
def test_unknown_name_raises_listing_valid_names(name: str) -> None:
    with pytest.raises(ValueError, match="unknown loss") as error:
        get_loss(name)
    assert all(valid in str(error.value) for valid in list_losses())


def test_get_loss_passes_options() -> None:
    loss = get_loss("multi:P+I", temperature=0.02, gather_across_ranks=False)
    assert isinstance(loss, InfIRLoss)
    assert (loss.mode, loss.terms, loss.temperature, loss.gather_across_ranks) == ("multi", ("P", "I"), 0.02, False)
    assert loss.get_config_dict() == {
        "mode": "multi",
        "terms": ["P", "I"],
        "temperature": 0.02,
        "gather_across_ranks": False,
    }


def test_registering_a_taken_name_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_loss("uni:P")(lambda **kwargs: InfIRLoss("uni", ("P",), **kwargs))


@pytest.mark.parametrize(
    ("name", "query", "variants", "hard", "query_negatives"),
    [
        ("uni:P", True, False, True, False),
        ("uni:IQ", True, False, False, True),
        ("uni:I", False, True, False, False),
        ("multi:P+I", True, True, True, False),
        ("uni:I+IQ", True, True, False, True),
        ("multi:P+I+IQ", True, True, True, True),
    ],
)
def test_each_variant_declares_the_inputs_it_uses(
    name: str, query: bool, variants: bool, hard: bool, query_negatives: bool
) -> None:
    loss = get_loss(name)
    assert loss.uses_query_embeddings is query
    assert loss.uses_instruction_variants is variants
    assert loss.uses_hard_negatives is hard
    assert loss.uses_query_negatives is query_negatives
    assert ("query_embeddings" in loss.required_inputs) is query
    assert ("instruction_ids" in loss.required_inputs) is variants
