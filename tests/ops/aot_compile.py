"""Compile the Triton kernels ahead of time for a GPU architecture, with no GPU present.

Run as a script in a fresh process (``tests/ops/test_triton.py`` does): Triton decides at import whether its own
``@triton.jit`` helpers (``tl.sum``, ``tl.max``, ...) are interpreted, so a process that imported Triton under
``TRITON_INTERPRET=1`` cannot compile. Usage::

    python tests/ops/aot_compile.py '[["fwd", "bfloat16", 64, 64, 90, "ieee", false], ...]'

(kernel, dtype, Lx, Ly, arch, input precision, with y_index)

prints one JSON object per case: ``{"case": [...], "ok": bool, "error": str, "shared": int, "target": str}``.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

_TRITON_TYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
# "x" = the states' dtype
_POINTERS = {
    "fwd": {"x_ptr": "x", "xm_ptr": "*u8", "y_ptr": "x", "ym_ptr": "*u8", "yidx_ptr": "*i64", "out_ptr": "x",
            "attn_ptr": "*fp32"},
    "bwd": {"g_ptr": "x", "attn_ptr": "*fp32", "x_ptr": "x", "xm_ptr": "*u8", "y_ptr": "x", "ym_ptr": "*u8",
            "yidx_ptr": "*i64", "dx_ptr": "x", "dy_ptr": "dy"},
}  # fmt: skip
# unit strides of the last dimension: the launcher's JIT specialises them to the constant 1, as here
_UNIT_STRIDES = ("sx_d", "sy_d", "so_d", "sg_d", "sdx_d", "sdy_d")


def compile_kernel(
    kernel: str, dtype: str, len_x: int, len_y: int, arch: int, precision: str, has_index: bool
) -> dict[str, int | str]:
    """Compile one kernel variant (both gradients) the way the launcher would pick it for a shape."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from inf_embed.ops import _triton

    fn = _triton._iq_attention_pool_fwd_kernel if kernel == "fwd" else _triton._iq_attention_pool_bwd_kernel
    block_x, block_y, block_d, num_warps = _triton.block_config(len_x, len_y)
    constexprs = {"HAS_INDEX": has_index, "BLOCK_X": block_x, "BLOCK_Y": block_y, "BLOCK_D": block_d,
                  "DOT_UPCAST": False, "INPUT_PRECISION": precision}  # fmt: skip
    if kernel == "bwd":
        constexprs |= {"NEED_DX": True, "NEED_DY": True}
    constexprs |= {name: 1 for name in fn.arg_names if name in _UNIT_STRIDES}
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in _POINTERS[kernel]:
            kind = _POINTERS[kernel][name]
            if kind == "dy":  # per-row y gradients: fp32 when summed over y_index afterwards
                kind = "*fp32" if has_index else "x"
            signature[name] = "*" + _TRITON_TYPES[dtype] if kind == "x" else kind
        elif name == "scale":
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
    compiled = triton.compile(
        ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps}
    )
    target = next((line.split()[1] for line in compiled.asm["ptx"].splitlines() if line.startswith(".target")), "")
    if not compiled.asm.get("cubin"):
        raise RuntimeError("no cubin produced")
    return {"shared": int(compiled.metadata.shared), "target": target, "num_warps": num_warps}


def main(argv: list[str]) -> int:
    """Compile every case given as JSON in ``argv[1]``; one JSON result per line on stdout."""

    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("run with TRITON_INTERPRET unset: an interpreted Triton cannot compile")
    for case in json.loads(argv[1]):
        try:
            result = {"case": case, "ok": True, **compile_kernel(*case)}
        except Exception as exc:  # report every failing variant, not just the first
            result = {"case": case, "ok": False, "error": f"{exc}\n{traceback.format_exc(limit=3)}"}
        sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
