from __future__ import annotations

import pytest
import torch

from inf_embed.modules import get_pooling, list_poolings


def test_registry_lists_the_three_modes_and_rejects_unknown_names():
    assert list_poolings() == ["cls", "last", "mean"]
    with pytest.raises(ValueError, match="unknown pooling 'max'.*'cls', 'last', 'mean'"):
        get_pooling("max")


def test_mean_pooling_ignores_padding_and_gives_zero_for_all_padding_rows():
    tokens = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    pooled = get_pooling("mean")(tokens, mask)
    torch.testing.assert_close(pooled[0], tokens[0, :2].mean(0))
    torch.testing.assert_close(pooled[1], torch.zeros(4))


@pytest.mark.parametrize("side", ["right", "left"])
def test_last_token_pooling_finds_the_last_real_token_for_either_padding_side(side):
    tokens = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]) if side == "right" else torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    pooled = get_pooling("last")(tokens, mask)
    expected_first = tokens[0, 1] if side == "right" else tokens[0, 3]
    torch.testing.assert_close(pooled[0], expected_first)
    torch.testing.assert_close(pooled[1], tokens[1, 3])


def test_last_token_pooling_of_all_padding_row_is_zero():
    pooled = get_pooling("last")(torch.randn(1, 3, 2), torch.zeros(1, 3, dtype=torch.long))
    torch.testing.assert_close(pooled, torch.zeros(1, 2))


def test_cls_pooling_takes_the_first_token():
    tokens = torch.randn(2, 3, 4)
    torch.testing.assert_close(get_pooling("cls")(tokens, torch.ones(2, 3)), tokens[:, 0])


def test_cls_pooling_takes_the_first_real_token_of_left_padded_rows():
    # a left-padded row starts with padding; its [CLS] is the first position whose mask is set
    tokens = torch.randn(3, 4, 2)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]])
    pooled = get_pooling("cls")(tokens, mask)
    torch.testing.assert_close(pooled, torch.stack([tokens[0, 2], tokens[1, 0], torch.zeros(2)]))


@pytest.mark.parametrize("mode", ["cls", "last", "mean"])
def test_pooling_of_zero_length_inputs_gives_zeros(mode):
    pooled = get_pooling(mode)(torch.randn(2, 0, 3), torch.zeros(2, 0, dtype=torch.long))
    torch.testing.assert_close(pooled, torch.zeros(2, 3))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mean_pooling_in_half_precision_gives_zero_for_all_padding_rows(dtype):
    # the 1e-9 clamp rounds to 0 in fp16, so the empty row was 0 / 0 = NaN
    tokens = torch.randn(2, 3, 4).to(dtype)
    pooled = get_pooling("mean")(tokens, torch.tensor([[1, 1, 0], [0, 0, 0]]))
    assert pooled.dtype == dtype
    assert torch.equal(pooled[1], torch.zeros(4, dtype=dtype))
    torch.testing.assert_close(pooled[0], tokens[0, :2].float().mean(0).to(dtype))


def test_mean_pooling_in_float16_does_not_overflow_on_long_inputs():
    # the sum of 400 token states of 300 (1.2e5) is past float16's 65504, their mean is not
    tokens = torch.full((1, 400, 4), 300.0, dtype=torch.float16)
    pooled = get_pooling("mean")(tokens, torch.ones(1, 400, dtype=torch.long))
    assert torch.equal(pooled, torch.full((1, 4), 300.0, dtype=torch.float16))
