"""LayerNorm and RMSNorm with megatron's norm contract, usable under sequence parallelism.

megatron's `WrappedTorchNorm` refuses sequence parallelism and ignores `params_dtype`; these do neither.
"""

from torch import nn


def tag_sequence_parallel(module: nn.Module, config) -> None:
    """Under SP each TP rank sees a slice of the sequence, so norm grads are partial sums that megatron
    all-reduces across TP only for params tagged `sequence_parallel` (untagged: silently wrong)."""
    for p in module.parameters(recurse=False):
        p.sequence_parallel = bool(config.sequence_parallel)


class RMSNorm(nn.RMSNorm):
    def __init__(self, *, config, hidden_size: int, eps: float = 1e-5) -> None:
        super().__init__(hidden_size, eps=eps, dtype=config.params_dtype)
        tag_sequence_parallel(self, config)


class LayerNorm(nn.LayerNorm):
    def __init__(self, *, config, hidden_size: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__(hidden_size, eps=eps, bias=bias, dtype=config.params_dtype)
        tag_sequence_parallel(self, config)

