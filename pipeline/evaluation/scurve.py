"""Norm-layer behaviour of a trained run.

LayerNorm / RMSNorm run (the paper's Figure 2 observation): load the latest checkpoint, push one
validation micro-batch through the model, hook every norm site (pre-attention, pre-MLP, final), and plot
the norm's output *before its affine γ/β* against its input, per element. Per site we fit y ≈ s·tanh(α·x)
with scalar α and s by least squares over (a fixed random subset of) all elements: for a given α the best
s is closed form, s = Σ y·t / Σ t² with t = tanh(α·x), so the fit is a 1-D search over log α (grid, then
golden section). R² of that fit is reported next to R² of the best line through the origin, y ≈ c·x: a
tanh fit no better than the line means the layer is still in its linear regime (no S-curve).

DyT / Derf run: α per site over training, from TensorBoard (`norm_alpha/...`), and the embedding scalar.

Which of the two a run gets is its norm's registered `analysis` trait (pipeline/norms/registry.py); a norm
with neither gets a result that says what was not analysed and why.
"""

import math
from pathlib import Path

import numpy as np

from pipeline.evaluation import plots
from pipeline.evaluation.events import read_scalars
from pipeline.monitor import tags

FIT_POINTS = 200_000  # elements per site used for the fit (a seeded random subset)
PLOT_POINTS = 4_000  # elements per site drawn in the scatter plot
MAX_TOKENS = 2048  # token rows kept per site (bounds memory for large models)
FIT_METHOD = ("least squares y ≈ s·tanh(α·x) on the pre-affine norm output, scalar α and s per site; s in "
              "closed form given α, α by a 121-point grid over log α then golden-section refinement; R² "
              "relative to the mean of y")


