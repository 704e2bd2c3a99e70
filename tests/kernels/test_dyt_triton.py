"""Triton DyT / Derf / add+DyT against the fp64 reference (interpreter on CPU, compiled on a GPU)."""

import random

import pytest
import torch

from pipeline.kernels import add_dyt, checks, dyt, dyt_triton

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
OPS = checks.OPS
C = 8  # allowed fp32 ulps of each error scale (see pipeline/kernels/checks.py)

_rng = random.Random(4)
# 1 row, odd and non-power-of-2 hidden sizes, many rows with a tiny hidden, a LLaMA-like hidden, random.
SHAPES = [(1, 1), (1, 37), (3, 7, 100), (64, 257), (2048, 5), (2, 4096), (37, 512)] + [
    (_rng.randint(1, 300), _rng.randrange(1, 3001, 2)) for _ in range(2)
]


def make_inputs(op, shape, dtype, **kw):
    return checks.make_inputs(op, shape, dtype, device=DEVICE, **kw)


def run(op, inp, kernel="triton"):
    return checks.run(op, inp, kernel)


def assert_matches_reference(op, inp, res, c=C):
    for name, got in res.items():
        want = inp["x"].dtype if name in ("y", "h", "dx", "dresidual") else inp[name[1:]].dtype
        assert got.dtype == want, name
    bad = {k: f"{r:.3g}" for k, r in checks.compare(op, inp, res, c).items() if r > 1.0}
    assert not bad, f"{op}: error / tolerance {bad}"


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS)
def test_matches_fp64_reference(op, dtype, shape):
    bias = SHAPES.index(shape) % 2 == 0  # alternate beta on/off across shapes
    inp = make_inputs(op, shape, dtype, bias=bias, seed=SHAPES.index(shape))
    assert_matches_reference(op, inp, run(op, inp))


@pytest.mark.parametrize("op", OPS)
def test_fp32_params_with_bf16_activations(op):
    inp = make_inputs(op, (5, 3, 96), torch.bfloat16, param_dtype=torch.float32)
    res = run(op, inp)
    assert res["dweight"].dtype == torch.float32 and res["y"].dtype == torch.bfloat16
    assert_matches_reference(op, inp, res)


def _extreme(dtype, shape=(16, 200)):
    """±1e4, subnormals of the dtype, zeros next to large values, ±inf-free."""
    g = torch.Generator().manual_seed(7)
    fi = torch.finfo(dtype)
    pool = torch.tensor([1e4, -1e4, 0.0, 0.0, 3e3, -50.0, 30.0, 1e-3, -2.0]).to(dtype)
    sub = torch.tensor([fi.smallest_normal / 4, -fi.smallest_normal / 64, fi.smallest_normal * fi.eps]).to(
        dtype
    )
    pool = torch.cat([pool, sub, torch.randn(8, generator=g).to(dtype)])
    return pool[torch.randint(len(pool), shape, generator=g)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS)
def test_extreme_inputs(op, dtype):
    inp = make_inputs(op, (16, 200), dtype, x=_extreme(dtype))
    res = run(op, inp)
    assert all(torch.isfinite(v).all() for v in res.values())
    assert_matches_reference(op, inp, res)


def test_saturated_tanh_is_exact():
    """tanh saturates to exactly ±1 and its gradient underflows to exactly 0 (no 1 - t² cancellation)."""
    x = torch.tensor([[1e4, -1e4, 80.0, -80.0]], device=DEVICE)
    inp = make_inputs("dyt", (1, 4), torch.float32, bias=False, x=x)
    res = run("dyt", inp)
    assert torch.equal(res["y"], torch.sign(x) * inp["weight"])
    assert torch.equal(res["dx"][:, :2], torch.zeros(1, 2, device=DEVICE))


