"""Wall-clock job: norm layers alone, and the whole model, per norm type, at a run config's shapes.

    python -m pipeline.evaluation bench tiny_dyt         (make bench-model CONFIG=tiny_dyt)

(a) Layer level, like the paper's Table 7 "layer" columns but against fused baselines: forward (no grad) and
    forward+backward (grads of x and every parameter) of each available implementation on one micro-batch,
    x of shape [seq, micro_batch, hidden] in the run's dtype.
(b) Model level: inference forward (loss on one global batch, no grad) and a full training step (forward,
    backward, gradient clipping, optimizer update) of the megatron model built with each norm variant.

How it is timed: METHOD below (also printed in every report). Peak memory is torch.cuda's allocator peak
above the memory allocated before the call, on CUDA only: the CPU allocator has no such counter.
"""

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipeline.config import RunConfig, load_config
from pipeline.evaluation import plots
from pipeline.norms import NormSpec, get_spec, registered_norms
from pipeline.run_loader import SINGLE_PROCESS

METHOD = ("Everything runs in one process, after warm-up calls (which also compile). Each repetition "
          "times every case once, in a rotated order (so no case always runs first or last), as the mean "
          "over enough back-to-back calls to fill `min_rep_s`; reported are the median and the 25th/75th "
          "percentiles over repetitions, and the ratio of medians to the baseline. CUDA timings synchronise "
          "before and after each repetition.")


@dataclass
class Case:
    label: str  # "<norm>[<impl>]"
    norm: str
    impl: str
    description: str
    run: Callable[[], object]
    tokens: int = 0  # tokens per call (model level: tokens/s)
    inner: int = 1  # calls per repetition (calibrated)
    samples: list[float] = field(default_factory=list)  # seconds per call, one per repetition
    peak_mem_mb: float | None = None


