"""Causal core attention through torch's `scaled_dot_product_attention`, for GPUs without Transformer Engine.

megatron-core's local backend attends with `DotProductAttention`: it materialises the [b, heads, s, s]
scores (plus an fp32 softmax copy), which at LLaMA sequence lengths dwarfs every other cost in a layer
(seq 8192, 32 heads: ~2 G scores per layer). `SDPASpecProvider` is the local backend with that one
module swapped for SDPA, whose flash / memory-efficient kernels never store the scores. GQA is passed
through (`enable_gqa`), so keys and values are not repeated per query head.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from megatron.core.models.backends import LocalSpecProvider
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig
from torch.nn.attention import SDPBackend, sdpa_kernel

# Never the math backend on a GPU: it stores the full score matrix (a silent fallback would be an OOM or
# a slow run that looks like a model property).
_GPU_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]


class SDPAttention(MegatronModule):
    """megatron's core-attention contract (query [s, b, heads, d], key/value [s, b, groups, d] ->
    [s, b, heads·d]) for causal self-attention without dropout, context parallelism or packed sequences."""

    def __init__(self, config: TransformerConfig, layer_number: int, attn_mask_type: AttnMaskType,
                 attention_type: str, attention_dropout: float | None = None, softmax_scale: float | None = None,
                 cp_comm_type: str | None = None, pg_collection: object | None = None) -> None:
        super().__init__(config=config)
        dropout = config.attention_dropout if attention_dropout is None else attention_dropout
        unsupported = [name for name, bad in (
            (f"attn_mask_type {attn_mask_type.name}", attn_mask_type != AttnMaskType.causal),
            (f"attention dropout {dropout}", dropout > 0),
            (f"context parallelism {config.context_parallel_size}", config.context_parallel_size > 1),
            ("apply_query_key_layer_scaling", config.apply_query_key_layer_scaling),
        ) if bad]
        if unsupported:
            raise ValueError(f"SDPAttention does not support {', '.join(unsupported)}: use the Transformer "
                             "Engine or megatron local backend")
        self.softmax_scale = softmax_scale  # None: 1/sqrt(head dim), as megatron's default

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attention_mask: torch.Tensor | None, attn_mask_type: AttnMaskType | None = None,
                attention_bias: torch.Tensor | None = None, packed_seq_params: object | None = None) -> torch.Tensor:
        if attention_bias is not None or packed_seq_params is not None:
            raise ValueError("SDPAttention: attention_bias and packed sequences are not supported")
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # [b, heads, s, d]
        # The causal mask is implied (attention_mask is not read). CPU: whichever backend torch picks.
        with sdpa_kernel(_GPU_BACKENDS) if q.is_cuda else contextlib.nullcontext():
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.softmax_scale,
                                                 enable_gqa=q.size(1) != k.size(1))
        return out.permute(2, 0, 1, 3).reshape(out.size(2), out.size(0), -1)


class SDPASpecProvider(LocalSpecProvider):
    """megatron's local modules, with SDPA as the core attention."""

    def core_attention(self) -> type:
        return SDPAttention
