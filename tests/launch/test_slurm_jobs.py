"""2-node tiny training through a real sbatch/srun on the loopback cluster: completion, preemption with
requeue and resume, the restart budget, and job arrays. About 3 minutes on 2 cores."""

import math
import re
import time
from pathlib import Path

import pytest

from tests.helpers import launch, scalars
from tests.launch.localslurm import LocalSlurm

pytestmark = pytest.mark.slow

STEPS = 30
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
            "DEADLINE"}


def overrides(out: Path, name: str, manifest: Path, *extra: str) -> list[str]:
    return ["--launcher", "slurm", "--nodes", "2", f"output_dir={out}", f"name={name}",
            f"data.manifest={manifest}", f"train.steps={STEPS}", "train.log_interval=1",
            "train.eval_interval=0", "checkpoint.save_interval=5", "schedule.warmup_steps=3", *extra]


def excerpt(text: str) -> str:
    """A job log, shortened for an assertion message: its exception lines first, then its end."""
    errors = [line for line in text.splitlines() if re.search(r"\w(Error|Exception): ", line)]
    return "\n".join(["exceptions in the log:", *errors[:20], "... end of the log:", text[-3000:]])


def submit(slurm: LocalSlurm, argv: list[str]) -> int:
    out = launch("tiny_dyt", argv, env=slurm.env, timeout=60).stdout
    m = re.search(r"submitted job (\d+)", out)
    assert m, out
    return int(m.group(1))


def jobs(slurm: LocalSlurm, job_id: int) -> list[dict[str, str]]:
    """`scontrol show job` records (one per array task) as dicts."""
    out = slurm.run("scontrol", "-o", "show", "job", str(job_id)).stdout
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines() if line.strip()]


def wait_done(slurm: LocalSlurm, job_id: int, logs: list[Path], timeout: float = 240) -> list[dict[str, str]]:
    deadline = time.monotonic() + timeout
    while True:
        recs = jobs(slurm, job_id)
        if recs and all(r["JobState"] in TERMINAL for r in recs):
            return recs
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not done after {timeout} s: {recs}\n" + "\n".join(
                f"--- {p}\n{excerpt(p.read_text())}" for p in logs if p.exists()) + "\n" + slurm.logs())
        time.sleep(0.5)


