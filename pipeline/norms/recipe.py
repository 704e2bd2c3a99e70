"""The paper's LLM recipe as data: per-site α₀ by width, the embedding scalar, the weight-decay policy.

α₀ (arXiv 2503.10622, Tables 11–12; LLaMA code flags): width → (attention, mlp/final).
Widths between rows are interpolated linearly in log2(width) between the neighbouring rows; widths
outside the table take the nearest end row. (5120 is itself a row: the paper's 13B, 0.6 / 0.15.)
"""

import bisect
import math

from pipeline.config.schema import AlphaInit, NormConfig

ALPHA_TABLE: list[tuple[int, float, float]] = [
    (1024, 1.0, 1.0),
    (2048, 1.0, 0.5),
    (4096, 0.8, 0.2),
    (5120, 0.6, 0.15),
    (8192, 0.2, 0.05),
]
DERF_ALPHA_INIT = 0.5  # arXiv 2512.10938: α₀ 0.5 and s₀ 0 at every site
DYT_LIKE = ("dyt", "derf")


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


def alpha_init(norm: NormConfig, width: int) -> AlphaInit:
    if isinstance(norm.alpha_init, AlphaInit):
        return norm.alpha_init
    if norm.type == "derf":
        return AlphaInit(DERF_ALPHA_INIT, DERF_ALPHA_INIT, DERF_ALPHA_INIT)
    return paper_alpha_init(width)


def site_params(norm: NormConfig, width: int, site: str) -> dict:
    """Extra constructor params for the norm at `site` (attention | mlp | final | qk)."""
    if norm.type not in DYT_LIKE:
        return {}
    a = alpha_init(norm, width)
    alpha = {"attention": a.attention, "qk": a.attention, "mlp": a.mlp, "final": a.final}[site]
    return {"alpha_init": alpha, "bias": norm.bias, "kernel": norm.kernel}


def embedding_scale(mode: str, norm_type: str, width: int) -> float | None:
    """Initial value of the learnable scalar on the token embeddings, or None for no scalar."""
    if mode == "learnable" or (mode == "auto" and norm_type in DYT_LIKE):
        return math.sqrt(width)
    return None


def decay_norm_params(norm: NormConfig) -> bool:
    """Paper: weight decay on every parameter (α included) for DyT, and for its RMSNorm baseline too (its code
    decays `model.parameters()` whatever the norm); megatron: none on 1-D params."""
    if norm.weight_decay == "auto":
        return norm.type in DYT_LIKE
    return norm.weight_decay in ("paper", "all")
