"""DyT kernel benchmark: ours (Triton) vs eager / torch.compile DyT, Liger DyT and fused RMSNorms.

Prints a table and writes JSON plus a Markdown copy of the table (with the command that made it).
GB/s counts ideal traffic: every input read once and every output written once, parameters included
(add+DyT's backward writes one gradient for x and residual, which are equal). "% copy" divides that by
the bandwidth of `dst.copy_(src)` on a tensor of the same size, measured in the same run.
"saved MB" is what the forward keeps alive for the backward beyond its outputs; "peak MB" is the peak
of one forward+backward above the inputs (CUDA only).

    python benchmarks/bench_kernels.py                         # GPU: LLaMA token x hidden shapes, bf16
    python benchmarks/bench_kernels.py --shapes 8192x4096 --dtypes bf16,fp32 --tag h200

On CPU only eager and torch.compile run (Triton, Liger and Transformer Engine need a GPU), and CPU
numbers say nothing about GPU speed: there DyT is bound by tanh arithmetic, not memory.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from pipeline import kernels  # noqa: E402
from pipeline.kernels import reference  # noqa: E402

GPU_SHAPES = "4096x4096,8192x4096,16384x5120,65536x8192"
CPU_SHAPES = "4096x4096"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
EPS = 1e-5
RESULTS = Path(__file__).resolve().parent / "results" / "kernels"
CPU_NOTE = (
    "CPU run: only eager and torch.compile (Triton, Liger and TE need a GPU). CPU timings say nothing "
    "about GPU speed; DyT is bound by tanh arithmetic on CPU, not by memory."
)


@dataclass
class Case:
    leaves: list[torch.Tensor]  # tensors the backward differentiates
    fwd: Callable[[], tuple[torch.Tensor, ...]]
    grads: tuple[torch.Tensor, ...]  # upstream gradients, one per output
    bytes_fwd: int
    bytes_bwd: int


@dataclass
class Row:
    op: str
    provider: str
    m: int
    n: int
    dtype: str
    fwd_ms: float | None = None
    bwd_ms: float | None = None
    fwdbwd_ms: float | None = None
    fwdbwd_gbs: float | None = None
    pct_copy: float | None = None
    saved_mb: float | None = None
    peak_mb: float | None = None
    error: str | None = None


def _rmsnorm_fp32(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS)).to(x.dtype) * w


def _module(cls: Callable, n: int, dtype: torch.dtype, device: torch.device) -> Callable:
    mod = cls(n).to(device=device, dtype=dtype)
    return lambda x: (mod(x),)


def _liger(name: str) -> Callable:
    import liger_kernel.transformers as lt  # ImportError = provider unavailable, reported in its row

    if name == "dyt":
        return lambda n: lt.LigerDyT(n, beta=False)
    return lambda n: lt.LigerRMSNorm(n, eps=EPS)


def _te_rmsnorm() -> Callable:
    import transformer_engine.pytorch as te

    return lambda n: te.RMSNorm(n, eps=EPS)


GPU_PROVIDERS = {
    "dyt": ["ours", "eager", "compile", "liger"],
    "add_dyt": ["ours", "ours_unfused", "eager", "compile"],
    "rmsnorm": ["te", "liger", "compile", "eager"],
}


def providers(op: str, device: torch.device, only: list[str] | None) -> list[str]:
    """Providers of `op` to run: all on CUDA, eager/compile elsewhere, or those named in `only`.
    A provider whose package is missing gets a row saying so."""
    if only:
        return [p for p in GPU_PROVIDERS[op] if p in only]
    return GPU_PROVIDERS[op] if device.type == "cuda" else ["eager", "compile"]


def make_case(op: str, provider: str, m: int, n: int, dtype: torch.dtype, device: torch.device) -> Case:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(m, n, generator=g).to(device=device, dtype=dtype).requires_grad_()
    dy = torch.randn(m, n, generator=g).to(device=device, dtype=dtype)
    alpha = torch.full((1,), 0.5, device=device, dtype=dtype, requires_grad=True)
    w = torch.ones(n, device=device, dtype=dtype, requires_grad=True)
    act = m * n * x.element_size()  # bytes of one activation tensor
    kernel = {"ours": "triton", "ours_unfused": "triton"}.get(provider, provider)
    if op == "dyt":
        if provider == "liger":
            fwd = _module(_liger("dyt"), n, dtype, device)
            return Case([x], lambda: fwd(x), (dy,), 2 * act, 3 * act)
        return Case(
            [x, alpha, w], lambda: (kernels.dyt(x, alpha, w, kernel=kernel),), (dy,), 2 * act, 3 * act
        )
    if op == "add_dyt":
        r = torch.randn(m, n, generator=g).to(device=device, dtype=dtype).requires_grad_()
        dh = torch.randn(m, n, generator=g).to(device=device, dtype=dtype)
        if provider == "ours_unfused":

            def fwd() -> tuple[torch.Tensor, ...]:
                h = x + r
                return kernels.dyt(h, alpha, w, kernel="triton"), h
        else:

            def fwd() -> tuple[torch.Tensor, ...]:
                return kernels.add_dyt(x, r, alpha, w, kernel=kernel)

        return Case([x, r, alpha, w], fwd, (dy, dh), 4 * act, 4 * act)
    # rmsnorm, the reference point: the norm DyT replaces
    if provider in ("te", "liger"):
        fwd = _module(_te_rmsnorm() if provider == "te" else _liger("rmsnorm"), n, dtype, device)
        return Case([x], lambda: fwd(x), (dy,), 2 * act, 3 * act)
    if provider == "compile":
        fn = reference.compiled(_rmsnorm_fp32)
        return Case([x, w], lambda: (fn(x, w),), (dy,), 2 * act, 3 * act)
    return Case([x, w], lambda: (F.rms_norm(x, (n,), w, EPS),), (dy,), 2 * act, 3 * act)


def timeit(fn: Callable, device: torch.device, setup: Callable | None = None, budget_s: float = 0.2) -> float:
    """Median milliseconds of fn(setup()), setup untimed (e.g. the forward before a backward).

    On CUDA like triton's do_bench: CUDA events per call, L2 flushed (a 256 MB write) before each."""
    cuda = device.type == "cuda"
    flush = torch.empty(2**28, dtype=torch.int8, device=device) if cuda else None

    def once() -> float:
        arg = setup() if setup else None
        if not cuda:
            t0 = time.perf_counter()
            fn(arg)
            return (time.perf_counter() - t0) * 1e3
        flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(arg)
        end.record()
        end.synchronize()
        return start.elapsed_time(end)

    first = min(once() for _ in range(3))  # also warms up caches and autotuners
    reps = int(min(max(budget_s * 1e3 / max(first, 1e-3), 5), 100))
    return statistics.median(once() for _ in range(reps))


