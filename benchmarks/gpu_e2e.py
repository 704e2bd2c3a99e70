"""End-to-end GPU evidence in one command: DyT vs RMSNorm training-step time and MFU at LLaMA-3 8B/70B layer shapes.

One GPU; the time guard keeps it under 9 minutes on one H200 with the wheel install (the GPU-window
procedure is in benchmarks/README.md).

Each variant (e2e_model.VARIANTS) is the real megatron GPTModel from pipeline.model.build_model; a step is
forward + loss, backward, grad-norm clipping and torch AdamW (fused=True).
1. correctness gate: our Triton kernels against the fp64 reference at the models' norm shapes (bf16),
   then per shape each model's weight gradients against the same model with every norm eager; a
   variant that fails is not timed;
2. the bf16 GEMM rate of this GPU (the second MFU denominator);
3. per shape: warm-up, then interleaved rounds of timed steps (CUDA events); peak memory;
4. a torch-profiler breakdown per variant (norm / GEMM / attention / optimizer / other);
5. benchmarks/results/e2e/gpu_e2e_<gpu>.{json,md}; a compact table printed last.
A global time guard (--budget-s, counted from process start) stops timing in time to write what
finished; such a result is marked partial. Exit status 0 only for a complete run whose checks passed.

    python benchmarks/gpu_e2e.py               # on the GPU (make gpu-bench)
    python benchmarks/gpu_e2e.py --dry-run     # CPU, tiny widths, TRITON_INTERPRET=1: tests this script
"""

from __future__ import annotations

import time

T0 = time.monotonic()  # the budget includes imports

import argparse  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

if "--dry-run" in sys.argv:  # before pipeline.kernels.dyt_triton defines its kernels
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

import bench_kernels  # noqa: E402
import e2e_model as em  # noqa: E402
import e2e_profile  # noqa: E402
import e2e_report  # noqa: E402
import gpu_check  # noqa: E402

from data_prep.files import atomic_write_bytes  # noqa: E402
from pipeline import runtime  # noqa: E402
from pipeline.model import ffn_hidden_size, flops_per_token  # noqa: E402
from pipeline.monitor import device_peak_tflops  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "e2e"
MODEL_RTOL = 5e-2  # weight gradients, kernels vs every norm eager: relative L2 per matrix (bf16, same weights)
METHOD = (
    "One process, one GPU. Per shape, every variant is the megatron GPTModel that pipeline.model.build_model "
    "builds from the same config (configs/model/llama3_{8b,70b}.yaml with fewer layers, vocabulary 128256, bf16, "
    "one sequence per step) with only the norm keys changed, on megatron's local modules with torch SDPA "
    "attention (pipeline/model/sdpa.py; no Transformer Engine here). The variants share their weight matrices "
    "and those matrices' AdamW state (each keeps its own norm parameters), so all stay resident and timing "
    "interleaves; a step of any variant does the work of a standalone step: forward with the loss, backward, "
    "grad-norm clipping (foreach) and torch AdamW (fused=True) on the bf16 parameters (no fp32 master copy). "
    "Warm-up steps (compiles, autotuning) are untimed; then each round times k consecutive steps of every "
    "variant, in an order rotated per round, with CUDA events around each step and no host sync inside a "
    "round. Reported: median and quartiles over all timed steps; a ratio is a variant's throughput over a "
    "baseline's (> 1: faster), the ratio of medians with its min-max over the rounds. MFU = model FLOPs "
    "(Megatron's formula, attention counted as full s x s) / step time / the denominator: the dense bf16 "
    "datasheet peak, or the bf16 GEMM rate measured in this run. Step peak GB: allocator peak during a "
    "variant's steps above what was allocated before them (activations, gradients, transients).")


class TimeUp(BaseException):
    """The hard deadline passed (raised from SIGALRM wherever the main thread was; a BaseException so that
    library code catching Exception, e.g. around compilation, cannot swallow it)."""


