"""Where a training step's time goes: norm kernels vs GEMMs vs attention vs optimizer vs everything else.

The torch profiler records a few steps; on GPU every CUDA kernel's device time counts, on CPU every op's
self time. Kernels are classified by name, first rule that matches (the `top` list of each profile shows
the names, so a reader can check the rules):
  norm       our Triton DyT/Derf kernels (exact names), ATen layer/RMS norm kernels, tanh / erf (eager
             DyT / Derf), Inductor kernels (in these models only the RMSNorm is compiled);
  gemm       cuBLAS / CUTLASS matrix products (ATen mm / addmm / bmm on CPU);
  attention  flash / cuDNN / memory-efficient SDPA kernels;
  optimizer  fused AdamW and the foreach kernels of grad-norm clipping.
Eager norms also launch multiplies and casts that cannot be told apart by name: those count as "other".
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable

import torch
import triton
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from pipeline.kernels import dyt_triton

CATEGORIES = ("norm", "gemm", "attention", "optimizer", "other")
# Our Triton kernels by name, and (CPU profiles) the autograd Functions that launch them.
_FUNCTIONS = [n for n, o in vars(dyt_triton).items() if isinstance(o, type) and issubclass(o, torch.autograd.Function)]
OUR_KERNELS = frozenset(
    # KernelInterface: a @triton.jit function, compiled (JITFunction) or under TRITON_INTERPRET=1
    [n for n, o in vars(dyt_triton).items() if isinstance(o, triton.runtime.KernelInterface) and n.endswith("_kernel")]
    + _FUNCTIONS + [f"{n}Backward" for n in _FUNCTIONS]
)
RULES = [(cat, re.compile(rx, re.IGNORECASE)) for cat, rx in (
    ("attention", r"flash|fmha|attention|sdpa|cudnn"),
    ("gemm", r"gemm|nvjet|xmma|cutlass|cublas|splitkreduce|^aten::(mm|addmm|bmm|baddbmm)$"),
    ("optimizer", r"adam|multi_tensor|foreach|clip_grad"),
    ("norm", r"rms_?norm|layer_?norm|gammabeta|rowwisemoments|tanh|(?<![a-z])erf|dyt|derf|^triton_(poi|red|per)_"
             r"|compiledfunction|compiled region"),
)]  # fmt: skip


def classify(name: str) -> str:
    if name in OUR_KERNELS:
        return "norm"
    return next((cat for cat, rx in RULES if rx.search(name)), "other")


def breakdown(step: Callable[[], object], device: torch.device, steps: int) -> dict:
    """Milliseconds per step in each category (plus the total and the top kernels) over `steps` steps."""
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize(device)
    per_name: dict[str, float] = defaultdict(float)  # microseconds
    for e in prof.events():
        if cuda and e.device_type == DeviceType.CUDA:
            per_name[e.name] += e.device_time_total
        elif not cuda and e.device_type == DeviceType.CPU:
            per_name[e.name] += e.self_cpu_time_total
    ms = dict.fromkeys(CATEGORIES, 0.0)
    for name, us in per_name.items():
        ms[classify(name)] += us / 1e3 / steps
    top = sorted(per_name.items(), key=lambda kv: -kv[1])[:12]
    return {
        "steps": steps,
        "timer": "CUDA kernel time" if cuda else "CPU op self time",
        "ms_per_step": ms,
        "total_ms_per_step": sum(ms.values()),
        "top": [{"name": n[:160], "category": classify(n), "ms_per_step": us / 1e3 / steps} for n, us in top],
    }
