"""One writer per run directory: `<run>/run.lock` names its holder (host, PID) and carries a heartbeat.

Taken with an exclusive create (O_EXCL works on the shared filesystems SLURM clusters use, unlike flock on
some NFS set-ups). A lock is stale when its holder is a dead PID on this host, or when its heartbeat is older
than STALE_AFTER_S (another host: node lost, job killed); a stale lock is taken over with a message. A lock can
be handed from a launcher to the training job it starts (same token), so nothing can slip in between.
"""

import json
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

LOCK = "run.lock"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 90.0
TOKEN_ENV = "DYT_RUN_LOCK_TOKEN"


class RunLocked(RuntimeError):
    """Another live process holds the run directory."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_lock(run_dir: Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / LOCK).read_text())
    except (OSError, ValueError):
        return None


def stale_reason(info: dict) -> str | None:
    """Why a lock no longer protects anything, or None while its holder is alive."""
    age = time.time() - float(info.get("heartbeat", 0))
    pids = info.get("pids", [])
    if info.get("host") == socket.gethostname() and not any(_pid_alive(int(p)) for p in pids):
        return f"its holders (PID {', '.join(map(str, pids))} on this host) are not running"
    if age > STALE_AFTER_S:
        return f"its heartbeat is {age:.0f} s old (holder {info.get('pid')} on {info.get('host')} presumed gone)"
    return None


def describe(info: dict) -> str:
    age = time.time() - float(info.get("heartbeat", 0))
    pids = ", ".join(map(str, info.get("pids", [])))
    return (f"PID {pids} on {info.get('host')} ({info.get('what', 'a run')}, started "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(float(info.get('started', 0))))}, "
            f"heartbeat {age:.0f} s ago)")


class RunLock:
    def __init__(self, run_dir: Path, what: str) -> None:
        self.path = Path(run_dir) / LOCK
        self.what = what
        self.token: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self, pids: list[int], started: float | None = None) -> str:
        # A launcher hands its lock to the training job it starts: both PIDs hold it until both are gone.
        return json.dumps({"host": socket.gethostname(), "pids": pids, "token": self.token, "what": self.what,
                           "started": started or time.time(), "heartbeat": time.time()})

    def acquire(self, token: str | None = None) -> "RunLock":
        """Take the lock (or adopt it when `token` is the holder's); RunLocked if a live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            info = read_lock(self.path.parent)
            if info is not None and token is not None and info.get("token") == token:
                self.token = token
                self._write(self._record([*info.get("pids", []), os.getpid()], info.get("started")))
                return self._beat()
            if info is not None:
                reason = stale_reason(info)
                if reason is None:
                    raise RunLocked(f"{self.path.parent} is in use by {describe(info)}. Wait for it to finish, stop "
                                    f"it, or train under another name (name=...). Lock file: {self.path}")
                print(f"taking over the lock of {self.path.parent}: {reason}", file=sys.stderr, flush=True)
                try:  # rename first: of two processes taking over, only one rename succeeds
                    self.path.rename(self.path.with_name(f"{LOCK}.stale.{os.getpid()}"))
                    self.path.with_name(f"{LOCK}.stale.{os.getpid()}").unlink()
                except FileNotFoundError:
                    continue
            self.token = uuid.uuid4().hex
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                continue  # somebody was faster: look at their lock
            with os.fdopen(fd, "w") as f:
                f.write(self._record([os.getpid()]))
            return self._beat()
        raise RunLocked(f"{self.path}: could not take the lock (contended)")

    def _write(self, text: str) -> None:
        tmp = self.path.with_name(f"{LOCK}.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(self.path)

    def _beat(self) -> "RunLock":
        def loop() -> None:
            while not self._stop.wait(HEARTBEAT_S):
                info = read_lock(self.path.parent)
                if info is None or info.get("token") != self.token:
                    return  # released or taken over: never write somebody else's lock
                try:
                    self._write(self._record(info.get("pids", []), info.get("started")))
                except OSError:
                    pass  # a full disk must not kill training; the next beat retries

        self._thread = threading.Thread(target=loop, name="run-lock-heartbeat", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        self._stop.set()
        info = read_lock(self.path.parent)
        if info is not None and info.get("token") == self.token:
            self.path.unlink(missing_ok=True)