class Guard:
    """The global time budget. Timing stops once less than `reserve_s` is left (soft); at the deadline an
    alarm raises TimeUp (hard), and so does SIGTERM (an outer `timeout`). Either way the caller writes
    what finished."""

    def __init__(self, budget_s: float, reserve_s: float) -> None:
        self.deadline, self.reserve_s = T0 + budget_s, reserve_s

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def soft_expired(self) -> bool:
        return self.left() < self.reserve_s

    def __enter__(self) -> Guard:
        def stop(signum: int, frame: object) -> None:
            raise TimeUp("time budget reached (hard stop)" if signum == signal.SIGALRM else
                         f"stopped by {signal.Signals(signum).name}")

        self._previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGALRM, signal.SIGTERM)}
        signal.setitimer(signal.ITIMER_REAL, max(self.left(), 1e-3))
        return self

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def mark_partial(result: dict, reason: str) -> None:
    if not result["partial"]:
        result["partial"], result["partial_reason"] = True, reason


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:5.0f} s] {msg}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def versions() -> dict:
    v = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
         **bench_kernels._versions()}
    try:
        v["megatron-core"] = importlib.metadata.version("megatron-core")
    except importlib.metadata.PackageNotFoundError:
        v["megatron-core"] = "?"
    return v


def nvidia_smi() -> str | None:
    """Driver, clocks, temperature and power as nvidia-smi reads them (None where it is missing)."""
    query = "driver_version,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw,power.limit"
    try:
        proc = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return f"{query}: {proc.stdout.strip()}" if proc.returncode == 0 else None


def device_info(device: torch.device) -> dict:
    info: dict = {"name": bench_kernels.machine(device)}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                    memory_gib=round(p.total_memory / 2**30, 1), nvidia_smi_start=nvidia_smi())
    return info


def gemm_rate(device: torch.device, dry: bool) -> dict:
    """bf16 matrix product on random data (timed like the kernel benchmark: median, events, L2 flushed)."""
    n = 256 if dry else 8192
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    c = torch.empty_like(a)
    ms = bench_kernels.timeit(lambda _: torch.mm(a, b, out=c), device)
    return {"n": n, "timer": "median of bench_kernels.timeit", "tflops": 2 * n**3 / ms / 1e9}


def kernel_gate(variants: list[em.Variant], norm_shapes: list[tuple[int, ...]], device: torch.device,
                dry: bool) -> dict[str, dict]:
    """pipeline/kernels/checks.py (through gpu_check.correctness) for every Triton op the variants use,
    at the shapes the models' norms see, in bf16."""
    ops = sorted({op for v in variants for op in v.triton_ops})
    if not ops:
        return {}
    rows = gpu_check.correctness(device, dry, shapes=norm_shapes, dtypes=[torch.bfloat16])
    out = {}
    for op in ops:
        mine = [r for r in rows if r["op"] == op]
        worst = max(mine, key=lambda r: r["ratio"])
        out[op] = {"cases": len(mine), "ok": all(r["ok"] for r in mine), "rows": mine,
                   "worst": f"{worst['ratio']:.3f} ({worst['worst']}, {worst['dtype']} {tuple(worst['shape'])})"}
    return out


def time_steps(b: em.Built, batch: dict, n: int, device: torch.device) -> tuple[list[float], float]:
    """Seconds of each of n consecutive steps, and the last loss."""
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        for start, end in events:
            start.record()
            loss = em.train_step(b, batch)
            end.record()
        torch.cuda.synchronize(device)
        return [s.elapsed_time(e) / 1e3 for s, e in events], float(loss)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        loss = em.train_step(b, batch)
        out.append(time.perf_counter() - t)
    return out, float(loss)


def timed_block(b: em.Built, batch: dict, n: int, device: torch.device, row: dict) -> None:
    """One round's steps of one variant into `row`, with its memory peak (CUDA)."""
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    samples, row["last_loss"] = time_steps(b, batch, n, device)
    row["rounds"].append(samples)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        row["peak_gb"] = max(row.get("peak_gb") or 0.0, peak / 2**30)
        row["step_peak_gb"] = max(row.get("step_peak_gb") or 0.0, (peak - base) / 2**30)


_FAILED = object()


def attempt(what: str, fn: Callable[[], object], result: dict, row: dict | None = None) -> object:
    """fn(), or _FAILED after recording the exception (and, given `row`, that variant's status): one
    variant's compile error or OOM must not cost the others their numbers."""
    try:
        return fn()
    except Exception as e:
        msg = f"{type(e).__name__}: {str(e).splitlines()[0][:240] if str(e) else ''}"
        result["errors"].append(f"{what}: {msg}\n{traceback.format_exc()[-4000:]}")
        say(f"ERROR in {what}: {msg}")
        if row is not None:
            row["status"] = f"error ({what}): {msg}"
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return _FAILED


