"""Every CPU layer of the op (public function, custom op, default kernels) against the fp64 oracle.

Tolerances per dtype are in ``cases.TOLERANCES`` (fp64 1e-10, fp32 1e-5, fp16 2e-3, bf16 2e-2; atol = rtol); the
largest error seen on the CPU grid is about a fifth of them (fp16, bf16) or less.
"""

from __future__ import annotations

import pytest
import torch

from inf_embed.ops import iq_attention_pool

from .cases import (
    DTYPES,
    PATTERNS,
    SHAPES,
    assert_close_to_oracle,
    check_layer_against_oracle,
    make_case,
    oracle_forward_and_grads,
    run_layer,
)
from .oracle import iq_attention_pool_oracle, iq_attention_pool_per_row

CPU_LAYERS = ("public", "custom_op", "default")


def _ids(shape: tuple[int, ...]) -> str:
    return "B{}-Lx{}-Ly{}-d{}".format(*shape)


# --- the oracle itself ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_oracle_matches_per_row_definition(shape: tuple[int, int, int, int], pattern: str) -> None:
    case = make_case(*shape, pattern=pattern)
    expected = iq_attention_pool_per_row(case.x, case.x_mask, case.y, case.y_mask)
    actual = iq_attention_pool_oracle(case.x, case.x_mask, case.y, case.y_mask)
    torch.testing.assert_close(actual, expected, atol=1e-12, rtol=1e-12)


# --- each layer against the oracle over shapes, padding patterns and dtypes ------------------------------------


@pytest.mark.parametrize("layer", CPU_LAYERS)
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_layer_matches_oracle_in_float64(layer: str, shape: tuple[int, int, int, int], pattern: str) -> None:
    check_layer_against_oracle(layer, make_case(*shape, torch.float64, pattern), torch.float64)


