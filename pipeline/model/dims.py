"""Size arithmetic of the LLaMA model: FFN width, padded vocabulary, FLOPs per token, weight count.

Pure functions of the config (no megatron import), shared by the engines, monitoring and evaluation.
"""

import math

from pipeline.config.schema import RunConfig


def ffn_hidden_size(cfg: RunConfig) -> int:
    """LLaMA's SwiGLU width: 8/3·h rounded up to a multiple of 64, unless set."""
    m = cfg.model
    return m.ffn_hidden_size or 64 * math.ceil(8 * m.hidden_size / 3 / 64)


def padded_vocab_size(vocab_size: int, cfg: RunConfig) -> int:
    """Megatron pads the embedding rows to a multiple of make_vocab_size_divisible_by × tp."""
    multiple = cfg.model.make_vocab_size_divisible_by * cfg.parallel.tp
    return multiple * math.ceil(vocab_size / multiple)


def flops_per_token(cfg: RunConfig, vocab_size: int) -> float:
    """Training FLOPs per token (Megatron's formula for a dense GPT with GQA and SwiGLU; fwd+bwd = 3×fwd):
      3 · [ L · (2h·(h + 2·g·d) + 4·s·h + 2h² + 6·h·f) + 2·h·V ]
    h hidden, L layers, g query groups, d head dim, s sequence length, f FFN width, V padded vocabulary."""
    m = cfg.model
    h, L, s = m.hidden_size, m.num_layers, m.seq_length
    d = h // m.num_attention_heads
    g = m.num_query_groups or m.num_attention_heads
    f, v = ffn_hidden_size(cfg), padded_vocab_size(vocab_size, cfg)
    return 3.0 * (L * (2 * h * (h + 2 * g * d) + 4 * s * h + 2 * h * h + 6 * h * f) + 2 * h * v)


def weight_count(cfg: RunConfig, vocab_size: int) -> int:
    """Weights of the embeddings and linear layers (norm parameters, a few per layer, left out)."""
    m = cfg.model
    h, f, groups = m.hidden_size, ffn_hidden_size(cfg), m.num_query_groups or m.num_attention_heads
    qkv = h * (h + 2 * groups * h // m.num_attention_heads)
    per_layer = qkv + h * h + 3 * h * f  # qkv, proj, SwiGLU fc1 (2f) + fc2 (f)
    return m.num_layers * per_layer + padded_vocab_size(vocab_size, cfg) * h * (2 if m.untie_embeddings else 1)
