"""The training monitor: every `log_interval` steps, one console line on rank 0 and the same scalars in
TensorBoard (and W&B when enabled); α / γ of DyT-like norms; sampled saturation and residual-stream scale.

Engine-neutral: norm sites and (under ZeRO-3) their full values come through the engine interface. Every
collective here (params norm, memory peak, the per-site gather) runs on every rank at the same steps.
"""

import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import yaml

from pipeline.config import RunConfig, to_dict
from pipeline.engine import Engine, StepResult
from pipeline.model import flops_per_token
from pipeline.norms import has_alpha
from pipeline.norms.resolved import resolved_recipe
from pipeline.runtime import Runtime

from . import metrics, tags
from .sampler import NormSampler, SaturationWatch, summarize
from .sinks import TensorBoardSink, WandbSink, check_wandb


def norm_params(engine: Engine) -> dict[str, float]:
    """α and γ statistics of this rank's DyT-like norm sites, and the embedding scalar (collective: ZeRO-3
    gathers the values)."""
    sites = {site: norm for site, norm in engine.norm_sites().items() if has_alpha(norm)}
    scales = [s for s in (getattr(getattr(c, "embedding", None), "scale", None) for c in engine.modules)
              if s is not None]
    out: dict[str, float] = {}
    with engine.gathered([p for n in sites.values() for p in n.parameters()] + scales):
        for site, norm in sites.items():
            w = norm.weight.detach().float()
            out[tags.site_tag(tags.ALPHA, site)] = float(norm.alpha.detach().float())
            out[tags.site_tag(tags.GAMMA_MEAN, site)] = float(w.mean())
            out[tags.site_tag(tags.GAMMA_STD, site)] = float(w.std()) if w.numel() > 1 else 0.0
        for scale in scales:
            out[tags.EMBEDDING_SCALE] = float(scale.detach().float())
    return out


def run_hparams(cfg: RunConfig, n_params: int, runtime: Runtime) -> dict:
    """What the HParams view filters runs by (scalars and strings only)."""
    m, p, t = cfg.model, cfg.parallel, cfg.train
    recipe = resolved_recipe(cfg)
    layout = f"tp{p.tp} pp{p.pp} cp{p.cp} dp{runtime.dp_size}" + (f" vpp{p.vpp}" if p.vpp else "") + (
        " sp" if p.sp else "") + (f" zero{cfg.deepspeed.zero_stage}" if cfg.engine == "deepspeed" else "")
    out = {"norm": m.norm.type, "width": m.hidden_size, "layers": m.num_layers, "heads": m.num_attention_heads,
           "seq_length": m.seq_length, "global_batch": t.global_batch_size, "steps": t.steps,
           "tokens": t.steps * t.global_batch_size * m.seq_length, "params": n_params, "lr": cfg.optimizer.lr,
           "weight_decay": cfg.optimizer.weight_decay, "weight_decay_on": recipe["weight_decay_on"],
           "schedule": cfg.schedule.decay, "engine": cfg.engine, "layout": layout, "world_size": runtime.world_size,
           "precision": t.precision, "seed": t.seed}
    for kind, alpha in (recipe["alpha_init"] or {}).items():
        out[f"alpha_init_{kind}"] = alpha
    if recipe["embedding_scale_init"] is not None:
        out["embedding_scale_init"] = recipe["embedding_scale_init"]
    return out


def _kind_summary(values: dict[str, float], stat: str, fmt: str) -> str:
    """'attention a/b/c · mlp a/b/c · final a' (min/median/max over layers) for the console."""
    parts = []
    for kind in tags.SITE_KINDS:
        v = sorted(x for site, x in tags.by_site(stat, values).items() if tags.site_kind(site) == kind)
        if v:
            body = format(v[0], fmt) if len(v) == 1 else "/".join(format(x, fmt) for x in
                                                                    (v[0], statistics.median(v), v[-1]))
            parts.append(f"{kind} {body}")
    return " · ".join(parts)


