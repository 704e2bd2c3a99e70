"""The built-in norms and their traits (classes named by path: registering them imports no torch)."""

from .recipe import alpha_recipe, constant_alpha_init, paper_alpha_init
from .registry import NormSpec, register

# Transformer Engine fuses these into the next linear (TELayerNormColumnParallelLinear); the S-curve
# analysis hooks their modules where they are not fused.
register(NormSpec("rmsnorm", "pipeline.norms.torch_norms:RMSNorm", te_fused="RMSNorm", analysis="scurve",
                  hf_norm="rmsnorm"))
register(NormSpec("layernorm", "pipeline.norms.torch_norms:LayerNorm", te_fused="LayerNorm", analysis="scurve"))

# The paper's DyT recipe: α₀ by width, γ only unless `bias`, √d embedding scalar, decay on everything.
register(NormSpec("dyt", "pipeline.norms.dyt:DyT", has_alpha=True, site_params=alpha_recipe(paper_alpha_init),
                  embedding_scale=True, decay_norm_params=True, kernel_op="dyt", fused_add_op="add_dyt", hf_norm="dyt"))
# Derf (arXiv 2512.10938): α₀ 0.5 at every site, otherwise DyT's recipe.
register(NormSpec("derf", "pipeline.norms.dyt:Derf", has_alpha=True,
                  site_params=alpha_recipe(constant_alpha_init(0.5)),
                  embedding_scale=True, decay_norm_params=True, kernel_op="derf", hf_norm="derf"))
