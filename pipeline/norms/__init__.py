"""Norm registry (LayerNorm, RMSNorm, DyT, Derf, user norms) and the paper's DyT recipe.

Importing this package imports no torch; the modules live in `pipeline.norms.dyt` and
`pipeline.norms.torch_norms` and are imported when a model is built. Adding a norm: docs/norms.md.
"""

from . import builtin  # noqa: F401  (registers the built-in norms)
from .recipe import (
    AlphaInit,
    alpha_recipe,
    constant_alpha_init,
    decay_norm_params,
    embedding_scale,
    paper_alpha_init,
    site_params,
)
from .registry import (
    NormSpec,
    get_norm,
    get_spec,
    has_alpha,
    lookup,
    register,
    register_norm,
    registered_norms,
    spec_for_class,
)

__all__ = ["AlphaInit", "NormSpec", "alpha_recipe", "constant_alpha_init", "decay_norm_params",
           "embedding_scale", "get_norm", "get_spec", "has_alpha", "lookup", "paper_alpha_init", "register",
           "register_norm", "registered_norms", "site_params", "spec_for_class"]