class Monitor:
    def __init__(self, cfg: RunConfig, run_dir: Path, engine: Engine, runtime: Runtime, vocab_size: int,
                 n_params: int, start_step: int) -> None:
        self.cfg, self.engine, self.device, self.is_main = cfg, engine, runtime.device, runtime.is_main
        self.world = runtime.world_size
        self.flops_per_token = flops_per_token(cfg, vocab_size)
        self.peak = cfg.logging.peak_tflops or metrics.device_peak_tflops(runtime.device)
        self.tokens_per_step = cfg.train.global_batch_size * cfg.model.seq_length
        d = cfg.logging.diagnostics
        self.sample_interval = cfg.train.log_interval if d.interval is None else d.interval
        self.sampler = NormSampler(engine.norm_sites(), d.tokens, d.thresholds) if self.sample_interval else None
        self.watch = SaturationWatch(d.warn_sites, d.warn_fraction, d.warn_samples, d.thresholds[0])
        use_wandb = check_wandb(cfg.logging.wandb)
        self.sinks: list = []
        self.tb: TensorBoardSink | None = None  # also histograms, text and the consumed-tokens axis
        if self.is_main:
            hparams = run_hparams(cfg, n_params, runtime)
            if cfg.logging.tensorboard:
                self.tb = TensorBoardSink(run_dir / "tensorboard")
                self.tb.start(yaml.safe_dump(to_dict(cfg), sort_keys=False), hparams, tags.layout(d.thresholds))
                self.sinks.append(self.tb)
            if use_wandb:
                self.sinks.append(WandbSink(cfg.logging.wandb, run_dir, cfg.name,
                                            {**to_dict(cfg), "run": hparams}))
        self.skipped = 0
        self._start_step, self._t_start = start_step, time.time()
        self._window: list[StepResult] = []
        self._seconds = 0.0
        self._sampled = False

    def scalars(self, values: dict[str, float], step: int) -> None:
        for sink in self.sinks:
            sink.scalars(values, step)

    def before_step(self, step: int) -> None:
        """Arm the norm-site sampler for step `step` (1-based) when it is a sampled step."""
        if self.sampler is not None and step % self.sample_interval == 0:
            self.sampler.arm()
            self._sampled = True

    def step(self, step: int, result: StepResult, seconds: float) -> None:
        """Record one finished optimizer step (`step` counts from 1, `seconds` its wall time); log every
        log_interval steps. Saves and validation are not in `seconds`."""
        self.skipped += int(result.skipped)
        self._window.append(result)
        self._seconds += seconds
        if step % self.cfg.train.log_interval and step != self.cfg.train.steps:
            return
        values = metrics.window(self._window, self._seconds, self.flops_per_token, self.world, self.peak)
        n = len(self._window)
        self._window.clear()
        self._seconds = 0.0
        values["train/params_norm"] = self.engine.params_norm()
        values.update(self._memory())
        sites = self._gather_sites()
        values.update(sites)
        if not self.is_main:
            return
        consumed = step * self.tokens_per_step
        values.update({"train/skipped_steps": self.skipped, "progress/consumed_tokens": consumed,
                       "progress/consumed_samples": step * self.cfg.train.global_batch_size})
        self.scalars(values, step)
        if self.tb:
            self.tb.scalars({f"{tags.VS_TOKENS}/train_loss": values["train/loss"],
                             f"{tags.VS_TOKENS}/lr": values["train/lr"]}, consumed)
            self.tb.histograms({tags.histogram(stat, kind): [v for site, v in tags.by_site(stat, sites).items()
                                                             if tags.site_kind(site) == kind]
                                for stat in (tags.ALPHA, tags.RESIDUAL_RMS) for kind in ("attention", "mlp")
                                if any(tags.site_kind(s) == kind for s in tags.by_site(stat, sites))}, step)
        print(self._line(step, values, n), flush=True)
        warned = self.watch.update(sites)
        if warned:
            self._warn(step, warned)

    def _memory(self) -> dict[str, float]:
        """Peak memory, max over ranks (collective)."""
        mem = metrics.memory_gb(self.device)
        if dist.is_initialized() and dist.get_world_size() > 1:
            t = torch.tensor(list(mem.values()), dtype=torch.float64, device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            mem = dict(zip(mem, t.tolist(), strict=True))
        return mem

    def _gather_sites(self) -> dict[str, float]:
        """α/γ of every DyT-like site and the sampled statistics of every site, from every rank (collective)."""
        params = norm_params(self.engine) if self.cfg.logging.norm_stats else {}
        sampled, self._sampled = self._sampled, False
        sums = self.sampler.take() if sampled else {}
        if not (self.cfg.logging.norm_stats or sampled):
            return {}
        local = [(params, sums)]
        if dist.is_initialized() and dist.get_world_size() > 1:
            local = [None] * dist.get_world_size()
            dist.all_gather_object(local, (params, sums))
        merged: dict[str, float] = {}
        total: dict[str, list[float]] = {}
        for p, s in local:  # replicas report the same α; sampled sums add up over data and sequence shards
            merged.update(p)
            for site, v in s.items():
                total[site] = [a + b for a, b in zip(total[site], v, strict=True)] if site in total else v
        merged.update(summarize(total, self.cfg.logging.diagnostics.thresholds))
        return merged

    def _line(self, step: int, v: dict[str, float], n: int) -> str:
        t = self.cfg.train
        elapsed = time.time() - self._t_start
        eta = metrics.eta_seconds(elapsed, step - self._start_step, t.steps - step)
        mem = (f"mem {v['memory/max_allocated_gb']:.1f}/{v['memory/max_reserved_gb']:.1f} GB alloc/resv"
               if "memory/max_allocated_gb" in v else f"rss {v['memory/rss_gb']:.2f} GB")
        line = [f"step {step:>6}/{t.steps}", f"loss {v['train/loss']:.4f} (mean of {n})", f"lr {v['train/lr']:.2e}",
                f"grad {v['train/grad_norm']:.3f}", f"|w| {v['train/params_norm']:.1f}",
                f"{v['throughput/tokens_per_s']:,.0f} tok/s ({v['throughput/tokens_per_s_per_device']:,.0f}/dev)",
                f"{v['throughput/step_time_s'] * 1000:.0f} ms/step",
                f"{v['throughput/tflops_per_device']:.3g} TFLOP/s/dev"]
        if "throughput/mfu_pct" in v:
            line.append(f"mfu {v['throughput/mfu_pct']:.1f}%")
        line.append(mem + " (max over ranks)" if self.world > 1 else mem)
        if "train/loss_dp_spread" in v:
            line.append(f"dp loss spread {v['train/loss_dp_spread']:.4f}")
        if self.skipped:
            line.append(f"skipped {self.skipped}")
        line.append(f"{metrics.count(v['progress/consumed_tokens'])} tokens "
                    f"({metrics.count(v['progress/consumed_samples'])} samples)")
        line.append(f"elapsed {metrics.duration(elapsed)}" + (f" ETA {metrics.duration(eta)}" if eta else ""))
        out = " | ".join(line)
        norms = []
        if tags.by_site(tags.ALPHA, v):
            norms.append("α " + _kind_summary(v, tags.ALPHA, ".3f"))
        threshold = self.cfg.logging.diagnostics.thresholds[0]
        if tags.by_site(tags.saturation(threshold), v):
            norms.append(f"|αx|>{threshold:g} " + _kind_summary(v, tags.saturation(threshold), ".1%"))
        if tags.by_site(tags.RESIDUAL_RMS, v):
            norms.append("input rms " + _kind_summary(v, tags.RESIDUAL_RMS, ".3g"))
        return out + ("\n" + " " * 8 + " | ".join(norms) if norms else "")

    def _warn(self, step: int, fired: dict[str, float]) -> None:
        d = self.cfg.logging.diagnostics
        sites = ", ".join(f"{site} ({f:.0%})" for site, f in fired.items())
        text = (f"step {step}: DyT saturation early warning: |α·x| > {d.thresholds[0]:g} for at least "
                f"{d.warn_fraction:.0%} of the sampled inputs in {d.warn_samples} consecutive samples at {sites}. "
                "Where tanh is flat the norm passes almost no signal or gradient; a residual stream that outgrows "
                "1/α this way is how DyT stalled at the unigram loss at width 128 (README, 'Small widths'). "
                "Training continues (a warning, not a stop); consider a smaller α₀ or a larger "
                "model.output_init_std.")
        print(f"WARNING {text}", flush=True)
        if self.tb:
            self.tb.text("warnings/saturation", text, step)

    def validation(self, step: int, loss: float) -> None:
        if self.is_main:
            ppl = float(torch.tensor(loss).exp())
            self.scalars({"val/loss": loss, "val/ppl": ppl}, step)
            if self.tb:
                self.tb.scalars({f"{tags.VS_TOKENS}/val_loss": loss}, step * self.tokens_per_step)
            print(f"step {step:>6}/{self.cfg.train.steps} | validation loss {loss:.4f} | ppl {ppl:.2f}", flush=True)

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.remove()
        for sink in self.sinks:
            sink.close()
        sys.stdout.flush()