@pytest.mark.parametrize("op", OPS)
def test_every_output_element_written(op, monkeypatch):
    """Every buffer the kernels allocate (outputs and partials) starts as NaN; none may survive."""
    real_empty = torch.empty

    def nan_empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(dyt_triton.torch, "empty", nan_empty)
    inp = make_inputs(op, (37, 300), torch.bfloat16)
    small_fwd = dyt_triton.FwdConfig(block_m=8, block_n=128, num_warps=4)  # partial tiles in both dims
    small_bwd = dyt_triton.BwdConfig(block_m=4, block_n=128, rows_per_prog=8, num_warps=4)
    monkeypatch.setattr(dyt_triton, "fwd_config", lambda m, n: small_fwd)
    monkeypatch.setattr(dyt_triton, "bwd_config", lambda m, n, device: small_bwd)
    res = run(op, inp)
    assert not any(torch.isnan(v).any() for v in res.values())
    assert_matches_reference(op, inp, res)


@pytest.mark.parametrize("op", OPS)
def test_backward_is_bitwise_deterministic(op, monkeypatch):
    # Many programs per column and row block, so the partial-sum reduction order matters.
    monkeypatch.setattr(dyt_triton, "bwd_config", lambda m, n, device: dyt_triton.BwdConfig(4, 64, 8, 4))
    inp = make_inputs(op, (50, 130), torch.bfloat16)
    first, second = run(op, inp), run(op, inp)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("op", OPS)
def test_non_contiguous_inputs_match_contiguous(op):
    inp = make_inputs(op, (6, 4, 72), torch.float32)
    base = run(op, inp)
    strided = dict(inp)
    for k in ("x", "residual", "dy", "dh"):  # [b, s, h] -> [s, b, h] transposes, as megatron hands them over
        if k in inp:
            strided[k] = inp[k].transpose(0, 1).contiguous().transpose(0, 1)
            assert not strided[k].is_contiguous() and torch.equal(strided[k], inp[k])
    wide = torch.zeros(6, 4, 80, device=DEVICE)
    wide[..., :72] = inp["x"]
    strided["x"] = wide[..., :72]  # a row stride larger than the hidden size (viewable, no copy)
    res = run(op, strided)
    assert all(torch.equal(base[k], res[k]) for k in base)


def test_alpha_as_0d_tensor_and_grad_shapes():
    inp = make_inputs("dyt", (3, 50), torch.float32)
    inp["alpha"] = inp["alpha"].reshape(())
    res = run("dyt", inp)
    assert res["dalpha"].shape == () and res["dweight"].shape == (50,)
    assert_matches_reference("dyt", inp, res)


def test_unused_h_and_unused_y():
    """add_dyt backward when only one of its outputs reaches the loss."""
    inp = make_inputs("add_dyt", (9, 33), torch.float32)
    x, r = inp["x"].clone().requires_grad_(), inp["residual"].clone().requires_grad_()
    a, w = inp["alpha"].clone().requires_grad_(), inp["weight"].clone().requires_grad_()
    y, h = add_dyt(x, r, a, w, kernel="triton")
    (dx_h,) = torch.autograd.grad(h, x, inp["dh"], retain_graph=True)
    assert torch.equal(dx_h, inp["dh"])
    dx_y, dw = torch.autograd.grad(y, (x, w), inp["dy"])
    ref = checks.reference(inp["x"], inp["alpha"], inp["weight"], None, inp["dy"], residual=inp["residual"])
    assert checks.error_ratio(dx_y, ref["dx"], C) <= 1 and checks.error_ratio(dw, ref["dweight"], C) <= 1


def test_rejects_unsupported_inputs():
    a, w = torch.ones(1, device=DEVICE), torch.ones(8, device=DEVICE)
    with pytest.raises(TypeError, match="support"):
        dyt(torch.ones(2, 8, dtype=torch.float64, device=DEVICE), a.double(), w.double(), kernel="triton")
    with pytest.raises(ValueError, match="one shape and dtype"):
        add_dyt(
            torch.ones(2, 8, device=DEVICE), torch.ones(2, 8, device=DEVICE).half(), a, w, kernel="triton"
        )


@pytest.mark.parametrize("op", OPS)
def test_outputs_are_fresh_tensors_in_input_shape(op):
    """megatron's activation checkpointing rejects view tensors: no output or gradient is a view."""
    inp = make_inputs(op, (3, 4, 40), torch.float32)
    res = run(op, inp)
    assert all(
        v._base is None and v.shape == inp[k[1:] if k.startswith("d") else "x"].shape for k, v in res.items()
    )
