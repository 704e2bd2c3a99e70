"""Triton DyT / Derf / residual-add+DyT: kernels, launch heuristics and autograd Functions.

One kernel source serves the GPU and the CPU interpreter (TRITON_INTERPRET=1, tests):
- tanh is built from exp2, a reciprocal and a short polynomial: the interpreter has no tl.tanh and
  cannot run libdevice.tanh. On an H100/H200 the fp32 issue rate is close to the memory rate, so
  instructions are counted (`python -m pipeline.kernels.aot`: bf16 DyT forward 22.5 SASS instructions
  per element, backward row loop 29.6, i.e. ~5-5.6 per byte against a ridge of ~7.7): approximate
  reciprocal (inline PTX, NVIDIA only), weight applied to column sums, no bounds masks when the tiles
  divide the tensor;
- two spots differ under the interpreter (constexpr `_INTERPRET`): the reciprocal is a division, and
  bf16 stores are rounded to nearest even by hand because the interpreter truncates fp32->bf16 casts
  (the GPU's cast rounds to nearest even, so both give the same bits);
- the backward saves only x (h for add+DyT) and recomputes the activation; weight/bias/alpha/shift
  gradients are per-program fp32 partials summed by a second kernel in a fixed order (no atomics), so
  repeated runs are bit-identical. No autotuning either: a config chosen by timing could change the
  reduction order between runs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

TANH, ERF = 0, 1
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Globals read inside @triton.jit must be constexpr.
_INTERPRET = tl.constexpr(bool(triton.knobs.runtime.interpret))  # what @triton.jit below was decided by
_M2LOG2E = tl.constexpr(-2.0 * math.log2(math.e))  # exp(-2a) = exp2(a * _M2LOG2E)
_MLOG2E = tl.constexpr(-math.log2(math.e))


@triton.jit
def _rcp(v):
    """1/v for v in [1, 2]: one MUFU op on the GPU, where fp32 `/` adds full-range scaling."""
    if _INTERPRET:
        return 1.0 / v
    else:
        return tl.inline_asm_elementwise(
            "rcp.approx.ftz.f32 $0, $1;", "=r,r", [v], dtype=tl.float32, is_pure=True, pack=1
        )


@triton.jit
def _tanh_sech2(z):
    a = tl.abs(z)
    e = tl.exp2(a * _M2LOG2E)  # exp(-2|z|)
    q = _rcp(1.0 + e)
    big = ((1.0 - e) * q).to(tl.uint32, bitcast=True)
    big = (big | (z.to(tl.uint32, bitcast=True) & 0x80000000)).to(tl.float32, bitcast=True)  # sign of z
    zs = tl.where(a < 0.2, z, 0.0)  # keeps z^2 finite in the branch that is discarded anyway
    z2 = zs * zs
    # Odd Taylor series to z^9 for |z| < 0.2, where (1-e)/(1+e) cancels badly (next term < 1e-9 rel).
    p = z2 * 0.021869488536155203 - 0.05396825396825397  # 62/2835, 17/315
    p = p * z2 + 0.13333333333333333  # 2/15
    p = p * z2 - 0.3333333333333333  # 1/3
    t = tl.where(a < 0.2, zs + zs * z2 * p, big)
    # sech^2 = 4e/(1+e)^2 avoids the cancellation of 1 - t*t near saturation.
    return t, 4.0 * e * q * q


@triton.jit
def _act(z, ACT: tl.constexpr):
    """f(z) and f'(z): tanh for DyT, erf for Derf."""
    if ACT == 0:
        f, df = _tanh_sech2(z)
    else:
        f = tl.math.erf(z)
        df = 1.1283791670955126 * tl.exp2(z * z * _MLOG2E)  # 2/sqrt(pi) * exp(-z^2)
    return f, df


