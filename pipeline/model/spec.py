"""LLaMA layer and block specs: every norm site comes from the norm registry through a ModuleSpec.

Sites: input (pre-attention), pre-MLP, final (block level), and optionally per-head Q/K norms.
On a Transformer Engine backend a norm registered with `te_fused` (LayerNorm, RMSNorm) stays fused into
the following linear (`TELayerNormColumnParallelLinear`, the fast path); any other norm (DyT, Derf, user
norms) gets its own module followed by a plain column-parallel linear, so a site never has two norms or none.
"""

import functools

from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add
from megatron.core.models.backends import BackendSpecProvider, LocalSpecProvider
from megatron.core.transformer.attention import SelfAttention, SelfAttentionSubmodules
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.identity_op import IdentityOp
from megatron.core.transformer.mlp import MLP, MLPSubmodules
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.transformer.transformer_layer import TransformerLayer, TransformerLayerSubmodules

from pipeline.config.schema import NormConfig
from pipeline.norms import get_spec


def default_backend() -> BackendSpecProvider:
    """Transformer Engine when installed and a GPU is present, else megatron-core's local modules."""
    import torch

    try:
        import transformer_engine  # noqa: F401
        from megatron.core.extensions.transformer_engine_spec_provider import TESpecProvider
    except ImportError:
        return LocalSpecProvider()
    return TESpecProvider() if torch.cuda.is_available() else LocalSpecProvider()


def fuses_norm(norm: NormConfig, backend: BackendSpecProvider) -> bool:
    return backend.fuse_layernorm_and_linear() and get_spec(norm.type).te_fused is not None


def te_norm(norm: NormConfig, backend: BackendSpecProvider, for_qk: bool) -> ModuleSpec | type:
    """The backend's own norm module for a TE-fusable norm (the sites the fused linear does not cover)."""
    return backend.layer_norm(rms_norm=get_spec(norm.type).te_fused == "RMSNorm", for_qk=for_qk)


def norm_spec(norm: NormConfig, width: int, site: str) -> ModuleSpec:
    spec = get_spec(norm.type)
    return ModuleSpec(module=spec.cls, params=spec.params(norm, width, site))


def layer_spec(norm: NormConfig, width: int, backend: BackendSpecProvider,
               layer_module: type = TransformerLayer) -> ModuleSpec:
    """One LLaMA layer: pre-norm attention (GQA, RoPE via the model) and a SwiGLU MLP."""
    fused = fuses_norm(norm, backend)
    if fused:
        input_norm = pre_mlp_norm = IdentityOp
        qkv = fc1 = backend.column_parallel_layer_norm_linear()
        qk_norm = te_norm(norm, backend, for_qk=True)
    else:
        input_norm, pre_mlp_norm = norm_spec(norm, width, "attention"), norm_spec(norm, width, "mlp")
        qkv = fc1 = backend.column_parallel_linear()
        qk_norm = None  # built per head below (its width is the head dim)
    mlp = functools.partial(MLP.as_mlp_submodule, submodules=MLPSubmodules(
        linear_fc1=fc1, linear_fc2=backend.row_parallel_linear()))
    return ModuleSpec(
        module=layer_module,
        submodules=TransformerLayerSubmodules(
            input_layernorm=input_norm,
            self_attention=ModuleSpec(
                module=SelfAttention,
                params={"attn_mask_type": AttnMaskType.causal},
                submodules=SelfAttentionSubmodules(
                    linear_qkv=qkv,
                    core_attention=backend.core_attention(),
                    linear_proj=backend.row_parallel_linear(),
                    q_layernorm=(qk_norm or norm_spec(norm, width, "qk")) if norm.qk_norm else IdentityOp,
                    k_layernorm=(qk_norm or norm_spec(norm, width, "qk")) if norm.qk_norm else IdentityOp,
                ),
            ),
            self_attn_bda=get_bias_dropout_add,
            pre_mlp_layernorm=pre_mlp_norm,
            mlp=mlp,
            mlp_bda=get_bias_dropout_add,
        ),
    )


def block_spec(norm: NormConfig, config: TransformerConfig, backend: BackendSpecProvider,
               vp_stage: int | None = None, layer_module: type = TransformerLayer) -> TransformerBlockSubmodules:
    """The layers this pipeline stage builds plus the final norm (only used on the last stage)."""
    width = config.hidden_size
    n = get_num_layers_to_build(config, vp_stage=vp_stage)
    final = te_norm(norm, backend, for_qk=False) if fuses_norm(norm, backend) else norm_spec(norm, width, "final")
    return TransformerBlockSubmodules(layer_specs=[layer_spec(norm, width, backend, layer_module)] * n,
                                      layer_norm=final)
