"""TensorBoard / W&B tag names in one place: monitoring writes them, evaluation reads them.

Per-site statistics are `<stat>/<site>` with sites "attention/layer_01", "mlp/layer_01", "final": one
TensorBoard group per statistic (2·layers + 1 charts), and one multi-line chart per site kind in the Custom
Scalars tab (`layout`), so an 80-layer run stays navigable.
"""

SITE_KINDS = ("attention", "mlp", "final")

ALPHA = "norm_alpha"  # α of DyT-like norms
GAMMA_MEAN = "norm_gamma_mean"
GAMMA_STD = "norm_gamma_std"
EMBEDDING_SCALE = "norm/embedding_scale"
TANH_MEAN = "dyt_tanh_abs_mean"  # mean |tanh(α·x)| of sampled inputs
RESIDUAL_RMS = "residual_rms"  # RMS of each site's input: attention = the block input (every norm type)
VS_TOKENS = "vs_tokens"  # curves against consumed tokens (TensorBoard step = tokens), as megatron's "vs samples"


def saturation(threshold: float) -> str:
    """Fraction of sampled inputs with |α·x| > threshold (tanh flat there)."""
    return f"dyt_saturation_gt_{threshold:g}"


def site_tag(stat: str, site: str) -> str:
    return f"{stat}/{site}"


def site_kind(site: str) -> str:
    return site.split("/")[0]


def by_site(stat: str, curves: dict) -> dict:
    """{site: curve} of one per-site statistic out of {tag: curve}."""
    prefix = f"{stat}/"
    return {tag[len(prefix):]: c for tag, c in curves.items() if tag.startswith(prefix)}


def histogram(stat: str, kind: str) -> str:
    """Histogram of a per-site statistic across the layers of one site kind."""
    return f"{stat}_by_layer/{kind}"


def layout(thresholds: list[float]) -> dict:
    """Custom Scalars layout: one multi-line chart per (statistic, site kind), regexes over the per-site tags."""
    def charts(stat: str, title: str) -> dict:
        return {f"{title}: {kind}": ["Multiline", [rf"^{stat}/{kind}(/.*)?$"]] for kind in SITE_KINDS}

    sat = {}
    for t in thresholds:
        sat |= charts(saturation(t), f"fraction |α·x| > {t:g}")
    return {
        "training": {"loss (train, validation)": ["Multiline", ["^train/loss$", "^val/loss$"]],
                     "loss vs consumed tokens": ["Multiline", [rf"^{VS_TOKENS}/.*loss$"]],
                     "throughput per device": ["Multiline", ["^throughput/tokens_per_s_per_device$"]],
                     "memory (GB, max over ranks)": ["Multiline", ["^memory/.*"]]},
        "DyT α and γ": {**charts(ALPHA, "α"), "embedding scalar": ["Multiline", [f"^{EMBEDDING_SCALE}$"]],
                        **charts(GAMMA_MEAN, "γ mean")},
        "DyT saturation": {**sat, **charts(TANH_MEAN, "mean |tanh(α·x)|")},
        "residual stream": charts(RESIDUAL_RMS, "RMS of the norm input"),
    }
