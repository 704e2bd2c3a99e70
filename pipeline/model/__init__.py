"""LLaMA on megatron-core: layer/block specs with norms from the registry, and the model factory."""

from .factory import build_model, ffn_hidden_size, padded_vocab_size, transformer_config
from .sites import norm_sites
from .spec import block_spec, default_backend, layer_spec

__all__ = ["block_spec", "build_model", "default_backend", "ffn_hidden_size", "layer_spec",
           "norm_sites", "padded_vocab_size", "transformer_config"]