@triton.jit
def _to(v, DTYPE: tl.constexpr):
    """Cast fp32 -> DTYPE rounding to nearest even, also under the interpreter (which truncates bf16)."""
    if _INTERPRET and DTYPE == tl.bfloat16:
        b = v.to(tl.uint32, bitcast=True)
        b = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16
        v = tl.where(v != v, v, b.to(tl.float32, bitcast=True))  # keep NaNs NaN (the add may wrap them)
    return v.to(DTYPE)


@triton.jit
def _load(ptrs, mask, EVEN: tl.constexpr):
    """fp32 tile; EVEN (the tiles divide the tensor) drops the bounds masks, ~10% of the instructions."""
    if EVEN:
        return tl.load(ptrs).to(tl.float32)
    else:
        return tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _store(ptrs, v, mask, EVEN: tl.constexpr):
    if EVEN:
        tl.store(ptrs, _to(v, ptrs.dtype.element_ty))
    else:
        tl.store(ptrs, _to(v, ptrs.dtype.element_ty), mask=mask)


@triton.jit
def _fwd_kernel(
    X, R, H, Y, ALPHA, SHIFT, W, B,
    M, N, stride_x, stride_r,
    ACT: tl.constexpr, HAS_RES: tl.constexpr, HAS_SHIFT: tl.constexpr, HAS_BIAS: tl.constexpr,
    EVEN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < N
    mask = (rows < M)[:, None] & cmask[None, :]
    r64 = rows.to(tl.int64)[:, None]  # int64 offsets: M * stride can exceed 2^31
    x = _load(X + r64 * stride_x + cols[None, :], mask, EVEN)
    if HAS_RES:
        h = x + _load(R + r64 * stride_r + cols[None, :], mask, EVEN)
        _store(H + r64 * N + cols[None, :], h, mask, EVEN)  # outputs are contiguous
        x = _to(h, H.dtype.element_ty).to(tl.float32)  # DyT sees h rounded, as after a separate add
    z = tl.load(ALPHA).to(tl.float32) * x
    if HAS_SHIFT:
        z += tl.load(SHIFT).to(tl.float32)
    f, _ = _act(z, ACT)
    y = f * _load(W + cols, cmask, EVEN)[None, :]
    if HAS_BIAS:
        y += _load(B + cols, cmask, EVEN)[None, :]
    _store(Y + r64 * N + cols[None, :], y, mask, EVEN)


@triton.jit
def _bwd_kernel(
    X, DY, DH, DX, ALPHA, SHIFT, W, DW_P, DB_P, DA_P, DS_P,
    M, N, stride_x, stride_dy, stride_dh, rows_per_prog,
    ACT: tl.constexpr, HAS_DH: tl.constexpr, HAS_SHIFT: tl.constexpr, HAS_BIAS: tl.constexpr,
    EVEN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < N
    w = _load(W + cols, cmask, EVEN)
    alpha = tl.load(ALPHA).to(tl.float32)
    w_alpha = (w * alpha)[None, :]
    acc_dw = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    acc_db = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    acc_da = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    acc_ds = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for i in range(0, rows_per_prog, BLOCK_M):
        rows = pid_m * rows_per_prog + i + tl.arange(0, BLOCK_M)
        mask = (rows < M)[:, None] & cmask[None, :]
        r64 = rows.to(tl.int64)[:, None]
        x = _load(X + r64 * stride_x + cols[None, :], mask, EVEN)
        dy = _load(DY + r64 * stride_dy + cols[None, :], mask, EVEN)
        z = alpha * x
        if HAS_SHIFT:
            z += tl.load(SHIFT).to(tl.float32)
        f, df = _act(z, ACT)
        acc_dw += dy * f  # masked lanes have dy = 0 and add nothing
        if HAS_BIAS:
            acc_db += dy
        u = dy * df  # dL/dz = u * w; w is per column, so it is applied to the column sums at the end
        acc_da += u * x
        if HAS_SHIFT:
            acc_ds += u
        dx = u * w_alpha
        if HAS_DH:
            dx += _load(DH + r64 * stride_dh + cols[None, :], mask, EVEN)
        _store(DX + r64 * N + cols[None, :], dx, mask, EVEN)  # contiguous
    tl.store(DW_P + pid_m * N + cols, tl.sum(acc_dw, axis=0), mask=cmask)
    if HAS_BIAS:
        tl.store(DB_P + pid_m * N + cols, tl.sum(acc_db, axis=0), mask=cmask)
    scalar_slot = pid_m * tl.num_programs(1) + pid_n
    tl.store(DA_P + scalar_slot, tl.sum(tl.sum(acc_da, axis=0) * w, axis=0))
    if HAS_SHIFT:
        tl.store(DS_P + scalar_slot, tl.sum(tl.sum(acc_ds, axis=0) * w, axis=0))


@triton.jit
def _reduce_kernel(
    DW_P, DB_P, DA_P, DS_P, DW, DB, DA, DS, P, N, Q,
    HAS_SHIFT: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_Q: tl.constexpr,
):  # fmt: skip
    """Sum the [P, N] vector partials over P and the Q scalar partials, in a fixed order."""
    pid = tl.program_id(0)
    cols = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < N
    acc_w = tl.zeros((BLOCK_P, BLOCK_N), tl.float32)
    acc_b = tl.zeros((BLOCK_P, BLOCK_N), tl.float32)
    for p0 in range(0, P, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        mask = (p < P)[:, None] & cmask[None, :]
        offs = p[:, None] * N + cols[None, :]
        acc_w += tl.load(DW_P + offs, mask=mask, other=0.0)
        if HAS_BIAS:
            acc_b += tl.load(DB_P + offs, mask=mask, other=0.0)
    tl.store(DW + cols, _to(tl.sum(acc_w, axis=0), DW.dtype.element_ty), mask=cmask)
    if HAS_BIAS:
        tl.store(DB + cols, _to(tl.sum(acc_b, axis=0), DB.dtype.element_ty), mask=cmask)
    if pid == 0:
        acc_a = tl.zeros((BLOCK_Q,), tl.float32)
        acc_s = tl.zeros((BLOCK_Q,), tl.float32)
        for q0 in range(0, Q, BLOCK_Q):
            q = q0 + tl.arange(0, BLOCK_Q)
            acc_a += tl.load(DA_P + q, mask=q < Q, other=0.0)
            if HAS_SHIFT:
                acc_s += tl.load(DS_P + q, mask=q < Q, other=0.0)
        tl.store(DA, _to(tl.sum(acc_a, axis=0), DA.dtype.element_ty))
        if HAS_SHIFT:
            tl.store(DS, _to(tl.sum(acc_s, axis=0), DS.dtype.element_ty))


# ----------------------------------------------------------------------------------------------------
# Launch configuration (heuristics, no autotuning: see the module docstring).


@dataclass(frozen=True)
class FwdConfig:
    block_m: int
    block_n: int
    num_warps: int


@dataclass(frozen=True)
class BwdConfig:
    block_m: int
    block_n: int
    rows_per_prog: int  # a multiple of block_m; rows one program reduces into its partial
    num_warps: int


@functools.cache
def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 2  # interpreter: few, large programs (each costs ~10 ms there)
    return torch.cuda.get_device_properties(device).multi_processor_count


@functools.lru_cache(maxsize=256)  # called on every forward: keep the Python overhead off the launch path
def fwd_config(m: int, n: int) -> FwdConfig:
    """Elementwise tiles of ~8K elements, whole rows when the hidden size is small."""
    block_n = min(triton.next_power_of_2(n), 1024)
    block_m = max(1, min(8192 // block_n, triton.next_power_of_2(max(m, 1))))
    return FwdConfig(block_m, block_n, num_warps=8)


@functools.lru_cache(maxsize=256)
def bwd_config(m: int, n: int, device: torch.device) -> BwdConfig:
    """~4 programs per SM; each walks a chunk of rows so its weight/bias partial covers many rows.
    The chunk is block_m times a power of two, so that it divides LLaMA token counts (no row masks)."""
    block_n = min(triton.next_power_of_2(n), 512)
    block_m = max(1, min(4096 // block_n, triton.next_power_of_2(max(m, 1))))
    grid_m = triton.cdiv(4 * _num_sms(device), triton.cdiv(n, block_n))
    blocks = triton.cdiv(max(m, 1), grid_m * block_m)  # row blocks per program for that grid
    blocks = min(2 ** round(math.log2(blocks)), triton.next_power_of_2(triton.cdiv(max(m, 1), block_m)))
    return BwdConfig(block_m, block_n, blocks * block_m, num_warps=8)


# ----------------------------------------------------------------------------------------------------
# Host-side launchers on [M, N] views.


def _rows(t: torch.Tensor) -> torch.Tensor:
    """[M, N] view with unit column stride; copies only when the layout cannot be viewed that way."""
    if t.stride(-1) != 1:
        t = t.contiguous()
    return t.reshape(-1, t.shape[-1])


def _check(x: torch.Tensor, *params: torch.Tensor | None) -> None:
    if x.dtype not in _DTYPES:
        raise TypeError(f"triton DyT kernels support {_DTYPES}, got {x.dtype} (use kernel='eager')")
    for p in params:
        if p is not None and p.device != x.device:
            raise ValueError(f"parameter on {p.device} but input on {x.device}")


def forward(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    alpha: torch.Tensor,
    shift: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    act: int,
    cfg: FwdConfig | None = None,
    shape: torch.Size | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """y = w * f(alpha * h + shift) + b with h = x (+ residual), from [M, N] row views; returns (y, h),
    allocated contiguous in `shape` (default [M, N]) so callers never hand out views."""
    m, n = x.shape
    cfg = cfg or fwd_config(m, n)
    y = torch.empty(shape or (m, n), dtype=x.dtype, device=x.device)
    h = torch.empty_like(y) if residual is not None else None
    grid = (triton.cdiv(m, cfg.block_m), triton.cdiv(n, cfg.block_n))
    r, hh = (residual, h) if residual is not None else (x, y)  # unused when HAS_RES is off
    _fwd_kernel[grid](
        x, r, hh, y, alpha, shift if shift is not None else alpha, weight.contiguous(),
        bias.contiguous() if bias is not None else weight,
        m, n, x.stride(0), r.stride(0),
        ACT=act, HAS_RES=residual is not None, HAS_SHIFT=shift is not None, HAS_BIAS=bias is not None,
        EVEN=m % cfg.block_m == 0 and n % cfg.block_n == 0,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, num_warps=cfg.num_warps,
    )  # fmt: skip
    return y, h


def backward(
    x: torch.Tensor,
    dy: torch.Tensor,
    dh: torch.Tensor | None,
    alpha: torch.Tensor,
    shift: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    act: int,
    cfg: BwdConfig | None = None,
    shape: torch.Size | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """Gradients from [M, N] row views: (dx (+ dh), dweight, dbias, dalpha, dshift), dx in `shape`."""
    m, n = x.shape
    cfg = cfg or bwd_config(m, n, x.device)
    grid_m = max(1, triton.cdiv(m, cfg.rows_per_prog))
    grid_n = triton.cdiv(n, cfg.block_n)
    f32 = dict(dtype=torch.float32, device=x.device)
    dx = torch.empty(shape or (m, n), dtype=x.dtype, device=x.device)
    dw_p = torch.empty((grid_m, n), **f32)
    db_p = torch.empty((grid_m, n), **f32) if bias is not None else dw_p
    da_p = torch.empty((grid_m * grid_n,), **f32)
    ds_p = torch.empty((grid_m * grid_n,), **f32) if shift is not None else da_p
    dh_ = dh if dh is not None else dy  # unused pointer when HAS_DH is off
    _bwd_kernel[(grid_m, grid_n)](
        x, dy, dh_, dx, alpha, shift if shift is not None else alpha, weight.contiguous(),
        dw_p, db_p, da_p, ds_p,
        m, n, x.stride(0), dy.stride(0), dh_.stride(0), cfg.rows_per_prog,
        ACT=act, HAS_DH=dh is not None, HAS_SHIFT=shift is not None, HAS_BIAS=bias is not None,
        EVEN=m % cfg.rows_per_prog == 0 and n % cfg.block_n == 0,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, num_warps=cfg.num_warps,
    )  # fmt: skip

    def like(p: torch.Tensor) -> torch.Tensor:  # contiguous, as the kernel writes it
        return torch.empty(p.shape, dtype=p.dtype, device=p.device)

    dw, da = like(weight), like(alpha)
    db = like(bias) if bias is not None else None
    ds = like(shift) if shift is not None else None
    block_n = min(triton.next_power_of_2(n), 256)
    _reduce_kernel[(triton.cdiv(n, block_n),)](
        dw_p, db_p, da_p, ds_p, dw, db if db is not None else dw, da, ds if ds is not None else da,
        grid_m, n, grid_m * grid_n,
        HAS_SHIFT=shift is not None, HAS_BIAS=bias is not None,
        BLOCK_P=min(triton.next_power_of_2(grid_m), 16), BLOCK_N=block_n,
        BLOCK_Q=min(triton.next_power_of_2(grid_m * grid_n), 1024), num_warps=4,
    )  # fmt: skip
    return dx, dw, db, da, ds


# ----------------------------------------------------------------------------------------------------
# Autograd Functions and the functions dispatch.py calls.


class _NormFn(torch.autograd.Function):
    """y = w * f(alpha * x + shift) + b; saves x and the (small) parameters only."""

    @staticmethod
    def forward(ctx, x, alpha, shift, weight, bias, act):
        x2 = _rows(x)
        y, _ = forward(x2, None, alpha, shift, weight, bias, act, shape=x.shape)
        ctx.save_for_backward(x2, alpha, shift, weight, bias)
        ctx.act, ctx.shape = act, x.shape
        return y

    @staticmethod
    def backward(ctx, dy):
        x2, alpha, shift, weight, bias = ctx.saved_tensors
        dx, dw, db, da, ds = backward(
            x2, _rows(dy), None, alpha, shift, weight, bias, ctx.act, shape=ctx.shape
        )
        return dx, da, ds, dw, db, None


class _AddNormFn(torch.autograd.Function):
    """(y, h) with h = x + residual and y = w * tanh(alpha * h) + b; saves h only."""

    @staticmethod
    def forward(ctx, x, residual, alpha, weight, bias):
        y, h = forward(_rows(x), _rows(residual), alpha, None, weight, bias, TANH, shape=x.shape)
        ctx.save_for_backward(h, alpha, weight, bias)
        ctx.set_materialize_grads(False)  # an unused h needs no zero-filled gradient pass
        return y, h

    @staticmethod
    def backward(ctx, dy, dh):
        h, alpha, weight, bias = ctx.saved_tensors
        dy = dy if dy is not None else torch.zeros_like(h)
        dh = _rows(dh) if dh is not None else None
        dx, dw, db, da, _ = backward(_rows(h), _rows(dy), dh, alpha, None, weight, bias, TANH, shape=h.shape)
        return dx, dx, da, dw, db


def dyt(
    x: torch.Tensor, alpha: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    _check(x, alpha, weight, bias)
    return _NormFn.apply(x, alpha, None, weight, bias, TANH)


def derf(
    x: torch.Tensor,
    alpha: torch.Tensor,
    shift: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    _check(x, alpha, shift, weight, bias)
    return _NormFn.apply(x, alpha, shift, weight, bias, ERF)


def add_dyt(
    x: torch.Tensor,
    residual: torch.Tensor,
    alpha: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    _check(x, residual, alpha, weight, bias)
    if residual.shape != x.shape or residual.dtype != x.dtype:
        raise ValueError(
            f"add_dyt needs x and residual of one shape and dtype, got {tuple(x.shape)} {x.dtype} "
            f"and {tuple(residual.shape)} {residual.dtype}"
        )
    return _AddNormFn.apply(x, residual, alpha, weight, bias)
