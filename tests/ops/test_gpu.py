"""The compiled Triton kernels on a CUDA GPU against the fp64 oracle (marker ``cuda``; skipped without a GPU).

Run by ``benchmarks/gpu_check.sh`` on a lent H100/H200, with ``TRITON_INTERPRET`` unset.
"""

from __future__ import annotations

import logging

import pytest
import torch

from inf_embed.ops import _dispatch, iq_attention_pool

from .cases import Case, check_layer_against_oracle, make_case, run_layer

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# realistic shapes, the extreme tiles, and tiny ones
GPU_SHAPES = [(64, 64, 64, 1024), (32, 128, 64, 768), (16, 256, 64, 384), (8, 64, 256, 128), (8, 8, 1024, 64),
              (5, 1, 1, 16), (7, 1, 33, 40), (7, 33, 1, 40)]  # fmt: skip


def _cuda(case: Case) -> Case:
    case.x, case.y = case.x.cuda(), case.y.cuda()
    case.x_mask, case.y_mask = case.x_mask.cuda(), case.y_mask.cuda()
    if case.y_index is not None:
        case.y_index = case.y_index.cuda()
    return case


@pytest.fixture(autouse=True)
def _kernels_enabled(no_disable_env: None) -> None:
    pytest.importorskip("triton")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: "B{}-Lx{}-Ly{}-d{}".format(*s))
def test_triton_kernel_matches_oracle_on_gpu(shape: tuple[int, int, int, int], dtype: torch.dtype) -> None:
    case = _cuda(make_case(*shape, dtype, "empty_rows" if shape[0] >= 3 else "right"))
    assert _dispatch.kernel_unsupported_reason(case.x, case.y) is None
    for layer in ("public", "triton"):
        check_layer_against_oracle(layer, case, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_triton_kernel_matches_oracle_with_y_index_on_gpu(dtype: torch.dtype) -> None:
    check_layer_against_oracle("public", _cuda(make_case(48, 40, 24, 256, dtype, "empty_rows", batch_y=6)), dtype)


@pytest.mark.parametrize("pattern", ["full", "left", "scattered"])
def test_triton_kernel_matches_oracle_for_padding_patterns_on_gpu(pattern: str) -> None:
    check_layer_against_oracle("public", _cuda(make_case(16, 30, 20, 128, torch.bfloat16, pattern)), torch.bfloat16)


def test_triton_kernel_matches_oracle_on_non_contiguous_inputs_on_gpu() -> None:
    case = _cuda(make_case(8, 24, 16, 192, torch.bfloat16, "empty_rows"))
    case.x = torch.cat([case.x, case.y], dim=1)[:, :24]
    case.y = case.y.transpose(1, 2).contiguous().transpose(1, 2)
    check_layer_against_oracle("public", case, torch.bfloat16)


def test_triton_kernel_matches_oracle_with_large_logits_on_gpu() -> None:
    case = _cuda(make_case(8, 16, 12, 64, torch.float32, "empty_rows", magnitude=40.0))
    check_layer_against_oracle("public", case, torch.float32)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_triton_and_default_kernels_agree_on_gpu(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    case = _cuda(make_case(32, 64, 48, 512, dtype, "empty_rows"))
    grad = torch.randn(32, 512, device="cuda").to(dtype)
    kernel = run_layer("public", case, grad)
    monkeypatch.setenv("INF_EMBED_DISABLE_KERNELS", "1")
    default = run_layer("public", case, grad)
    tol = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 4e-2}[dtype]
    for got, want in zip(kernel, default):
        if got is not None:
            torch.testing.assert_close(got.double(), want.double(), atol=tol, rtol=tol)


def test_uncovered_shapes_fall_back_with_a_debug_reason_on_gpu(caplog: pytest.LogCaptureFixture) -> None:
    case = _cuda(make_case(4, 300, 8, 32, torch.bfloat16, "empty_rows"))
    with caplog.at_level(logging.DEBUG, logger="inf_embed.ops._dispatch"):
        check_layer_against_oracle("public", case, torch.bfloat16)
    assert any("Lx=300 exceeds" in r.getMessage() for r in caplog.records)


def test_float64_falls_back_to_default_on_gpu() -> None:
    case = _cuda(make_case(4, 6, 7, 16, torch.float64, "empty_rows"))
    assert "float64" in (_dispatch.kernel_unsupported_reason(case.x, case.y) or "")
    check_layer_against_oracle("public", case, torch.float64)


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_compiled_model_step_with_triton_kernel_matches_eager_on_gpu(dynamic: bool) -> None:
    torch._dynamo.reset()

    def step(x: torch.Tensor, mx: torch.Tensor, y: torch.Tensor, my: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(iq_attention_pool(x, mx, y, my), dim=-1)

    compiled = torch.compile(step, fullgraph=True, dynamic=dynamic)
    for batch, len_x in [(16, 32), (24, 40)] if dynamic else [(16, 32)]:
        case = _cuda(make_case(batch, len_x, 24, 128, torch.bfloat16, "empty_rows"))
        results = []
        for fn in (step, compiled):
            x = case.x.clone().requires_grad_(True)
            y = case.y.clone().requires_grad_(True)
            fn(x, case.x_mask, y, case.y_mask).float().square().sum().backward()
            results.append((x.grad, y.grad))
        for eager, comp in zip(*results):
            torch.testing.assert_close(comp, eager, atol=2e-2, rtol=2e-2)


def test_autocast_on_gpu_returns_bfloat16_from_float32_inputs() -> None:
    case = _cuda(make_case(8, 16, 12, 64, torch.float32, "empty_rows"))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = iq_attention_pool(case.x, case.x_mask, case.y, case.y_mask)
    assert out.dtype == torch.bfloat16
    expected = iq_attention_pool(case.x.bfloat16(), case.x_mask, case.y.bfloat16(), case.y_mask)
    assert torch.equal(out, expected)
