"""One-command GPU check of the DyT kernels (< 8 min on one H200, no network).

1. the kernel tests (tests/kernels) on the GPU;
2. correctness at LLaMA shapes against the fp64 reference (pipeline/kernels/checks.py);
3. bitwise determinism of the backward at 8192x4096 bf16;
4. a small launch-config sweep at 8192x4096 bf16 (informational: is the heuristic near the best?);
5. the benchmark (benchmarks/bench_kernels.py) at its GPU default shapes;
then a compact summary with the issue's targets, printed last. Results go to
benchmarks/results/kernels/{gpu_check,bench}_<gpu>.{json,md}.

    python benchmarks/gpu_check.py
    python benchmarks/gpu_check.py --dry-run   # no GPU: CPU + TRITON_INTERPRET=1, tiny shapes, to test
                                               # the script itself (writes to /tmp, not results/)
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

if "--dry-run" in sys.argv:  # before pipeline.kernels.dyt_triton defines its kernels
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_kernels  # noqa: E402

from pipeline.kernels import checks, dyt_triton  # noqa: E402

C = 8  # fp32 ulps of each error scale, as in tests/kernels
TARGET = (8192, 4096)  # the target shape (tokens x hidden), bf16


def step(title: str) -> float:
    print(f"\n=== {title}", flush=True)
    return time.perf_counter()


def run_tests(dry: bool) -> dict:
    if dry:
        return {"skipped": "dry run (the CPU suite is `make test`)"}
    cmd = [sys.executable, "-m", "pytest", "tests/kernels", "-q", "-p", "no:cacheprovider"]
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        return {"passed": False, "tail": "timed out after 240 s"}
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:]
    print("\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:]))
    return {"passed": proc.returncode == 0, "tail": tail[0] if tail else ""}


def correctness(device: torch.device, dry: bool, shapes: list[tuple[int, ...]] | None = None,
                dtypes: list[torch.dtype] | None = None) -> list[dict]:
    """Every op's outputs and gradients against the fp64 reference (gpu_e2e.py passes its model shapes)."""
    shapes = shapes or ([(3, 7, 100), (64, 257)] if dry else [TARGET, (333, 5120), (2, 2048, 8192)])
    dtypes = dtypes or ([torch.bfloat16] if dry else [torch.bfloat16, torch.float16, torch.float32])
    rows = []
    for op, dtype, shape in itertools.product(checks.OPS, dtypes, shapes):
        inp = checks.make_inputs(op, shape, dtype, device=device, seed=len(rows))
        ratios = checks.compare(op, inp, checks.run(op, inp, "triton"), C)
        worst = max(ratios, key=ratios.get)
        rows.append({"op": op, "dtype": str(dtype)[6:], "shape": list(shape), "worst": worst,
                     "ratio": ratios[worst], "ok": ratios[worst] <= 1.0})  # fmt: skip
        print(f"  {op:8s} {rows[-1]['dtype']:9s} {str(shape):18s} worst {worst:9s} {ratios[worst]:.3f}")
    return rows


def determinism(device: torch.device, dry: bool) -> dict:
    shape = (64, 257) if dry else TARGET
    same = {}
    for op in checks.OPS:
        inp = checks.make_inputs(op, shape, torch.bfloat16, device=device)
        a, b = checks.run(op, inp, "triton"), checks.run(op, inp, "triton")
        same[op] = all(torch.equal(a[k], b[k]) for k in a)
    print(f"  bitwise equal on rerun: {same}")
    return same


