"""Kernel choice (auto|triton|compile|eager) and the eager/compile reference paths."""

import pytest
import torch

from pipeline.kernels import add_dyt, checks, derf, dyt, reference, resolve_kernel
from pipeline.kernels.checks import OPS, make_inputs, run

C = 8  # as in test_dyt_triton.py


def test_auto_is_eager_on_cpu_and_triton_on_cuda():
    assert resolve_kernel("auto", "cpu") == "eager"
    assert resolve_kernel("auto", torch.device("cuda", 0)) == "triton"
    assert resolve_kernel("compile", "cpu") == "compile"


def test_unknown_kernel_is_rejected():
    with pytest.raises(ValueError, match="unknown kernel"):
        resolve_kernel("cuda", "cpu")


def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        dyt(torch.ones(2, 4), torch.ones(1), torch.ones(4), kernel="triton")


def assert_eager_class_accuracy(op, inp, res):
    """Eager/compile round intermediates to the activation dtype and use autograd's 1 - t² for tanh:
    allow 8 ulps of the activation dtype (instead of 8 fp32 ulps) of the error scale, with that
    cancellation modelled (checks.reference(autograd_tanh=True))."""
    c = C * torch.finfo(inp["x"].dtype).eps / checks.EPS32
    ratios = checks.compare(op, inp, res, c, autograd_tanh=op != "derf")
    assert max(ratios.values()) <= 1.0, ratios


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_eager_matches_fp64_reference(op, dtype):
    inp = make_inputs(op, (4, 3, 130), dtype, bias=True)
    res = run(op, inp, kernel="eager")
    assert checks.compare(op, inp, res, C)["y"] <= 1.0  # the forward is one rounding, as the kernels
    assert_eager_class_accuracy(op, inp, res)


@pytest.mark.parametrize("op", OPS)
def test_closed_form_reference_matches_fp64_autograd(op):
    """checks.reference (closed forms) agrees with autograd through the eager functions in fp64."""
    inp = {
        k: (v.double() if v is not None else None) for k, v in make_inputs(op, (5, 40), torch.float32).items()
    }
    res = run(op, inp, kernel="eager")
    ref = checks.reference(
        inp["x"], inp["alpha"], inp["weight"], inp["bias"], inp["dy"], shift=inp.get("shift"),
        residual=inp.get("residual"), dh=inp.get("dh"), act="erf" if op == "derf" else "tanh",
    )  # fmt: skip
    for name, (value, *_) in ref.items():
        torch.testing.assert_close(res[name], value, rtol=1e-12, atol=1e-12, msg=name)


def test_public_signatures_accept_no_bias():
    x, a, w = torch.randn(3, 8), torch.full((1,), 0.5), torch.ones(8)
    torch.testing.assert_close(dyt(x, a, w), torch.tanh(0.5 * x))
    torch.testing.assert_close(derf(x, a, torch.zeros(1), w), torch.erf(0.5 * x))
    y, h = add_dyt(x, x, a, w)
    torch.testing.assert_close(h, 2 * x)
    torch.testing.assert_close(y, torch.tanh(x))


def test_compile_matches_fp64_reference():
    reference.compiled.cache_clear()  # compile inside this test, not in whatever ran before
    inp = make_inputs("dyt", (4, 3, 130), torch.float32)
    assert_eager_class_accuracy("dyt", inp, run("dyt", inp, kernel="compile"))