def copy_gbs(m: int, n: int, dtype: torch.dtype, device: torch.device) -> float:
    src = torch.randn(m, n, device=device).to(dtype)
    dst = torch.empty_like(src)
    return 2 * src.nbytes / timeit(lambda _: dst.copy_(src), device) / 1e6


def memory_mb(case: Case, device: torch.device) -> tuple[float | None, float | None]:
    if device.type != "cuda":
        return None, None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = case.fwd()
    torch.cuda.synchronize()
    saved = torch.cuda.memory_allocated() - base - sum(o.nbytes for o in out)
    torch.autograd.grad(out, case.leaves, case.grads)
    torch.cuda.synchronize()
    return saved / 2**20, (torch.cuda.max_memory_allocated() - base) / 2**20


def measure(
    op: str, provider: str, m: int, n: int, dtype: torch.dtype, device: torch.device, copy: float
) -> Row:
    row = Row(op, provider, m, n, str(dtype).removeprefix("torch."))
    try:
        case = make_case(op, provider, m, n, dtype, device)
        torch.autograd.grad(case.fwd(), case.leaves, case.grads)  # compile / JIT outside the timing
        row.fwd_ms = timeit(lambda _: case.fwd(), device)
        row.bwd_ms = timeit(lambda out: torch.autograd.grad(out, case.leaves, case.grads), device, case.fwd)
        row.fwdbwd_ms = timeit(lambda _: torch.autograd.grad(case.fwd(), case.leaves, case.grads), device)
        row.fwdbwd_gbs = (case.bytes_fwd + case.bytes_bwd) / row.fwdbwd_ms / 1e6
        row.pct_copy = 100 * row.fwdbwd_gbs / copy
        row.saved_mb, row.peak_mb = memory_mb(case, device)
    except Exception as e:  # a provider that is missing or fails must not stop the others
        row.error = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    return row


def _fmt(v: float | None, spec: str) -> str:
    return "" if v is None else format(v, spec)


