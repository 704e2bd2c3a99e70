"""Checkpoints, engine-neutral: atomic completion, the `latest` marker, retention, finding what to resume.

Layout of `<run>/checkpoints/`:
  step_0000100/         a complete checkpoint: the engine's own files + meta.json (written last)
  step_0000200.partial/ a save in progress or interrupted: never loaded, removed by the next save
  latest                the name of the newest complete checkpoint, replaced atomically after a save
A save is complete only once every rank has written and rank 0 has renamed the folder. What goes inside
the folder is the engine's business (`Engine.save/load/load_weights`).
"""

import json
import logging
import shutil
import time
from pathlib import Path

import torch.distributed as dist

from pipeline.engine import Engine

log = logging.getLogger(__name__)
META = "meta.json"


class CheckpointError(RuntimeError):
    pass


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def read_meta(path: Path) -> dict:
    return json.loads((Path(path) / META).read_text())


class CheckpointManager:
    def __init__(self, directory: Path, cfg) -> None:
        self.dir = Path(directory)
        self.cfg = cfg
        self.is_main = not dist.is_initialized() or dist.get_rank() == 0

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
        engine.save(partial, step)
        self._barrier()
        if self.is_main:
            meta = {"step": step, "engine": self.cfg.engine, "layout": engine.layout(), "saved_at": time.time(),
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
    def _check_engine(self, path: Path, key: str) -> dict:
        if not (Path(path) / META).is_file():
            raise CheckpointError(f"{key}: {path} is not a complete checkpoint (no {META})")
        meta = read_meta(path)
        saved = meta.get("engine", "megatron")
        if saved != self.cfg.engine:
            raise CheckpointError(f"{key}: {path} was written by the {saved} engine but this run uses "
                                  f"engine: {self.cfg.engine}; set engine={saved}, or export the weights "
                                  f"(`make export`) and start from them with checkpoint.init_from=hf:<dir>")
        return meta

    def load_weights(self, engine: Engine, path: Path) -> None:
        """Model weights only (any parallel layout): a run that starts from another run's weights."""
        self._check_engine(path, "checkpoint.init_from")
        try:
            engine.load_weights(Path(path))
        except Exception as e:
            raise CheckpointError(f"cannot load weights from {path}: {type(e).__name__}: {e}") from e

    def load(self, engine: Engine, path: Path) -> int:
        """Restore into `engine`; returns the step to continue from."""
        meta = self._check_engine(path, "checkpoint.resume")
        try:
            return engine.load(Path(path), meta["layout"])
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(f"cannot load checkpoint {path}: {type(e).__name__}: {e}") from e
