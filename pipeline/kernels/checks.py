"""Correctness harness for the DyT/Derf kernels, shared by tests/kernels and benchmarks/gpu_check.py.

`reference` evaluates the closed-form outputs and gradients in fp64 on the exact input values, plus for
each one a first-order rounding-error scale: the same expression with every term in absolute value and
the argument z = alpha*x + shift perturbed by its own rounding (so saturated tanh, large z in erf and
cancellation against the shift or bias are accounted for instead of loosening the tolerance globally).
`error_ratio` then asks  |got - ref| <= rounding to the output dtype + c * fp32 eps * scale.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from pipeline.kernels.dispatch import add_dyt, derf, dyt

EPS32 = torch.finfo(torch.float32).eps
# The GPU's exp2 (ex2.approx.ftz) flushes results below fp32's normal range to zero: sech^2 and erf'
# under ~4.7e-38 may become 0 (interpreter: exact). That absolute loss is each derivative's `floor`.
FTZ = 4 * torch.finfo(torch.float32).smallest_normal


class Expected(NamedTuple):
    value: torch.Tensor  # fp64
    scale: torch.Tensor  # first-order rounding-error scale (see the module docstring)
    floor: torch.Tensor | float = 0.0  # absolute error allowed for flushed intermediates


OPS = ("dyt", "derf", "add_dyt")
_GRAD_NAMES = {
    "x": "dx",
    "residual": "dresidual",
    "alpha": "dalpha",
    "weight": "dweight",
    "bias": "dbias",
    "shift": "dshift",
}


def make_inputs(
    op: str,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    *,
    device: torch.device | str = "cpu",
    bias: bool = True,
    seed: int = 0,
    param_dtype: torch.dtype | None = None,
    x: torch.Tensor | None = None,
) -> dict[str, torch.Tensor | None]:
    """Random inputs and upstream gradients of `op`; params in the activation dtype by default, as
    under megatron's Float16Module. Drawn on the CPU generator so every device sees the same values."""
    g = torch.Generator().manual_seed(seed)
    n, pdt = shape[-1], param_dtype or dtype

    def rand(*s: int, scale: float = 1.0, dt: torch.dtype = dtype) -> torch.Tensor:
        return (torch.randn(*s, generator=g) * scale).to(dt).to(device)

    inp = {
        "x": x.to(device) if x is not None else rand(*shape, scale=2.0),
        "alpha": (0.3 + torch.rand(1, generator=g)).to(pdt).to(device),
        "weight": rand(n, scale=0.5, dt=pdt) + 1,
        "bias": rand(n, scale=0.1, dt=pdt) if bias else None,
        "dy": rand(*shape),
    }
    if op == "derf":
        inp["shift"] = rand(1, scale=0.2, dt=pdt)
    if op == "add_dyt":
        inp["residual"] = rand(*shape)
        inp["dh"] = rand(*shape)
    return inp


def run(op: str, inp: dict[str, torch.Tensor | None], kernel: str) -> dict[str, torch.Tensor]:
    """Forward + backward through the public API: outputs (y, h) and input gradients (dx, dweight, ...)."""
    leaves = {
        k: v.clone().requires_grad_() for k, v in inp.items() if k not in ("dy", "dh") and v is not None
    }
    x, a, w, b = leaves["x"], leaves["alpha"], leaves["weight"], leaves.get("bias")
    if op == "dyt":
        outs, grads_in = {"y": dyt(x, a, w, b, kernel=kernel)}, [inp["dy"]]
    elif op == "derf":
        outs, grads_in = {"y": derf(x, a, leaves["shift"], w, b, kernel=kernel)}, [inp["dy"]]
    else:
        y, h = add_dyt(x, leaves["residual"], a, w, b, kernel=kernel)
        outs, grads_in = {"y": y, "h": h}, [inp["dy"], inp["dh"]]
    grads = torch.autograd.grad(list(outs.values()), list(leaves.values()), grads_in)
    res = {k: v.detach() for k, v in outs.items()}
    res.update({_GRAD_NAMES[k]: gr for k, gr in zip(leaves, grads, strict=True)})
    return res