def table(rows: list[Row], copies: dict[str, float]) -> str:
    head = "| op | provider | fwd ms | bwd ms | fwd+bwd ms | fwd+bwd GB/s | % copy | saved MB | peak MB |"
    lines: list[str] = []
    for key in dict.fromkeys(f"{r.m}x{r.n} {r.dtype}" for r in rows):
        lines += ["", f"**{key}** (copy: {copies[key]:.0f} GB/s)", "", head, "|" + "---|" * 9]
        for r in (r for r in rows if f"{r.m}x{r.n} {r.dtype}" == key):
            if r.error:
                lines.append(f"| {r.op} | {r.provider} | {r.error} ||||||||")
                continue
            cells = [_fmt(r.fwd_ms, ".3f"), _fmt(r.bwd_ms, ".3f"), _fmt(r.fwdbwd_ms, ".3f")]
            cells += [_fmt(r.fwdbwd_gbs, ".1f"), _fmt(r.pct_copy, ".0f"), _fmt(r.saved_mb, ".0f")]
            cells += [_fmt(r.peak_mb, ".0f")]
            lines.append(f"| {r.op} | {r.provider} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in ln
        ),
        platform.processor(),
    )
    return f"{model}, {torch.get_num_threads()} threads"


def run(
    shapes: list[tuple[int, int]],
    dtypes: list[str],
    device: torch.device,
    ops: list[str],
    only: list[str] | None = None,
) -> dict:
    rows: list[Row] = []
    copies: dict[str, float] = {}
    for m, n in shapes:
        for name in dtypes:
            dtype = DTYPES[name]
            key = f"{m}x{n} {str(dtype).removeprefix('torch.')}"
            copies[key] = copy_gbs(m, n, dtype, device)
            for op in ops:
                for provider in providers(op, device, only):
                    rows.append(measure(op, provider, m, n, dtype, device, copies[key]))
                    print(
                        f"  {key} {op:8s} {provider:13s} {rows[-1].error or f'{rows[-1].fwdbwd_ms:.3f} ms'}"
                    )
    return {
        "device": machine(device),
        "device_type": device.type,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__, "python": platform.python_version(), **_versions()},
        "command": _command(),
        "load_average": os.getloadavg(),  # other work on the machine (matters on a shared CPU box)
        "note": CPU_NOTE if device.type != "cuda" else "",
        "copy_gbs": copies,
        "rows": [asdict(r) for r in rows],
        "table": table(rows, copies),
    }


def _command() -> str:
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "TRITON_INTERPRET") if k in os.environ)
    return " ".join(filter(None, [env, "python", *sys.argv]))


def _versions() -> dict[str, str]:
    out = {}
    for mod in ("triton", "liger_kernel", "transformer_engine"):
        try:
            out[mod] = getattr(__import__(mod), "__version__", "?")
        except Exception:  # not installed, or fails to import: recorded as absent
            out[mod] = "absent"
    return out


def write(result: dict, out: Path, tag: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bench_{tag}.json").write_text(json.dumps(result, indent=1) + "\n")
    md = [
        f"# Kernel benchmark: {result['device']}",
        "",
        f"Command: `{result['command']}`  ",
        f"Date: {result['date']}; versions: {result['versions']}  ",
        f"Load average at the end (1/5/15 min): {result['load_average']}",
    ]
    if result["note"]:
        md += ["", f"> {result['note']}"]
    md += [result["table"], ""]
    path = out / f"bench_{tag}.md"
    path.write_text("\n".join(md))
    return path


def parse_shapes(text: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in (s.lower().split("x") for s in text.split(",") if s)]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", help=f"tokens x hidden list (default GPU {GPU_SHAPES}, CPU {CPU_SHAPES})")
    p.add_argument(
        "--dtypes", default=None, help="comma list of bf16,fp16,fp32 (default GPU bf16, CPU fp32,bf16)"
    )
    p.add_argument("--ops", default="dyt,add_dyt,rmsnorm")
    p.add_argument("--providers", default=None, help="comma list to run only these (e.g. ours,liger)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--tag", default=None, help="file name tag (default: the device type)")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    on_gpu = device.type == "cuda"
    shapes = parse_shapes(a.shapes or (GPU_SHAPES if on_gpu else CPU_SHAPES))
    dtypes = (a.dtypes or ("bf16" if on_gpu else "fp32,bf16")).split(",")
    if not on_gpu:
        print(CPU_NOTE)
    result = run(shapes, dtypes, device, a.ops.split(","), a.providers.split(",") if a.providers else None)
    print(result["table"])
    print(f"\nwrote {write(result, a.out, a.tag or device.type)}")
    return result


if __name__ == "__main__":
    main()
