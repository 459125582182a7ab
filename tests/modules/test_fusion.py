from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from inf_embed import InfEmbed
from inf_embed.modules import get_fusion, list_fusions


def test_registry_lists_fusions_and_rejects_unknown_names():
    from inf_embed.config import FUSION_NAMES

    assert set(list_fusions()) == set(FUSION_NAMES)  # every config choice builds, every fusion is configurable
    with pytest.raises(ValueError, match="unknown fusion 'gatted'"):
        get_fusion("gatted")


@pytest.mark.parametrize("empty", [None, "", "   "])
def test_empty_instruction_gives_the_plain_pooled_query(tiny_model, empty):
    queries = ["what is a neutrophil", "zip code of harahan"]
    plain = tiny_model.encode_document(queries)
    with_empty = tiny_model.encode_query(queries, instruction=empty)
    assert not np.isnan(with_empty).any()
    np.testing.assert_allclose(with_empty, plain, atol=1e-6)


def test_attention_fusion_output_depends_on_the_instruction(tiny_model):
    queries = ["what is a neutrophil"]
    a = tiny_model.encode_query(queries, instruction="I want a definition")
    b = tiny_model.encode_query(queries, instruction="I want the normal count range in adults")
    assert not np.allclose(a, b, atol=1e-4)


def test_attention_fusion_matches_the_paper_formula(tiny_model):
    """softmax over query tokens of H_I H_Q^T / sqrt(d), mean over instruction tokens, then L2 normalise."""
    query, instruction = "what is a neutrophil", "definition please"
    tok = tiny_model.tokenizer
    with torch.no_grad():
        q = tok([query], return_tensors="pt")
        i = tok([instruction], return_tensors="pt")
        hq = tiny_model.backbone(**q).last_hidden_state[0]
        hi = tiny_model.backbone(**i).last_hidden_state[0]
        attention = torch.softmax(hi @ hq.T / hq.shape[-1] ** 0.5, dim=-1)
        expected = torch.nn.functional.normalize((attention @ hq).mean(0), dim=0)
    got = tiny_model.encode_query(query, instruction=instruction, convert_to_tensor=True)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_concat_fusion_encodes_the_template_text(tiny_model_dir):
    model = InfEmbed.from_pretrained(tiny_model_dir, fusion="concat", concat_template="{instruction} || {query}")
    got = model.encode_query(["find x"], instruction="be brief")
    np.testing.assert_allclose(got, model.encode(["be brief || find x"]), atol=1e-6)
    np.testing.assert_allclose(model.encode_query(["find x"]), model.encode(["find x"]), atol=1e-6)


def test_none_fusion_ignores_the_instruction(tiny_model_dir):
    model = InfEmbed.from_pretrained(tiny_model_dir, fusion="none")
    np.testing.assert_allclose(
        model.encode_query(["find x"], instruction="be brief"), model.encode_query(["find x"]), atol=1e-6
    )


def _residual(tiny_model_dir, seed: int | None = None) -> InfEmbed:
    model = InfEmbed.from_pretrained(tiny_model_dir, fusion="residual", normalize=True)
    if seed is not None:
        with torch.no_grad():
            weight = model.fusion.proj.weight
            weight.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(seed)))
    return model


def test_residual_fusion_is_registered_with_a_zero_initialised_projection(tiny_model_dir):
    assert "residual" in list_fusions()
    model = _residual(tiny_model_dir)
    assert model.fusion.encodes_instruction
    assert model.fusion.proj.bias is None
    assert torch.count_nonzero(model.fusion.proj.weight) == 0


def test_untrained_residual_fusion_equals_the_pooled_query(tiny_model_dir):
    model = _residual(tiny_model_dir)
    queries = ["what is a neutrophil", "zip code of harahan"]
    got = model.encode_query(queries, instruction=["I want a definition", "numbers only please"])
    np.testing.assert_allclose(got, model.encode_document(queries), atol=1e-6)


@pytest.mark.parametrize("empty", [None, "", "   "])
def test_residual_fusion_without_instruction_gives_the_pooled_query(tiny_model_dir, empty):
    model = _residual(tiny_model_dir, seed=0)
    queries = ["what is a neutrophil", "zip code of harahan"]
    got = model.encode_query(queries, instruction=empty)
    assert not np.isnan(got).any()
    np.testing.assert_allclose(got, model.encode_document(queries), atol=1e-6)


def test_residual_fusion_mixed_batch_keeps_uninstructed_rows_plain(tiny_model_dir):
    model = _residual(tiny_model_dir, seed=0)
    queries = ["what is a neutrophil", "zip code of harahan"]
    got = model.encode_query(queries, instruction=["I want a definition", None])
    plain = model.encode_document(queries)
    np.testing.assert_allclose(got[1], plain[1], atol=1e-6)
    assert not np.allclose(got[0], plain[0], atol=1e-4)


