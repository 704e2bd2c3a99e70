"""Small helpers shared by the evaluation jobs."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def child_env() -> dict[str, str]:
    """Environment for a child job (`python -m launch`, `python -m pipeline.evaluation`): this repo importable
    from any working directory."""
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}
