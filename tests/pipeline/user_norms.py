"""Two user norms, added the way docs/norms.md shows: one module, one registration each. A run config
lists this module under `custom_imports` (tests/pipeline/test_user_norms.py)."""

import torch
from torch import nn

from pipeline.norms import alpha_recipe, paper_alpha_init, register_norm
from pipeline.norms.torch_norms import tag_sequence_parallel


@register_norm("scaled_tanh", has_alpha=True, site_params=alpha_recipe(paper_alpha_init, keys=()),
               embedding_scale=True, decay_norm_params=True)
class ScaledTanh(nn.Module):
    """y = γ·tanh(α·x)/α: DyT rescaled so that it is the identity near 0 whatever α."""

    def __init__(self, *, config, hidden_size: int, eps: float = 1e-5, alpha_init: float = 0.5) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1,), alpha_init, dtype=config.params_dtype))
        self.weight = nn.Parameter(torch.ones(hidden_size, dtype=config.params_dtype))
        tag_sequence_parallel(self, config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * torch.tanh(self.alpha * x) / self.alpha


@register_norm("softsign")
class Softsign(nn.Module):
    """y = γ·x/(1 + |x|): no α, so evaluation has nothing to plot over training."""

    def __init__(self, *, config, hidden_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size, dtype=config.params_dtype))
        tag_sequence_parallel(self, config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x / (1 + x.abs())