@pytest.mark.parametrize("layer", CPU_LAYERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_layer_matches_oracle_in_each_dtype(layer: str, shape: tuple[int, int, int, int], dtype: torch.dtype) -> None:
    check_layer_against_oracle(layer, make_case(*shape, dtype, "empty_rows"), dtype)


@pytest.mark.parametrize("layer", CPU_LAYERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_layer_matches_oracle_with_y_index(layer: str, dtype: torch.dtype) -> None:
    case = make_case(7, 5, 6, 16, dtype, "empty_rows", batch_y=3)
    check_layer_against_oracle(layer, case, dtype)


@pytest.mark.parametrize("layer", CPU_LAYERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("batch_y", [1, 3], ids=["one_y", "three_y"])
def test_layer_matches_oracle_with_grouped_y_index(layer: str, dtype: torch.dtype, batch_y: int) -> None:
    # each y row shared by consecutive x rows (one query against several instructions): the no-gather layout
    case = make_case(6, 5, 7, 16, dtype, "empty_rows", batch_y=batch_y, grouped=True)
    check_layer_against_oracle(layer, case, dtype)


def test_grouped_y_index_never_builds_a_gathered_copy_of_y() -> None:
    from torch.utils._python_dispatch import TorchDispatchMode

    from inf_embed.ops import _default

    case = make_case(8, 5, 7, 16, torch.float32, "right", batch_y=2, grouped=True)
    shapes: list[tuple[int, ...]] = []

    class RecordShapes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    shapes.append(tuple(t.shape))
            return out

    args = (case.x, case.x_mask, case.y, case.y_mask, case.y_index, case.resolved_scale)
    with RecordShapes():
        _, attn = _default.iq_attention_pool_forward(*args)
        _default.iq_attention_pool_backward(torch.ones(8, 16), attn, *args, True, True)
    assert shapes and (8, 7, 16) not in shapes  # (B, Ly, d): y gathered per x row


@pytest.mark.parametrize("layer", CPU_LAYERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_layer_matches_oracle_on_non_contiguous_inputs(layer: str, dtype: torch.dtype) -> None:
    # x and y sliced from one encoder pass; y with a transposed (non-unit-stride) last dimension; strided masks
    batch, len_x, len_y, dim = 4, 5, 6, 16
    case = make_case(batch, len_x, len_y, dim, dtype, "empty_rows")
    hidden = torch.cat([case.x, case.y], dim=1)  # (B, Lx + Ly, d)
    case.x = hidden[:, :len_x]
    case.y = case.y.transpose(1, 2).contiguous().transpose(1, 2)
    case.x_mask = torch.stack([case.x_mask, ~case.x_mask], dim=2)[:, :, 0]
    case.y_mask = torch.stack([case.y_mask, ~case.y_mask], dim=2)[:, :, 0]
    assert not case.x.is_contiguous() and case.y.stride(-1) != 1 and not case.x_mask.is_contiguous()
    check_layer_against_oracle(layer, case, dtype)


@pytest.mark.parametrize("layer", CPU_LAYERS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_layer_matches_oracle_with_large_logits(layer: str, dtype: torch.dtype) -> None:
    # logits of order 1e3: the softmax saturates to one-hot rows
    case = make_case(4, 6, 7, 16, dtype, "empty_rows", magnitude=40.0)
    check_layer_against_oracle(layer, case, dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_large_logits_stay_finite_in_half_precision(dtype: torch.dtype) -> None:
    # on CPU the half-precision logits are rounded to the input dtype, so only finiteness is checked here
    case = make_case(4, 6, 7, 64, dtype, "empty_rows", magnitude=8.0)
    grad = torch.randn(4, 64).to(dtype)
    out, _, x_grad, y_grad = run_layer("public", case, grad)
    for t in (out, x_grad, y_grad):
        assert torch.isfinite(t).all()


# --- semantics and edge cases ----------------------------------------------------------------------------------


def test_empty_instruction_gives_mean_pooled_query() -> None:
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    y = torch.randn(2, 5, 4, dtype=torch.float64)
    x_mask = torch.tensor([[0, 0, 0], [1, 1, 0]])
    y_mask = torch.tensor([[1, 1, 0, 1, 0], [1, 1, 1, 1, 1]])
    out = iq_attention_pool(x, x_mask, y, y_mask)
    torch.testing.assert_close(out[0], y[0, [0, 1, 3]].mean(dim=0))


def test_empty_query_gives_zeros_and_zero_gradients() -> None:
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    x_mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    y_mask = torch.tensor([[0, 0, 0, 0, 0], [1, 1, 1, 1, 1]])
    out = iq_attention_pool(x, x_mask, y, y_mask)
    out.sum().backward()
    assert torch.equal(out[0], torch.zeros(4, dtype=torch.float64))
    assert torch.equal(x.grad[0], torch.zeros(3, 4, dtype=torch.float64))
    assert torch.equal(y.grad[0], torch.zeros(5, 4, dtype=torch.float64))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_all_padding_never_gives_nan_forward_or_backward(dtype: torch.dtype) -> None:
    x = (30 * torch.randn(3, 4, 8)).to(dtype).requires_grad_(True)
    y = (30 * torch.randn(3, 5, 8)).to(dtype).requires_grad_(True)
    x_mask = torch.zeros(3, 4, dtype=torch.bool)
    y_mask = torch.zeros(3, 5, dtype=torch.bool)
    out = iq_attention_pool(x, x_mask, y, y_mask)
    out.sum().backward()
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_values_at_padded_positions_do_not_change_output_or_receive_gradient(dtype: torch.dtype) -> None:
    case = make_case(4, 6, 7, 16, dtype, "empty_rows")
    grad = torch.randn(4, 16).to(dtype)
    out, _, x_grad, y_grad = run_layer("public", case, grad)
    # huge values at padded positions (in fp16 and bf16 the logits of padded x rows overflow to inf)
    huge = 1e37 if dtype == torch.bfloat16 else 3e4
    case.x = torch.where(case.x_mask[:, :, None], case.x, torch.full_like(case.x, huge))
    case.y = torch.where(case.y_mask[:, :, None], case.y, torch.full_like(case.y, -7.0))
    out2, _, x_grad2, y_grad2 = run_layer("public", case, grad)
    assert torch.equal(out, out2)
    assert torch.equal(x_grad, x_grad2) and torch.equal(y_grad, y_grad2)
    assert not x_grad[~case.x_mask].any() and not y_grad[~case.y_mask].any()


@pytest.mark.parametrize("layer", CPU_LAYERS)
@pytest.mark.parametrize(("dtype", "huge"), [(torch.float16, 3e4), (torch.float32, 3e38)], ids=["float16", "float32"])
def test_padded_y_tokens_whose_products_with_the_gradient_overflow_leave_gradients_unchanged(
    layer: str, dtype: torch.dtype, huge: float
) -> None:
    # <y_j, g> of a padded y token overflows to inf (in fp16 already at 3e4 * d); its attention is 0, and 0 * inf
    # used to turn every gradient of the row into NaN
    case = make_case(4, 6, 7, 64, dtype, "empty_rows")
    grad = torch.randn(4, 64).to(dtype)
    out, _, x_grad, y_grad = run_layer(layer, case, grad)
    case.y = torch.where(case.y_mask[:, :, None], case.y, torch.full_like(case.y, huge))
    out2, _, x_grad2, y_grad2 = run_layer(layer, case, grad)
    assert torch.equal(out, out2)
    assert torch.equal(x_grad, x_grad2) and torch.equal(y_grad, y_grad2)


def test_int64_masks_give_the_same_result_as_bool_masks() -> None:
    case = make_case(4, 6, 7, 16, torch.float32, "empty_rows")
    from_bool = iq_attention_pool(case.x, case.x_mask, case.y, case.y_mask)
    from_int = iq_attention_pool(case.x, case.x_mask.long(), case.y, case.y_mask.to(torch.int32))
    assert torch.equal(from_bool, from_int)


def test_explicit_scale_is_used_and_none_means_inverse_sqrt_d() -> None:
    case = make_case(3, 4, 5, 16, torch.float64, "right")
    default = iq_attention_pool(case.x, case.x_mask, case.y, case.y_mask)
    explicit = iq_attention_pool(case.x, case.x_mask, case.y, case.y_mask, 0.25)
    other = iq_attention_pool(case.x, case.x_mask, case.y, case.y_mask, 2.0)
    torch.testing.assert_close(default, explicit, atol=0, rtol=0)
    torch.testing.assert_close(other, iq_attention_pool_oracle(case.x, case.x_mask, case.y, case.y_mask, 2.0))


def test_reverse_direction_lets_query_attend_over_instruction() -> None:
    case = make_case(3, 4, 6, 8, torch.float64, "right")
    reverse = iq_attention_pool(case.y, case.y_mask, case.x, case.x_mask)  # x = query, y = instruction
    torch.testing.assert_close(reverse, iq_attention_pool_oracle(case.y, case.y_mask, case.x, case.x_mask))


def test_y_index_pairs_many_x_rows_with_one_y_row_and_sums_its_gradient() -> None:
    x = torch.randn(5, 3, 8, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 4, 8, dtype=torch.float64, requires_grad=True)
    x_mask = torch.ones(5, 3, dtype=torch.bool)
    y_mask = torch.ones(1, 4, dtype=torch.bool)
    y_index = torch.zeros(5, dtype=torch.int64)
    out = iq_attention_pool(x, x_mask, y, y_mask, y_index=y_index)
    out.sum().backward()
    y_rep = y.detach().expand(5, 4, 8).clone().requires_grad_(True)
    ref = iq_attention_pool(x.detach(), x_mask, y_rep, y_mask.expand(5, 4))
    ref.sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(y.grad[0], y_rep.grad.sum(dim=0))


def test_y_index_gives_the_same_result_as_gathered_y() -> None:
    case = make_case(6, 4, 5, 8, torch.float32, "empty_rows", batch_y=3)
    out = iq_attention_pool(case.x, case.x_mask, case.y, case.y_mask, y_index=case.y_index)
    gathered = iq_attention_pool(case.x, case.x_mask, case.y[case.y_index], case.y_mask[case.y_index])
    torch.testing.assert_close(out, gathered, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_output_has_the_input_dtype(dtype: torch.dtype) -> None:
    case = make_case(2, 3, 4, 8, dtype)
    assert iq_attention_pool(case.x, case.x_mask, case.y, case.y_mask).dtype == dtype


@pytest.mark.parametrize(("batch", "len_x", "len_y"), [(0, 3, 4), (2, 0, 4), (2, 3, 0)])
def test_empty_dimensions_are_handled(batch: int, len_x: int, len_y: int) -> None:
    case = make_case(batch, len_x, len_y, 8, torch.float64, "full")
    grad = torch.randn(batch, 8, dtype=torch.float64)
    out, _, x_grad, y_grad = run_layer("public", case, grad)
    ref_out, _, ref_x_grad, ref_y_grad = oracle_forward_and_grads(case, grad)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(x_grad, ref_x_grad)
    torch.testing.assert_close(y_grad, ref_y_grad)


def test_only_the_gradients_asked_for_are_computed() -> None:
    case = make_case(3, 4, 5, 8, torch.float64, "right")
    x = case.x.clone().requires_grad_(True)
    out = iq_attention_pool(x, case.x_mask, case.y, case.y_mask)
    out.sum().backward()
    ref = oracle_forward_and_grads(case, torch.ones(3, 8, dtype=torch.float64))
    torch.testing.assert_close(x.grad, ref[2])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_autocast_casts_inputs_like_bmm_and_returns_the_autocast_dtype(dtype: torch.dtype) -> None:
    case = make_case(3, 4, 5, 16, torch.float32, "empty_rows")
    x = case.x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = iq_attention_pool(x.to(dtype), case.x_mask, case.y, case.y_mask)
    assert out.dtype == torch.bfloat16
    expected = iq_attention_pool(case.x.bfloat16(), case.x_mask, case.y.bfloat16(), case.y_mask)
    assert torch.equal(out, expected)
    out.float().sum().backward()
    assert x.grad.dtype == torch.float32 and torch.isfinite(x.grad).all()


def test_autocast_leaves_float64_alone() -> None:
    case = make_case(3, 4, 5, 16, torch.float64, "right")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = iq_attention_pool(case.x, case.x_mask, case.y, case.y_mask)
    assert out.dtype == torch.float64
    expected = iq_attention_pool_oracle(case.x, case.x_mask, case.y, case.y_mask)
    assert_close_to_oracle(out, expected, torch.float64, "out")


# --- argument checks -------------------------------------------------------------------------------------------


def _args() -> dict:
    return {
        "x_states": torch.randn(2, 3, 8),
        "x_mask": torch.ones(2, 3, dtype=torch.long),
        "y_states": torch.randn(2, 4, 8),
        "y_mask": torch.ones(2, 4, dtype=torch.long),
    }


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"x_states": torch.randn(2, 3)}, ValueError, "x_states must be 3-D"),
        ({"y_states": torch.randn(2, 4, 9)}, ValueError, "d=8 but y_states has d=9"),
        ({"y_states": torch.randn(3, 4, 8)}, ValueError, "pass y_index"),
        ({"x_states": torch.randn(2, 3, 8, dtype=torch.float64)}, TypeError, "same dtype"),
        ({"x_states": torch.ones(2, 3, 8, dtype=torch.long)}, TypeError, "x_states must be float16"),
        ({"x_states": [[1.0]]}, TypeError, "x_states must be a torch.Tensor"),
        ({"x_mask": torch.ones(2, 3)}, TypeError, "x_mask must be bool or an integer"),
        ({"x_mask": torch.ones(2, 4, dtype=torch.bool)}, ValueError, r"x_mask must have shape \(2, 3\)"),
        ({"y_mask": torch.ones(2, 3, dtype=torch.bool)}, ValueError, r"y_mask must have shape \(2, 4\)"),
        ({"scale": float("nan")}, ValueError, "scale must be finite"),
        ({"scale": torch.tensor(1.0)}, TypeError, "scale must be a float"),
        ({"y_index": torch.tensor([0, 1, 1])}, ValueError, r"y_index must have shape \(2,\)"),
        ({"y_index": torch.tensor([0.0, 1.0])}, TypeError, "y_index must be an integer"),
        ({"y_index": torch.tensor([0, 2])}, ValueError, r"y_index\[1\] = 2 is out of range; expected .* \[0, 2\)"),
        ({"y_index": torch.tensor([-1, 0])}, ValueError, r"y_index\[0\] = -1 is out of range"),
    ],
)
def test_bad_arguments_raise_errors_naming_the_argument(change: dict, error: type, match: str) -> None:
    args = _args() | change
    with pytest.raises(error, match=match):
        iq_attention_pool(**args)
