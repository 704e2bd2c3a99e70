"""Checkpoints: megatron dist_checkpointing, atomic completion, `latest` marker, retention, resume.

Layout of `<run>/checkpoints/`:
  step_0000100/         a complete checkpoint (dist_checkpointing files + meta.json)
  step_0000200.partial/ a save in progress or interrupted: never loaded, removed by the next save
  latest                the name of the newest complete checkpoint, replaced atomically after a save
A save is complete only once every rank has written and rank 0 has renamed the folder.
"""

import json
import logging
import shutil
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing
from megatron.core import parallel_state as ps
from megatron.core.dist_checkpointing.mapping import ShardedObject
from megatron.core.tensor_parallel import get_cuda_rng_tracker

from pipeline import cpu_compat
from pipeline.engine import Engine

log = logging.getLogger(__name__)
META = "meta.json"


class CheckpointError(RuntimeError):
    pass


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def layout(cfg) -> dict:
    p = cfg.parallel
    return {"tp": p.tp, "pp": p.pp, "vpp": p.vpp, "cp": p.cp, "world_size": cfg.world_size,
            "distributed_optimizer": p.distributed_optimizer, "precision": cfg.train.precision}


def _rng_state() -> ShardedObject:
    state = {"torch": torch.get_rng_state(), "tracker": get_cuda_rng_tracker().get_states(),
             "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}
    # One object per (pp, tp) rank; DP replicas share RNG streams in megatron.
    return ShardedObject("rng_state", state, (ps.get_pipeline_model_parallel_world_size(),
                         ps.get_tensor_model_parallel_world_size()),
                         (ps.get_pipeline_model_parallel_rank(), ps.get_tensor_model_parallel_rank()),
                         replica_id=ps.get_data_parallel_rank(with_context_parallel=True))


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    get_cuda_rng_tracker().set_states(state["tracker"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _start_writer_queue() -> None:
    """dist_checkpointing reports writes through a spawned Manager process that lives as long as training.
    SLURM signals every process of a job step on preemption; started with SIGTERM/SIGUSR1 ignored (SIG_IGN
    survives exec) it outlives the signal, so the preemption checkpoint can still be written."""
    from megatron.core.dist_checkpointing.strategies.filesystem_async import get_write_results_queue

    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        get_write_results_queue(cpu_compat.checkpoint_queue_start_method())
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


class CheckpointManager:
    def __init__(self, directory: Path, cfg) -> None:
        self.dir = Path(directory)
        self.cfg = cfg
        self.is_main = not dist.is_initialized() or dist.get_rank() == 0
        _start_writer_queue()

    def _barrier(self) -> None:
        if dist.is_initialized():
            dist.barrier()

    # -- save -----------------------------------------------------------------------------------------
    def save(self, engine: Engine, step: int, extra: dict | None = None) -> Path:
        name = f"step_{step:07d}"
        final, partial = self.dir / name, self.dir / f"{name}.partial"
        if self.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            for stale in self.dir.glob("*.partial"):
                shutil.rmtree(stale)
            if final.exists():  # re-saving the same step (e.g. preempted right after a save)
                shutil.rmtree(final)
            partial.mkdir()
        self._barrier()
        t0 = time.time()
        state = engine.model_state()
        state["optimizer"] = engine.optimizer_state(state, is_loading=False)
        state["scheduler"] = engine.scheduler.state_dict()
        state["step"] = step
        state["rng_state"] = _rng_state()
        dist_checkpointing.save(state, str(partial))
        self._barrier()
        if self.is_main:
            meta = {"step": step, "layout": layout(self.cfg), "saved_at": time.time(),
                    "save_seconds": round(time.time() - t0, 2), **(extra or {})}
            _atomic_write(partial / META, json.dumps(meta, indent=2))
            partial.rename(final)
            _atomic_write(self.dir / "latest", name + "\n")
            self._prune()
        self._barrier()
        return final

    def _prune(self) -> None:
        done = self.complete_checkpoints()
        for old in done[: -self.cfg.checkpoint.keep_last]:
            shutil.rmtree(old, ignore_errors=True)

    # -- find -----------------------------------------------------------------------------------------
    def complete_checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.glob("step_*") if p.is_dir() and not p.name.endswith(".partial")
                      and (p / META).is_file())

    def find_resume(self, resume: str) -> Path | None:
        """`auto`: the checkpoint `latest` names, else the newest complete one (with a warning);
        `none`: nothing; a path: that checkpoint, which must be complete."""
        if resume == "none":
            return None
        if resume != "auto":
            path = Path(resume)
            if not (path / META).is_file():
                raise CheckpointError(f"checkpoint.resume: {path} is not a complete checkpoint (no {META})")
            return path
        marker = self.dir / "latest"
        done = self.complete_checkpoints()
        if marker.is_file():
            named = self.dir / marker.read_text().strip()
            if (named / META).is_file():
                return named
            if done:
                log.warning("checkpoint %s named by %s is missing or incomplete; resuming from %s instead",
                            named, marker, done[-1])
        return done[-1] if done else None

    # -- load -----------------------------------------------------------------------------------------
    def load_weights(self, engine: Engine, path: Path) -> None:
        """Model weights only (any parallel layout): a run that starts from another run's weights."""
        if not (Path(path) / META).is_file():
            raise CheckpointError(f"checkpoint.init_from: {path} is not a complete checkpoint (no {META})")
        try:
            engine.load_model(dist_checkpointing.load(engine.model_state(), str(path)))
        except Exception as e:
            raise CheckpointError(f"cannot load weights from {path}: {type(e).__name__}: {e}") from e

    def load(self, engine: Engine, path: Path) -> int:
        """Restore into `engine`; returns the step to continue from. Across a different parallel layout
        only the weights (and schedule/step) are restored: the optimizer shards follow the old layout."""
        meta = json.loads((path / META).read_text())
        same_layout = meta["layout"] == layout(self.cfg)
        template = engine.model_state()
        if same_layout:
            template["optimizer"] = engine.optimizer_state(template, is_loading=True)
            template["rng_state"] = _rng_state()
        try:
            state = dist_checkpointing.load(template, str(path))
        except Exception as e:
            raise CheckpointError(f"cannot load checkpoint {path}: {type(e).__name__}: {e}") from e
        engine.load_model(state)
        if same_layout:
            engine.load_optimizer(state["optimizer"])
            _set_rng_state(state["rng_state"])
        elif self.is_main:
            log.warning("checkpoint %s was saved with layout %s; now %s: loaded weights, schedule and step, "
                        "optimizer state starts fresh", path, meta["layout"], layout(self.cfg))
        common = dist_checkpointing.load_common_state_dict(str(path))
        engine.scheduler.load_state_dict(common["scheduler"])
        step = int(common["step"])
        engine.set_step(step)
        return step
