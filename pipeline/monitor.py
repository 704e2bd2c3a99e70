"""Monitoring: TensorBoard scalars and a compact console line (rank 0), throughput and MFU, memory,
and the per-site α / γ of DyT-like norms.

FLOPs per token come from the model (`pipeline.model.flops_per_token`, Megatron's formula).
MFU = achieved FLOP/s per device ÷ the device's dense bf16 peak (table below, or logging.peak_tflops).
Engine-neutral: norm sites and (under ZeRO-3) their full values come through the engine interface.
"""

import logging
import sys

import psutil
import torch
import torch.distributed as dist

from pipeline.engine import Engine, StepResult
from pipeline.model import flops_per_token
from pipeline.norms import get_spec

log = logging.getLogger("pipeline")

# Dense bf16 tensor-core peaks (TFLOP/s) by device-name substring; matched in order.
PEAK_TFLOPS = [("H200", 989.0), ("H100", 989.0), ("GH200", 989.0), ("B200", 2250.0), ("A100", 312.0),
               ("L40S", 362.0), ("A10G", 125.0)]


def device_peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS if key in name), None)


def memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return psutil.Process().memory_info().rss / 2**30


def norm_stats(engine: Engine, has_alpha: bool) -> dict[str, float]:
    """α and γ statistics per norm site (for norms registered with `has_alpha`) and the embedding scalar,
    gathered from every pipeline stage (collective)."""
    local: dict[str, float] = {}
    sites = engine.norm_sites() if has_alpha else {}
    scales = [s for s in (getattr(getattr(c, "embedding", None), "scale", None) for c in engine.modules)
              if s is not None]
    with engine.gathered([p for n in sites.values() for p in n.parameters()] + scales):
        for site, norm in sites.items():
            _add(local, site, norm)
        for scale in scales:
            local["embedding_scale"] = float(scale.detach().float())
    if dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list[dict] = [{} for _ in range(dist.get_world_size())]
        dist.all_gather_object(gathered, local)
        for d in gathered:
            local.update(d)
    return local


def _add(out: dict, key: str, norm: torch.nn.Module) -> None:
    out[f"alpha/{key}"] = float(norm.alpha.detach().float())
    if isinstance(getattr(norm, "weight", None), torch.Tensor):  # γ is optional for a user norm
        w = norm.weight.detach().float()
        out[f"gamma_mean/{key}"] = float(w.mean())
        out[f"gamma_std/{key}"] = float(w.std()) if w.numel() > 1 else 0.0


class Monitor:
    def __init__(self, cfg, run_dir, device: torch.device, vocab_size: int, is_main: bool) -> None:
        self.cfg, self.device, self.is_main = cfg, device, is_main
        self.flops_per_token = flops_per_token(cfg, vocab_size)
        self.peak = cfg.logging.peak_tflops or device_peak_tflops(device)
        self.has_alpha = get_spec(cfg.model.norm.type).has_alpha
        self.writer = None
        if is_main and cfg.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.skipped = 0
        self._window: list[StepResult] = []
        self._seconds = 0.0

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def step(self, step: int, result: StepResult, seconds: float, engine: Engine) -> None:
        """Record one finished optimizer step (`step` counts from 1, `seconds` its wall time);
        log every log_interval steps. Saves and validation are not in `seconds`."""
        self.skipped += int(result.skipped)
        self._window.append(result)
        self._seconds += seconds
        if step % self.cfg.train.log_interval and step != self.cfg.train.steps:
            return
        elapsed = self._seconds
        n = len(self._window)
        tokens = sum(r.tokens for r in self._window)
        finite = [r for r in self._window if not r.skipped]
        loss = sum(r.loss for r in finite) / len(finite) if finite else float("nan")
        grad = sum(r.grad_norm for r in finite) / len(finite) if finite else float("nan")
        step_time = elapsed / n
        tok_s = tokens / elapsed
        world = dist.get_world_size() if dist.is_initialized() else 1
        tflops = self.flops_per_token * tokens / elapsed / world / 1e12
        mem = memory_gb(self.device)
        lr = self._window[-1].lr
        stats = norm_stats(engine, self.has_alpha) if self.cfg.logging.norm_stats else {}
        if self.is_main:
            for tag, v in (("train/loss", loss), ("train/lr", lr), ("train/grad_norm", grad),
                           ("train/tokens_per_s", tok_s), ("train/step_time_s", step_time),
                           ("train/tflops_per_device", tflops), ("train/memory_gb", mem),
                           ("train/skipped_steps", self.skipped)):
                self.scalar(tag, v, step)
            if self.peak:
                self.scalar("train/mfu", tflops / self.peak, step)
            for k, v in stats.items():
                self.scalar(f"norm/{k}", v, step)
            alphas = [v for k, v in stats.items() if k.startswith("alpha/")]
            alpha = f" α {min(alphas):.3f}…{max(alphas):.3f} |" if alphas else ""
            mfu = f" mfu {100 * tflops / self.peak:.1f}% |" if self.peak else ""
            skipped = f" skipped {self.skipped} |" if self.skipped else ""
            print(f"step {step:>6}/{self.cfg.train.steps} | loss {loss:.4f} | lr {lr:.2e} | grad {grad:.3f} |"
                  f" {tok_s:,.0f} tok/s | {step_time * 1000:.0f} ms/step | {tflops:.3g} TFLOP/s/dev |{mfu}"
                  f" mem {mem:.2f} GB |{alpha}{skipped}", flush=True)
        self._window.clear()
        self._seconds = 0.0

    def validation(self, step: int, loss: float) -> None:
        if self.is_main:
            ppl = float(torch.tensor(loss).exp())
            self.scalar("val/loss", loss, step)
            self.scalar("val/ppl", ppl, step)
            print(f"step {step:>6}/{self.cfg.train.steps} | validation loss {loss:.4f} | ppl {ppl:.2f}", flush=True)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
        sys.stdout.flush()