def check_gradients(b: em.Built, ref_b: em.Built | None, batch: dict, cache: dict, shape: str,
                    result: dict) -> bool:
    """b's weight gradients (identical weights, before any update) against its reference variant's (same
    norm, plain layer, eager), or against b with every norm eager when that variant is not run.
    Gradients see a wrong kernel or fusion anywhere in forward or backward; at initialisation the loss
    barely does (layer outputs are small next to the residual stream)."""
    got = em.matrix_grads(b, batch)
    if ref_b is not None:
        if ref_b.variant.label not in cache:
            cache[ref_b.variant.label] = em.matrix_grads(ref_b, batch)
        ref, against = cache[ref_b.variant.label], ref_b.variant.label
    else:
        with em.eager_norms(b):
            ref, against = em.matrix_grads(b, batch), "itself with every norm eager"
    err, where = em.grad_error(got, ref)
    ok = math.isfinite(err) and err <= MODEL_RTOL
    result["gate"]["model"][f"{shape} {b.variant.label}"] = {"against": against, "rel_error": err, "where": where,
                                                              "tol": MODEL_RTOL, "ok": ok}
    if not ok:
        result["shapes"][shape]["variants"][b.variant.label]["status"] = (
            f"refused: gradient of {where} differs from {against} by {err:.2e} (> {MODEL_RTOL})")
    return ok


def model_check(built: list[em.Built], batch: dict, shape: str, result: dict) -> list[em.Built]:
    """check_gradients for every variant that has a reference or a non-eager norm; those that pass."""
    rows = result["shapes"][shape]["variants"]
    by_label, cache, passed = {b.variant.label: b for b in built}, {}, []
    for b in built:
        ref_b = by_label.get(b.variant.reference)
        if ref_b is None and all(m.kernel == "eager" for m in em.norm_kernels(b)):
            passed.append(b)  # a reference itself: nothing to compare with
            continue
        ok = attempt(f"{shape} {b.variant.label} gradient check",
                     lambda b=b, ref_b=ref_b: check_gradients(b, ref_b, batch, cache, shape, result), result,
                     rows[b.variant.label])
        if ok is True:
            passed.append(b)
    cache.clear()
    for b in built:
        b.optimizer.zero_grad(set_to_none=True)
    return passed


def warm_up(b: em.Built, batch: dict, steps: int, device: torch.device) -> None:
    for _ in range(steps):
        em.train_step(b, batch)
    sync(device)


