"""Numbers and tables of `gpu_e2e.py`: step-time statistics, throughput, MFU, ratios, Markdown.

Raw measurements stay in the result (per variant: step seconds per interleaved round); everything here is
derived from them, so a partial result summarises exactly like a complete one.
"""

from __future__ import annotations

import statistics

from e2e_profile import CATEGORIES


def quartiles(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def summarize(row: dict, tokens: int, flops_per_step: float, peak_tflops: float | None,
              gemm_tflops: float | None) -> dict | None:
    """Statistics of one variant's timed steps (None when it has none)."""
    samples = [s for rnd in row.get("rounds", []) for s in rnd]
    if not samples:
        return None
    med = statistics.median(samples)
    p25, p75 = quartiles(samples)
    tflops = flops_per_step / med / 1e12
    return {"steps": len(samples), "median_ms": 1e3 * med, "p25_ms": 1e3 * p25, "p75_ms": 1e3 * p75,
            "min_ms": 1e3 * min(samples), "max_ms": 1e3 * max(samples), "tokens_per_s": tokens / med,
            "tflops": tflops, "mfu_peak": tflops / peak_tflops if peak_tflops else None,
            "mfu_gemm": tflops / gemm_tflops if gemm_tflops else None}


def speed_ratio(row: dict, base: dict) -> dict:
    """Throughput of `row` ÷ throughput of `base` (> 1: faster): the ratio of medians, and its min..max
    over the interleaved rounds both ran (each round's ratio of medians)."""
    overall = statistics.median(s for r in base["rounds"] for s in r) / statistics.median(
        s for r in row["rounds"] for s in r)
    per_round = [statistics.median(b) / statistics.median(r) for b, r in zip(base["rounds"], row["rounds"],
                                                                           strict=False) if b and r]
    return {"ratio": overall, "round_min": min(per_round, default=None), "round_max": max(per_round, default=None)}


def add_derived(shape: dict, baselines: tuple[str, ...], peak_tflops: float | None,
                gemm_tflops: float | None) -> None:
    """Fill every row's `summary` and ratios against the first baseline and against the faster baseline."""
    rows = shape["variants"]
    for row in rows.values():
        row["summary"] = summarize(row, shape["tokens_per_step"], shape["flops_per_step"], peak_tflops, gemm_tflops)
    timed = {k: r for k, r in rows.items() if r["summary"]}
    present = [b for b in baselines if b in timed]
    best = min(present, key=lambda b: timed[b]["summary"]["median_ms"], default=None)
    for row in timed.values():
        row["vs_baseline"] = speed_ratio(row, timed[baselines[0]]) if baselines[0] in timed else None
        row["vs_best_baseline"] = {**speed_ratio(row, timed[best]), "baseline": best} if best else None


def _f(v: float | None, spec: str, scale: float = 1.0) -> str:
    return "n/a" if v is None else format(v * scale, spec)


def _ratio(r: dict | None) -> str:
    if not r:
        return "n/a"
    spread = f" ({r['round_min']:.3f}–{r['round_max']:.3f})" if r["round_min"] is not None else ""
    return f"{r['ratio']:.3f}×{spread}"


def shape_table(name: str, shape: dict, baselines: tuple[str, ...]) -> list[str]:
    lines = [f"### {name}: {shape['description']}", "",
             f"{shape['tokens_per_step']} tokens/step, {shape['flops_per_step'] / 1e12:.2f} TFLOP/step (model FLOPs)",
             "", f"| variant | steps | step ms: median (p25–p75) | tokens/s | TFLOP/s | MFU (peak) | MFU (GEMM) "
             f"| step peak GB | × {baselines[0]} (rounds min–max) | × best RMSNorm |", "|" + "---|" * 10]
    for label, row in shape["variants"].items():
        s = row["summary"]
        if s is None:
            lines.append(f"| {label} | 0 | {row['status']} |||||||")
            continue
        lines.append(
            f"| {label} | {s['steps']} | {s['median_ms']:.2f} ({s['p25_ms']:.2f}–{s['p75_ms']:.2f}) | "
            f"{s['tokens_per_s']:,.0f} | {s['tflops']:.1f} | {_f(s['mfu_peak'], '.1%')} | {_f(s['mfu_gemm'], '.1%')} | "
            f"{_f(row.get('step_peak_gb'), '.1f')} | {_ratio(row.get('vs_baseline'))} | "
            f"{_ratio(row.get('vs_best_baseline'))} |")
    return lines


def profile_table(shape: dict) -> list[str]:
    rows = {k: r["profile"] for k, r in shape["variants"].items() if r.get("profile")}
    if not rows:
        return []
    timer = next(iter(rows.values()))["timer"]
    lines = ["", f"Per step, ms of {timer} (torch profiler; classification in benchmarks/e2e_profile.py):", "",
             "| variant | " + " | ".join(CATEGORIES) + " | total | norm share |", "|" + "---|" * (len(CATEGORIES) + 3)]
    for label, p in rows.items():
        ms, total = p["ms_per_step"], p["total_ms_per_step"]
        cells = " | ".join(f"{ms[c]:.2f}" for c in CATEGORIES)
        lines.append(f"| {label} | {cells} | {total:.2f} | {_f(ms['norm'] / total if total else None, '.1%')} |")
    return lines


def gate_table(gate: dict) -> list[str]:
    lines = ["| check | cases | worst error / tolerance | result |", "|---|---|---|---|"]
    for op, r in gate["kernels"].items():
        lines.append(f"| Triton `{op}` vs fp64 reference | {r['cases']} | {r['worst']} | "
                     f"{'PASS' if r['ok'] else 'FAIL: no speed reported'} |")
    for key, r in gate["model"].items():
        lines.append(f"| {key}: weight gradients vs {r['against']} | 1 | relative L2 {r['rel_error']:.2e} at "
                     f"{r['where']} (≤ {r['tol']:g}) | {'PASS' if r['ok'] else 'FAIL: no speed reported'} |")
    return lines


def status(result: dict) -> str:
    return "incomplete (errors)" if result["errors"] else "complete"


def markdown(result: dict, baselines: tuple[str, ...]) -> str:
    state = f"**PARTIAL: {result['partial_reason']}**" if result["partial"] else status(result)
    lines = [f"# End-to-end training step, DyT vs RMSNorm: {result['device']['name']}", "",
             f"Command: `{result['command']}`  ", f"Date: {result['date']}; {result['seconds']:.0f} s; {state}  ",
             f"Versions: {result['versions']}  ", f"Device: {result['device']}  ",
             f"Dense bf16 peak: {_f(result['peak_tflops'], '.0f')} TFLOP/s (datasheet); measured bf16 GEMM "
             f"({result['gemm']['n']}³): {_f(result['gemm']['tflops'], '.1f')} TFLOP/s",
             "", "## Method", "", result["method"], "", "## Correctness gate (before any timing)", "",
             *gate_table(result["gate"]), "", "## Results"]
    for name, shape in result["shapes"].items():
        lines += ["", *shape_table(name, shape, baselines), *profile_table(shape)]
    for name, reason in result["skipped_shapes"].items():
        lines += ["", f"### {name}: not run ({reason})"]
    if result["errors"]:
        lines += ["", "## Errors", "", *(f"```\n{e}\n```" for e in result["errors"])]
    return "\n".join(lines) + "\n"


def compact(result: dict, baselines: tuple[str, ...]) -> str:
    """The few lines printed last: throughput ratio and MFU per shape and variant."""
    head = f"{'shape':5s} {'variant':17s} {'tokens/s':>10s} {'MFU(peak)':>9s} {'MFU(GEMM)':>9s} " \
           f"{'× ' + baselines[0]:>18s} {'× best RMSNorm':>15s}"
    lines = [head]
    for name, shape in result["shapes"].items():
        for label, row in shape["variants"].items():
            s = row["summary"]
            if s is None:
                lines.append(f"{name:5s} {label:17s} {row['status']}")
                continue
            vb, vbest = row.get("vs_baseline"), row.get("vs_best_baseline")
            lines.append(f"{name:5s} {label:17s} {s['tokens_per_s']:10,.0f} {_f(s['mfu_peak'], '.1%'):>9s} "
                         f"{_f(s['mfu_gemm'], '.1%'):>9s} {_f(vb and vb['ratio'], '.3f') + '×':>18s} "
                         f"{_f(vbest and vbest['ratio'], '.3f') + '×':>15s}")
    state = f"PARTIAL ({result['partial_reason']})" if result["partial"] else status(result)
    gate = {True: "PASS", False: "FAIL", None: "not run"}[result["gate"]["ok"]]
    errors = f"; {len(result['errors'])} error(s), see the .md" if result["errors"] else ""
    return "\n".join([*lines, f"result: {state}; correctness gate: {gate}{errors}"])
