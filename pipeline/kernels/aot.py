"""Compile the kernels for an NVIDIA GPU on a machine without one, and count instructions per element.

The interpreter runs kernels as Python, so it never exercises the Triton compiler; this does (front end,
LLVM, ptxas, all shipped in the triton wheel) and reads the SASS back with nvdisasm. Instructions per
byte of memory traffic tell whether a kernel can be memory-bound: an H100/H200 issues ~3.3e13 thread
instructions/s against ~3.3-4.3e12 B/s of copy bandwidth, a ridge at ~7.7-10 instructions per byte.

    python -m pipeline.kernels.aot [--arch 90]     # JSON: variant -> instructions, per element, per byte

Run it without TRITON_INTERPRET (with it the kernels are interpreter objects, not JIT functions).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from pipeline.kernels import dyt_triton as K

_TYPES = {
    **dict.fromkeys(["DW_P", "DB_P", "DA_P", "DS_P"], "*fp32"),
    **dict.fromkeys(["M", "N", "P", "Q", "rows_per_prog"], "i32"),
    **dict.fromkeys(["stride_x", "stride_r", "stride_dy", "stride_dh"], "i32"),
}
_FWD = dict(HAS_SHIFT=False, HAS_BIAS=False, EVEN=True, BLOCK_M=8, BLOCK_N=1024)
_BWD = dict(HAS_DH=False, HAS_SHIFT=False, HAS_BIAS=False, EVEN=True, BLOCK_M=8, BLOCK_N=512)
# name -> (kernel, constexprs, activation tensors moved per element); bf16, the LLaMA-shape configs.
VARIANTS = {
    "dyt_fwd": (K._fwd_kernel, {**_FWD, "ACT": K.TANH, "HAS_RES": False}, 2),
    "dyt_fwd_bias": (K._fwd_kernel, {**_FWD, "ACT": K.TANH, "HAS_RES": False, "HAS_BIAS": True}, 2),
    "add_dyt_fwd": (K._fwd_kernel, {**_FWD, "ACT": K.TANH, "HAS_RES": True}, 4),
    "derf_fwd": (K._fwd_kernel, {**_FWD, "ACT": K.ERF, "HAS_RES": False, "HAS_SHIFT": True}, 2),
    "dyt_bwd": (K._bwd_kernel, {**_BWD, "ACT": K.TANH}, 3),
    "dyt_bwd_bias": (K._bwd_kernel, {**_BWD, "ACT": K.TANH, "HAS_BIAS": True}, 3),
    "add_dyt_bwd": (K._bwd_kernel, {**_BWD, "ACT": K.TANH, "HAS_DH": True}, 4),
    "derf_bwd": (K._bwd_kernel, {**_BWD, "ACT": K.ERF, "HAS_SHIFT": True}, 3),
}
_ADDR = re.compile(r"\s*/\*([0-9a-f]{4,})\*/\s*(?:@!?U?P\w+\s+)?(\S+)")


def compile_kernel(fn: triton.JITFunction, constexprs: dict, arch: int, num_warps: int = 8) -> object:
    """Compile as a launch on torch tensors would: 16-byte-aligned pointers, sizes divisible by 16."""
    sig = {n: "constexpr" if n in constexprs else _TYPES.get(n, "*bf16") for n in fn.arg_names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names) if n not in constexprs}
    src = ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})


def disassemble(kernel: object) -> str:
    nvdisasm = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        return subprocess.run([nvdisasm, "-c", f.name], capture_output=True, text=True, check=True).stdout


def count(text: str) -> int:
    return sum(1 for line in text.splitlines() if _ADDR.match(line))


def row_loop(text: str) -> int:
    """Instructions in the backward's row loop: from the target of its one backward branch to it."""
    labels, pending, branches = {}, None, []
    for line in text.splitlines():
        if m := re.match(r"\s*(\.L_x_\d+):", line):
            pending = m.group(1)
        elif m := _ADDR.match(line):
            addr = int(m.group(1), 16)
            if pending:
                labels[pending], pending = addr, None
            if m.group(2) == "BRA" and (t := re.search(r"(\.L_x_\d+)", line)):
                branches.append((addr, t.group(1)))
    back = [(addr, labels[t]) for addr, t in branches if labels.get(t, addr) < addr]
    if len(back) != 1:
        raise RuntimeError(f"expected one loop, found {len(back)} backward branches")
    end, start = back[0]
    return (end - start) // 16 + 1  # 16-byte instructions on sm_70+


def report(arch: int = 90) -> dict[str, dict]:
    out = {}
    for name, (fn, constexprs, tensors) in VARIANTS.items():
        kernel = compile_kernel(fn, constexprs, arch)
        per_thread = constexprs["BLOCK_M"] * constexprs["BLOCK_N"] // (8 * 32)
        text = disassemble(kernel)
        n = row_loop(text) if fn is K._bwd_kernel else count(text)
        out[name] = {
            "instructions": n,
            "per_element": round(n / per_thread, 2),
            "per_byte_bf16": round(n / per_thread / (2 * tensors), 2),
        }
    return out


def main() -> None:
    if K._INTERPRET:
        sys.exit("pipeline.kernels.aot: unset TRITON_INTERPRET (kernels are interpreter objects)")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", type=int, default=90, help="compute capability x10 (90 = H100/H200)")
    print(json.dumps(report(p.parse_args().arch), indent=1))


if __name__ == "__main__":
    main()