def run_shape(shape: str, layers: int, variants: list[em.Variant], refused: dict[str, str],
              device: torch.device, a: argparse.Namespace, guard: Guard, result: dict) -> None:
    """Build, check, warm up, time and profile one shape; `result` is filled as each part finishes."""
    cfg = em.shape_config(shape, layers, em.VARIANTS[0], device, a.dry_run)
    m = cfg.model
    tokens = cfg.train.micro_batch_size * m.seq_length
    rows = {v.label: {"description": v.description, "status": refused.get(v.label, "not run"), "rounds": []}
            for v in variants}
    result["shapes"][shape] = {
        "description": f"LLaMA-3 {shape.upper()} layer shapes{' (dry run: tiny widths)' if a.dry_run else ''}: "
                       f"width {m.hidden_size}, {m.num_attention_heads} heads, {m.num_query_groups} KV groups, "
                       f"FFN {ffn_hidden_size(cfg)}, seq {m.seq_length}, {m.num_layers} layers, vocab {m.vocab_size}",
        "layers": layers, "tokens_per_step": tokens, "flops_per_step": flops_per_token(cfg, m.vocab_size) * tokens,
        "variants": rows}
    todo = [v for v in variants if v.label not in refused]
    if not todo:
        return
    built = em.build_all(shape, layers, todo, device, a.dry_run)
    try:
        batch = em.random_batch(built[0].cfg, device)
        live = []
        for b in model_check(built, batch, shape, result):
            say(f"{shape} warm-up {b.variant.label} ({a.warmup} steps)")
            row = rows[b.variant.label]
            if attempt(f"{shape} {b.variant.label} warm-up", lambda b=b: warm_up(b, batch, a.warmup, device),
                       result, row) is not _FAILED:
                row["status"] = "warmed up"
                live.append(b)
        for r in range(a.rounds):
            for b in live[r % len(live):] + live[:r % len(live)] if live else []:
                if guard.soft_expired():
                    mark_partial(result, f"time budget: {shape} stopped in round {r + 1} of {a.rounds}")
                    return
                row = rows[b.variant.label]
                if attempt(f"{shape} {b.variant.label} timing", lambda b=b, row=row: timed_block(
                        b, batch, a.steps_per_round, device, row), result, row) is _FAILED:
                    live.remove(b)
                    continue
                row["status"] = "timed"
            say(f"{shape} round {r + 1}/{a.rounds}: " + ", ".join(
                f"{b.variant.label} {1e3 * rows[b.variant.label]['rounds'][-1][-1]:.1f} ms" for b in live))
        for b in live:
            if guard.soft_expired():
                mark_partial(result, f"time budget: {shape} profiles skipped")
                return
            say(f"{shape} profile {b.variant.label}")
            profile = attempt(f"{shape} {b.variant.label} profile", lambda b=b: e2e_profile.breakdown(
                lambda: em.train_step(b, batch), device, a.profile_steps), result)
            if profile is not _FAILED:
                rows[b.variant.label]["profile"] = profile
    finally:
        del built
        gc.collect()
        torch._dynamo.reset()  # the next shape compiles for its own static shapes, as a real run would
        if device.type == "cuda":
            torch.cuda.empty_cache()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    labels = [v.label for v in em.VARIANTS]
    p.add_argument("--dry-run", action="store_true", help="CPU + Triton interpreter, tiny widths (tests the script)")
    p.add_argument("--shapes", default=",".join(em.SHAPES), help=f"comma list of {', '.join(em.SHAPES)}")
    p.add_argument("--layers", default=",".join(f"{k}={v[1]}" for k, v in em.SHAPES.items()),
                   help="layers per shape, e.g. 8b=4,70b=2")
    p.add_argument("--variants", default=",".join(labels), help="comma list of " + ", ".join(labels))
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 5; dry run 2)")
    p.add_argument("--steps-per-round", type=int, help="timed steps per variant and round (default 4; dry run 2)")
    p.add_argument("--warmup", type=int, help="untimed steps per variant first (default 3; dry run 1)")
    p.add_argument("--profile-steps", type=int, help="profiled steps per variant (default 2; dry run 1)")
    p.add_argument("--budget-s", type=float, help="global time budget from process start (default 480; dry 900)")
    p.add_argument("--out", type=Path, help=f"output folder (default {RESULTS.relative_to(REPO)}; dry run "
                                            "/tmp/gpu_e2e_dry)")
    a = p.parse_args(argv)
    dry = a.dry_run
    defaults = {"rounds": (5, 2), "steps_per_round": (4, 2), "warmup": (3, 1), "profile_steps": (2, 1),
                "budget_s": (480.0, 900.0), "out": (RESULTS, Path("/tmp/gpu_e2e_dry"))}
    for key, (gpu, cpu) in defaults.items():
        if getattr(a, key) is None:
            setattr(a, key, cpu if dry else gpu)
    a.shapes = [s for s in a.shapes.split(",") if s]
    a.variants = [v for v in a.variants.split(",") if v]
    try:
        a.layers = {k: int(n) for k, n in (item.split("=") for item in a.layers.split(",") if item)}
    except ValueError:
        p.error(f"--layers: expected name=count pairs like 8b=4,70b=2, got {a.layers!r}")
    for flag, got, known in (("--shapes", a.shapes, em.SHAPES), ("--layers", a.layers, em.SHAPES),
                             ("--variants", a.variants, labels)):
        if unknown := [x for x in got if x not in known]:
            p.error(f"{flag}: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    if min(a.rounds, a.steps_per_round, a.profile_steps) < 1 or a.warmup < 0 or a.budget_s <= 0:
        p.error("--rounds, --steps-per-round and --profile-steps must be >= 1, --warmup >= 0, --budget-s > 0")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if not a.dry_run and not torch.cuda.is_available():
        sys.exit("gpu_e2e: no CUDA device (use --dry-run to exercise the script on CPU)")
    device = torch.device("cpu" if a.dry_run else "cuda")
    variants = [v for v in em.VARIANTS if v.label in a.variants]
    layers = {s: a.layers.get(s, em.SHAPES[s][1]) for s in a.shapes}
    guard = Guard(a.budget_s, reserve_s=max(20.0, 0.1 * a.budget_s))
    info = device_info(device)
    peak = device_peak_tflops(device)
    result = {"kind": "gpu_e2e", "command": bench_kernels._command(),
              "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "device": info, "versions": versions(), "peak_tflops": peak,
              "gemm": {"n": None, "tflops": None}, "method": METHOD,
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
              "gate": {"kernels": {}, "model": {}, "ok": None}, "shapes": {}, "skipped_shapes": {}, "errors": [],
              "partial": False, "partial_reason": None}
    say(f"gpu_e2e on {info['name']}; versions {result['versions']}; budget {a.budget_s:.0f} s")
    try:
        with guard:
            norm_shapes = []
            for s in a.shapes:
                m = em.shape_config(s, layers[s], em.VARIANTS[0], device, a.dry_run).model
                norm_shapes.append((m.seq_length, 1, m.hidden_size))
            say("correctness gate: Triton kernels vs the fp64 reference")
            result["gate"]["kernels"] = kernel_gate(variants, norm_shapes, device, a.dry_run)
            result["gate"]["ok"] = all(r["ok"] for r in result["gate"]["kernels"].values())
            refused = {v.label: f"refused: kernel check failed ({op})" for v in variants for op in v.triton_ops
                       if not result["gate"]["kernels"][op]["ok"]}
            result["gemm"] = gemm_rate(device, a.dry_run)
            say(f"bf16 GEMM {result['gemm']['n']}^3: {result['gemm']['tflops']:.1f} TFLOP/s")
            runtime.init(em.shape_config(a.shapes[0], layers[a.shapes[0]], em.VARIANTS[0], device, a.dry_run))
            try:
                for s in a.shapes:
                    if guard.soft_expired():
                        result["skipped_shapes"][s] = "time budget: not started"
                        mark_partial(result, result["skipped_shapes"][s])
                        continue
                    say(f"shape {s}: {layers[s]} layers")
                    attempt(f"shape {s}", lambda s=s: run_shape(s, layers[s], variants, refused, device, a, guard,
                                                                 result), result)
            finally:
                runtime.shutdown()
    except Exception as e:  # whatever broke, what finished is still written
        result["errors"].append(f"run: {type(e).__name__}: {e}\n{traceback.format_exc()[-4000:]}")
        say(f"ERROR: {type(e).__name__}: {e}")
    except TimeUp as stop:
        mark_partial(result, f"{stop} after {time.monotonic() - T0:.0f} s (budget {a.budget_s:.0f} s)")
        result["skipped_shapes"].update({s: str(stop) for s in a.shapes if s not in result["shapes"]})
    checks = [*result["gate"]["kernels"].values(), *result["gate"]["model"].values()]
    if result["gate"]["ok"] is not None or checks:  # None: the time ran out before the kernel checks
        result["gate"]["ok"] = all(r["ok"] for r in checks)
    if device.type == "cuda":
        info["nvidia_smi_end"] = nvidia_smi()
    for shape in result["shapes"].values():
        e2e_report.add_derived(shape, em.BASELINES, peak, result["gemm"]["tflops"])
    result["seconds"] = time.monotonic() - T0
    write(result, a.out, gpu_check.slug(info["name"]) if device.type == "cuda" else "dry-run-cpu")
    return 0 if result["gate"]["ok"] is True and not result["partial"] and not result["errors"] else 1


def write(result: dict, out: Path, tag: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    md = e2e_report.markdown(result, em.BASELINES)
    atomic_write_bytes(out / f"gpu_e2e_{tag}.json", (json.dumps(result, indent=1, default=str) + "\n").encode())
    atomic_write_bytes(out / f"gpu_e2e_{tag}.md", md.encode())
    print(f"\nwrote {out}/gpu_e2e_{tag}.{{json,md}}\n")
    print(e2e_report.compact(result, em.BASELINES), flush=True)


if __name__ == "__main__":
    sys.exit(main())
