"""Checkpoints, engine-neutral: atomic completion, integrity records, `latest`, retention, verified resume.

Layout of `<run>/checkpoints/`:
  step_0000100/          a complete checkpoint: the engine's own files + meta.json, the integrity record
  step_0000200.partial/  a save in progress or interrupted: never loaded, removed by the next save
  step_0000300.rejected/ moved aside (never deleted) by a resume: it failed verification or loading
  step_0000300.superseded/  moved aside by a resume from an older step (another timeline)
  latest                 the name of the newest complete checkpoint, replaced atomically after a save

The protocol (every path keeps it): the engine writes into `step_N.partial/`; once every rank is done, the
files are hashed (each rank a share), rank 0 writes meta.json, renames the folder to `step_N/`, points
`latest` at it and only then prunes older checkpoints. A complete checkpoint is never deleted or rewritten
before a newer one is complete; asking to save a step that is already saved is a no-op.
"""

import errno
import logging
import re
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from torch.distributed.checkpoint.api import CheckpointException

from pipeline.config.fingerprint import config_fingerprint
from pipeline.engine import Engine, PendingSave

from . import integrity
from .collective import barrier, broadcast, first_error, gather, rank_world
from .diagnose import describe, free_bytes, human, summary
from .integrity import RECORD, IntegrityError

log = logging.getLogger(__name__)
STEP_DIR = re.compile(r"step_(\d{7})")

# torch.distributed.checkpoint raises CheckpointException, which derives from BaseException, not Exception:
# `except Exception` lets a damaged or unwritable checkpoint escape as a raw traceback. Catch it by name and
# nothing else outside Exception: KeyboardInterrupt and SystemExit must still end the process.
FAILURES = (Exception, CheckpointException)


class CheckpointError(RuntimeError):
    pass


class CheckpointSaveError(CheckpointError):
    """A save failed (disk full, permissions, I/O); the previous checkpoint and `latest` are intact."""


class CheckpointLoadError(CheckpointError):
    def __init__(self, path: Path, what: str, reason: str) -> None:
        super().__init__(f"cannot load {what} from {path}: {reason}")
        self.reason = reason


class NonFiniteState(CheckpointError):
    """The weights or optimizer state hold inf/NaN: such a state is never written."""


def read_meta(path: Path) -> dict:
    """The integrity record of a checkpoint (sealed JSON; raises IntegrityError)."""
    return integrity.read_record(Path(path))


def step_of(path: Path) -> int:
    return int(STEP_DIR.fullmatch(path.name).group(1))


def async_enabled(cfg, on_gpu: bool) -> bool:
    """checkpoint.async_save: auto = on for GPU runs of the megatron engine (DeepSpeed saves synchronously)."""
    if cfg.checkpoint.async_save == "auto":
        return on_gpu and cfg.engine == "megatron"
    return cfg.checkpoint.async_save


@dataclass
class Resumed:
    path: Path
    step: int
    record: dict


@dataclass
class _Save:
    step: int
    partial: Path
    layout: dict
    extra: dict
    started: float  # time.time() when the save began
    pending: PendingSave | None
    stall: float = 0.0  # seconds the training loop was blocked by this save
    checksums: Future | None = None  # async saves: this rank's share, computed in a background thread
    is_async: bool = field(init=False)

    def __post_init__(self) -> None:
        self.is_async = self.pending is not None


