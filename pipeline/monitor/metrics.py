"""What one log line reports, as plain functions: window means, throughput, MFU, memory, progress.

FLOPs per token come from the model (`pipeline.model.flops_per_token`, Megatron's formula).
MFU (percent, everywhere) = achieved FLOP/s per device ÷ the device's dense bf16 peak (table below, or
logging.peak_tflops).
"""

import psutil
import torch

from pipeline.engine import StepResult

# Dense bf16 tensor-core peaks (TFLOP/s) by device-name substring; matched in order.
PEAK_TFLOPS = [("H200", 989.0), ("H100", 989.0), ("GH200", 989.0), ("B200", 2250.0), ("A100", 312.0),
               ("L40S", 362.0), ("A10G", 125.0)]


def device_peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS if key in name), None)


def memory_gb(device: torch.device) -> dict[str, float]:
    """This process' memory: CUDA allocator peaks on GPU, resident set size on CPU (different tags: they
    measure different things)."""
    if device.type == "cuda":
        return {"memory/max_allocated_gb": torch.cuda.max_memory_allocated(device) / 2**30,
                "memory/max_reserved_gb": torch.cuda.max_memory_reserved(device) / 2**30}
    return {"memory/rss_gb": psutil.Process().memory_info().rss / 2**30}


def window(results: list[StepResult], seconds: float, flops_per_token: float, world: int,
           peak_tflops: float | None) -> dict[str, float]:
    """Scalars of the steps since the last log line: loss and grad norm averaged over the finite steps, the
    last lr, throughput over the window's wall time (steps only: no saves or validation)."""
    finite = [r for r in results if not r.skipped]
    tokens = sum(r.tokens for r in results)
    tflops = flops_per_token * tokens / seconds / world / 1e12
    out = {"train/loss": sum(r.loss for r in finite) / len(finite) if finite else float("nan"),
           "train/grad_norm": sum(r.grad_norm for r in finite) / len(finite) if finite else float("nan"),
           "train/lr": results[-1].lr,
           "throughput/tokens_per_s": tokens / seconds,
           "throughput/tokens_per_s_per_device": tokens / seconds / world,
           "throughput/step_time_s": seconds / len(results),
           "throughput/tflops_per_device": tflops}
    if peak_tflops:
        out["throughput/mfu_pct"] = 100.0 * tflops / peak_tflops
    spreads = [r.dp_loss_range[1] - r.dp_loss_range[0] for r in finite if r.dp_loss_range is not None]
    if spreads:  # max − min of the data-parallel ranks' mean losses, averaged over the window
        out["train/loss_dp_spread"] = sum(spreads) / len(spreads)
    return out


def duration(seconds: float) -> str:
    """12s, 3m05s, 1h02m, 2d03h."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def count(n: float) -> str:
    """1.23K, 45.6M, 7.89B, 2.00T."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}" if n / size < 100 else f"{n / size:.0f}{unit}"
    return f"{n:.0f}"


def eta_seconds(elapsed: float, done: int, remaining: int) -> float | None:
    """Remaining steps at this session's mean wall time per step (saves and validation included)."""
    return elapsed / done * remaining if done > 0 else None
