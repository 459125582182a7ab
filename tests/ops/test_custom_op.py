"""The torch.library registration: opcheck, fp64 gradcheck, torch.compile(fullgraph=True), autocast, no double
backward, and when the CUDA kernel is registered."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from inf_embed.ops import iq_attention_pool

from .cases import make_case

FORWARD = torch.ops.inf_embed.iq_attention_pool.default
BACKWARD = torch.ops.inf_embed.iq_attention_pool_backward.default


def _op_args(dtype: torch.dtype, with_index: bool, requires_grad: bool = True) -> tuple:
    case = make_case(5, 4, 6, 8, dtype, "empty_rows", batch_y=3 if with_index else None)
    x = case.x.requires_grad_(requires_grad)
    y = case.y.requires_grad_(requires_grad)
    return x, case.x_mask, y, case.y_mask, case.y_index, case.resolved_scale


@pytest.mark.parametrize("with_index", [False, True], ids=["paired", "y_index"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_forward_op_passes_opcheck(dtype: torch.dtype, with_index: bool) -> None:
    torch.library.opcheck(FORWARD, _op_args(dtype, with_index))


@pytest.mark.parametrize("need", [(True, True), (True, False), (False, True)], ids=["both", "x_only", "y_only"])
@pytest.mark.parametrize("with_index", [False, True], ids=["paired", "y_index"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_backward_op_passes_opcheck(dtype: torch.dtype, with_index: bool, need: tuple[bool, bool]) -> None:
    x, x_mask, y, y_mask, y_index, scale = _op_args(dtype, with_index, requires_grad=False)
    _, attn = FORWARD(x, x_mask, y, y_mask, y_index, scale)
    grad = torch.randn(x.shape[0], x.shape[2]).to(dtype)
    torch.library.opcheck(BACKWARD, (grad, attn, x, x_mask, y, y_mask, y_index, scale, *need))


def test_backward_op_returns_empty_tensors_for_gradients_not_needed() -> None:
    x, x_mask, y, y_mask, y_index, scale = _op_args(torch.float64, False, requires_grad=False)
    _, attn = FORWARD(x, x_mask, y, y_mask, y_index, scale)
    grad = torch.ones(5, 8, dtype=torch.float64)
    x_grad, y_grad = BACKWARD(grad, attn, x, x_mask, y, y_mask, None, scale, False, True)
    assert x_grad.shape == (0,) and y_grad.shape == y.shape


@pytest.mark.parametrize("inputs", ["both", "x_only", "y_only"])
@pytest.mark.parametrize("with_index", [False, True], ids=["paired", "y_index"])
def test_public_function_passes_float64_gradcheck(with_index: bool, inputs: str) -> None:
    case = make_case(5, 3, 4, 5, torch.float64, "empty_rows", batch_y=3 if with_index else None)
    x, y = case.x.requires_grad_(inputs != "y_only"), case.y.requires_grad_(inputs != "x_only")

    def fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return iq_attention_pool(x, case.x_mask, y, case.y_mask, y_index=case.y_index)

    # the full Jacobian for both inputs; the single-input variants only check which gradients come back (fast mode)
    assert torch.autograd.gradcheck(fn, (x, y), eps=1e-6, atol=1e-8, rtol=1e-6, fast_mode=inputs != "both")


def test_double_backward_raises() -> None:
    case = make_case(3, 3, 4, 5, torch.float64, "right")
    x = case.x.requires_grad_(True)
    out = iq_attention_pool(x, case.x_mask, case.y, case.y_mask)
    (grad_x,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="no autograd formula"):
        grad_x.sum().backward()


# --- torch.compile ---------------------------------------------------------------------------------------------


def _model_step(x: torch.Tensor, x_mask: torch.Tensor, y: torch.Tensor, y_mask: torch.Tensor) -> torch.Tensor:
    # scale computed from d inside the compiled region, then normalised as the model does
    return F.normalize(iq_attention_pool(x, x_mask, y, y_mask, x.shape[-1] ** -0.5), dim=-1)


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiles_with_fullgraph_and_matches_eager_forward_and_backward(backend: str, dynamic: bool) -> None:
    torch._dynamo.reset()
    compiled = torch.compile(_model_step, fullgraph=True, dynamic=dynamic, backend=backend)
    shapes = [(3, 5, 4), (4, 6, 7)] if dynamic else [(3, 5, 4)]
    for batch, len_x, len_y in shapes:
        case = make_case(batch, len_x, len_y, 16, torch.float32, "empty_rows")
        results = []
        for fn in (_model_step, compiled):
            x = case.x.clone().requires_grad_(True)
            y = case.y.clone().requires_grad_(True)
            out = fn(x, case.x_mask.long(), y, case.y_mask.long())
            (out * torch.arange(16.0)).sum().backward()
            results.append((out.detach(), x.grad, y.grad))
        for eager, comp in zip(*results):
            torch.testing.assert_close(comp, eager, atol=1e-5, rtol=1e-5)


def test_compiles_with_y_index_and_dynamic_shapes() -> None:
    torch._dynamo.reset()

    def fn(
        x: torch.Tensor, x_mask: torch.Tensor, y: torch.Tensor, y_mask: torch.Tensor, idx: torch.Tensor
    ) -> torch.Tensor:
        return iq_attention_pool(x, x_mask, y, y_mask, y_index=idx)

    compiled = torch.compile(fn, fullgraph=True, dynamic=True, backend="aot_eager")
    for batch, batch_y in [(6, 3), (8, 2)]:
        case = make_case(batch, 4, 5, 8, torch.float32, "empty_rows", batch_y=batch_y)
        args = (case.x, case.x_mask, case.y, case.y_mask, case.y_index)
        torch.testing.assert_close(compiled(*args), fn(*args))


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_autocast_output_dtype_agrees_between_eager_and_compiled(backend: str) -> None:
    torch._dynamo.reset()
    case = make_case(3, 5, 4, 16, torch.float32, "empty_rows")

    def fn(x: torch.Tensor, x_mask: torch.Tensor, y: torch.Tensor, y_mask: torch.Tensor) -> torch.Tensor:
        return iq_attention_pool(x, x_mask, y, y_mask)

    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager = fn(case.x, case.x_mask, case.y, case.y_mask)
        comp = compiled(case.x, case.x_mask, case.y, case.y_mask)
    assert eager.dtype == comp.dtype == torch.bfloat16
    torch.testing.assert_close(comp, eager, atol=0, rtol=0)


# --- registration ----------------------------------------------------------------------------------------------


def test_cuda_kernel_is_registered_when_triton_is_installed_and_not_disabled() -> None:
    from inf_embed.ops import _dispatch

    registered = torch._C._dispatch_has_kernel_for_dispatch_key("inf_embed::iq_attention_pool", "CUDA")
    assert registered == _dispatch.register_kernels()
    if importlib.util.find_spec("triton") is not None and "INF_EMBED_DISABLE_KERNELS" not in os.environ:
        assert registered


def test_disable_switch_at_import_registers_no_cuda_kernel() -> None:
    code = (
        "import torch, inf_embed.ops; "
        "print(torch._C._dispatch_has_kernel_for_dispatch_key('inf_embed::iq_attention_pool', 'CUDA'))"
    )
    env = os.environ | {"INF_EMBED_DISABLE_KERNELS": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"
