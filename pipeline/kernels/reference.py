"""Eager (plain autograd) DyT / Derf / add+DyT: the numerical reference, and the `compile` provider.

Math runs in fp32 for half-precision inputs (fp64 stays fp64) and the result is rounded once to the
input dtype, which is also what the Triton kernels do; gradients follow from autograd.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    # fp32 math for bf16/fp16/fp32, fp64 for fp64 (the test reference).
    return torch.promote_types(x.dtype, torch.float32)


def dyt_eager(
    x: torch.Tensor, alpha: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """y = weight * tanh(alpha * x) + bias, in the dtype of x."""
    acc = _acc_dtype(x)
    y = torch.tanh(alpha.to(acc) * x.to(acc)) * weight.to(acc)
    if bias is not None:
        y = y + bias.to(acc)
    return y.to(x.dtype)


def derf_eager(
    x: torch.Tensor,
    alpha: torch.Tensor,
    shift: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """y = weight * erf(alpha * x + shift) + bias, in the dtype of x."""
    acc = _acc_dtype(x)
    y = torch.erf(alpha.to(acc) * x.to(acc) + shift.to(acc)) * weight.to(acc)
    if bias is not None:
        y = y + bias.to(acc)
    return y.to(x.dtype)


def add_dyt_eager(
    x: torch.Tensor,
    residual: torch.Tensor,
    alpha: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """h = x + residual (rounded to the input dtype, as megatron's residual add); y = DyT(h)."""
    h = x + residual
    return dyt_eager(h, alpha, weight, bias), h


@functools.cache
def compiled(fn: Callable) -> Callable:
    """torch.compile'd version of one of the functions above, built once per process on first use."""
    return torch.compile(fn)