def compare(
    op: str,
    inp: dict[str, torch.Tensor | None],
    res: dict[str, torch.Tensor],
    c: float,
    autograd_tanh: bool = False,
) -> dict[str, float]:
    """error_ratio of every output and gradient of `run` against `reference` (<= 1 passes).

    For add_dyt, h must equal the residual add in the activation dtype bit for bit, and the gradients
    of x and residual must be the same tensor values (ratio inf otherwise).
    """
    ref = reference(
        inp["x"], inp["alpha"], inp["weight"], inp["bias"], inp["dy"], shift=inp.get("shift"),
        residual=inp.get("residual"), dh=inp.get("dh"), act="erf" if op == "derf" else "tanh",
        autograd_tanh=autograd_tanh,
    )  # fmt: skip
    ratios = {name: error_ratio(res[name], expected, c) for name, expected in ref.items()}
    if op == "add_dyt":
        ratios["h"] = 0.0 if torch.equal(res["h"], inp["x"] + inp["residual"]) else math.inf
        ratios["dresidual"] = 0.0 if torch.equal(res["dresidual"], res["dx"]) else math.inf
    return ratios


def reference(
    x: torch.Tensor,
    alpha: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    dy: torch.Tensor,
    *,
    shift: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    dh: torch.Tensor | None = None,
    act: str = "tanh",
    autograd_tanh: bool = False,
) -> dict[str, Expected]:
    """name -> Expected(fp64 value, error scale, floor) for y, dx, dweight, dbias, dalpha, dshift.

    With `residual`, h = x + residual is taken as rounded in the input dtype (what both the stock layer
    and the fused kernel feed to DyT); dx then is the gradient w.r.t. x and residual (equal), plus dh.
    `autograd_tanh` models torch's tanh backward, 1 - t², whose absolute error ~2t²·eps is large next to
    sech² near saturation (the kernels compute sech² without that cancellation).
    """
    h = (x + residual) if residual is not None else x
    h, a, w = h.double().reshape(-1, h.shape[-1]), alpha.double().reshape(()), weight.double()
    s = shift.double().reshape(()) if shift is not None else torch.zeros((), dtype=torch.float64)
    dy = dy.double().reshape(h.shape)
    z = a * h + s
    zabs = (a * h).abs() + s.abs()  # magnitude the fp32 rounding of z is relative to
    # df_err: |f'| plus how far the rounding of z (and, for 1 - t², of t) moves f'.
    if act == "tanh":
        f = torch.tanh(z)
        df = 1.0 / torch.cosh(z) ** 2
        df_err = df + 2.0 * f.abs() * df * zabs + (2.0 * f * f if autograd_tanh else 0.0)
    else:
        f = torch.erf(z)
        df = 2.0 / math.sqrt(math.pi) * torch.exp(-z * z)
        df_err = df + 2.0 * z.abs() * df * zabs
    f_err = f.abs() + df * zabs
    out: dict[str, Expected] = {}
    y = w * f + (bias.double() if bias is not None else 0.0)
    out["y"] = Expected(y, w.abs() * f_err + (bias.double().abs() if bias is not None else 0.0))
    g = dy * w * df
    g_err, g_floor = (dy * w).abs() * df_err, (dy * w).abs() * FTZ
    dx, dx_err = g * a, g_err * a.abs()
    if dh is not None:
        dx, dx_err = dx + dh.double().reshape(h.shape), dx_err + dh.double().abs().reshape(h.shape)
    out["dx"] = Expected(dx, dx_err, g_floor * a.abs())
    out["dweight"] = Expected((dy * f).sum(0), (dy.abs() * f_err).sum(0))
    if bias is not None:
        out["dbias"] = Expected(dy.sum(0), dy.abs().sum(0))
    out["dalpha"] = Expected(
        *(t.sum().reshape(alpha.shape) for t in (g * h, g_err * h.abs(), g_floor * h.abs()))
    )
    if shift is not None:
        out["dshift"] = Expected(*(t.sum().reshape(shift.shape) for t in (g, g_err, g_floor)))
    return out


def error_ratio(got: torch.Tensor, expected: Expected, c: float) -> float:
    """max |got - value| / tolerance; <= 1 passes. NaN/inf in `got` gives inf.

    tolerance = half an ulp of got's dtype (its final rounding; 0 extra for fp32/fp64 since the scale
    term covers it) + the spacing of its subnormals + c fp32 ulps of the error scale + the floor.
    """
    ref = expected.value
    fi = torch.finfo(got.dtype)
    half_ulp = 0.5 * fi.eps if fi.eps > EPS32 else 0.0
    tol = half_ulp * ref.abs() + fi.smallest_normal * fi.eps + c * EPS32 * expected.scale + expected.floor
    err = (got.double().reshape(ref.shape) - ref).abs()
    if not torch.isfinite(err).all():
        return math.inf
    return float((err / tol).max()) if err.numel() else 0.0