def sweep(device: torch.device, dry: bool) -> dict:
    """Time DyT forward / backward launch configs at the target shape, against the heuristic's."""
    m, n = (64, 257) if dry else TARGET
    x = torch.randn(m, n, device=device).to(torch.bfloat16)
    dy, a, w = torch.randn_like(x), torch.full((1,), 0.5, device=device), torch.ones(n, device=device)
    grid = itertools.product((1, 2, 4, 8), (1024, 2048, 4096), (4, 8))
    fwd = [dyt_triton.FwdConfig(bm, bn, nw) for bm, bn, nw in grid if bm * bn <= 16384]
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 2
    bwd = []  # rows per program from programs-per-SM, as bwd_config does (a runtime arg: no recompiles)
    for bm, bn, nw, per_sm in itertools.product((4, 8, 16), (256, 512, 1024), (4, 8), (2, 4, 8)):
        if bm * bn <= 8192:
            grid_m = max(1, min(math.ceil(per_sm * sms / math.ceil(n / bn)), math.ceil(m / bm)))
            bwd.append(dyt_triton.BwdConfig(bm, bn, math.ceil(math.ceil(m / grid_m) / bm) * bm, nw))
    if dry:
        fwd, bwd = fwd[:2], bwd[:2]

    def f(cfg: dyt_triton.FwdConfig) -> object:
        return dyt_triton.forward(x, None, a, None, w, None, dyt_triton.TANH, cfg)

    def b(cfg: dyt_triton.BwdConfig) -> object:
        return dyt_triton.backward(x, dy, None, a, None, w, None, dyt_triton.TANH, cfg)

    f_default, b_default = dyt_triton.fwd_config(m, n), dyt_triton.bwd_config(m, n, device)
    f_ms = {c: bench_kernels.timeit(lambda _, c=c: f(c), device) for c in [f_default, *fwd]}
    b_ms = {c: bench_kernels.timeit(lambda _, c=c: b(c), device) for c in [b_default, *bwd]}
    out = {}
    for name, ms, default in (("forward", f_ms, f_default), ("backward", b_ms, b_default)):
        best = sorted(ms, key=ms.get)[:3]
        out[name] = {
            "default": f"{default} {ms[default]:.4f} ms",
            "best": [f"{c} {ms[c]:.4f} ms" for c in best],
        }
        print(f"  {name}: default {out[name]['default']}; best {out[name]['best'][0]}")
    return out


def targets(bench: dict, shape: tuple[int, int]) -> dict:
    """The issue's targets (stated at 8192x4096) for bf16 forward+backward, from the benchmark rows."""
    rows = {
        (r["op"], r["provider"]): r
        for r in bench["rows"]
        if (r["m"], r["n"]) == shape and r["dtype"] == "bfloat16" and not r["error"]
    }
    ours, liger = rows.get(("dyt", "ours")), rows.get(("dyt", "liger"))
    norms = [r for (op, _), r in rows.items() if op == "rmsnorm" and r["provider"] != "eager"]
    fastest = min(norms, key=lambda r: r["fwdbwd_ms"]) if norms else None
    fused, unfused = rows.get(("add_dyt", "ours")), rows.get(("add_dyt", "ours_unfused"))
    if ours is None:
        return {"error": f"no 'ours' dyt row at {shape} bf16"}
    na = "n/a (provider missing or failed, see the benchmark table)"

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    t = {
        "ours fwd+bwd": f"{ours['fwdbwd_ms']:.4f} ms, {ours['fwdbwd_gbs']:.0f} GB/s",
        ">= 90% of copy bandwidth": f"{ours['pct_copy']:.0f}% -> {verdict(ours['pct_copy'] >= 90)}",
        ">= 3x Liger DyT": na,
        "<= fastest fused RMSNorm": na,
        "saved activation MB <= Liger": na,
        "add+DyT fused vs unfused": na,
    }
    if liger:
        speedup = liger["fwdbwd_ms"] / ours["fwdbwd_ms"]
        t[">= 3x Liger DyT"] = f"{speedup:.2f}x -> {verdict(speedup >= 3)}"
        saved = (ours["saved_mb"], liger["saved_mb"])
        t["saved activation MB <= Liger"] = (
            f"{saved[0]:.0f} vs {saved[1]:.0f} -> {verdict(saved[0] <= saved[1])}"
        )
    if fastest:
        ok = ours["fwdbwd_ms"] <= fastest["fwdbwd_ms"]
        t["<= fastest fused RMSNorm"] = (
            f"{fastest['provider']} {fastest['fwdbwd_ms']:.4f} ms -> {verdict(ok)}"
        )
    if fused and unfused:
        t["add+DyT fused vs unfused"] = f"{fused['fwdbwd_ms']:.4f} vs {unfused['fwdbwd_ms']:.4f} ms"
    return t


def slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="CPU + interpreter, tiny shapes (tests the script)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    if not a.dry_run and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device (use --dry-run to exercise the script on CPU)")
    device = torch.device("cpu" if a.dry_run else "cuda")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "dry-run-cpu"
    out = a.out or (Path("/tmp/gpu_check_dry") if a.dry_run else bench_kernels.RESULTS)
    t0 = time.perf_counter()
    report: dict = {"gpu": gpu, "versions": {"torch": torch.__version__, **bench_kernels._versions()}}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        report["sm_count"], report["capability"] = props.multi_processor_count, f"{props.major}.{props.minor}"
    print(f"gpu_check on {gpu}: {report}")
    timings = {}
    checks_to_run = {
        "tests": lambda: run_tests(a.dry_run),
        "correctness": lambda: correctness(device, a.dry_run),
        "determinism": lambda: determinism(device, a.dry_run),
        "sweep": lambda: sweep(device, a.dry_run),
    }
    for name, fn in checks_to_run.items():
        start = step(name)
        report[name] = fn()
        timings[name] = round(time.perf_counter() - start, 1)
    start = step("benchmark")
    bench_args = ["--out", str(out), "--tag", slug(gpu)]
    if time.perf_counter() - t0 > 300:  # slow compiles so far: keep the whole check under 8 minutes
        bench_args += ["--shapes", f"{TARGET[0]}x{TARGET[1]}"]
    if a.dry_run:
        bench_args += [
            "--device",
            "cpu",
            "--shapes",
            "64x96",
            "--dtypes",
            "bf16",
            "--providers",
            "ours,eager",
        ]
    bench = bench_kernels.main(bench_args)
    timings["benchmark"] = round(time.perf_counter() - start, 1)
    report["targets"] = targets(bench, (64, 96) if a.dry_run else TARGET)
    report["seconds"] = {**timings, "total": round(time.perf_counter() - t0, 1)}
    corr_ok = all(r["ok"] for r in report["correctness"])
    det_ok = all(report["determinism"].values())
    tests_ok = report["tests"].get("passed", True)
    report["ok"] = corr_ok and det_ok and tests_ok
    worst = max(r["ratio"] for r in report["correctness"])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"gpu_check_{slug(gpu)}.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    summary = [
        f"# GPU check: {gpu}",
        "",
        f"Command: `python benchmarks/gpu_check.py{' --dry-run' if a.dry_run else ''}`; "
        f"{report['seconds']['total']:.0f} s; benchmark table: `bench_{slug(gpu)}.md`",
        "",
        "| check | result |",
        "|---|---|",
        f"| kernel tests on this device | {report['tests']} |",
        f"| fp64-reference correctness ({len(report['correctness'])} cases, C={C}) | "
        f"{'PASS' if corr_ok else 'FAIL'}, worst error/tolerance {worst:.3f} |",
        f"| bitwise-deterministic backward | {'PASS' if det_ok else 'FAIL'} {report['determinism']} |",
        f"| fwd config: default vs best | {report['sweep']['forward']['default']} vs "
        f"{report['sweep']['forward']['best'][0]} |",
        f"| bwd config: default vs best | {report['sweep']['backward']['default']} vs "
        f"{report['sweep']['backward']['best'][0]} |",
    ]
    summary += [f"| target: {k} | {v} |" for k, v in report["targets"].items()]
    (out / f"gpu_check_{slug(gpu)}.md").write_text("\n".join(summary) + "\n")
    print("\n" + "\n".join(summary))
    print(f"\nwrote {out}/gpu_check_{slug(gpu)}.{{json,md}} and bench_{slug(gpu)}.{{json,md}}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
