"""Norm registry (LayerNorm, RMSNorm, DyT, Derf, user norms) and the paper's DyT recipe."""

from .dyt import Derf, DyT
from .recipe import alpha_init, decay_norm_params, embedding_scale, paper_alpha_init, site_params
from .registry import get_norm, register_norm, registered_norms
from .torch_norms import LayerNorm, RMSNorm, is_dyt_like

__all__ = ["Derf", "DyT", "LayerNorm", "RMSNorm", "alpha_init", "decay_norm_params", "embedding_scale",
           "get_norm", "is_dyt_like", "paper_alpha_init", "register_norm", "registered_norms", "site_params"]
