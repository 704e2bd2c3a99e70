"""`LlamaDyTForCausalLM`: HF LLaMA with every norm site replaced by the norm the run trained with.

Subclasses the `transformers` LLaMA classes and swaps modules after they are built, so attention
(eager/SDPA/flash), the KV cache, generation and RoPE stay HF's own. Changed sites:
  - model.layers.N.input_layernorm / post_attention_layernorm and model.norm: DyT, Derf or RMSNorm
  - self_attn.q_proj / k_proj: followed by a per-head norm (`.norm`) when `qk_norm` (megatron's
    q_layernorm / k_layernorm, applied before RoPE as megatron does)
  - model.embed_tokens: times a learnable scalar (`.scale`) when `embedding_scale` is set

Shipped as custom code inside exported model folders (imports only torch and transformers); the math
matches `pipeline.kernels.reference` (fp32 compute for half-precision inputs).
"""

import torch
from torch import nn
from transformers import initialization as init
from transformers.models.llama.modeling_llama import (
    LlamaForCausalLM,
    LlamaModel,
    LlamaPreTrainedModel,
    LlamaRMSNorm,
)

from .configuration_llama_dyt import LlamaDyTConfig


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


class DyT(nn.Module):
    """y = weight · tanh(alpha · x) [+ bias]; alpha a learnable scalar."""

    def __init__(self, hidden_size: int, alpha_init: float, bias: bool) -> None:
        super().__init__()
        self.alpha_init = alpha_init
        self.alpha = nn.Parameter(torch.full((1,), alpha_init))
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.bias = nn.Parameter(torch.zeros(hidden_size)) if bias else None

    def _squash(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.alpha.to(x.dtype) * x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acc = _compute_dtype(x)
        y = self._squash(x.to(acc)) * self.weight.to(acc)
        if self.bias is not None:
            y = y + self.bias.to(acc)
        return y.to(x.dtype)


class Derf(DyT):
    """y = weight · erf(alpha · x + shift) [+ bias]; alpha and shift learnable scalars."""

    def __init__(self, hidden_size: int, alpha_init: float, bias: bool) -> None:
        super().__init__(hidden_size, alpha_init, bias)
        self.shift = nn.Parameter(torch.zeros(1))

    def _squash(self, x: torch.Tensor) -> torch.Tensor:
        return torch.erf(self.alpha.to(x.dtype) * x + self.shift.to(x.dtype))


def build_norm(config: LlamaDyTConfig, width: int, site: str) -> nn.Module:
    if config.norm_type == "rmsnorm":
        return LlamaRMSNorm(width, eps=config.rms_norm_eps)
    cls = {"dyt": DyT, "derf": Derf}[config.norm_type]
    return cls(width, float(config.alpha_init["attention" if site == "qk" else site]), config.norm_bias)


class HeadNormLinear(nn.Linear):
    """A Q or K projection followed by a norm over each head (width head_dim)."""

    def __init__(self, linear: nn.Linear, head_dim: int, norm: nn.Module) -> None:
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None,
                         device=linear.weight.device, dtype=linear.weight.dtype)
        self.head_dim = head_dim
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return self.norm(y.unflatten(-1, (-1, self.head_dim))).flatten(-2)


class ScaledEmbedding(nn.Embedding):
    """Token embeddings times a learnable scalar (the DyT paper's √d scalar)."""

    def __init__(self, embedding: nn.Embedding, scale_init: float) -> None:
        super().__init__(embedding.num_embeddings, embedding.embedding_dim, embedding.padding_idx,
                         device=embedding.weight.device, dtype=embedding.weight.dtype)
        self.scale_init = scale_init
        self.scale = nn.Parameter(torch.full((1,), scale_init))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return super().forward(input_ids) * self.scale


class LlamaDyTPreTrainedModel(LlamaPreTrainedModel):
    config_class = LlamaDyTConfig
    config: LlamaDyTConfig

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, DyT):
            init.constant_(module.alpha, module.alpha_init)
            init.ones_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        if isinstance(module, Derf):
            init.zeros_(module.shift)
        if isinstance(module, ScaledEmbedding):
            init.constant_(module.scale, module.scale_init)


class LlamaDyTModel(LlamaDyTPreTrainedModel, LlamaModel):
    def __init__(self, config: LlamaDyTConfig) -> None:
        super().__init__(config)
        h, head_dim = config.hidden_size, config.head_dim
        for layer in self.layers:
            layer.input_layernorm = build_norm(config, h, "attention")
            layer.post_attention_layernorm = build_norm(config, h, "mlp")
            if config.qk_norm:
                attn = layer.self_attn
                attn.q_proj = HeadNormLinear(attn.q_proj, head_dim, build_norm(config, head_dim, "qk"))
                attn.k_proj = HeadNormLinear(attn.k_proj, head_dim, build_norm(config, head_dim, "qk"))
        self.norm = build_norm(config, h, "final")
        if config.embedding_scale is not None:
            self.embed_tokens = ScaledEmbedding(self.embed_tokens, float(config.embedding_scale))
        self.post_init()


class LlamaDyTForCausalLM(LlamaDyTPreTrainedModel, LlamaForCausalLM):
    def __init__(self, config: LlamaDyTConfig) -> None:
        LlamaPreTrainedModel.__init__(self, config)  # not LlamaForCausalLM's: it would build a LlamaModel
        self.model = LlamaDyTModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()


__all__ = ["LlamaDyTForCausalLM", "LlamaDyTModel", "LlamaDyTPreTrainedModel"]