def fit_tanh(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Least-squares fit y ≈ scale·tanh(alpha·x); also the best line y ≈ slope·x for contrast."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    syy = float(y @ y)
    sst = float(((y - y.mean()) ** 2).sum())

    def sse(log_alpha: float) -> tuple[float, float]:
        t = np.tanh(math.exp(log_alpha) * x)
        stt, syt = float(t @ t), float(y @ t)
        if stt == 0.0:
            return syy, 0.0
        return syy - syt * syt / stt, syt / stt

    spread = float(np.std(x)) or 1.0
    grid = np.linspace(math.log(1e-3 / spread), math.log(1e3 / spread), 121)
    values = [sse(g)[0] for g in grid]
    i = int(np.argmin(values))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(60):  # golden section on the bracketing grid cells
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if sse(a)[0] < sse(b)[0]:
            hi = b
        else:
            lo = a
    best = 0.5 * (lo + hi)
    err, scale = sse(best)
    slope = float(x @ y) / float(x @ x) if float(x @ x) else 0.0
    lin_err = float(((y - slope * x) ** 2).sum())
    return {"alpha": math.exp(best), "scale": scale, "r2_tanh": 1 - err / sst if sst else float("nan"),
            "r2_linear": 1 - lin_err / sst if sst else float("nan"), "slope": slope}


def pre_affine(module, x):
    """The norm's output before γ/β, computed from its input with the module's own eps."""
    import torch.nn.functional as F
    from torch import nn

    if isinstance(module, nn.RMSNorm):
        return F.rms_norm(x, module.normalized_shape, None, module.eps)
    if isinstance(module, nn.LayerNorm):
        return F.layer_norm(x, module.normalized_shape, None, None, module.eps)
    raise TypeError(f"S-curves need LayerNorm/RMSNorm modules, got {type(module).__name__} (a norm fused "
                    "into the next linear, e.g. by Transformer Engine, has no separate module to hook)")


def capture(engine, cfg, manifest, run_dir: Path) -> tuple[dict, str]:
    """Hook every norm site on the first validation micro-batch: {site: (module, x, out)}, 2-D fp32."""
    import torch

    from pipeline.data import build_datasets, step_microbatches
    t = cfg.train
    train_ds, valid_ds = build_datasets(manifest, cfg.model.seq_length, t.seed, t.micro_batch_size,
                                        t.micro_batch_size, run_dir / "cache")
    dataset, split = (valid_ds, "valid") if valid_ds is not None else (train_ds, "train")
    batch = next(step_microbatches(dataset, 0, t.micro_batch_size, t.micro_batch_size, 0, 1))
    sites = engine.norm_sites()
    gen = torch.Generator().manual_seed(0)
    seen: dict[str, tuple] = {}

    def hook(name):
        def fn(module, args, out):
            x = args[0].detach().float().reshape(-1, args[0].shape[-1]).cpu()
            y = out.detach().float().reshape(-1, out.shape[-1]).cpu()
            if x.shape[0] > MAX_TOKENS:
                rows = torch.randperm(x.shape[0], generator=gen)[:MAX_TOKENS]
                x, y = x[rows], y[rows]
            seen[name] = (module, x, y)
        return fn

    handles = [m.register_forward_hook(hook(name)) for name, m in sites.items()]
    try:
        engine.eval_loss([batch])
    finally:
        for h in handles:
            h.remove()
    tokens = t.micro_batch_size * cfg.model.seq_length
    return seen, f"first {split} micro-batch ({t.micro_batch_size}×{cfg.model.seq_length} = {tokens} tokens)"


def scurves(run_dir: Path, out_dir: Path) -> dict:
    """S-curve analysis of a LayerNorm/RMSNorm run; writes the figure, returns the numbers."""
    import torch

    from pipeline import runtime
    from pipeline.run_loader import open_run

    session = open_run(run_dir)
    cfg, engine, manifest, step = session.cfg, session.engine, session.manifest, session.step
    try:
        seen, batch_desc = capture(engine, cfg, manifest, run_dir)
    finally:
        runtime.shutdown()
    rng = np.random.default_rng(0)
    rows, panels = [], []
    for site, (module, x, out) in seen.items():
        with torch.no_grad():
            y = pre_affine(module, x)
            weight = module.weight.detach().float().cpu()
            bias = module.bias.detach().float().cpu() if getattr(module, "bias", None) is not None else 0.0
            affine_err = float((y * weight + bias - out).abs().max())  # bf16 runs: ~1e-2, fp32: ~1e-6
        xs, ys = x.numpy().ravel(), y.numpy().ravel()
        pick = rng.choice(xs.size, size=min(FIT_POINTS, xs.size), replace=False)
        fit = fit_tanh(xs[pick], ys[pick])
        absmax = float(np.abs(xs).max())
        rows.append({"site": site, **fit, "points": int(pick.size), "x_std": float(xs.std()),
                     "x_absmax": absmax, "alpha_x_absmax": fit["alpha"] * absmax,
                     "affine_check_max_abs_err": affine_err})
        show = pick[:PLOT_POINTS]
        panels.append((site, xs[show], ys[show], fit))
    norm = cfg.model.norm.type
    fig = plots.scurve_grid(panels, out_dir / "scurve.png",
                            f"{cfg.name} @ step {step}: {norm} output (before affine) vs input")
    return {"kind": "scurve", "run": str(run_dir), "name": cfg.name, "norm": norm, "step": step,
            "batch": batch_desc, "fit_method": FIT_METHOD, "sites": rows, "figures": [fig]}


def alpha_history(run_dir: Path, out_dir: Path) -> dict:
    """α per site over training (and the embedding scalar) for a run whose norm has α, from TensorBoard."""
    from pipeline.config import load_config
    from pipeline.norms import embedding_scale, site_params

    cfg = load_config(str(run_dir / "config.yaml"))
    m = cfg.model
    curves = read_scalars(run_dir / "tensorboard")
    logged = tags.by_site(tags.ALPHA, curves)
    if not logged:
        return not_analysed(cfg, run_dir, f"no {tags.ALPHA}/* scalars in TensorBoard (logging.norm_stats off?)")
    # TensorBoard starts at the first log step; the initial values (step 0) come from the recipe, when
    # the norm's recipe sets α₀ (a user norm may keep its own default: then the curve starts at step 1).
    alphas, rows = {}, []
    for site, (steps, values) in logged.items():
        init = site_params(m.norm, m.hidden_size, site.split("/")[0]).get("alpha_init")
        alphas[site] = ([0, *steps], [init, *values]) if init is not None else (steps, values)
        rows.append({"site": site, "alpha_init": init, "alpha_final": values[-1], "alpha_min": min(values),
                     "alpha_max": max(values), "last_step": steps[-1]})
    emb = curves.get(tags.EMBEDDING_SCALE)
    emb_init = embedding_scale(m.embedding_scale, m.norm.type, m.hidden_size)
    if emb and emb_init is not None:
        emb = ([0, *emb[0]], [emb_init, *emb[1]])
    title = f"{cfg.name}: {m.norm.type} α per site"
    fig = plots.alpha_curves(alphas, emb, out_dir / "alpha.png", title)
    return {"kind": "alpha", "run": str(run_dir), "name": cfg.name, "norm": m.norm.type, "sites": rows,
            "embedding_scale": {"init": emb[1][0], "final": emb[1][-1]} if emb else None,
            "curves": alphas, "figures": [fig]}


def not_analysed(cfg, run_dir: Path, reason: str) -> dict:
    return {"kind": "none", "run": str(run_dir), "name": cfg.name, "norm": cfg.model.norm.type,
            "reason": reason, "figures": []}


def analyze_run(run_dir: Path, out_dir: Path) -> dict:
    """As the norm's registered `analysis` says: S-curves, α curves, or a note on what was not analysed."""
    from pipeline.config import load_config
    from pipeline.norms import get_spec

    cfg = load_config(str(run_dir / "config.yaml"))  # also imports the run's custom_imports
    spec = get_spec(cfg.model.norm.type)
    out_dir.mkdir(parents=True, exist_ok=True)
    if spec.analysis == "scurve":
        return scurves(run_dir, out_dir)
    if spec.analysis == "alpha":
        return alpha_history(run_dir, out_dir)
    return not_analysed(cfg, run_dir, f"norm {spec.name!r} is registered with neither an α (has_alpha: no α "
                        "curves) nor analysis='scurve' (LayerNorm/RMSNorm-like: no S-curve fit); its loss "
                        "curves are still in the comparison")
