"""DyT (arXiv 2503.10622) and Derf (arXiv 2512.10938) as megatron norm modules.

The math lives in `pipeline.kernels` (one dispatch function each, eager / compile / Triton); these
modules only own the parameters. Their traits (recipe, kernel op, ...) are registered in builtin.py.
"""

import torch
from torch import nn

from pipeline import kernels

from .torch_norms import tag_sequence_parallel


class DyT(nn.Module):
    """y = γ·tanh(α·x) [+ β]; α a learnable scalar, γ (and β) per channel."""

    def __init__(self, *, config, hidden_size: int, eps: float = 1e-5, alpha_init: float = 0.5,
                 bias: bool = False, kernel: str = "auto") -> None:
        super().__init__()  # eps is part of megatron's contract; DyT has no variance to protect
        dtype = config.params_dtype
        self.alpha_init = float(alpha_init)
        self.kernel = kernel
        self.alpha = nn.Parameter(torch.full((1,), self.alpha_init, dtype=dtype))
        self.weight = nn.Parameter(torch.ones(hidden_size, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(hidden_size, dtype=dtype)) if bias else None
        tag_sequence_parallel(self, config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.dyt(x, self.alpha, self.weight, self.bias, kernel=self.kernel)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, alpha_init={self.alpha_init}, bias={self.bias is not None}"


class Derf(nn.Module):
    """y = γ·erf(α·x + s) [+ β]; α and s learnable scalars (init 0.5 / 0.0 per the Derf paper)."""

    def __init__(self, *, config, hidden_size: int, eps: float = 1e-5, alpha_init: float = 0.5,
                 bias: bool = False, kernel: str = "auto") -> None:
        super().__init__()
        dtype = config.params_dtype
        self.alpha_init = float(alpha_init)
        self.kernel = kernel
        self.alpha = nn.Parameter(torch.full((1,), self.alpha_init, dtype=dtype))
        self.shift = nn.Parameter(torch.zeros(1, dtype=dtype))
        self.weight = nn.Parameter(torch.ones(hidden_size, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(hidden_size, dtype=dtype)) if bias else None
        tag_sequence_parallel(self, config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.derf(x, self.alpha, self.shift, self.weight, self.bias, kernel=self.kernel)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, alpha_init={self.alpha_init}, bias={self.bias is not None}"
