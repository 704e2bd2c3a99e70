"""The training loop, top to bottom: config → runtime → data → engine → resume → steps → save.

    torchrun --nproc_per_node N -m pipeline.train --config configs/tiny_dyt.yaml [key=value ...]

(`python -m launch` / `make pretrain` build that command for you.) Outputs go to <output_dir>/<name>/:
config.yaml (fully resolved), tensorboard/, checkpoints/, status.json, run.lock (while running).
"""

import argparse
import logging
import math
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from pipeline import runtime
from pipeline.checkpoint import CheckpointManager, read_meta
from pipeline.config import ConfigError, RunConfig, load_config, save_config, to_dict
from pipeline.config.rerun import check_rerun
from pipeline.data import build_datasets, data_fingerprint, step_microbatches
from pipeline.monitor import Monitor
from pipeline.process import StopRequest, die_with_parent
from pipeline.run_loader import start as start_session
from pipeline.run_lock import TOKEN_ENV, RunLock, RunLocked
from pipeline.run_status import FINISHED_OK, write_status

log = logging.getLogger("pipeline")


class NonFiniteLoss(RuntimeError):
    pass


class AlreadyComplete(Exception):
    """The checkpoint to resume from is already at train.steps: nothing to do."""


def evaluate(engine, dataset, cfg: RunConfig, rt) -> float:
    """Mean loss over the first eval_iters global batches of the valid split (the same set every time)."""
    t = cfg.train
    losses = [engine.eval_loss(list(step_microbatches(dataset, i, t.global_batch_size, t.micro_batch_size,
                                                      rt.dp_rank, rt.dp_size))) for i in range(t.eval_iters)]
    return sum(losses) / len(losses)


def check_resume(cfg: RunConfig, path: Path, fingerprint: str) -> None:
    """A resumed checkpoint must come from the same model and data stream (pipeline/config/rerun.py), and not
    from beyond train.steps. Raises before anything is written."""
    meta = read_meta(path)
    if "config" in meta:
        accepted = check_rerun(meta["config"], to_dict(cfg), cfg.checkpoint.allow_config_change,
                               explicit_resume=cfg.checkpoint.resume != "auto")
        if accepted and runtime.is_main_process():
            print(f"resuming {path.name} with config changes:\n  " + "\n  ".join(accepted), flush=True)
    allowed_data = any(k.startswith("data") for k in cfg.checkpoint.allow_config_change)
    if meta.get("data_fingerprint", fingerprint) != fingerprint and not allowed_data:
        raise ConfigError(f"data: the data manifest or tokenizer changed since {path} was saved (fingerprint "
                          f"{meta['data_fingerprint'][:12]} → {fingerprint[:12]}): the run would continue on another "
                          "data stream. Train under a new name, or allow it: checkpoint.allow_config_change=[data]")
    if meta["step"] > cfg.train.steps:
        raise ConfigError(f"train.steps: {cfg.train.steps} is below the step of the checkpoint to resume "
                          f"({path}, step {meta['step']}); set train.steps >= {meta['step']}, or start a new run")
    if meta["step"] == cfg.train.steps:
        raise AlreadyComplete(f"already complete: {path} is at train.steps={cfg.train.steps}; nothing to do "
                              "(raise train.steps to train longer)")


def train(cfg: RunConfig, progress: dict) -> str:
    """Run (or resume) training; returns the final state: complete | preempted. `progress["step"]` follows
    the last finished step (for the failure record)."""
    run_dir = Path(cfg.output_dir) / cfg.name
    t = cfg.train
    session = start_session(cfg)
    rt, engine = session.runtime, session.engine
    lock = RunLock(run_dir, what=f"training {cfg.name}").acquire(os.environ.get(TOKEN_ENV)) if rt.is_main else None
    progress["lock"] = lock
    fingerprint = data_fingerprint(session.manifest)
    ckpt = CheckpointManager(run_dir / "checkpoints", cfg)
    resume_from = ckpt.find_resume(cfg.checkpoint.resume)
    if resume_from is not None:
        check_resume(cfg, resume_from, fingerprint)
    if rt.is_main:
        save_config(cfg, run_dir / "config.yaml")
        write_status(run_dir, "running", 0)
    engine.write_run_files(run_dir)

    start = 0
    if resume_from is not None:
        start = ckpt.load(engine, resume_from)
        if rt.is_main:
            print(f"resumed from {resume_from} at step {start}", flush=True)
    elif (cfg.checkpoint.init_from or "").startswith("hf:"):
        from pipeline.hf.load import import_weights  # transformers is imported only when asked for

        import_weights(cfg.checkpoint.init_from, session)
    elif cfg.checkpoint.init_from:
        ckpt.load_weights(engine, Path(cfg.checkpoint.init_from))
    progress["step"] = start

    def save(step: int, loss: float) -> Path:
        return ckpt.save(engine, step, {"loss": loss, "config": to_dict(cfg), "data_fingerprint": fingerprint})

    num_valid = t.eval_iters * t.global_batch_size if t.eval_interval else 0
    train_ds, valid_ds = build_datasets(session.manifest, cfg.model.seq_length, t.seed, t.steps * t.global_batch_size,
                                        num_valid, run_dir / "cache")
    stop = StopRequest()
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
                raise NonFiniteLoss(f"step {step}: loss is {result.loss}; stopping (train.nan_policy: stop). "
                                    f"No checkpoint was written for this step; the last good one is kept.")
            if rt.is_main:
                print(f"step {step}: non-finite loss {result.loss}, update skipped (train.nan_policy: skip)",
                      flush=True)
        else:
            last_loss = result.loss
        progress["step"] = step
        if t.eval_interval and valid_ds is not None and (step % t.eval_interval == 0 or step == t.steps):
            monitor.validation(step, evaluate(engine, valid_ds, cfg, rt))
        if stop.requested(rt.device):
            state = "preempted"
            break
        if cfg.checkpoint.save_interval and step % cfg.checkpoint.save_interval == 0 and step != t.steps:
            save(step, last_loss)

    path = save(step, last_loss)
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
    die_with_parent(signal.SIGKILL)  # no training process outlives its torchrun, however that ends
    cfg = load_config(args.config, args.overrides)
    run_dir = Path(cfg.output_dir) / cfg.name
    progress: dict = {"step": 0, "lock": None}
    try:
        state = train(cfg, progress)
    except AlreadyComplete as e:
        if runtime.is_main_process():
            print(e, flush=True)
        return 0
    except (RunLocked, ConfigError) as e:  # refused before anything was written: the run dir is not ours
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except BaseException as e:  # any failure on any rank is recorded, then re-raised (non-zero exit)
        if run_dir.is_dir():
            write_status(run_dir, "failed", progress["step"], error=type(e).__name__, message=str(e)[-2000:],
                         rank=runtime.global_rank(), traceback=traceback.format_exc()[-4000:])
        raise
    finally:
        if progress["lock"] is not None:
            progress["lock"].release()
    return 0 if state in FINISHED_OK else 1


if __name__ == "__main__":  # dist_checkpointing's writer re-imports __main__ (spawn): keep this guard
    sys.exit(main())
