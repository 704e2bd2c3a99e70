"""The norm recipe a run config resolves to (α₀ per site kind, embedding scalar, which parameters decay):
what monitoring records with a run and what a comparison report states for each arm."""

from pipeline.config.schema import RunConfig

from .recipe import decay_norm_params, embedding_scale, site_params

DECAY_ALL = "every parameter"
DECAY_2D = "2-D weights only (1-D params exempt: megatron's default)"


def resolved_recipe(cfg: RunConfig) -> dict:
    m = cfg.model
    alpha = {kind: site_params(m.norm, m.hidden_size, kind).get("alpha_init") for kind in ("attention", "mlp", "final")}
    return {"norm": m.norm.type,
            "alpha_init": alpha if any(v is not None for v in alpha.values()) else None,
            "embedding_scale_init": embedding_scale(m.embedding_scale, m.norm.type, m.hidden_size),
            "weight_decay_policy": m.norm.weight_decay,
            "weight_decay_on": DECAY_ALL if decay_norm_params(m.norm) else DECAY_2D}