def _rms_unfused(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HF LlamaRMSNorm's ops: the unfused RMSNorm the paper timed DyT against."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def _third_party(op: str, impl: str, hidden: int, eps: float, bias: bool) -> torch.nn.Module:
    """Fused third-party norms (GPU extras in requirements/gpu.txt); ImportError when not installed."""
    if impl == "te":
        import transformer_engine.pytorch as te

        return getattr(te, op)(hidden, eps=eps)  # te.RMSNorm / te.LayerNorm
    from liger_kernel.transformers import LigerDyT, LigerRMSNorm

    return LigerRMSNorm(hidden, eps=eps) if op == "RMSNorm" else LigerDyT(hidden, beta=bias)


# Implementations of an op other than the registered module, timed next to it: (op, impl) →
# (description, needs CUDA). The op of a norm is its `te_fused` name or its `kernel_op`.
REFERENCE_IMPLS: dict[tuple[str, str], tuple[str, bool]] = {
    ("RMSNorm", "eager"): ("unfused torch ops as in HF LlamaRMSNorm (the paper's baseline)", False),
    ("RMSNorm", "te"): ("Transformer Engine RMSNorm (fused CUDA)", True),
    ("RMSNorm", "liger"): ("Liger-Kernel LigerRMSNorm (fused Triton)", True),
    ("LayerNorm", "te"): ("Transformer Engine LayerNorm (fused CUDA)", True),
    ("dyt", "liger"): ("Liger-Kernel LigerDyT (fused Triton)", True),
}
# The registered module itself: with a kernel op, once per kernel; otherwise as is and compiled.
KERNEL_IMPLS = {"eager": ("pipeline.kernels eager (autograd ops)", False),
                "compile": ("pipeline.kernels torch.compile", False),
                "triton": ("pipeline.kernels fused Triton forward/backward", True)}
MODULE_IMPLS = {"torch": ("the registered module (what the model runs)", False),
                "compile": ("torch.compile of the registered module", False)}


def layer_impls(spec: NormSpec) -> dict[str, tuple[str, bool]]:
    """impl → (description, needs CUDA) for one norm."""
    own = KERNEL_IMPLS if spec.kernel_op else MODULE_IMPLS
    op = spec.te_fused or spec.kernel_op
    return {**own, **{impl: v for (o, impl), v in REFERENCE_IMPLS.items() if o == op}}


Fn = Callable[[torch.Tensor], torch.Tensor]


def norm_module(spec: NormSpec, cfg: RunConfig, device: torch.device, kernel: str | None) -> torch.nn.Module:
    """The norm as the model builds it at an MLP site (recipe params, the run's dtype), on `device`."""
    from pipeline.model import transformer_config

    config = transformer_config(cfg, on_gpu=device.type == "cuda")
    params = spec.params(cfg.model.norm, cfg.model.hidden_size, "mlp")
    if kernel is not None:
        params["kernel"] = kernel
    module = spec.cls(config=config, hidden_size=cfg.model.hidden_size, eps=cfg.model.norm.eps, **params)
    return module.to(device)


def layer_function(spec: NormSpec, impl: str, cfg: RunConfig, device: torch.device,
                   dtype: torch.dtype) -> tuple[Fn, list[torch.Tensor]]:
    """(f(x) -> y, parameters) for one implementation of a norm, parameters initialised as in the model."""
    n, hidden = cfg.model.norm, cfg.model.hidden_size
    op = spec.te_fused or spec.kernel_op
    if impl in ("te", "liger"):
        module = _third_party(op, impl, hidden, n.eps, n.bias).to(device, dtype)
        return module, list(module.parameters())
    if (op, impl) == ("RMSNorm", "eager"):
        weight = torch.ones(hidden, requires_grad=True, device=device, dtype=dtype)
        return (lambda x: _rms_unfused(x, weight, n.eps)), [weight]
    module = norm_module(spec, cfg, device, impl if spec.kernel_op else None)
    fn = torch.compile(module) if impl == "compile" and not spec.kernel_op else module
    return fn, list(module.parameters())


def layer_cases(cfg: RunConfig, norms: list[str], device: torch.device
                ) -> tuple[list[Case], list[Case], list[dict]]:
    """Forward and forward+backward cases for every available implementation; also the skipped ones."""
    from pipeline.model import transformer_config

    m, t = cfg.model, cfg.train
    dtype = transformer_config(cfg, on_gpu=device.type == "cuda").params_dtype
    shape = (m.seq_length, t.micro_batch_size, m.hidden_size)
    tokens = shape[0] * shape[1]
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    dy = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    fwd, fwd_bwd, skipped = [], [], []
    for norm in norms:
        spec = get_spec(norm)
        for impl, (desc, needs_cuda) in layer_impls(spec).items():
            label = f"{norm}[{impl}]"
            if needs_cuda and device.type != "cuda":
                skipped.append({"label": label, "reason": "needs CUDA"})
                continue
            try:
                fn, params = layer_function(spec, impl, cfg, device, dtype)
            except ImportError as e:
                skipped.append({"label": label, "reason": f"not installed ({e.name})"})
                continue
            except Exception as e:  # an optional third-party kernel whose API moved: skip it, say why
                if impl not in ("te", "liger"):
                    raise
                skipped.append({"label": label, "reason": f"{type(e).__name__}: {e}"})
                continue
            xg = x.detach().requires_grad_(True)

            def forward(fn: Fn = fn) -> torch.Tensor:
                with torch.no_grad():
                    return fn(x)

            def forward_backward(fn: Fn = fn, params: list = params, xg: torch.Tensor = xg) -> tuple:
                return torch.autograd.grad(fn(xg), [xg, *params], dy)

            fwd.append(Case(label, norm, impl, desc, forward, tokens=tokens))
            fwd_bwd.append(Case(label, norm, impl, desc, forward_backward, tokens=tokens))
    return fwd, fwd_bwd, skipped


def model_variants(norms: list[str], device: torch.device) -> list[tuple[str, str, str, list[str]]]:
    """(label, norm, description, overrides) per whole-model variant: norms without a kernel op as the model
    builds them (LN/RMSNorm fused into the next linear by Transformer Engine when installed on GPU), the
    others per kernel, plus the fused residual add where the norm has one (CUDA)."""
    kernels = ["eager", "compile"] + (["triton"] if device.type == "cuda" else [])
    out = []
    for norm in norms:
        spec = get_spec(norm)
        base = [f"model.norm.type={norm}"]
        if not spec.kernel_op:
            out.append((norm, norm, "as the model builds it", base))
            continue
        for k in kernels:
            out.append((f"{norm}[{k}]", norm, f"kernel {k}", [*base, f"model.norm.kernel={k}"]))
        if spec.fused_add_op and device.type == "cuda":
            out.append((f"{norm}[triton+add]", norm, "Triton, residual add fused into the pre-MLP norm",
                        [*base, "model.norm.kernel=triton", "model.norm.fuse_residual_add=true"]))
    return out


def random_batches(cfg: RunConfig, vocab: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """One global batch of uniform random tokens (timing does not depend on the text)."""
    b, s = cfg.train.micro_batch_size, cfg.model.seq_length
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(cfg.train.global_batch_size // b):
        tokens = torch.randint(0, vocab, (b, s + 1), generator=gen)
        out.append({"tokens": tokens[:, :-1], "labels": tokens[:, 1:], "loss_mask": torch.ones(b, s),
                    "position_ids": torch.arange(s).expand(b, s)})
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_cases(config: str, overrides: list[str], norms: list[str], device: torch.device, vocab: int
                ) -> tuple[list[Case], list[Case], dict[str, float | None]]:
    """Forward and train-step cases, one engine per variant, all resident at once (so they can interleave);
    also each engine's static memory in MB (params, grads, optimizer state; CUDA only)."""
    from pipeline import runtime
    from pipeline.engine import build_engine

    common = [*overrides, *SINGLE_PROCESS, f"train.device={device.type}"]
    base_cfg = load_config(config, common)
    rt = runtime.init(base_cfg)
    batches = random_batches(base_cfg, vocab)
    tokens = base_cfg.train.global_batch_size * base_cfg.model.seq_length
    fwd, step, static = [], [], {}
    for label, norm, desc, extra in model_variants(norms, device):
        cfg = load_config(config, [*common, *extra])
        _sync(device)
        before = torch.cuda.memory_allocated(device) if device.type == "cuda" else None
        engine = build_engine(cfg, rt, vocab)
        engine.train_step(batches)  # allocates the optimizer state
        _sync(device)
        static[label] = (torch.cuda.memory_allocated(device) - before) / 2**20 if before is not None else None
        fwd.append(Case(label, norm, "", desc, lambda e=engine: e.eval_loss(batches), tokens=tokens))
        step.append(Case(label, norm, "", desc, lambda e=engine: e.train_step(batches), tokens=tokens))
    return fwd, step, static


def measure(cases: list[Case], device: torch.device, reps: int, min_rep_s: float, warmup: int) -> None:
    """Interleaved timing (see the module docstring); fills each case's samples and peak memory."""
    for c in cases:
        for _ in range(warmup):  # compiles, autotunes, allocator warm-up
            c.run()
        _sync(device)
        t0 = time.perf_counter()
        c.run()
        _sync(device)
        c.inner = max(1, round(min_rep_s / max(time.perf_counter() - t0, 1e-7)))
    for rep in range(reps):
        k = rep % len(cases)
        for c in cases[k:] + cases[:k]:
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(c.inner):
                c.run()
            _sync(device)
            c.samples.append((time.perf_counter() - t0) / c.inner)
    if device.type == "cuda":
        for c in cases:
            _sync(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            c.run()
            _sync(device)
            c.peak_mem_mb = (torch.cuda.max_memory_allocated(device) - base) / 2**20


def quartiles(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def summarize_cases(cases: list[Case], baseline: str, static: dict | None = None) -> list[dict]:
    base = next((c for c in cases if c.label == baseline), None)
    base_med = statistics.median(base.samples) if base else None
    rows = []
    for c in cases:
        med = statistics.median(c.samples)
        p25, p75 = quartiles(c.samples)
        row = {"label": c.label, "norm": c.norm, "impl": c.impl, "description": c.description,
               "median_ms": 1e3 * med, "p25_ms": 1e3 * p25, "p75_ms": 1e3 * p75,
               "min_ms": 1e3 * min(c.samples),
               "samples_ms": [1e3 * s for s in c.samples], "calls_per_rep": c.inner,
               "ratio_to_baseline": med / base_med if base_med else None,
               "tokens_per_s": c.tokens / med if c.tokens else None, "peak_mem_mb": c.peak_mem_mb}
        if static is not None:
            row["static_mem_mb"] = static.get(c.label)
        rows.append(row)
    return rows


def device_description(device: torch.device) -> str:
    import platform

    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    return (f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, "
            f"torch threads {torch.get_num_threads()}")


def run_bench(config: str, overrides: list[str], out_dir: Path, norms: list[str] | None = None,
              device: str = "cpu", reps: int = 15, min_rep_s: float | None = None, warmup: int = 3,
              layer_baseline: str = "rmsnorm[torch]", model_baseline: str = "rmsnorm",
              skip_model: bool = False) -> dict:
    """Both levels on `device` (cpu | cuda); returns the results and writes the figure to out_dir."""
    from pipeline import runtime  # first: it quiets megatron's import-time notices
    from pipeline.data import load_manifest

    norms = list(norms or registered_norms())
    cfg = load_config(config, overrides)
    dev = torch.device(device)
    min_rep_s = min_rep_s if min_rep_s is not None else (0.05 if dev.type == "cuda" else 0.02)
    model_reps = max(5, reps // 2)  # model steps are long: fewer repetitions of one call each
    load_before = os.getloadavg()[0]  # other work on the machine shows up as spread: record it
    fwd, fwd_bwd, skipped = layer_cases(cfg, norms, dev)
    for cases in (fwd, fwd_bwd):
        measure(cases, dev, reps, min_rep_s, warmup)
    layer = {"shape": [cfg.model.seq_length, cfg.train.micro_batch_size, cfg.model.hidden_size],
             "baseline": layer_baseline, "skipped": skipped, "forward": summarize_cases(fwd, layer_baseline),
             "forward_backward": summarize_cases(fwd_bwd, layer_baseline)}
    results = {"kind": "bench", "config": config, "overrides": overrides, "run_name": cfg.name,
               "device": dev.type, "device_description": device_description(dev),
               "dtype": cfg.train.precision,
               "method": METHOD, "layer": layer,
               "settings": {"reps": reps, "model_reps": model_reps, "min_rep_s": min_rep_s, "warmup": warmup,
                            "norms": norms}}
    sections = [("layer forward", layer["forward"]), ("layer forward+backward", layer["forward_backward"])]
    if not skip_model:
        d = cfg.data
        vocab = cfg.model.vocab_size or load_manifest(d.manifest_path, d.external_paths_allowed).vocab_size
        mfwd, mstep, static = model_cases(config, overrides, norms, dev, vocab)
        try:
            for cases in (mfwd, mstep):
                measure(cases, dev, model_reps, min_rep_s, 2)
        finally:
            runtime.shutdown()
        model = {"baseline": model_baseline, "vocab": vocab,
                 "tokens_per_call": cfg.train.global_batch_size * cfg.model.seq_length,
                 "micro_batch_size": cfg.train.micro_batch_size,
                 "global_batch_size": cfg.train.global_batch_size,
                 "forward": summarize_cases(mfwd, model_baseline, static),
                 "train_step": summarize_cases(mstep, model_baseline, static)}
        results["model"] = model
        sections += [("model inference forward", model["forward"]),
                     ("model training step", model["train_step"])]
    results["load_average_1min"] = {"before": load_before, "after": os.getloadavg()[0],
                                    "cpus": os.cpu_count()}
    title = f"{config} on {results['device_description']}"
    results["figures"] = [plots.bench_figure(sections, out_dir / "bench.png", title)]
    return results
