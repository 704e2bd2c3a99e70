"""TransformerLayer that fuses the attention residual add with the pre-MLP DyT (one pass over memory).

Stock layer: h = residual + attn_out (bias-dropout-add), then y = pre_mlp_layernorm(h): two kernels, h
written and read back. Here the attention bias-dropout-add is wrapped: when it is a plain residual add
(no bias, no active dropout) and the pre-MLP norm's class is registered with a `fused_add_op` (DyT:
`add_dyt`), it runs that op once, keeps y, and returns h; the pre-MLP norm step then hands back that y for
that same h. Any other case runs the stock code, so the layer computes the same numbers as
`TransformerLayer`.

The op is called as `op(x, residual, norm.alpha, norm.weight, norm.bias, kernel=norm.kernel)` and returns
(norm(x + residual), x + residual).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from megatron.core.transformer.identity_op import IdentityOp
from megatron.core.transformer.transformer_layer import TransformerLayer

from pipeline import kernels
from pipeline.norms import spec_for_class


class FusedResidualDyTLayer(TransformerLayer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._fused: tuple[torch.Tensor, torch.Tensor] | None = None  # (h, DyT(h)) from the fused add
        self._stock_bda = self.self_attn_bda  # megatron's get_bias_dropout_add(training, fused)
        self.self_attn_bda = self._attn_bda
        spec = spec_for_class(type(self.pre_mlp_layernorm))
        self._fused_add_op = spec.fused_add_op if spec else None

    def _can_fuse(self) -> bool:
        # Cross-attention would change h between the add and the norm; recompute/offload wrap the norm.
        return (
            isinstance(self.cross_attention, IdentityOp)
            and not self.recompute_pre_mlp_layernorm
            and not self.offload_mlp_norm
            and self._fused_add_op is not None
        )

    def _attn_bda(self, training: bool, fused: bool) -> Callable:
        stock = self._stock_bda(training, fused)

        def bias_dropout_add(x_with_bias: tuple, residual: torch.Tensor, prob: float) -> torch.Tensor:
            x, bias = x_with_bias
            if (
                bias is not None
                or (training and prob > 0)
                or x.dtype != residual.dtype
                or not self._can_fuse()
            ):
                return stock(x_with_bias, residual, prob)
            norm, op = self.pre_mlp_layernorm, getattr(kernels, self._fused_add_op)
            y, h = op(x, residual, norm.alpha, norm.weight, norm.bias, kernel=norm.kernel)
            self._fused = (h, y)
            return h

        return bias_dropout_add

    def _forward_pre_mlp_layernorm(self, hidden_states: torch.Tensor):
        fused, self._fused = self._fused, None
        if fused is not None and fused[0] is hidden_states:
            return fused[1]
        return super()._forward_pre_mlp_layernorm(hidden_states)
