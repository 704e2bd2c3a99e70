"""Shared test helpers: run training the way users do, and read what it wrote."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def launch(config: str, overrides: list[str], env: dict | None = None, timeout: int = 600,
           check: bool = True) -> subprocess.CompletedProcess:
    """`python -m launch CONFIG overrides...` from the repo root (what `make pretrain` runs)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "launch", config, *overrides], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"launch {config} {overrides} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def scalars(run_dir: Path, tag: str) -> dict[int, float]:
    """step → value of a TensorBoard scalar, across every event file of the run (resumes append)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[int, float] = {}
    for f in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            out.update({e.step: e.value for e in acc.Scalars(tag)})
    return out


def run_python(code: str, timeout: int = 300) -> str:
    """Run `code` in a fresh interpreter from the repo root; return stdout, fail with its stderr.

    For in-process megatron tests: megatron's parallel state and our CPU shims are process-wide, so
    each such test gets its own process instead of leaking them into the rest of the suite.
    """
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc.stdout


def crash_and_resume(runs, name: str, norm: str, extra: list[str], crash_after: int, saved: int) -> dict[int, float]:
    """Train run `name` (through a test module's `runs.run`) until it crashes after step `crash_after`, check
    that `latest` names step `saved`, run it again (it resumes); return its train/loss per step."""
    from tests.faults import fault_env

    crashed = runs.run(name, norm, extra, env=fault_env(crash_after_step=crash_after), check=False)
    assert crashed.returncode != 0
    assert (runs.root / name / "checkpoints" / "latest").read_text().strip() == f"step_{saved:07d}"
    resumed = runs.run(name, norm, extra)
    assert "resumed from" in resumed.stdout and f"step_{saved:07d}" in resumed.stdout
    return scalars(runs.root / name, "train/loss")


def assert_same_curves(got: tuple[dict, dict], ref: tuple[dict, dict], steps: int, loss_rel: float,
                       grad_rel: float) -> None:
    """(loss, grad norm) per step of a run equal a reference run's at every step 1..steps, within tolerances."""
    (loss, grad), (ref_loss, ref_grad) = got, ref
    assert sorted(loss) == list(range(1, steps + 1))
    for step in range(1, steps + 1):
        assert loss[step] == pytest.approx(ref_loss[step], rel=loss_rel), (step, loss, ref_loss)
        assert grad[step] == pytest.approx(ref_grad[step], rel=grad_rel), (step, grad, ref_grad)
