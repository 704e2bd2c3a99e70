"""The paper's LLM recipe as data: per-site α₀ by width, the embedding scalar, the weight-decay policy.

α₀ (arXiv 2503.10622, Tables 11–12; LLaMA code flags): width → (attention, mlp/final).
Widths between rows are interpolated linearly in log2(width) between the neighbouring rows; widths
outside the table take the nearest end row. (5120 is itself a row: the paper's 13B, 0.6 / 0.15.)

Which norm follows which part of the recipe is a trait of its `NormSpec` (pipeline/norms/builtin.py);
the functions here read the spec, never the norm's name.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .registry import SiteParams, get_spec

if TYPE_CHECKING:
    from pipeline.config.schema import NormConfig

ALPHA_TABLE: list[tuple[int, float, float]] = [
    (1024, 1.0, 1.0),
    (2048, 1.0, 0.5),
    (4096, 0.8, 0.2),
    (5120, 0.6, 0.15),
    (8192, 0.2, 0.05),
]


@dataclass
class AlphaInit:
    """Initial DyT/Derf α per norm site (paper Table 12 gives attention vs the rest)."""

    attention: float
    mlp: float
    final: float

    def at(self, site: str) -> float:
        """α₀ at a site; per-head Q/K norms sit in attention and follow it."""
        return {"attention": self.attention, "qk": self.attention, "mlp": self.mlp, "final": self.final}[site]


def paper_alpha_init(width: int) -> AlphaInit:
    widths = [w for w, _, _ in ALPHA_TABLE]
    if width <= widths[0] or width >= widths[-1]:
        _, attn, other = ALPHA_TABLE[0] if width <= widths[0] else ALPHA_TABLE[-1]
    else:
        i = bisect.bisect_right(widths, width)
        (w0, a0, o0), (w1, a1, o1) = ALPHA_TABLE[i - 1], ALPHA_TABLE[i]
        t = (math.log2(width) - math.log2(w0)) / (math.log2(w1) - math.log2(w0))
        attn, other = a0 + t * (a1 - a0), o0 + t * (o1 - o0)
    return AlphaInit(attention=round(attn, 6), mlp=round(other, 6), final=round(other, 6))


def constant_alpha_init(value: float) -> Callable[[int], AlphaInit]:
    """The same α₀ at every site and width (Derf: 0.5, arXiv 2512.10938)."""
    return lambda width: AlphaInit(value, value, value)


def alpha_recipe(by_width: Callable[[int], AlphaInit], keys: tuple[str, ...] = ("bias", "kernel")) -> SiteParams:
    """Site params of a norm with α: `alpha_init` (the config's `model.norm.alpha_init` when given, else
    `by_width(width)`) plus the `model.norm` fields named in `keys`, passed as constructor kwargs."""

    def site_params(norm: NormConfig, width: int, site: str) -> dict[str, Any]:
        a = norm.alpha_init if isinstance(norm.alpha_init, AlphaInit) else by_width(width)
        return {"alpha_init": a.at(site), **{k: getattr(norm, k) for k in keys}}

    return site_params


def site_params(norm: NormConfig, width: int, site: str) -> dict[str, Any]:
    """Extra constructor params for the norm at `site` (attention | mlp | final | qk)."""
    return get_spec(norm.type).params(norm, width, site)


def embedding_scale(mode: str, norm_type: str, width: int) -> float | None:
    """Initial value of the learnable scalar on the token embeddings, or None for no scalar."""
    if mode == "learnable" or (mode == "auto" and get_spec(norm_type).embedding_scale):
        return math.sqrt(width)
    return None


def decay_norm_params(norm: NormConfig) -> bool:
    """Paper: weight decay on every parameter (α included) for DyT, and for its RMSNorm baseline too (its code
    decays `model.parameters()` whatever the norm); megatron: none on 1-D params."""
    if norm.weight_decay == "auto":
        return get_spec(norm.type).decay_norm_params
    return norm.weight_decay in ("paper", "all")
