"""The LLaMA spec and built model: every norm site from the registry, recipe values, TE selection."""

import math

import pytest
import torch
from megatron.core.models.backends import LocalSpecProvider
from megatron.core.transformer.identity_op import IdentityOp

from pipeline.config import load_config
from pipeline.config.schema import NormConfig
from pipeline.model import layer_spec
from pipeline.norms import paper_alpha_init
from pipeline.norms.dyt import Derf, DyT
from pipeline.norms.torch_norms import RMSNorm
from tests.helpers import run_python


class FakeTELayerNormLinear: ...


class FakeTELinear: ...


class FakeTENorm: ...


class FakeTEProvider(LocalSpecProvider):
    """Stands in for megatron's TESpecProvider (TE cannot be installed on a CPU box): same protocol."""

    def fuse_layernorm_and_linear(self) -> bool:
        return True

    def column_parallel_layer_norm_linear(self):
        return FakeTELayerNormLinear

    def column_parallel_linear(self):
        return FakeTELinear

    def layer_norm(self, rms_norm: bool = False, for_qk: bool = False, has_residual: bool = False):
        return FakeTENorm


def _subs(spec):
    return spec.submodules, spec.submodules.self_attention.submodules, spec.submodules.mlp.keywords["submodules"]


@pytest.mark.parametrize("norm", ["dyt", "derf", "tests.pipeline.test_norms:ScaledTanh"])
def test_te_spec_with_norm_free_layers_has_one_norm_per_site(norm):
    layer, attn, mlp = _subs(layer_spec(NormConfig(type=norm), 4096, FakeTEProvider()))
    assert layer.input_layernorm.module is not IdentityOp and layer.pre_mlp_layernorm.module is not IdentityOp
    assert attn.linear_qkv is FakeTELinear and mlp.linear_fc1 is FakeTELinear  # plain linear, no fused LN


@pytest.mark.parametrize("norm", ["rmsnorm", "layernorm"])
def test_te_spec_keeps_fused_norm_linear_for_rmsnorm(norm):
    layer, attn, mlp = _subs(layer_spec(NormConfig(type=norm), 4096, FakeTEProvider()))
    assert layer.input_layernorm is IdentityOp and layer.pre_mlp_layernorm is IdentityOp  # no double norm
    assert attn.linear_qkv is FakeTELayerNormLinear and mlp.linear_fc1 is FakeTELayerNormLinear


@pytest.mark.parametrize("width", [1024, 2048, 4096, 5120, 8192])
def test_spec_carries_recipe_alpha_per_site(width):
    layer, attn, _ = _subs(layer_spec(NormConfig(type="dyt", qk_norm=True), width, LocalSpecProvider()))
    want = paper_alpha_init(width)
    assert layer.input_layernorm.module is DyT and layer.input_layernorm.params["alpha_init"] == want.attention
    assert layer.pre_mlp_layernorm.params["alpha_init"] == want.mlp
    assert attn.q_layernorm.params["alpha_init"] == want.attention and attn.k_layernorm.module is DyT


@pytest.mark.parametrize("norm, hidden", [("dyt", 128), ("dyt", 2048), ("derf", 128), ("rmsnorm", 128)])
def test_built_model_has_norms_only_from_the_registry(norm, hidden):
    run_python(f"from tests.pipeline.test_model import check_built_model; check_built_model({norm!r}, {hidden})")


def check_built_model(norm: str, hidden: int) -> None:
    from pipeline import runtime
    from pipeline.model import build_model

    cfg = load_config("tiny_dyt", [f"model.norm.type={norm}", f"model.hidden_size={hidden}", "model.num_layers=2",
                                   "model.ffn_hidden_size=256", "model.norm.qk_norm=true"])
    runtime.init(cfg)
    try:
        (model,) = build_model(cfg, vocab_size=256, on_gpu=False)
        norms = [(n, m) for n, m in model.named_modules() if "norm" in type(m).__name__.lower()
                 or isinstance(m, (DyT, Derf, torch.nn.LayerNorm, torch.nn.RMSNorm))]
        expected = {"dyt": DyT, "derf": Derf, "rmsnorm": RMSNorm}[norm]
        assert norms and all(type(m) is expected for _, m in norms), [(n, type(m).__name__) for n, m in norms]
        sites = {n.rsplit(".", 1)[-1] for n, _ in norms}
        assert sites == {"input_layernorm", "pre_mlp_layernorm", "final_layernorm", "q_layernorm", "k_layernorm"}
        layer = model.decoder.layers[0]
        if norm == "dyt":
            want = paper_alpha_init(hidden)
            assert layer.input_layernorm.alpha.item() == pytest.approx(want.attention)
            assert layer.pre_mlp_layernorm.alpha.item() == pytest.approx(want.mlp)
            assert model.decoder.final_layernorm.alpha.item() == pytest.approx(want.final)
            assert layer.input_layernorm.bias is None  # γ only
        if norm in ("dyt", "derf"):
            assert model.embedding.scale.item() == pytest.approx(math.sqrt(hidden))
            tokens = torch.randint(0, 256, (1, 8))
            emb = model.embedding(input_ids=tokens, position_ids=None)
            raw = model.embedding.word_embeddings(tokens).transpose(0, 1)
            torch.testing.assert_close(emb, raw * math.sqrt(hidden))
        else:
            assert not hasattr(model.embedding, "scale")
    finally:
        runtime.shutdown()


@pytest.mark.parametrize("overrides, key", [(["parallel.cp=2", "launch.nproc_per_node=2"], "parallel.cp"),
                                            (["train.precision=fp8"], "train.precision")])
def test_te_only_features_are_refused_clearly_on_cpu(overrides, key):
    out = run_python(f"""
from pipeline import runtime
from pipeline.config import load_config
try:
    runtime.init(load_config("tiny_dyt", {overrides!r}))
except RuntimeError as e:
    print("REFUSED", e)
""")
    assert f"REFUSED {key}: context parallelism and fp8 need GPUs with Transformer Engine" in out


def test_output_init_std_rescales_the_head():
    out = run_python("""
from pipeline import runtime
from pipeline.config import load_config
from pipeline.model import build_model
for std in (None, 0.1):
    cfg = load_config("tiny_dyt", [f"model.output_init_std={'null' if std is None else std}"])
    runtime.init(cfg)
    (model,) = build_model(cfg, vocab_size=256, on_gpu=False)
    head, emb = model.output_layer.weight, model.embedding.word_embeddings.weight
    print("STD", round(head.std().item(), 3), round(emb.std().item(), 3))
    runtime.shutdown()
""")
    stds = [tuple(map(float, line.split()[1:])) for line in out.splitlines() if line.startswith("STD")]
    assert stds[0] == pytest.approx((0.02, 0.02), abs=2e-3) and stds[1] == pytest.approx((0.1, 0.02), abs=5e-3)
