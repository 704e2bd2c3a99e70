"""The training loop, top to bottom: config → runtime → data → engine → resume → steps → save.

    torchrun --nproc_per_node N -m pipeline.train --config configs/tiny_dyt.yaml [key=value ...]

(`python -m launch` / `make pretrain` build that command for you.) Outputs go to <output_dir>/<name>/:
config.yaml (fully resolved), tensorboard/, checkpoints/, status.json.
"""

import argparse
import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from pipeline import runtime
from pipeline.checkpoint import CheckpointManager
from pipeline.config import RunConfig, load_config, save_config
from pipeline.data import build_datasets, step_microbatches
from pipeline.monitor import Monitor
from pipeline.run_loader import start as start_session

log = logging.getLogger("pipeline")


# Test hook: die right after this step without saving (exercises crash → resume from the last checkpoint).
FAIL_AT_STEP = int(os.environ.get("DYT_FAIL_AT_STEP", "0"))


class NonFiniteLoss(RuntimeError):
    pass


class PreemptionFlag:
    """SIGTERM / SIGUSR1 → finish the current step, save, exit 0. Ranks agree through an all-reduce, so
    a signal that reached only some processes still stops all of them at the same step."""

    def __init__(self) -> None:
        self.signal: int | None = None
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.signal = signum

    def requested(self, device: torch.device) -> bool:
        flag = torch.tensor([1.0 if self.signal else 0.0], device=device)
        if dist.is_initialized():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


def write_status(run_dir: Path, state: str, step: int, **extra) -> None:
    tmp = run_dir / "status.json.tmp"
    tmp.write_text(json.dumps({"state": state, "step": step, "time": time.time(), **extra}, indent=2))
    tmp.replace(run_dir / "status.json")


def evaluate(engine, dataset, cfg: RunConfig, rt) -> float:
    """Mean loss over the first eval_iters global batches of the valid split (the same set every time)."""
    t = cfg.train
    losses = [engine.eval_loss(list(step_microbatches(dataset, i, t.global_batch_size, t.micro_batch_size,
                                                      rt.dp_rank, rt.dp_size))) for i in range(t.eval_iters)]
    return sum(losses) / len(losses)


def train(cfg: RunConfig) -> str:
    """Run (or resume) training; returns the final state: complete | preempted."""
    run_dir = Path(cfg.output_dir) / cfg.name
    t = cfg.train
    session = start_session(cfg)
    rt, engine = session.runtime, session.engine
    if rt.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        write_status(run_dir, "running", 0)
    engine.write_run_files(run_dir)

    ckpt = CheckpointManager(run_dir / "checkpoints", cfg)
    start = 0
    resume_from = ckpt.find_resume(cfg.checkpoint.resume)
    if resume_from is not None:
        start = ckpt.load(engine, resume_from)
        if rt.is_main:
            print(f"resumed from {resume_from} at step {start}", flush=True)
    elif cfg.checkpoint.init_from:
        ckpt.load_weights(engine, Path(cfg.checkpoint.init_from))

    num_valid = t.eval_iters * t.global_batch_size if t.eval_interval else 0
    train_ds, valid_ds = build_datasets(session.manifest, cfg.model.seq_length, t.seed, t.steps * t.global_batch_size,
                                        num_valid, run_dir / "cache")
    preempt = PreemptionFlag()
    n_params = engine.num_parameters()
    monitor = Monitor(cfg, run_dir, engine, rt, session.vocab_size, n_params, start)
    if rt.is_main:
        zero = f" zero {cfg.deepspeed.zero_stage}" if cfg.engine == "deepspeed" else ""
        print(f"run {cfg.name}: {cfg.model.norm.type}, {n_params / 1e6:.2f}M params, {cfg.engine} engine, world "
              f"{rt.world_size} (tp {cfg.parallel.tp} pp {cfg.parallel.pp} dp {rt.dp_size}{zero}), {rt.device.type}, "
              f"steps {start}→{t.steps}", flush=True)

    state, step, last_loss, t_start = "complete", start, float("nan"), time.time()
    for step in range(start + 1, t.steps + 1):
        batch = list(step_microbatches(train_ds, step - 1, t.global_batch_size, t.micro_batch_size,
                                       rt.dp_rank, rt.dp_size))
        monitor.before_step(step)
        t0 = time.perf_counter()
        result = engine.train_step(batch)
        monitor.step(step, result, time.perf_counter() - t0)
        if not math.isfinite(result.loss):
            if t.nan_policy == "stop":
                if rt.is_main:
                    write_status(run_dir, "failed", step - 1, reason="non-finite loss")
                raise NonFiniteLoss(f"step {step}: loss is {result.loss}; stopping (train.nan_policy: stop). "
                                    f"No checkpoint was written for this step; the last good one is kept.")
            if rt.is_main:
                print(f"step {step}: non-finite loss {result.loss}, update skipped (train.nan_policy: skip)",
                      flush=True)
        else:
            last_loss = result.loss
        if t.eval_interval and valid_ds is not None and (step % t.eval_interval == 0 or step == t.steps):
            monitor.validation(step, evaluate(engine, valid_ds, cfg, rt))
        if preempt.requested(rt.device):
            state = "preempted"
            break
        if step == FAIL_AT_STEP:
            raise SystemExit(f"DYT_FAIL_AT_STEP: crashing after step {step} without saving (test hook)")
        if cfg.checkpoint.save_interval and step % cfg.checkpoint.save_interval == 0 and step != t.steps:
            ckpt.save(engine, step, {"loss": last_loss})

    path = ckpt.save(engine, step, {"loss": last_loss})
    if rt.is_main:
        write_status(run_dir, state, step, checkpoint=str(path))
        wall = time.time() - t_start
        print(f"{state} at step {step}: last loss {last_loss:.4f}, {wall:.0f} s. Run dir {run_dir} "
              f"(config.yaml, checkpoints/{path.name}, tensorboard/: `make tensorboard`)", flush=True)
    monitor.close()
    runtime.shutdown()
    return state


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Train one run (normally started through `python -m launch`).")
    ap.add_argument("--config", required=True, help="run config name (configs/<name>.yaml) or path")
    ap.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.steps=50")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config, args.overrides)
    state = train(cfg)
    return 0 if state in ("complete", "preempted") else 1


if __name__ == "__main__":  # dist_checkpointing's writer re-imports __main__ (spawn): keep this guard
    sys.exit(main())
