"""Norm modules, the registry and the paper's recipe (no distributed setup needed)."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from pipeline.config.schema import AlphaInit, NormConfig
from pipeline.norms import (
    decay_norm_params,
    embedding_scale,
    get_norm,
    paper_alpha_init,
    register_norm,
    site_params,
)
from pipeline.norms.dyt import Derf, DyT
from pipeline.norms.torch_norms import RMSNorm


def cfg(dtype=torch.float32, sp=False):
    return SimpleNamespace(params_dtype=dtype, sequence_parallel=sp)


def reference(kind: str, x, alpha, weight, bias, shift=None):
    """fp64 closed forms from the papers."""
    act = torch.tanh(alpha * x) if kind == "dyt" else torch.erf(alpha * x + shift)
    return weight * act + (bias if bias is not None else 0)


@pytest.mark.parametrize("kind", ["dyt", "derf"])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("bias", [False, True])
def test_dyt_like_forward_and_grads_match_fp64(kind, dtype, tol, bias):
    torch.manual_seed(0)
    cls = DyT if kind == "dyt" else Derf
    m = cls(config=cfg(dtype), hidden_size=37, eps=1e-5, alpha_init=0.7, bias=bias, kernel="eager")
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
        if bias:
            m.bias.uniform_(-0.5, 0.5)
        if kind == "derf":
            m.shift.fill_(0.1)
    x = (torch.randn(3, 5, 37) * 3).to(dtype).requires_grad_()
    y = m(x)
    gy = torch.randn_like(y)
    y.backward(gy)

    params = {n: p.detach().double().requires_grad_() for n, p in m.named_parameters()}
    x64 = x.detach().double().requires_grad_()
    y64 = reference(kind, x64, params["alpha"], params["weight"], params.get("bias"), params.get("shift"))
    y64.backward(gy.double())
    scale = lambda t: max(1.0, t.abs().max().item())  # noqa: E731 - relative to magnitude for the reductions
    assert (y.double() - y64).abs().max() <= tol * scale(y64)
    assert (x.grad.double() - x64.grad).abs().max() <= tol * scale(x64.grad)
    for name, p in m.named_parameters():
        ref = params[name].grad
        assert (p.grad.double() - ref).abs().max() <= tol * scale(ref) * math.sqrt(x.numel() / 37), name


def test_dyt_params_follow_the_recipe_and_sp_tag():
    m = DyT(config=cfg(sp=True), hidden_size=8, alpha_init=0.2, bias=False)
    assert m.bias is None and m.alpha.item() == pytest.approx(0.2) and torch.equal(m.weight, torch.ones(8))
    assert all(p.sequence_parallel for p in m.parameters())
    assert all(p.sequence_parallel for p in RMSNorm(config=cfg(sp=True), hidden_size=8).parameters())
    assert not any(p.sequence_parallel for p in DyT(config=cfg(), hidden_size=8).parameters())


@pytest.mark.parametrize("width, attn, other", [(512, 1.0, 1.0), (1024, 1.0, 1.0), (2048, 1.0, 0.5),
                                                (4096, 0.8, 0.2), (5120, 0.6, 0.15), (8192, 0.2, 0.05),
                                                (16384, 0.2, 0.05)])
def test_paper_alpha_table_rows(width, attn, other):
    a = paper_alpha_init(width)
    assert (a.attention, a.mlp, a.final) == (attn, other, other)


def test_alpha_between_rows_interpolates_in_log_width():
    a = paper_alpha_init(3072)  # log2 3072 = 11.585: 58.5 % of the way from 2048 to 4096
    t = math.log2(3072) - 11
    assert a.attention == pytest.approx(1.0 + t * (0.8 - 1.0), abs=1e-6)
    assert a.mlp == pytest.approx(0.5 + t * (0.2 - 0.5), abs=1e-6)


def test_site_params_explicit_alpha_and_derf_default():
    explicit = NormConfig(type="dyt", alpha_init=AlphaInit(attention=0.9, mlp=0.3, final=0.1))
    assert [site_params(explicit, 4096, s)["alpha_init"] for s in ("attention", "mlp", "final", "qk")] == \
        [0.9, 0.3, 0.1, 0.9]
    assert site_params(NormConfig(type="derf"), 4096, "attention")["alpha_init"] == 0.5
    assert site_params(NormConfig(type="rmsnorm"), 4096, "attention") == {}


def test_embedding_scale_and_weight_decay_policy():
    assert embedding_scale("auto", "dyt", 4096) == 64.0
    assert embedding_scale("auto", "rmsnorm", 4096) is None
    assert embedding_scale("learnable", "rmsnorm", 256) == 16.0
    assert embedding_scale("off", "dyt", 256) is None
    assert decay_norm_params(NormConfig(type="dyt")) and not decay_norm_params(NormConfig(type="rmsnorm"))
    assert decay_norm_params(NormConfig(type="rmsnorm", weight_decay="all"))
    assert not decay_norm_params(NormConfig(type="dyt", weight_decay="none"))


class ScaledTanh(nn.Module):
    def __init__(self, *, config, hidden_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))

    def forward(self, x):
        return self.weight * torch.tanh(x)


def test_registry_lookup_register_and_import_path():
    assert get_norm("dyt") is DyT and get_norm("rmsnorm") is RMSNorm
    assert get_norm("tests.pipeline.test_norms:ScaledTanh") is ScaledTanh
    register_norm("scaled_tanh_test")(ScaledTanh)
    assert get_norm("scaled_tanh_test") is ScaledTanh
    with pytest.raises(ValueError, match="already registered"):
        register_norm("dyt")(ScaledTanh)
    with pytest.raises(ValueError, match="unknown norm 'nope'"):
        get_norm("nope")
    with pytest.raises(ValueError, match="cannot import"):
        get_norm("tests.pipeline.test_norms:Missing")
