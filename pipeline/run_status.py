"""`<run>/status.json`: what a run's last process said about it (running | complete | preempted | failed).

Pure Python (no torch): the launcher and the SLURM batch script read it to decide exit codes and requeues.
"""

import json
import os
import time
from pathlib import Path

FINISHED_OK = ("complete", "preempted")  # states a launcher reports as success (exit 0)


def write_status(run_dir: Path, state: str, step: int, **extra) -> None:
    """Atomic replace; the temp name is per process, so ranks that fail together do not collide."""
    run_dir = Path(run_dir)
    tmp = run_dir / f"status.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"state": state, "step": step, "time": time.time(), **extra}, indent=2))
    tmp.replace(run_dir / "status.json")


def read_status(run_dir: Path) -> dict:
    path = Path(run_dir) / "status.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"state": "missing", "step": 0}
