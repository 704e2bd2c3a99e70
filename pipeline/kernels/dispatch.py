"""One entry point per op; picks the implementation (auto | triton | compile | eager) per call.

The Triton module is imported lazily: `@triton.jit` decides at import time whether kernels run in the
interpreter (TRITON_INTERPRET=1), and CPU-only runs never need Triton at all.
"""

from __future__ import annotations

import os

import torch

from pipeline.kernels import reference

KERNELS = ("auto", "triton", "compile", "eager")


def _interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_kernel(kernel: str, device: torch.device | str) -> str:
    """Map a requested kernel to the one that runs: auto = triton on CUDA, eager elsewhere.

    Raises ValueError for an unknown name and RuntimeError for triton on a CPU tensor without
    TRITON_INTERPRET=1 (Triton has no CPU backend; the interpreter is a test tool).
    """
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {KERNELS}")
    device_type = torch.device(device).type
    if kernel == "auto":
        return "triton" if device_type == "cuda" else "eager"
    if kernel == "triton" and device_type != "cuda" and not _interpreter_on():
        raise RuntimeError(
            f"kernel='triton' needs a CUDA tensor (got device {device_type!r}); on CPU use kernel='eager' "
            "or 'compile', or set TRITON_INTERPRET=1 before importing pipeline.kernels (tests only, slow)"
        )
    return kernel


def _implementation(op: str, kernel: str, device: torch.device):
    """The function that runs `op` (dyt | derf | add_dyt) for the requested kernel on `device`."""
    k = resolve_kernel(kernel, device)
    if k == "triton":
        from pipeline.kernels import dyt_triton

        return getattr(dyt_triton, op)
    eager = getattr(reference, f"{op}_eager")
    return reference.compiled(eager) if k == "compile" else eager


def dyt(
    x: torch.Tensor,
    alpha: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    kernel: str = "auto",
) -> torch.Tensor:
    """DyT: weight * tanh(alpha * x) + bias over the last dim of x; alpha is a 1-element tensor."""
    return _implementation("dyt", kernel, x.device)(x, alpha, weight, bias)


def derf(
    x: torch.Tensor,
    alpha: torch.Tensor,
    shift: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    kernel: str = "auto",
) -> torch.Tensor:
    """Derf: weight * erf(alpha * x + shift) + bias; alpha and shift are 1-element tensors."""
    return _implementation("derf", kernel, x.device)(x, alpha, shift, weight, bias)


def add_dyt(
    x: torch.Tensor,
    residual: torch.Tensor,
    alpha: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    kernel: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused residual add + DyT: returns (DyT(h), h) with h = x + residual."""
    return _implementation("add_dyt", kernel, x.device)(x, residual, alpha, weight, bias)
