"""PNG figures for the reports (matplotlib, Agg backend: no display needed). Each function writes one file
and returns its name (relative to the report directory)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

from pipeline.monitor import tags  # noqa: E402

LOSS_TAGS = (("train/loss", "train loss (mean over each log window)"), ("val/loss", "validation loss"))


def _save(fig, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _mean_curve(curves: list[tuple[list[int], list[float]]]) -> tuple[list[int], np.ndarray]:
    """Mean over seeds on the steps every seed logged."""
    common = sorted(set.intersection(*(set(s) for s, _ in curves)))
    return common, np.mean([[dict(zip(s, v, strict=True))[k] for k in common] for s, v in curves], axis=0)


def _by_label(runs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in runs:
        out.setdefault(r["label"], []).append(r)
    return out


def compare_figures(baseline: str, runs: list[dict], out_dir: Path, unigram: dict | None = None) -> list[str]:
    """loss_curves.png (every seed thin, the seed mean thick; dashed: the unigram reference) and
    loss_diff.png (variant − baseline, paired by seed, on the steps both logged)."""
    by_label = _by_label(runs)
    tags = [(t, title) for t, title in LOSS_TAGS if all(t in r["curves"] for r in runs)]
    colors = {label: f"C{i}" for i, label in enumerate(by_label)}

    fig, axes = plt.subplots(1, len(tags), figsize=(6 * len(tags), 4.2), squeeze=False)
    for ax, (tag, title) in zip(axes[0], tags, strict=True):
        for label, rs in by_label.items():
            for r in rs:
                ax.plot(*r["curves"][tag], color=colors[label], alpha=0.3, lw=0.8)
            steps, mean = _mean_curve([r["curves"][tag] for r in rs])
            ax.plot(steps, mean, color=colors[label], lw=2, label=f"{label} (mean of {len(rs)})")
        if unigram:
            level = unigram["train_entropy" if tag == "train/loss" else "valid_cross_entropy"]
            ax.axhline(level, color="gray", ls="--", lw=1, label="unigram (no context)")
        ax.set(title=title, xlabel="step", ylabel="loss (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend()
    names = [_save(fig, out_dir / "loss_curves.png")]

    fig, axes = plt.subplots(1, len(tags), figsize=(6 * len(tags), 4.2), squeeze=False)
    base = {r["seed"]: r for r in by_label[baseline]}
    for ax, (tag, title) in zip(axes[0], tags, strict=True):
        ax.axhline(0.0, color="black", lw=0.8)
        for label, rs in by_label.items():
            if label == baseline:
                continue
            diffs = []
            for r in rs:
                b = dict(zip(*base[r["seed"]]["curves"][tag], strict=True))
                pairs = [(s, v - b[s]) for s, v in zip(*r["curves"][tag], strict=True) if s in b]
                diffs.append(([s for s, _ in pairs], [d for _, d in pairs]))
                ax.plot(*diffs[-1], color=colors[label], alpha=0.3, lw=0.8)
            steps, mean = _mean_curve(diffs)
            ax.plot(steps, mean, color=colors[label], lw=2,
                    label=f"{label} − {baseline} (mean of {len(rs)})")
        ax.set(title=f"{title}: difference to {baseline}", xlabel="step", ylabel="Δ loss (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend()
    names.append(_save(fig, out_dir / "loss_diff.png"))
    return names


def _kind_curve(curves: dict, stat: str, kind: str) -> tuple[list[int], np.ndarray] | None:
    """Mean over the sites of one kind (e.g. every attention layer) of a per-site statistic, per step."""
    sites = [c for site, c in tags.by_site(stat, curves).items() if tags.site_kind(site) == kind]
    return _mean_curve(sites) if sites else None


def diagnostics_figure(runs: list[dict], out_dir: Path, threshold: float) -> str:
    """diagnostics.png: the residual stream (RMS of the final norm's input over training; RMS of each block's
    input at the last sample) for every variant, and the saturated fraction |α·x| > threshold of the DyT-like
    ones (final site; attention and MLP sites averaged over layers). Seed means."""
    by_label = _by_label(runs)
    colors = {label: f"C{i}" for i, label in enumerate(by_label)}
    sat = tags.saturation(threshold)
    dyt_like = [label for label, rs in by_label.items() if all(tags.by_site(sat, r["curves"]) for r in rs)]
    fig, axes = plt.subplots(1, 3 if dyt_like else 2, figsize=(17 if dyt_like else 12, 4.2), squeeze=False)
    ax_final, ax_layers = axes[0][0], axes[0][1]
    for label, rs in by_label.items():
        finals = [r["curves"][tags.site_tag(tags.RESIDUAL_RMS, "final")] for r in rs
                  if tags.site_tag(tags.RESIDUAL_RMS, "final") in r["curves"]]
        if finals:
            ax_final.plot(*_mean_curve(finals), color=colors[label], lw=2, label=label)
        blocks = sorted(s for s in tags.by_site(tags.RESIDUAL_RMS, rs[0]["curves"]) if tags.site_kind(s) == "attention")
        if blocks:
            last = [np.mean([tags.by_site(tags.RESIDUAL_RMS, r["curves"])[s][1][-1] for r in rs]) for s in blocks]
            ax_layers.plot(range(1, len(blocks) + 1), last, marker="o", color=colors[label], label=label)
    ax_final.set(title="residual stream: RMS of the final norm's input", xlabel="step", ylabel="RMS", yscale="log")
    ax_layers.set(title="RMS of each block's input (last sample)", xlabel="layer", ylabel="RMS", yscale="log")
    ax_layers.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    if dyt_like:
        ax = axes[0][2]
        for label in dyt_like:
            for kind, style in (("final", "-"), ("attention", "--"), ("mlp", ":")):
                curves = [_kind_curve(r["curves"], sat, kind) for r in by_label[label]]
                if all(c is not None for c in curves):
                    ax.plot(*_mean_curve(curves), color=colors[label], ls=style, label=f"{label} {kind}")
        ax.set(title=f"DyT saturation: fraction |α·x| > {threshold:g}", xlabel="step", ylabel="fraction",
               ylim=(0, 1))
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, out_dir / "diagnostics.png")


def _grid(n: int, cols: int = 4):
    cols = min(cols, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.1 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes.flat


def scurve_grid(panels: list[tuple[str, np.ndarray, np.ndarray, dict]], path: Path, title: str) -> str:
    """One scatter per norm site (input vs pre-affine output) with the fitted s·tanh(α·x)."""
    fig, axes = _grid(len(panels))
    for ax, (site, x, y, fit) in zip(axes, panels, strict=False):
        ax.scatter(x, y, s=1, alpha=0.25, color="C0", rasterized=True)
        grid = np.linspace(float(x.min()), float(x.max()), 200)
        ax.plot(grid, fit["scale"] * np.tanh(fit["alpha"] * grid), color="C3", lw=1.5)
        ax.set_title(f"{site}\nα={fit['alpha']:.3g} s={fit['scale']:.3g} R² {fit['r2_tanh']:.3f} "
                     f"(line {fit['r2_linear']:.3f})", fontsize=8)
        ax.set_xlabel("input", fontsize=8)
        ax.set_ylabel("output (pre-affine)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def alpha_curves(alphas: dict[str, tuple[list[int], list[float]]], emb: tuple[list[int], list[float]] | None,
                 path: Path, title: str) -> str:
    """α per site over training (attention solid, MLP dashed, final black) and the embedding scalar."""
    fig, axes = plt.subplots(1, 2 if emb else 1, figsize=(12 if emb else 6.5, 4.2), squeeze=False)
    ax = axes[0][0]
    layers = sorted({s.split("/")[1] for s in alphas if "/" in s})
    for site, (steps, values) in alphas.items():
        kind = site.split("/")[0]
        color = "black" if kind == "final" else f"C{layers.index(site.split('/')[1]) % 10}"
        ax.plot(steps, values, color=color, ls="--" if kind == "mlp" else "-", label=site)
    ax.set(title=title, xlabel="step", ylabel="α")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    if emb:
        axes[0][1].plot(*emb, color="C0")
        axes[0][1].set(title="embedding scalar", xlabel="step", ylabel="scale")
        axes[0][1].grid(alpha=0.3)
    return _save(fig, path)


def bench_figure(sections: list[tuple[str, list[dict]]], path: Path, title: str) -> str:
    """Horizontal bars of median time per implementation, with p25–p75 whiskers; one panel per section,
    two panels per row."""
    cols, rows_of_panels = min(2, len(sections)), -(-len(sections) // 2)
    height = 0.8 + 0.3 * max(len(rows) for _, rows in sections)
    fig, axes = plt.subplots(rows_of_panels, cols, figsize=(6.5 * cols, height * rows_of_panels),
                             squeeze=False)
    for ax in axes.flat[len(sections):]:
        ax.axis("off")
    for ax, (name, rows) in zip(axes.flat, sections, strict=False):
        labels = [r["label"] for r in rows]
        med = np.array([r["median_ms"] for r in rows])
        err = np.array([[r["median_ms"] - r["p25_ms"] for r in rows],
                        [r["p75_ms"] - r["median_ms"] for r in rows]])
        palette = {n: f"C{i}" for i, n in enumerate(dict.fromkeys(r["norm"] for r in rows))}
        colors = [palette[r["norm"]] for r in rows]
        ax.barh(range(len(rows)), med, xerr=err, color=colors, capsize=2)
        ax.set_yticks(range(len(rows)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set(title=name, xlabel="ms (median, p25–p75)")
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