class CheckpointManager:
    def __init__(self, directory: Path, cfg, async_save: bool = False) -> None:
        self.dir = Path(directory)
        self.cfg = cfg
        self.async_save = async_save
        self.rank, self.world = rank_world()
        self.is_main = self.rank == 0
        self.resumed_step: int | None = None
        self._inflight: _Save | None = None
        self._pin_before: int | None = None  # keep the newest checkpoint older than this step
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-crc")

    # -- listing ---------------------------------------------------------------------------------------
    def _step_dirs(self) -> list[Path]:
        """Every `step_N` folder, complete or not, oldest first."""
        if not self.dir.is_dir():
            return []
        return sorted((p for p in self.dir.iterdir() if p.is_dir() and STEP_DIR.fullmatch(p.name)), key=step_of)

    def complete_checkpoints(self) -> list[Path]:
        """Checkpoints whose save completed (record present; verified only when loaded), oldest first."""
        return [p for p in self._step_dirs() if (p / RECORD).is_file()]

    def last_good(self) -> Path | None:
        """The retention pin: the newest checkpoint saved before the current streak of skipped steps."""
        if self._pin_before is None:
            return None
        older = [p for p in self.complete_checkpoints() if step_of(p) < self._pin_before]
        return older[-1] if older else None

    def pin_last_good(self, before_step: int) -> None:
        self._pin_before = before_step

    def unpin(self) -> None:
        self._pin_before = None

    # -- save ------------------------------------------------------------------------------------------
    def save(self, engine: Engine, step: int, extra: dict | None = None, final: bool = False) -> Path | None:
        """Collective. Synchronous saves (and `final` ones: end of training, preemption) return the
        complete checkpoint; an asynchronous one returns None and completes in a later `poll`/`wait`.
        With checkpoint.on_save_error: continue, a failed non-final save logs and returns None."""
        self.wait()
        name = f"step_{step:07d}"
        target, partial = self.dir / name, self.dir / f"{name}.partial"
        if self._already_saved(target, step):
            return target
        if not engine.state_is_finite():
            raise NonFiniteState(f"step {step}: the weights or optimizer state hold inf/NaN; not saving them. "
                                 f"Newest good checkpoint: {self._newest_text()}")
        t0, started, error = time.perf_counter(), time.time(), None
        if self.is_main:
            try:
                self._prepare(partial)
            except FAILURES as e:
                error = describe(e, self.dir)
        error = first_error(error)
        if error is None:
            try:
                pending = engine.save(partial, step, async_save=self.async_save and not final)
            except FAILURES as e:
                error = describe(e, self.dir)
            error = first_error(error)
        if error is not None:
            return self._failed(step, partial, error, final)
        job = _Save(step, partial, engine.layout(), extra or {}, started, pending)
        job.stall = time.perf_counter() - t0
        if pending is None:
            return self._commit(job, final)
        self._inflight = job
        return None

    def _already_saved(self, target: Path, step: int) -> bool:
        """A complete checkpoint of this step is the one this run resumed from (a rerun of a finished or
        just-saved run): keep it, never rewrite it. Anything else under that name is moved aside, not deleted."""
        decision = None
        if self.is_main and target.exists():
            if (target / RECORD).is_file() and step == self.resumed_step:
                _atomic_write(self.dir / "latest", target.name + "\n")
                print(f"checkpoint {target.name} is already saved; kept as it is", flush=True)
                decision = "kept"
            else:
                self._set_aside(target, "superseded", "an older save of this step from another timeline")
        return broadcast(decision) == "kept"

    def _prepare(self, partial: Path) -> None:
        """Rank 0: clear interrupted saves, check the space the last checkpoint took, create the folder."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob("*.partial"):
            shutil.rmtree(stale)
        need, free = self._last_size(), free_bytes(self.dir)
        if need and free is not None and free < need:
            raise OSError(errno.ENOSPC, f"the last checkpoint took {human(need)}")
        partial.mkdir()

    def _last_size(self) -> int:
        """Bytes of the newest complete checkpoint (0 when there is none, or its record is unreadable)."""
        done = self.complete_checkpoints()
        try:
            return sum(f["size"] for f in read_meta(done[-1])["files"].values()) if done else 0
        except IntegrityError:
            return 0

    def poll(self) -> None:
        """Collective, cheap (one all-reduce while a save is in flight): complete a finished async save."""
        if self._inflight is not None:
            self._finish(blocking=False)

    def wait(self) -> None:
        """Collective: block until the in-flight async save (if any) is complete."""
        if self._inflight is not None:
            self._finish(blocking=True)

    def _finish(self, blocking: bool) -> None:
        """An async save completes in two collective phases, each polled without blocking training: the
        engine's writers finish on every rank, then each rank checksums its share of the files in a
        background thread; once all shares are in, `_commit` runs."""
        job, t0, error, ready = self._inflight, time.perf_counter(), None, False
        try:
            if job.checksums is None and job.pending.done(blocking):
                files = self._listing(job.partial)
                job.checksums = self._pool.submit(integrity.hash_files, job.partial, files[self.rank::self.world])
            if job.checksums is not None:
                ready = all(gather(blocking or job.checksums.done()))
        except FAILURES as e:
            error = describe(e, self.dir)
        error = first_error(error)
        job.stall += time.perf_counter() - t0
        if error is not None:
            self._inflight = None
            self._failed(job.step, job.partial, error, final=False)
        elif ready:
            self._inflight = None
            self._commit(job, final=False)

    def _listing(self, partial: Path) -> list[str]:
        """Collective: rank 0's listing of a written checkpoint folder (one view of a shared filesystem)."""
        listing = None
        if self.is_main:
            try:
                listing = (integrity.list_files(partial), None)
            except OSError as e:
                listing = (None, describe(e, self.dir))
        files, error = broadcast(listing)
        if error is not None:
            raise OSError(error)
        return files

    def _commit(self, job: _Save, final: bool) -> Path | None:
        """Checksum the written files (each rank a share; async saves did it in the background), then rank 0
        seals the record, renames the folder, points `latest` at it and prunes."""
        t0 = time.perf_counter()
        target = job.partial.with_name(job.partial.name.removesuffix(".partial"))
        share, error = {}, None
        try:
            if job.checksums is not None:
                share = job.checksums.result()
            else:
                share = integrity.hash_files(job.partial, self._listing(job.partial)[self.rank::self.world])
        except FAILURES as e:
            error = describe(e, self.dir)
        gathered = gather((share, error))
        error = next((e for _, e in gathered if e is not None), None)
        if error is None and self.is_main:
            try:
                files = {k: v for s, _ in gathered for k, v in s.items()}
                job.stall += time.perf_counter() - t0
                integrity.write_record(job.partial, {
                    "step": job.step, "engine": self.cfg.engine, "layout": job.layout,
                    "config_fingerprint": config_fingerprint(self.cfg), "saved_at": time.time(),
                    "write_seconds": round(time.time() - job.started, 3), "stall_seconds": round(job.stall, 3),
                    "async": job.is_async, "files": {k: files[k] for k in sorted(files)}, **job.extra})
                job.partial.rename(target)
                _atomic_write(self.dir / "latest", target.name + "\n")
                self._prune()
                size = sum(v["size"] for v in files.values())
                print(f"checkpoint {target.name} saved ({human(size)}, {time.time() - job.started:.1f} s, training "
                      f"blocked {job.stall:.2f} s{', async' if job.is_async else ''})", flush=True)
            except FAILURES as e:
                error = describe(e, self.dir)
        error = first_error(error)
        if error is not None:
            return self._failed(job.step, job.partial, error, final)
        return target

    def _failed(self, step: int, partial: Path, reason: str, final: bool) -> None:
        """Remove the partial folder (or mark it), keep everything else; raise, or log and go on."""
        left = ""
        if self.is_main and partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
            if partial.exists():
                marked = _free_name(partial.with_name(partial.name.removesuffix(".partial") + ".failed"))
                partial.rename(marked)
                left = f"; its partial files are kept in {marked}"
        barrier()
        msg = (f"checkpoint step_{step:07d} could not be saved in {partial}: {reason}. "
               f"The previous checkpoint ({self._newest_text()}) and `latest` are unchanged"
               f"{left or '; the partial folder was removed'}.")
        if self.cfg.checkpoint.on_save_error == "continue" and not final:
            if self.is_main:
                log.warning("%s Training continues (checkpoint.on_save_error: continue).", msg)
            return None
        raise CheckpointSaveError(msg)

    def _newest_text(self) -> str:
        done = self.complete_checkpoints()
        return str(done[-1]) if done else "none yet"

    def _prune(self) -> None:
        """Rank 0, after a save completed: keep the newest `keep_last` and the last-good pin."""
        done = self.complete_checkpoints()
        keep = set(done[-self.cfg.checkpoint.keep_last:])
        pinned = self.last_good()
        if pinned is not None:
            keep.add(pinned)
        for old in done:
            if old not in keep:
                shutil.rmtree(old, ignore_errors=True)

    def _set_aside(self, path: Path, tag: str, why: str) -> None:
        """Rank 0: rename a checkpoint folder out of every list (it is kept for the user to inspect)."""
        dest = _free_name(path.with_name(f"{path.name}.{tag}"))
        path.rename(dest)
        log.warning("moved %s aside to %s (%s); it is kept, delete it when you no longer need it", path, dest.name,
                    why)

    # -- verify and load -------------------------------------------------------------------------------
    def verify(self, path: Path) -> dict:
        """Collective: the record seals, the files on disk are exactly the recorded ones, and each rank checks
        the sizes and CRC-32 of its share of them. Nothing of the checkpoint is unpickled before this."""
        head = None
        if self.is_main:
            try:
                record = integrity.read_record(path)
                integrity.check_listing(path, record, integrity.list_files(path))
                head = (record, None)
            except IntegrityError as e:
                head = (None, (e.file, e.reason))
        record, failure = broadcast(head)
        if failure is None:
            try:
                integrity.check_files(path, record, sorted(record["files"])[self.rank::self.world])
            except IntegrityError as e:
                failure = (e.file, e.reason)
            failure = next((f for f in gather(failure) if f is not None), None)
        if failure is not None:
            raise IntegrityError(path, *failure)
        return record

    def _check_engine(self, path: Path, record: dict, key: str) -> None:
        saved = record["engine"]
        if saved != self.cfg.engine:
            raise CheckpointError(f"{key}: {path} was written by the {saved} engine but this run uses "
                                  f"engine: {self.cfg.engine}; set engine={saved}, or export the weights "
                                  f"(`make export`) and start from them with checkpoint.init_from=hf:<dir>")

    def _load(self, path: Path, what: str, load) -> int | None:
        """Collective: run `load()`; every rank raises CheckpointError if any rank failed."""
        result, error = None, None
        try:
            result = load()
        except FAILURES as e:
            error = summary(e)
        error = first_error(error)
        if error is not None:
            raise CheckpointLoadError(path, what, error)
        return result

    def _open(self, path: Path, key: str) -> dict:
        """An explicitly named checkpoint: verified, or a CheckpointError naming the path and the file."""
        try:
            record = self.verify(path)
        except IntegrityError as e:
            raise CheckpointError(f"{key}: {path} failed verification: {e.file}: {e.reason}") from None
        self._check_engine(path, record, key)
        return record

    def _walk(self, load, key: str, check=None) -> tuple[Path, dict, int | None, list[tuple[Path, str]]] | None:
        """Newest first: the first checkpoint that verifies and loads. Each one skipped is named, with why.
        A wrong engine, or `check` refusing the checkpoint, is a config error, not damage: it raises."""
        skipped: list[tuple[Path, str]] = []
        for path in reversed(self._step_dirs()):
            try:
                record = self.verify(path)
                self._check_engine(path, record, key)
                if check is not None:
                    check(path, record)
                result = load(path, record)
            except IntegrityError as e:
                reason = f"failed verification: {e.file}: {e.reason}"
            except CheckpointLoadError as e:
                reason = f"verified, but loading failed: {e.reason}"
            else:
                return path, record, result, skipped
            skipped.append((path, reason))
            if self.is_main:
                log.warning("skipping checkpoint %s: %s", path, reason)
        if skipped:
            listing = "\n  ".join(f"{p}: {r}" for p, r in skipped)
            raise CheckpointError(f"no usable checkpoint in {self.dir} (no complete checkpoint verifies and loads):"
                                  f"\n  {listing}\nName one explicitly with "
                                  "checkpoint.resume=<dir>, or start over with checkpoint.resume=none (which moves "
                                  "these aside)")
        return None

    def _read_latest(self) -> str | None:
        try:
            return (self.dir / "latest").read_bytes().decode("utf-8").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            if self.is_main:
                log.warning("%s is unreadable (%s); looking for the newest checkpoint instead", self.dir / "latest", e)
            return None

    def restore(self, engine: Engine, resume: str,
                check: Callable[[Path, dict], None] | None = None) -> Resumed | None:
        """Collective. `auto`: the newest checkpoint of this run that verifies and loads (naming each one
        skipped and why); `none`: start fresh; a path: exactly that checkpoint, or a CheckpointError naming
        the path and the failed file. `check(path, record)` runs between verification and loading and may
        refuse the checkpoint (an exception, before anything is changed on disk). Checkpoints of this run
        newer than the one resumed are moved aside."""
        if resume == "none":
            self._supersede_after(0, "checkpoint.resume=none")
            return None

        def load(path: Path, record: dict) -> int:
            return self._load(path, "the checkpoint", lambda: engine.load(path, record["layout"]))

        if resume != "auto":
            path = Path(resume)
            record = self._open(path, "checkpoint.resume")
            if check is not None:
                check(path, record)
            step = load(path, record)
            self._supersede_after(step, f"this run resumed from {path}")
        else:
            named = self._read_latest()
            found = self._walk(load, "checkpoint.resume", check)
            if found is None:
                return None
            path, record, step, skipped = found
            if named is not None and named != path.name and self.is_main and not skipped:
                log.warning("%s names %s, but the newest complete checkpoint is %s; resuming from it",
                            self.dir / "latest", named, path)
            if self.is_main:
                for bad, reason in skipped:
                    self._set_aside(bad, "rejected", reason)
            self._supersede_after(step, f"this run resumed from {path}")
        self.resumed_step = step
        return Resumed(path, step, record)

    def _supersede_after(self, step: int, why: str) -> None:
        """Rank 0: checkpoints of this run beyond `step` belong to another timeline; move them aside."""
        if self.is_main:
            for path in self._step_dirs():
                if step_of(path) > step:
                    self._set_aside(path, "superseded", why)
            if step == 0 and (self.dir / "latest").exists():
                (self.dir / "latest").unlink()
        barrier()

    def load_weights(self, engine: Engine, path: Path) -> dict:
        """Model weights only (any parallel layout), from a verified checkpoint: checkpoint.init_from."""
        path = Path(path)
        record = self._open(path, "checkpoint.init_from")
        self._load(path, "weights", lambda: engine.load_weights(path, record["layout"]))
        return record

    def load_newest_weights(self, engine: Engine) -> tuple[Path, dict]:
        """Weights of the newest checkpoint that verifies and loads (evaluation, export); nothing is moved."""
        found = self._walk(lambda p, r: self._load(p, "weights", lambda: engine.load_weights(p, r["layout"])),
                           "checkpoint")
        if found is None:
            raise CheckpointError(f"{self.dir}: no complete checkpoint")
        return found[0], found[1]


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _free_name(path: Path) -> Path:
    """`path`, or `path.1`, `path.2`, ... : the first that does not exist."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate
