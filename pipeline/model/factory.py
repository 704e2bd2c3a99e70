"""Build the LLaMA GPTModel chunks for this rank from a run config (one chunk per virtual stage)."""

import torch
import torch.nn.functional as F
from megatron.core import parallel_state as ps
from megatron.core.models.backends import BackendSpecProvider
from megatron.core.models.gpt import GPTModel
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.transformer.transformer_layer import TransformerLayer

from pipeline import cpu_compat
from pipeline.config.schema import RunConfig
from pipeline.norms import embedding_scale, get_spec, has_alpha
from pipeline.norms.torch_norms import tag_sequence_parallel

from .dims import ffn_hidden_size, padded_vocab_size
from .spec import block_spec, default_backend


def transformer_config(cfg: RunConfig, on_gpu: bool) -> TransformerConfig:
    m, p = cfg.model, cfg.parallel
    bf16 = cfg.train.precision in ("bf16", "fp8")
    fp8 = {"fp8": "hybrid", "fp8_recipe": "delayed"} if cfg.train.precision == "fp8" else {}
    recompute = {} if p.recompute == "none" else (
        {"recompute_granularity": "selective"} if p.recompute == "selective" else
        {"recompute_granularity": "full", "recompute_method": "uniform", "recompute_num_layers": 1})
    return cpu_compat.adapt_model_config(TransformerConfig(
        num_layers=m.num_layers,
        hidden_size=m.hidden_size,
        num_attention_heads=m.num_attention_heads,
        num_query_groups=m.num_query_groups or m.num_attention_heads,
        ffn_hidden_size=ffn_hidden_size(cfg),
        # TE's fused norm+linear reads this; our own norm modules ignore it.
        normalization=get_spec(m.norm.type).te_fused or "RMSNorm",
        layernorm_epsilon=m.norm.eps,
        qk_layernorm=m.norm.qk_norm,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        hidden_dropout=m.dropout,
        attention_dropout=m.dropout,
        init_method_std=m.init_method_std,
        # CPU init gives the same weights whatever the TP size (what makes TP2 == TP1 testable);
        # on GPU it would be slow for big models.
        use_cpu_initialization=not on_gpu,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        bf16=bf16,
        pipeline_dtype=torch.bfloat16 if bf16 else torch.float32,
        tensor_model_parallel_size=p.tp,
        pipeline_model_parallel_size=p.pp,
        virtual_pipeline_model_parallel_size=p.vpp,
        context_parallel_size=p.cp,
        sequence_parallel=p.sp,
        attention_softmax_in_fp32=True,
        **recompute,
        **fp8,
    ))


def _layer_module(cfg: RunConfig) -> type:
    if cfg.model.norm.fuse_residual_add:
        from .fused_residual_layer import FusedResidualDyTLayer

        return FusedResidualDyTLayer
    return TransformerLayer


def add_embedding_scale(model: GPTModel, init: float, config: TransformerConfig) -> None:
    """The paper's learnable scalar on the token embeddings (init √d), applied to the embedding output.

    It is a parameter of the embedding module, so checkpoints and the optimizer see it like any other;
    under SP the embedding output is already split along the sequence, hence the SP tag.
    """
    emb = model.embedding
    emb.scale = torch.nn.Parameter(torch.full((1,), init, dtype=config.params_dtype))
    emb.scale.exact_init = init
    tag_sequence_parallel(emb, config)
    emb.register_forward_hook(lambda module, args, out: out * module.scale)


def tag_exact_inits(model: GPTModel) -> None:
    """Record the intended value of each α₀ on the parameter (`exact_init`). bf16 stores 0.8 as 0.80078 (and
    √8192 as 90.5); the engines start their fp32 master copies from these values, as the paper's fp32 FSDP
    shards did, instead of from the rounded bf16 parameter."""
    for module in model.modules():
        if has_alpha(module) and hasattr(module, "alpha_init"):
            module.alpha.exact_init = float(module.alpha_init)


def build_model(cfg: RunConfig, vocab_size: int, on_gpu: bool,
                backend: BackendSpecProvider | None = None) -> list[GPTModel]:
    """The GPTModel chunks of this pipeline rank (one per virtual stage)."""
    config = transformer_config(cfg, on_gpu)
    backend = backend or default_backend()
    m = cfg.model
    scale = embedding_scale(m.embedding_scale, m.norm.type, m.hidden_size)
    chunks = []
    for vp in range(cfg.parallel.vpp or 1):
        vp_stage = vp if cfg.parallel.vpp else None
        pre = ps.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage)
        post = ps.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage)
        model = GPTModel(
            config=config,
            transformer_layer_spec=block_spec(m.norm, config, backend, vp_stage, _layer_module(cfg)),
            vocab_size=padded_vocab_size(vocab_size, cfg),
            max_sequence_length=m.seq_length,
            pre_process=pre,
            post_process=post,
            share_embeddings_and_output_weights=not m.untie_embeddings,
            position_embedding_type="rope",
            rotary_base=int(m.rope_theta),
            vp_stage=vp_stage,
        )
        tag_exact_inits(model)
        if pre and scale is not None:
            add_embedding_scale(model, scale, config)
        if post and m.output_init_std is not None:
            # Rescale megatron's draw rather than redraw: keeps the init identical across TP sizes.
            with torch.no_grad():
                model.output_layer.weight.mul_(m.output_init_std / m.init_method_std)
        chunks.append(model)
    return chunks
