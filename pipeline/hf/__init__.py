"""Hugging Face interop: the `LlamaDyT` architecture, run → HF export, HF → run import.

Importing this package registers `LlamaDyTConfig` / `LlamaDyTForCausalLM` with `AutoConfig` /
`AutoModelForCausalLM`, so exported DyT/Derf folders load without `trust_remote_code` here. It imports
neither megatron nor the training code (`pipeline.hf.export` / `pipeline.hf.load` do).
"""

from transformers import AutoConfig, AutoModelForCausalLM

from .configuration_llama_dyt import LlamaDyTConfig
from .modeling_llama_dyt import LlamaDyTForCausalLM

AutoConfig.register(LlamaDyTConfig.model_type, LlamaDyTConfig, exist_ok=True)
AutoModelForCausalLM.register(LlamaDyTConfig, LlamaDyTForCausalLM, exist_ok=True)

__all__ = ["LlamaDyTConfig", "LlamaDyTForCausalLM"]
