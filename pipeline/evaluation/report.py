"""report.md (tables, embedded PNGs, a verdict) and results.json (every raw number, configs, commands).

The verdicts are generated from the numbers; each states what was measured and what it does not show.
"""

import datetime
import json
import math
import os
import platform
import subprocess
from pathlib import Path

from pipeline.evaluation.common import REPO_ROOT

METRIC_NAMES = {"final_train": "final train loss", "best_train": "best train loss",
                "final_val": "final val loss", "best_val": "best val loss"}


def environment() -> dict:
    import torch

    def git(*args: str) -> str:  # read-only queries
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or None
    dirty = bool(git("status", "--porcelain"))
    return {"created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "git_commit": f"{commit} (with uncommitted changes)" if commit and dirty else commit,
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def write(out_dir: Path, markdown: str, results: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out_dir / "report.md").write_text(markdown)


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def num(x: float | None, digits: int = 4, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _mean_std(s: dict | None) -> str:
    if not s:
        return "—"
    return f"{num(s['mean'])} ± {num(s['std'])}" if s["std"] is not None else num(s["mean"])


def _ci(d: dict) -> str:
    if d["ci_low"] is None:
        return "— (1 seed)"
    return f"[{num(d['ci_low'], signed=True)}, {num(d['ci_high'], signed=True)}]"


def _provenance(data: dict) -> str:
    env = data["environment"]
    make = f"`{data['make_command']}`, which runs " if data.get("make_command") else ""
    omp = f" (environment: OMP_NUM_THREADS={env['omp_num_threads']})" if env.get("omp_num_threads") else ""
    return (f"Command: {make}`{data['command']}`{omp}  \nCreated {env['created']} at commit "
            f"`{env['git_commit']}`, torch {env['torch']}, {env['cuda'] or 'CPU only'}.")


# -- norm-layer analysis (s-curve / α) --------------------------------------------------------------------
def norms_section(data: dict, prefix: str = "") -> list[str]:
    """Markdown for one `scurve` result; `prefix` is the figure path relative to the report."""
    if data["kind"] == "scurve":
        out = [f"{data['norm']} run `{data['name']}` at step {data['step']}, {data['batch']}. "
               f"Fit: {data['fit_method']}. α·max|x| ≳ 1 means the fitted tanh bends inside the range of the "
               "inputs (saturation); well below 1 the site works in tanh's linear part.", "",
               table(["site", "α", "s", "R² tanh fit", "R² line", "input std", "max |x|", "α·max|x|"],
                     [[r["site"], num(r["alpha"], 3), num(r["scale"], 3), num(r["r2_tanh"]),
                       num(r["r2_linear"]), num(r["x_std"], 3), num(r["x_absmax"], 2),
                       num(r["alpha_x_absmax"], 2)] for r in data["sites"]])]
    elif data["kind"] == "alpha":
        emb = data.get("embedding_scale")
        emb_text = f"; embedding scalar {num(emb['init'], 2)} → {num(emb['final'], 2)}" if emb else ""
        out = [f"{data['norm']} run `{data['name']}`: α per site over training (TensorBoard "
               f"`norm_alpha/...`; step 0, where shown, is the recipe's α₀){emb_text}.", "",
               table(["site", "α₀ (recipe)", "final α", "min", "max"],
                     [[r["site"], num(r["alpha_init"], 3), num(r["alpha_final"], 3), num(r["alpha_min"], 3),
                       num(r["alpha_max"], 3)] for r in data["sites"]])]
    else:
        out = [f"{data['norm']} run `{data['name']}`: **not analysed**: {data['reason']}."]
    return out + [""] + [f"![{f}]({prefix}{f})" for f in data["figures"]]


def render_norms(data: dict) -> str:
    title = {"scurve": "S-curves", "alpha": "α over training", "none": "Norm analysis"}[data["kind"]]
    return "\n".join([f"# {title}: {data['name']}", "", *norms_section(data), "",
                      f"Command: `{data['command']}`", ""])


# -- compare ----------------------------------------------------------------------------------------------
def compare_setup(data: dict) -> dict:
    cfg = data["runs"][0]["config"]
    m, t = cfg["model"], cfg["train"]
    return {"layers": m["num_layers"], "hidden": m["hidden_size"], "steps": t["steps"],
            "tokens_per_run": t["steps"] * t["global_batch_size"] * m["seq_length"],
            "global_batch": t["global_batch_size"], "seq_length": m["seq_length"],
            "precision": t["precision"], "params": data["params"]}


def _outcome(label: str, base: str, d: dict) -> str:
    if d["ci_low"] is None:
        return "one seed, so no interval"
    if d["excludes_zero"]:
        direction = "worse" if d["mean"] > 0 else "better"
        return f"the interval excludes 0: `{label}` is {direction} than `{base}` here"
    return "the interval includes 0: no difference is resolved at this budget"


UNIGRAM_MARGIN = 0.05  # nats: a final val loss not this far below the unigram reference used no context


def _unigram_note(data: dict) -> str:
    ref = data["unigram_reference"]
    if not ref:
        return ""
    stuck = [label for label, s in data["summary"].items()
             if "final_val" in s and s["final_val"]["mean"] > ref["valid_cross_entropy"] - UNIGRAM_MARGIN]
    if not stuck:
        return ""
    names = ", ".join(f"`{label}`" for label in stuck)
    return (f" {names} {'ends' if len(stuck) == 1 else 'end'} less than {UNIGRAM_MARGIN} nats below the "
            f"unigram reference ({num(ref['valid_cross_entropy'], 3)} nats: token frequencies, no context), "
            "i.e. learned (almost) no use of context in this budget.")


def _unigram_text(data: dict) -> str:
    ref = data["unigram_reference"]
    if not ref:
        return ""
    return (f" Reference without context: a unigram model of the training tokens scores "
            f"{num(ref['valid_cross_entropy'])} on the validation split (training-token entropy "
            f"{num(ref['train_entropy'])}); dashed in the plots.")


def _alpha_text(recipe: dict) -> str:
    a = recipe["alpha_init"]
    return "—" if a is None else " / ".join(num(a[k], 3) for k in ("attention", "mlp", "final"))


def _change(d: dict) -> str:
    return f"`{d['key']}` `{json.dumps(d['baseline'])}` → `{json.dumps(d['value'])}`"


def confounds(data: dict) -> list[str]:
    """Differences between the arms beyond the norm and its recipe, and a weight-decay policy that differs."""
    base = data["compare_config"]["baseline"]
    base_decay = data["arms"][base]["recipe"]["weight_decay_on"]
    out = []
    for label, a in data["arms"].items():
        if a["other_differences"]:
            keys = ", ".join(f"`{d['key']}`" for d in a["other_differences"])
            out.append(f"`{label}` differs from `{base}` beyond the norm recipe: {keys}")
        if a["recipe"]["weight_decay_on"] != base_decay:
            out.append(f"weight decay applies to {a['recipe']['weight_decay_on']} in `{label}` but to {base_decay} "
                       f"in `{base}` (set `model.norm.weight_decay=paper` in both for the paper's policy)")
    return out


def arms_section(data: dict) -> list[str]:
    base = data["compare_config"]["baseline"]
    rows = [[label, "; ".join(_change(d) for d in a["recipe_differences"]) or "—",
             "; ".join(_change(d) for d in a["other_differences"]) or "none"]
            for label, a in data["arms"].items() if label != base]
    found = confounds(data)
    verdict = ("**Only the norm and its recipe differ between the arms.**" if not found else
               "**Confounds:** " + "; ".join(found) + ".")
    return [f"Every resolved config key that differs from the baseline `{base}`'s (same seed; run name excluded):",
            "", table(["variant", "norm recipe keys", "any other key"], rows), "", verdict]


def diagnostics_section(data: dict) -> list[str]:
    d = data["diagnostics"]
    t = d["threshold"]
    rows = []
    for label, e in d["variants"].items():
        blocks = e["block_input_rms"]
        top = max(blocks, key=lambda s: blocks[s]) if blocks else None
        sat, tanh = e.get("saturation", {}), e.get("tanh_abs_mean", {})
        rows.append([label, e["step"], num(e["final_input_rms"], 3),
                     f"{num(blocks[top], 3)} ({top.split('/')[1]})" if top else "—",
                     *[num(sat.get(k), 3) for k in ("attention", "mlp", "final")], num(tanh.get("final"), 3)])
    return [f"Sampled during training (`logging.diagnostics`: a few hundred token rows per norm site on sampled "
            f"steps), values at the last sample, mean over seeds. The attention site's input is the residual "
            f"stream entering its block (every norm type). Saturated: |α·x| > {t:g}, where tanh ≥ "
            f"{math.tanh(t):.3f} passes almost no signal or gradient.", "",
            table(["variant", "step", "final-norm input RMS", "largest block-input RMS (layer)",
                   *[f"{kind}: α·x beyond ±{t:g}" for kind in ("attention", "MLP", "final")],
                   "final: mean of abs tanh(α·x)"], rows), "",
            "![residual stream and saturation](diagnostics.png)"]


def compare_verdict(data: dict) -> str:
    cc, s = data["compare_config"], compare_setup(data)
    base = cc["baseline"]
    metric = "final_val" if any("final_val" in d for d in data["differences"].values()) else "final_train"
    parts = [f"`{label}` − `{base}` = {num(d['mean'], signed=True)} nats ({int(100 * d['confidence'])}% CI "
             f"{_ci(d)}, {d['n']} seeds; {_outcome(label, base, d)})"
             for label, diffs in data["differences"].items() if (d := diffs.get(metric))]
    device = data["environment"]["cuda"] or "CPU"
    return (
        f"**Measured:** {METRIC_NAMES[metric]} of ≈{s['params'] / 1e6:.2f}M-parameter LLaMA-style models "
        f"({s['layers']} layers, width {s['hidden']}) trained for {s['steps']} steps of {s['global_batch']}×"
        f"{s['seq_length']} tokens = {s['tokens_per_run']:,} tokens per run (≈"
        f"{s['tokens_per_run'] / s['params']:.2f} tokens per parameter), {s['precision']}, on {device}, "
        "identical batches per seed; " + "; ".join(parts) + "." + _unigram_note(data) + " "
        + "".join(f"**Confound:** {c}. " for c in confounds(data)) + _not_shown(s)
    )


PAPER_SCALE_PARAMS = 5e9  # the paper's smallest LLM (LLaMA 7B: 6.7B weights); below it, "tiny" caveats apply


def _not_shown(s: dict) -> str:
    common = ("one data set, one learning rate and one α₀ recipe per variant; no downstream evaluation; and "
              "nothing about speed (throughput in training logs is not a benchmark: see `make bench-model`).")
    if s["params"] >= PAPER_SCALE_PARAMS:
        return f"**Not shown:** other model sizes than this one; {common}"
    return ("**Not shown:** anything about the paper's regime (LLaMA 7B–70B on 200B tokens, where it reports "
            "equal loss): these models are small and trained far below compute-optimal, so the numbers mostly "
            f"reflect how fast each variant descends early in training; {common}")


def render_compare(data: dict) -> str:
    cc = data["compare_config"]
    labels = [v["label"] for v in cc["variants"]]
    s = compare_setup(data)
    metrics = [m for m in METRIC_NAMES if any(m in data["summary"][label] for label in labels)]
    recipe = {label: a["recipe"] for label, a in data["arms"].items()}
    setup_rows = [[v["label"], v["config"], recipe[v["label"]]["norm"], _alpha_text(recipe[v["label"]]),
                   num(recipe[v["label"]]["embedding_scale_init"], 2),
                   f"{recipe[v['label']]['weight_decay_on']} (`{recipe[v['label']]['weight_decay_policy']}`)",
                   " ".join(v["overrides"]) or "—"] for v in cc["variants"]]
    summary_rows = [[label, *[_mean_std(data["summary"][label].get(m)) for m in metrics]] for label in labels]
    diff_rows = [[label, METRIC_NAMES[m], num(d["mean"], signed=True), num(d["std"]), _ci(d), d["n"],
                  "—" if d["excludes_zero"] is None else ("yes" if d["excludes_zero"] else "no")]
                 for label, diffs in data["differences"].items() for m, d in diffs.items()]
    run_rows = [[r["name"], r["label"], r["seed"], *[num(r["metrics"][m]) for m in metrics],
                 "reused" if r["reused"] else f"{r['launch_seconds']:.0f} s"] for r in data["runs"]]
    out = [
        f"# Norm comparison: {cc['name']}", "", _provenance(data), "",
        "## Verdict", "", compare_verdict(data), "",
        "## Setup", "", table(["variant", "run config", "norm", "α₀ attention / MLP / final", "embedding scalar",
                               "weight decay on", "extra overrides"], setup_rows), "",
        f"Seeds {cc['seeds']}, paired: with the same seed every variant reads the same batches in the same "
        f"order. {s['steps']} steps × {s['global_batch']} sequences × {s['seq_length']} tokens. "
        f"Common overrides: `{' '.join(cc['overrides']) or '—'}`. Parameters (embeddings + linear "
        f"layers): {s['params']:,}. Runs: `{cc['output_dir']}/{cc['name']}/runs/`.", "",
        "## Loss per variant (mean ± sample std over seeds)", "",
        table(["variant", *[METRIC_NAMES[m] for m in metrics]], summary_rows), "",
        "Train loss points are TensorBoard `train/loss`: means over each `train.log_interval` window; "
        "\"final\" is the last point, \"best\" the minimum. Validation loss is the mean over the same "
        "`train.eval_iters` batches of the validation split at each evaluation." + _unigram_text(data), "",
        "## What differs between the arms", "", *arms_section(data), "",
        f"## Difference to the baseline `{cc['baseline']}` (paired by seed)", "",
        table(["variant", "metric", "mean Δ", "std of Δ", "95% CI", "n", "CI excludes 0"], diff_rows), "",
        "Method: Δ_i = variant − baseline for seed i; interval mean(Δ) ± t(0.975, n−1)·sd(Δ)/√n (Student t; "
        "assumes independent, normal Δ_i). Negative Δ = lower loss than the baseline.", "",
        "## Loss curves", "", "![loss curves](loss_curves.png)", "",
        "![difference to baseline](loss_diff.png)", "",
        "## Per run", "",
        table(["run", "variant", "seed", *[METRIC_NAMES[m] for m in metrics], "trained here"], run_rows), ""]
    if data["diagnostics"]["variants"]:
        out += ["## Residual stream and DyT saturation", "", *diagnostics_section(data), ""]
    out += ["## Norm layers (first seed of each variant)", ""]
    for label, n in data["norms"].items():
        out += [f"### {label}", "", *norms_section(n, prefix=f"{n['dir']}/"), ""]
    out += ["Every number above, every run's resolved config and launch command: `results.json`.", ""]
    return "\n".join(out)


# -- bench ------------------------------------------------------------------------------------------------
def _fastest(rows: list[dict], norm: str) -> dict | None:
    rows = [r for r in rows if r["norm"] == norm]
    return min(rows, key=lambda r: r["median_ms"]) if rows else None


def _row(rows: list[dict], label: str) -> dict | None:
    return next((r for r in rows if r["label"] == label), None)


def _ratio(a: dict, b: dict, digits: int = 2) -> str:
    return f"{num(a['median_ms'] / b['median_ms'], digits)}×"


def _against(rows: list[dict], base: dict) -> str:
    """"`a[x]` 1.23×, `b[y]` 0.98×": the fastest row of each other norm relative to `base`."""
    fastest = [_fastest(rows, n) for n in dict.fromkeys(r["norm"] for r in rows if r["norm"] != base["norm"])]
    return ", ".join(f"`{f['label']}` {_ratio(f, base)}" for f in fastest)


def bench_verdict(data: dict) -> str:
    layer = data["layer"]
    base_norm = next((r["norm"] for r in layer["forward"] if r["label"] == layer["baseline"]), None)
    found = []
    for passname, rows in (("forward", layer["forward"]), ("forward+backward", layer["forward_backward"])):
        base = _fastest(rows, base_norm)
        if base and len({r["norm"] for r in rows}) > 1:
            found.append(f"layer {passname}, the fastest of each norm against the fastest {base_norm} "
                         f"(`{base['label']}`, {num(base['median_ms'], 3)} ms): {_against(rows, base)}")
        unfused = _row(rows, f"{base_norm}[eager]")
        eager = [r for r in rows if r["impl"] == "eager" and r["norm"] != base_norm]
        if unfused and eager:
            found.append(f"unfused against unfused as in the paper's Table 7 ({passname}), against "
                         f"`{unfused['label']}`: " + ", ".join(f"`{r['label']}` {_ratio(r, unfused)}"
                                                            for r in eager))
    if "model" in data:
        for passname, key in (("inference forward", "forward"), ("training step", "train_step")):
            rows = data["model"][key]
            base = _row(rows, data["model"]["baseline"])
            if base and len({r["norm"] for r in rows}) > 1:
                found.append(f"whole-model {passname} against the `{base['label']}` model: "
                             f"{_against(rows, base)}")
    cpu_note = ("**This is a CPU measurement:** it says nothing about GPU kernels, where the question (fused "
                "DyT vs fused RMSNorm, and Transformer Engine's norm+GEMM fusion) is decided; at these tiny "
                "shapes CPU time is dominated by per-op overhead and the shared machine's noise (see the "
                "p25–p75 spread). ") if data["device"] == "cpu" else ""
    return (f"**Measured on {data['device_description']}** ({data['dtype']}, layer input "
            f"{'×'.join(map(str, layer['shape']))}): " + "; ".join(found) + ". " + cpu_note
            + "**Not shown:** other shapes and dtypes than this config's, multi-GPU communication, and loss "
              "(see `make compare`). For reference, the paper's 52.4% / 42.2% layer-time reductions (LLaMA "
              "7B, GPU, no torch.compile) were measured against an unfused eager RMSNorm.")


def _layer_table(rows: list[dict], cuda: bool) -> str:
    headers = ["implementation", "what", "median ms", "p25–p75 ms", "× baseline"] + (["peak MB"] * cuda)
    return table(headers, [[f"`{r['label']}`", r["description"], num(r["median_ms"], 4),
                            f"{num(r['p25_ms'], 4)}–{num(r['p75_ms'], 4)}", num(r["ratio_to_baseline"], 3)]
                           + ([num(r["peak_mem_mb"], 1)] * cuda) for r in rows])


def _model_table(rows: list[dict], cuda: bool) -> str:
    headers = ["model", "norm kernel", "median ms", "p25–p75 ms", "tokens/s", "× baseline"]
    headers += ["static MB", "peak above static MB"] if cuda else []
    return table(headers, [[f"`{r['label']}`", r["description"], num(r["median_ms"], 1),
                            f"{num(r['p25_ms'], 1)}–{num(r['p75_ms'], 1)}", f"{r['tokens_per_s']:,.0f}",
                            num(r["ratio_to_baseline"], 3)]
                           + ([num(r["static_mem_mb"], 1), num(r["peak_mem_mb"], 1)] if cuda else [])
                           for r in rows])


def render_bench(data: dict) -> str:
    cuda = data["device"] == "cuda"
    layer, settings = data["layer"], data["settings"]
    memory = ("Peak memory: CUDA allocator peak above the memory allocated before the call." if cuda else
              "Peak memory is not reported on CPU (no allocator peak counter to read per call).")
    load = data["load_average_1min"]
    busy = max(load["before"], load["after"]) > load["cpus"]
    load_text = (f"Machine load (1-min average) {load['before']:.1f} before and {load['after']:.1f} after, "
                 f"on {load['cpus']} CPUs" + (": above the CPU count, other work competed with these timings."
                                              if busy else "."))
    out = [f"# Wall-clock: {data['config']} on {data['device'].upper()}", "", _provenance(data),
           f"{data['device_description']}.", "", "## Verdict", "", bench_verdict(data), "", "## Method", "",
           f"{data['method']} Repetitions: {settings['reps']} per layer case, {settings['model_reps']} per "
           f"model case; each repetition ≥ {settings['min_rep_s']} s. {memory} {load_text}", "",
           f"## Norm layers alone (x: {'×'.join(map(str, layer['shape']))} = seq × micro-batch × hidden, "
           f"{data['dtype']}; baseline `{layer['baseline']}`)", "",
           "### Forward (no grad)", "", _layer_table(layer["forward"], cuda), "",
           "### Forward + backward (grads of x and all parameters)", "",
           _layer_table(layer["forward_backward"], cuda), ""]
    if layer["skipped"]:
        skipped = ", ".join(f"`{s['label']}` ({s['reason']})" for s in layer["skipped"])
        out += [f"Not run here: {skipped}.", ""]
    if "model" in data:
        m = data["model"]
        out += [f"## Whole model (one global batch: {m['global_batch_size']} sequences in micro-batches of "
                f"{m['micro_batch_size']}, {m['tokens_per_call']:,} random tokens; "
                f"baseline `{m['baseline']}`)",
                "", "LayerNorm/RMSNorm are built as in training (fused into the next linear when Transformer "
                "Engine is installed on GPU).", "",
                "### Inference forward (loss, no grad)", "", _model_table(m["forward"], cuda), "",
                "### Training step (forward + backward + clip + optimizer)", "",
                _model_table(m["train_step"], cuda), ""]
    out += [f"![bench]({data['figures'][0]})", "", "Raw samples per repetition: `results.json`.", ""]
    return "\n".join(out)