def test_residual_fusion_matches_its_formula_and_depends_on_the_instruction(tiny_model_dir):
    """pooled query + W · (mean over query tokens of softmax over instruction tokens of H_Q H_I^T / sqrt(d) · H_I)."""
    model = _residual(tiny_model_dir, seed=1)
    query, instruction = "what is a neutrophil", "definition please"
    tok = model.tokenizer
    with torch.no_grad():
        q = tok([query], return_tensors="pt")
        i = tok([instruction], return_tensors="pt")
        hq = model.backbone(**q).last_hidden_state[0]
        hi = model.backbone(**i).last_hidden_state[0]
        attention = torch.softmax(hq @ hi.T / hq.shape[-1] ** 0.5, dim=-1)
        pooled = model.pool(hq.unsqueeze(0), q["attention_mask"])[0]
        fused = pooled + model.fusion.proj.weight @ (attention @ hi).mean(0)
        expected = torch.nn.functional.normalize(fused, dim=0)
    got = model.encode_query(query, instruction=instruction, convert_to_tensor=True)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    other = model.encode_query(query, instruction="the normal count range in adults", convert_to_tensor=True)
    assert not torch.allclose(got, other, atol=1e-4)


def test_residual_fusion_save_load_round_trip_keeps_the_projection(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    from inf_embed.hub import MODULES_WEIGHTS_FILE

    model = _residual(tiny_model_dir, seed=2)
    folder = model.save_pretrained(tmp_path / "residual")
    stored = load_file(os.path.join(folder, MODULES_WEIGHTS_FILE))
    torch.testing.assert_close(stored["fusion.proj.weight"], model.fusion.proj.weight, rtol=0, atol=0)
    reloaded = InfEmbed.from_pretrained(folder)
    assert reloaded.config.fusion == "residual"
    assert torch.equal(reloaded.fusion.proj.weight, model.fusion.proj.weight)
    args = (["what is a neutrophil"],)
    np.testing.assert_array_equal(
        reloaded.encode_query(*args, instruction="definition please"),
        model.encode_query(*args, instruction="definition please"),
    )


def _anchored(tiny_model_dir, **overrides):
    from inf_embed import InfEmbed

    return InfEmbed.from_pretrained(tiny_model_dir, fusion="anchored", **{"normalize": True, **overrides})


def test_anchored_fusion_is_the_normalised_sum_of_joined_text_and_query(tiny_model_dir):
    model = _anchored(tiny_model_dir, query_weight=0.7)
    query, instruction = "what is a neutrophil", "explain how they kill bacteria"
    got = model.encode_query([query], instruction=instruction, convert_to_tensor=True)[0]
    plain = _anchored(tiny_model_dir, normalize=False)
    joined = plain.encode_document([f"{query} {instruction}"], convert_to_tensor=True)[0]
    alone = plain.encode_document([query], convert_to_tensor=True)[0]
    n = torch.nn.functional.normalize
    expected = n(n(joined, dim=0) + 0.7 * n(alone, dim=0), dim=0)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_anchored_fusion_weight_zero_is_concat_and_no_instruction_is_the_plain_query(tiny_model_dir):
    from inf_embed import InfEmbed

    queries, instructions = ["what is a neutrophil", "tax form 1040"], ["for a nurse", None]
    zero = _anchored(tiny_model_dir, query_weight=0.0).encode_query(queries, instruction=instructions)
    concat = InfEmbed.from_pretrained(tiny_model_dir, fusion="concat", normalize=True)
    assert abs(zero - concat.encode_query(queries, instruction=instructions)).max() < 1e-5
    model = _anchored(tiny_model_dir)
    mixed = model.encode_query(queries, instruction=instructions)
    assert abs(mixed[1] - model.encode_document([queries[1]])[0]).max() < 1e-5
    assert abs(mixed[0] - zero[0]).max() > 1e-3  # the anchor moves instructed rows


def test_query_weight_is_validated_and_round_trips(tiny_model_dir, tmp_path):
    from inf_embed import InfEmbed
    from inf_embed.config import InfEmbedConfig

    with pytest.raises(ValueError, match="query_weight"):
        InfEmbedConfig(query_weight=-0.1)
    with pytest.raises(ValueError, match="query_weight"):
        InfEmbedConfig(query_weight=float("inf"))
    path = _anchored(tiny_model_dir, query_weight=0.25).save_pretrained(tmp_path / "m")
    loaded = InfEmbed.from_pretrained(path)
    assert loaded.config.fusion == "anchored" and loaded.fusion.query_weight == 0.25


def _gated(tiny_model_dir, **overrides):
    from inf_embed import InfEmbed

    return InfEmbed.from_pretrained(tiny_model_dir, fusion="gated", **{"normalize": True, **overrides})


def _query_instruction_cosines(model, queries, instructions):
    alone = model.encode_document(list(queries) + list(instructions), convert_to_tensor=True)
    return torch.nn.functional.cosine_similarity(alone[: len(queries)], alone[len(queries) :], dim=-1)


def test_gated_fusion_keeps_fitting_instructions_and_falls_back_to_the_query_alone(tiny_model_dir):
    from inf_embed import InfEmbed

    queries = ["what is a neutrophil", "tax form 1040", "how tall is mount everest", "python list sort"]
    instructions = ["explain how they kill bacteria", "for a small business", "in feet please", "sorting in place"]
    probe = _gated(tiny_model_dir)
    cosines = _query_instruction_cosines(probe, queries, instructions)
    threshold = float(cosines.median())  # half the rows fit, half fall back
    model = _gated(tiny_model_dir, gate_threshold=threshold)
    got = model.encode_query(queries, instruction=instructions, convert_to_tensor=True)
    concat = InfEmbed.from_pretrained(tiny_model_dir, fusion="concat", normalize=True)
    joined = concat.encode_query(queries, instruction=instructions, convert_to_tensor=True)
    alone = concat.encode_query(queries, convert_to_tensor=True)
    fits = cosines >= threshold
    assert 0 < int(fits.sum()) < len(queries)
    for row in range(len(queries)):
        expected = joined[row] if fits[row] else alone[row]
        torch.testing.assert_close(got[row], expected, rtol=1e-4, atol=1e-5, msg=f"row {row}, fits={bool(fits[row])}")
        assert model.fusion.fits(
            alone[row : row + 1], model.encode_document([instructions[row]], convert_to_tensor=True)
        )[0] == bool(fits[row])


def test_gated_fusion_extremes_and_rows_without_instruction(tiny_model_dir):
    from inf_embed import InfEmbed

    queries, instructions = ["what is a neutrophil", "tax form 1040", "what is a neutrophil"], ["for a nurse", None, ""]
    concat = InfEmbed.from_pretrained(tiny_model_dir, fusion="concat", normalize=True)
    always = _gated(tiny_model_dir, gate_threshold=-1.0).encode_query(queries, instruction=instructions)
    np.testing.assert_allclose(always, concat.encode_query(queries, instruction=instructions), rtol=1e-4, atol=1e-5)
    never = _gated(tiny_model_dir, gate_threshold=1.0).encode_query(queries, instruction=instructions)
    np.testing.assert_allclose(never, concat.encode_query(queries), rtol=1e-4, atol=1e-5)
    # one shared instruction for every query, and a batch size that splits the rows over batches
    shared = _gated(tiny_model_dir, gate_threshold=1.0).encode_query(queries, instruction="for a nurse", batch_size=2)
    np.testing.assert_allclose(shared, concat.encode_query(queries), rtol=1e-4, atol=1e-5)


def test_gate_threshold_is_validated_and_round_trips(tiny_model_dir, tmp_path):
    from inf_embed import InfEmbed
    from inf_embed.config import InfEmbedConfig

    for bad in (1.5, -1.01, float("nan"), True, "0.3"):
        with pytest.raises(ValueError, match="gate_threshold"):
            InfEmbedConfig(gate_threshold=bad)
    path = _gated(tiny_model_dir, gate_threshold=0.42).save_pretrained(tmp_path / "m")
    loaded = InfEmbed.from_pretrained(path)
    assert loaded.config.fusion == "gated" and loaded.fusion.gate_threshold == 0.42


def test_gated_anchor_without_instruction_states_is_an_error(tiny_model_dir):
    model = _gated(tiny_model_dir)
    rows = torch.randn(2, 32)
    with pytest.raises(ValueError, match="instructions encoded alone"):
        model.fusion.anchor(rows, rows, torch.tensor([True, False]))


def test_anchor_on_a_fusion_that_does_not_encode_the_query_alone_is_an_error(tiny_model_dir):
    from inf_embed import InfEmbed

    model = InfEmbed.from_pretrained(tiny_model_dir, fusion="concat")
    rows = torch.randn(2, 32)
    with pytest.raises(TypeError, match="fusion 'concat' does not combine"):
        model.fusion.anchor(rows, rows, torch.tensor([True, True]))


# --- fusion modules called directly ----------------------------------------------------------------------------


def _fusion(name: str, hidden_size: int = 8, **overrides):
    from inf_embed.config import InfEmbedConfig

    return get_fusion(name)(InfEmbedConfig(fusion=name, **overrides), hidden_size)


def _fusion_args(num_queries: int = 2, num_instructions: int = 2, hidden: int = 8) -> dict:
    gen = torch.Generator().manual_seed(0)
    query_tokens = torch.randn(num_queries, 5, hidden, generator=gen)
    return {
        "query_tokens": query_tokens,
        "query_mask": torch.ones(num_queries, 5, dtype=torch.long),
        "pooled_query": query_tokens.mean(1),
        "instruction_tokens": torch.randn(num_instructions, 4, hidden, generator=gen),
        "instruction_mask": torch.ones(num_instructions, 4, dtype=torch.long),
    }


@pytest.mark.parametrize("name", ["attention", "residual"])
@pytest.mark.parametrize(
    ("change", "match"),
    [
        # one instruction too many, no index: the extra row used to be dropped silently
        ({"instruction_tokens": torch.randn(3, 4, 8), "instruction_mask": torch.ones(3, 4)}, "instruction_index"),
        ({"instruction_mask": torch.ones(3, 4)}, r"instruction_mask must have shape \(2, 4\)"),
        ({"query_mask": torch.ones(2, 6)}, r"query_mask must have shape \(2, 5\)"),
        ({"pooled_query": torch.randn(2, 6)}, r"pooled_query must have shape \(2, 8\)"),
        ({"pooled_query": torch.randn(1, 8)}, r"pooled_query must have shape \(2, 8\)"),
        ({"instruction_tokens": torch.randn(2, 4, 6)}, "instruction_tokens has hidden size 6"),
        # right shapes among themselves, but not the hidden size the fusion (its scale) was built for
        (
            {"query_tokens": torch.randn(2, 5, 6), "pooled_query": torch.randn(2, 6),
             "instruction_tokens": torch.randn(2, 4, 6)},
            "query_tokens has hidden size 6, but the fusion was built for hidden_size=8",
        ),
        ({"instruction_index": torch.tensor([0, 1, 1])}, r"instruction_index must have shape \(2,\)"),
    ],
    ids=["extra_instruction", "instruction_mask_rows", "query_mask_length", "pooled_hidden", "pooled_rows",
         "instruction_hidden", "fusion_hidden_size", "instruction_index_length"],
)  # fmt: skip
def test_attention_fusions_reject_mismatched_inputs_naming_the_argument(name, change, match):
    with pytest.raises(ValueError, match=rf"fusion '{name}': .*{match}"):
        _fusion(name)(**(_fusion_args() | change))


@pytest.mark.parametrize("name", ["attention", "residual"])
def test_attention_fusions_without_any_instruction_row_give_the_pooled_query(name):
    fusion = _fusion(name)
    if name == "residual":
        torch.nn.init.normal_(fusion.proj.weight)
    args = _fusion_args(num_instructions=0) | {"instruction_index": torch.tensor([-1, -1])}
    torch.testing.assert_close(fusion(**args), args["pooled_query"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="instruction_tokens has 0 rows but instruction_index is not all -1"):
        fusion(**(args | {"instruction_index": torch.tensor([0, -1])}))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_conditioned_mean_pooling_of_pairs_matches_mean_pooling_and_never_gives_nan(dtype):
    from inf_embed.modules import get_pooling

    fusion = _fusion("conditioned", pooling="mean", instruction_weight=0.5)
    states = torch.randn(3, 4, 8).to(dtype)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    segment = torch.tensor([[0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    pooled = fusion.pool_pair(states, mask, segment)
    assert pooled.dtype == dtype and torch.isfinite(pooled).all()
    plain = get_pooling("mean")(states, mask)
    assert torch.equal(pooled[1:], plain[1:])  # rows without instruction, the empty one (0 in fp16, not NaN) too
    weights = torch.tensor([1.0, 1.0, 0.5, 0.0])
    expected = (states[0].float() * weights[:, None]).sum(0) / weights.sum()
    torch.testing.assert_close(pooled[0].float(), expected, atol=2e-3, rtol=2e-3)


def test_conditioned_cls_pooling_of_left_padded_pairs_takes_the_first_real_token():
    fusion = _fusion("conditioned", pooling="cls")
    states = torch.randn(2, 5, 8)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    segment = torch.tensor([[0, 0, 0, 0, 1], [0, 0, 0, 1, 1]])
    torch.testing.assert_close(fusion.pool_pair(states, mask, segment), states[[0, 1], [2, 0]], rtol=0, atol=0)