def wait_for_step(log: Path, step: int, timeout: float = 120) -> None:
    """Until rank 0 has logged `step` (whichever node it runs on: srun --label prefixes 0: or 1:)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = [int(s) for s in re.findall(r"step +(\d+)/", log.read_text())] if log.exists() else []
        if steps and max(steps) >= step:
            return
        time.sleep(0.2)
    text = excerpt(log.read_text()) if log.exists() else "no log"
    raise AssertionError(f"step {step} never logged:\n{text}")


def status(run_dir: Path) -> dict:
    import json

    return json.loads((run_dir / "status.json").read_text())


@pytest.fixture(scope="module")
def reference(slurm, pydocs_manifest, tmp_path_factory) -> dict[int, float]:
    """An uninterrupted 2-node run through sbatch. An env value full of shell syntax rides along: it must
    reach the job as text, never run."""
    out = tmp_path_factory.mktemp("slurm-ref")
    probe = f"$(touch {out}/pwned1)`touch {out}/pwned2`'; touch {out}/pwned3; '"
    job = submit(slurm, overrides(out, "ref", pydocs_manifest, f"launch.slurm.env.PROBE={probe}"))
    run_dir, log = out / "ref", out / "ref" / "logs" / f"slurm-{job}.out"
    (rec,) = wait_done(slurm, job, [log])
    assert rec["JobState"] == "COMPLETED" and rec["Restarts"] == "0", excerpt(log.read_text())
    assert status(run_dir)["state"] == "complete" and status(run_dir)["step"] == STEPS
    assert "status.json says complete" in log.read_text()
    assert not list(out.glob("pwned*")), "config text ran as shell"
    losses = scalars(run_dir, "train/loss")
    assert sorted(losses) == list(range(1, STEPS + 1)) and all(math.isfinite(v) for v in losses.values())
    return losses


def test_two_node_job_completes(reference):
    assert reference[STEPS] < reference[1], "the loss went down"


def test_preempt_requeue_resume_matches_uninterrupted(slurm, pydocs_manifest, reference, tmp_path):
    job = submit(slurm, overrides(tmp_path, "pre", pydocs_manifest))
    run_dir = tmp_path / "pre"
    log = run_dir / "logs" / f"slurm-{job}.out"
    wait_for_step(log, 7)  # after the periodic checkpoint at step 5: preemption must save on top of it
    # Signals the job steps' tasks (torchrun and the training processes), not the batch shell: the way
    # --signal=TERM@grace arrives before the time limit.
    slurm.run("scancel", "-s", "TERM", str(job))
    (rec,) = wait_done(slurm, job, [log])
    text = log.read_text()
    assert rec["JobState"] == "COMPLETED" and rec["Restarts"] == "1", excerpt(text)
    preempted = re.search(r"preempted at step (\d+)", text)
    assert preempted and 7 <= int(preempted.group(1)) < STEPS, excerpt(text)
    k = int(preempted.group(1))
    assert f"status.json says preempted at step {k}" in text and "requeueing (restart 1 of 3)" in text
    assert f"resumed from {run_dir}/checkpoints/step_{k:07d} at step {k}" in text
    assert status(run_dir)["state"] == "complete" and status(run_dir)["step"] == STEPS
    losses = scalars(run_dir, "train/loss")
    assert sorted(losses) == list(range(1, STEPS + 1))
    assert losses == reference, "resumed run diverged from the uninterrupted one (bit for bit on CPU)"


def test_restart_budget_exhausted(slurm, pydocs_manifest, tmp_path):
    job = submit(slurm, overrides(tmp_path, "budget", pydocs_manifest, "launch.slurm.max_restarts=0",
                                  "train.steps=500"))
    run_dir = tmp_path / "budget"
    log = run_dir / "logs" / f"slurm-{job}.out"
    wait_for_step(log, 2)
    slurm.run("scancel", "-s", "TERM", str(job))
    (rec,) = wait_done(slurm, job, [log])
    text = log.read_text()
    assert rec["JobState"] == "FAILED" and rec["Restarts"] == "0", excerpt(text)
    assert status(run_dir)["state"] == "preempted" and "not requeueing: 0 restarts used" in text
    assert (run_dir / "checkpoints" / "latest").exists()


def test_sweep_runs_as_one_array_job(slurm, pydocs_manifest, tmp_path):
    job = submit(slurm, overrides(tmp_path, "arr", pydocs_manifest, "train.steps=3",
                                  "schedule.warmup_steps=1", "--sweep", "train.seed=1",
                                  "--sweep", "train.seed=2 name=arr-seed2"))
    runs = [tmp_path / "arr-0", tmp_path / "arr-seed2"]
    recs = wait_done(slurm, job, [p for r in runs for p in (r / "logs").glob("*.out")])
    assert sorted(r["ArrayTaskId"] for r in recs) == ["0", "1"]
    assert all(r["JobState"] == "COMPLETED" and r["ArrayJobId"] == str(job) for r in recs), recs
    first_losses = []
    for run_dir in runs:
        assert status(run_dir)["state"] == "complete" and status(run_dir)["step"] == 3
        (log,) = (run_dir / "logs").glob("slurm-*.out")  # each task logs into its own run dir
        assert f"run dir {run_dir}" in log.read_text()
        first_losses.append(scalars(run_dir, "train/loss")[1])
    assert first_losses[0] != first_losses[1], "the two seeds trained the same model"
    assert len(list((tmp_path / "arr-sweep" / "logs").glob(f"slurm-{job}_*.out"))) == 2
