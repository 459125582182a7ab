"""Dispatch rules, the Triton kernels in the interpreter (CPU), and their ahead-of-time compiles for sm_80/sm_90.

Interpreter tests run where CUDA is absent (``tests/ops/conftest.py`` sets ``TRITON_INTERPRET=1``); in the
interpreter bf16 ``tl.dot`` is wrong (triton-lang/triton#11584), so the launchers upcast bf16 tiles to fp32 there
(``DOT_UPCAST``) and everything but the bf16 MMA itself is tested. The interpreter accepts kernels the compiler
rejects (``tl.dot`` with K < 16, loop-carried dtype changes), hence the AOT compiles, which need no GPU.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from inf_embed.ops import _default, _dispatch

from .cases import PATTERNS, check_layer_against_oracle, make_case, run_layer

LOW_PRECISION = [torch.float32, torch.float16, torch.bfloat16]


# --- dispatch: reasons and fallback (no triton needed) ---------------------------------------------------------


def _states(dtype: torch.dtype = torch.float32, len_x: int = 8, len_y: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(2, len_x, 4, dtype=dtype), torch.zeros(2, len_y, 4, dtype=dtype)


def test_disable_switch_is_the_first_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INF_EMBED_DISABLE_KERNELS", "1")
    assert _dispatch.kernels_disabled()
    assert _dispatch.kernel_unsupported_reason(*_states(torch.float64)) == "INF_EMBED_DISABLE_KERNELS is set"


@pytest.mark.parametrize("value", ["", "0", "false", "off"])
def test_disable_switch_false_values_keep_kernels(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("INF_EMBED_DISABLE_KERNELS", value)
    assert not _dispatch.kernels_disabled()


@pytest.mark.usefixtures("no_disable_env")
@pytest.mark.parametrize(
    ("states", "match"),
    [
        (_states(torch.float64), "dtype torch.float64 is not covered"),
        (_states(len_x=257), "Lx=257 exceeds the Triton kernel's limit of 256"),
        (_states(len_x=128, len_y=256), r"logit tile 128x256 \(Lx=128, Ly=256\) exceeds 16384"),
    ],
)
def test_uncovered_dtypes_and_shapes_give_a_reason(states: tuple[torch.Tensor, torch.Tensor], match: str) -> None:
    reason = _dispatch.kernel_unsupported_reason(*states)
    assert reason is not None
    assert re.search(match, reason)


@pytest.mark.usefixtures("no_disable_env")
def test_cpu_tensors_without_the_interpreter_give_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    reason = _dispatch.kernel_unsupported_reason(*_states())
    assert reason is not None and reason.startswith("tensors are on cpu")


@pytest.mark.usefixtures("no_disable_env")
def test_largest_covered_tiles_have_no_shape_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    for len_x, len_y in [(256, 64), (64, 256), (128, 128), (16, 1024), (1, 1)]:
        reason = _dispatch.kernel_unsupported_reason(*_states(len_x=len_x, len_y=len_y))
        assert reason is not None and reason.startswith("tensors are on cpu"), (len_x, len_y, reason)


@pytest.mark.usefixtures("no_disable_env")
def test_fallback_runs_the_default_and_logs_the_reason_at_debug(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    case = make_case(3, 4, 5, 8, torch.float32, "empty_rows")
    args = (case.x, case.x_mask, case.y, case.y_mask, None, case.resolved_scale)
    with caplog.at_level(logging.DEBUG, logger="inf_embed.ops._dispatch"):
        out, attn = _dispatch.iq_attention_pool_forward_kernel(*args)
        grads = _dispatch.iq_attention_pool_backward_kernel(torch.ones(3, 8), attn, *args[:5], args[5], True, True)
    ref_out, ref_attn = _default.iq_attention_pool_forward(*args)
    ref_grads = _default.iq_attention_pool_backward(torch.ones(3, 8), ref_attn, *args[:5], args[5], True, True)
    assert torch.equal(out, ref_out) and all(map(torch.equal, grads, ref_grads))
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("forward uses the PyTorch implementation: tensors are on cpu" in m for m in messages)
    assert any("backward uses the PyTorch implementation: tensors are on cpu" in m for m in messages)


# --- the kernels in Triton's interpreter -----------------------------------------------------------------------

triton_mark = pytest.mark.triton


def _interpreted_triton() -> ModuleType:
    pytest.importorskip("triton")
    from inf_embed.ops import _triton

    if not _triton.INTERPRETED:
        pytest.skip("the Triton kernels were compiled for the GPU (TRITON_INTERPRET unset); see test_gpu.py")
    return _triton


INTERPRETER_SHAPES = [(2, 1, 1, 8), (3, 1, 6, 16), (3, 6, 1, 16), (4, 9, 7, 40), (2, 17, 33, 24)]


@triton_mark
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("shape", INTERPRETER_SHAPES, ids=lambda s: "B{}-Lx{}-Ly{}-d{}".format(*s))
def test_triton_kernels_match_oracle_in_interpreter(shape: tuple[int, int, int, int], dtype: torch.dtype) -> None:
    _interpreted_triton()
    check_layer_against_oracle("triton", make_case(*shape, dtype, "empty_rows"), dtype)


@triton_mark
@pytest.mark.parametrize(("batch", "len_x", "len_y"), [(0, 3, 4), (2, 0, 4), (2, 3, 0)])
def test_triton_kernels_handle_empty_dimensions(batch: int, len_x: int, len_y: int) -> None:
    _interpreted_triton()
    check_layer_against_oracle("triton", make_case(batch, len_x, len_y, 8, torch.float32, "full"), torch.float32)


@triton_mark
@pytest.mark.parametrize("batch_y", [1, 3], ids=["one_y", "three_y"])
def test_triton_kernels_match_oracle_with_grouped_y_index(batch_y: int) -> None:
    _interpreted_triton()
    case = make_case(6, 5, 7, 16, torch.float32, "empty_rows", batch_y=batch_y, grouped=True)
    check_layer_against_oracle("triton", case, torch.float32)


@triton_mark
@pytest.mark.parametrize("pattern", PATTERNS)
def test_triton_kernels_match_oracle_for_each_padding_pattern(pattern: str) -> None:
    _interpreted_triton()
    check_layer_against_oracle("triton", make_case(4, 7, 9, 24, torch.float32, pattern), torch.float32)


@triton_mark
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
def test_triton_kernels_match_oracle_with_y_index(dtype: torch.dtype) -> None:
    _interpreted_triton()
    check_layer_against_oracle("triton", make_case(7, 5, 6, 16, dtype, "empty_rows", batch_y=3), dtype)


@triton_mark
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_triton_kernels_match_oracle_on_non_contiguous_inputs(dtype: torch.dtype) -> None:
    _interpreted_triton()
    case = make_case(3, 5, 6, 16, dtype, "empty_rows")
    case.x = torch.cat([case.x, case.y], dim=1)[:, :5]
    case.y = case.y.transpose(1, 2).contiguous().transpose(1, 2)
    case.x_mask = torch.stack([case.x_mask, ~case.x_mask], dim=2)[:, :, 0]
    check_layer_against_oracle("triton", case, dtype)


@triton_mark
def test_triton_kernels_match_oracle_with_large_logits() -> None:
    _interpreted_triton()
    case = make_case(3, 6, 7, 16, torch.float32, "empty_rows", magnitude=40.0)
    check_layer_against_oracle("triton", case, torch.float32)


@triton_mark
def test_triton_kernels_leave_no_nan_when_padded_x_logits_overflow() -> None:
    _interpreted_triton()
    case = make_case(3, 6, 7, 16, torch.float16, "empty_rows")
    case.x = torch.where(case.x_mask[:, :, None], case.x, torch.full_like(case.x, 3e4))
    check_layer_against_oracle("triton", case, torch.float16)


@triton_mark
def test_triton_backward_stays_finite_when_padded_y_products_with_the_gradient_overflow() -> None:
    # <y_j, g> of a padded y token overflows fp32 to inf; its attention is 0, and 0 * inf gave NaN gradients
    _interpreted_triton()
    case = make_case(3, 6, 7, 64, torch.float32, "empty_rows")
    case.y = torch.where(case.y_mask[:, :, None], case.y, torch.full_like(case.y, 3e38))
    check_layer_against_oracle("triton", case, torch.float32)


@triton_mark
@pytest.mark.parametrize("need", [(True, False), (False, True)], ids=["x_only", "y_only"])
@pytest.mark.parametrize("with_index", [False, True], ids=["paired", "y_index"])
def test_triton_backward_computes_only_the_gradients_asked_for(with_index: bool, need: tuple[bool, bool]) -> None:
    triton_ops = _interpreted_triton()
    case = make_case(5, 4, 6, 16, torch.float32, "empty_rows", batch_y=3 if with_index else None)
    args = (case.x, case.x_mask, case.y, case.y_mask, case.y_index, case.resolved_scale)
    grad = torch.randn(5, 16)
    _, attn = _default.iq_attention_pool_forward(*args)
    x_grad, y_grad = triton_ops.iq_attention_pool_backward_triton(grad, attn, *args, *need)
    ref_x_grad, ref_y_grad = _default.iq_attention_pool_backward(grad, attn, *args, True, True)
    if need[0]:
        torch.testing.assert_close(x_grad, ref_x_grad, atol=2e-5, rtol=2e-5)
    else:
        assert x_grad.shape == (0,)
    if need[1]:
        torch.testing.assert_close(y_grad, ref_y_grad, atol=2e-5, rtol=2e-5)
    else:
        assert y_grad.shape == (0,)


@triton_mark
@pytest.mark.usefixtures("no_disable_env")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_dispatch_entries_run_triton_when_covered(dtype: torch.dtype, caplog: pytest.LogCaptureFixture) -> None:
    _interpreted_triton()
    case = make_case(4, 5, 6, 16, dtype, "empty_rows", batch_y=2)
    assert _dispatch.kernel_unsupported_reason(case.x, case.y) is None
    with caplog.at_level(logging.DEBUG, logger="inf_embed.ops._dispatch"):
        check_layer_against_oracle("dispatch", case, dtype)
    assert not [r for r in caplog.records if "uses the PyTorch implementation" in r.getMessage()]


@triton_mark
def test_triton_and_default_kernels_agree_on_attention_and_outputs() -> None:
    _interpreted_triton()
    case = make_case(4, 9, 7, 40, torch.float32, "scattered")
    grad = torch.randn(4, 40)
    for got, want in zip(run_layer("triton", case, grad), run_layer("default", case, grad)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


# --- ahead-of-time compiles for sm_80 and sm_90 (no GPU needed) -------------------------------------------------

# (kernel, dtype, Lx, Ly, precision, with y_index), per architecture: bf16 and fp32 (whose tl.dot lowers
# differently) at a typical tile, with and without y_index, on both; on sm_90 also fp16, the largest tiles dispatch
# can pick (256x64, 8x1024) and fp32 with TF32 (opted into through torch.set_float32_matmul_precision("high")).
# About 2-3 s per variant with a cold Triton cache.
_KERNELS = ("fwd", "bwd")
AOT_CASES = {
    80: [(k, "bfloat16", 64, 64, "ieee", False) for k in _KERNELS]
    + [(k, "float32", 64, 64, "ieee", True) for k in _KERNELS],
    90: [(k, dt, 64, 64, "ieee", False) for k in _KERNELS for dt in ("bfloat16", "float16", "float32")]
    + [(k, "bfloat16", 256, 64, "ieee", True) for k in _KERNELS]
    + [("bwd", "bfloat16", 8, 1024, "ieee", True), ("bwd", "float32", 64, 64, "tf32", False)],
}
_SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}  # bytes per block, opt-in maximum


@triton_mark
@pytest.mark.parametrize("arch", [80, 90], ids=["sm_80", "sm_90"])
def test_kernels_compile_ahead_of_time_for_the_gpu(arch: int) -> None:
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cases = [[*case[:4], arch, *case[4:]] for case in AOT_CASES[arch]]
    script = Path(__file__).with_name("aot_compile.py")
    proc = subprocess.run(
        [sys.executable, str(script), json.dumps(cases)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == len(cases)
    failures = [f"{r['case']}: {r['error']}" for r in results if not r["ok"]]
    assert not failures, "\n".join(failures)
    for r in results:
        assert r["target"].startswith(f"sm_{arch}"), r
        assert r["shared"] <= _SHARED_LIMIT[arch], r
