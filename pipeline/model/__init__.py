"""LLaMA on megatron-core: layer/block specs with norms from the registry, the model factory, its size
arithmetic, and where its norms live."""

from .dims import ffn_hidden_size, flops_per_token, padded_vocab_size, weight_count
from .factory import build_model, transformer_config
from .sites import norm_sites
from .spec import block_spec, default_backend, layer_spec

__all__ = ["block_spec", "build_model", "default_backend", "ffn_hidden_size", "flops_per_token", "layer_spec",
           "norm_sites", "padded_vocab_size", "transformer_config", "weight_count"]
