"""FusedResidualDyTLayer gives the stock TransformerLayer's numbers and really takes the fused path."""

import socket

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
S, B, H = 8, 2, 64


@pytest.fixture
def megatron_single_rank(monkeypatch):
    """gloo (nccl on GPU) + megatron parallel state for one rank, torn down afterwards; reuses a state
    that some other code already set up (and then leaves it alone)."""
    if DEVICE == "cpu":  # megatron allocates attention buffers on current_device() (pipeline.cpu_compat S3)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: torch.device("cpu"))
    import torch.distributed as dist
    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel import random as mrandom

    from pipeline.cpu_compat import seed_model_parallel_rng

    if ps.model_parallel_is_initialized():
        yield
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = dist.TCPStore("127.0.0.1", port, 1, is_master=True)
    dist.init_process_group("nccl" if DEVICE == "cuda" else "gloo", store=store, rank=0, world_size=1)
    ps.initialize_model_parallel(1, 1)
    saved_tracker = mrandom._CUDA_RNG_STATE_TRACKER, mrandom._CUDA_RNG_STATE_TRACKER_INITIALIZED
    seed_model_parallel_rng(0)  # core attention forks megatron's RNG tracker (CPU-backed on CPU)
    try:
        yield
    finally:
        mrandom._CUDA_RNG_STATE_TRACKER, mrandom._CUDA_RNG_STATE_TRACKER_INITIALIZED = saved_tracker
        ps.destroy_model_parallel()
        dist.destroy_process_group()


def build_pair(dtype, kernel, *, norm="dyt", hidden_dropout=0.0):
    """(stock TransformerLayer, FusedResidualDyTLayer) with identical weights and DyT norms."""
    import torch.nn.functional as F
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer.spec_utils import ModuleSpec
    from megatron.core.transformer.transformer_config import TransformerConfig
    from megatron.core.transformer.transformer_layer import TransformerLayer

    from pipeline.model.fused_residual_layer import FusedResidualDyTLayer
    from pipeline.norms.dyt import Derf, DyT

    cfg = TransformerConfig(
        num_layers=1, hidden_size=H, num_attention_heads=4, ffn_hidden_size=96, gated_linear_unit=True,
        activation_func=F.silu, add_bias_linear=False, hidden_dropout=hidden_dropout, attention_dropout=0.0,
        use_cpu_initialization=True, params_dtype=dtype, bf16=dtype == torch.bfloat16,
    )  # fmt: skip
    subs = get_gpt_layer_local_spec().submodules
    norm_cls = DyT if norm == "dyt" else Derf
    subs.input_layernorm = ModuleSpec(module=DyT, params={"alpha_init": 0.8, "bias": True, "kernel": kernel})
    subs.pre_mlp_layernorm = ModuleSpec(
        module=norm_cls, params={"alpha_init": 0.3, "bias": True, "kernel": kernel}
    )
    torch.manual_seed(0)
    stock = TransformerLayer(cfg, subs).to(DEVICE)
    with torch.no_grad():  # non-trivial norm parameters
        for name, p in stock.named_parameters():
            if "layernorm" in name:
                p.add_(0.3 * torch.randn_like(p))
    fused = FusedResidualDyTLayer(cfg, subs).to(DEVICE)
    fused.load_state_dict(stock.state_dict())
    return stock, fused


def fwd_bwd(layer, x, dout):
    x = x.clone().requires_grad_()
    mask = torch.triu(torch.ones(1, 1, S, S, dtype=torch.bool, device=DEVICE), 1)  # True = masked
    out, _ = layer(x, attention_mask=mask)
    out.backward(dout)
    return out.detach(), x.grad, {n: p.grad for n, p in layer.named_parameters()}


@pytest.fixture
def add_dyt_calls(monkeypatch):
    from pipeline import kernels

    calls = []
    real = kernels.add_dyt

    def counting(*args, **kwargs):
        calls.append(kwargs.get("kernel"))
        return real(*args, **kwargs)

    monkeypatch.setattr(kernels, "add_dyt", counting)
    return calls


@pytest.mark.parametrize(
    "dtype, kernel",
    [(torch.float32, "eager"), (torch.float32, "triton"), (torch.bfloat16, "triton")],
    ids=str,
)
def test_same_numbers_as_stock_layer(megatron_single_rank, add_dyt_calls, dtype, kernel):
    stock, fused = build_pair(dtype, kernel)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(S, B, H, generator=g).to(dtype).to(DEVICE)
    dout = torch.randn(S, B, H, generator=g).to(dtype).to(DEVICE)
    out_s, dx_s, grads_s = fwd_bwd(stock, x, dout)
    assert add_dyt_calls == []
    norm_calls = []
    fused.pre_mlp_layernorm.register_forward_hook(lambda *args: norm_calls.append(1))
    out_f, dx_f, grads_f = fwd_bwd(fused, x, dout)
    assert add_dyt_calls == [kernel] and norm_calls == []  # the fused path ran once, the norm not again
    # Forward: the same residual add and the same DyT code, so bit-identical.
    assert torch.equal(out_s, out_f)
    # Backward: the fused kernel adds the two gradients of h in fp32 and rounds once; the stock layer
    # rounds the DyT gradient first. Equal up to that one rounding of the activation dtype.
    tol = dict(rtol=0, atol=0) if kernel == "eager" else dict(rtol=2 * torch.finfo(dtype).eps, atol=1e-6)
    torch.testing.assert_close(dx_f, dx_s, **tol)
    for name in grads_s:
        torch.testing.assert_close(grads_f[name], grads_s[name], msg=name, **tol)


def test_active_dropout_or_derf_use_the_stock_path(megatron_single_rank, add_dyt_calls):
    x = torch.randn(S, B, H, device=DEVICE)
    stock, fused = build_pair(torch.float32, "eager", hidden_dropout=0.1)
    fwd_bwd(fused, x, x)
    assert add_dyt_calls == []  # dropout active in training: stock bias-dropout-add
    stock.eval(), fused.eval()
    assert torch.equal(fwd_bwd(stock, x, x)[0], fwd_bwd(fused, x, x)[0])
    assert add_dyt_calls == ["eager"]  # eval: dropout off, fused path, same output
    stock, fused = build_pair(torch.float32, "eager", norm="derf")
    assert torch.equal(fwd_bwd(stock, x, x)[0], fwd_bwd(fused, x, x)[0])
    assert add_dyt_calls == ["eager"]  # Derf pre-MLP norm: not fused
