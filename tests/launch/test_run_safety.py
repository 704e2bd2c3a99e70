"""Runs you can stop, rerun and mistype: real processes and real signals against `python -m launch`.

Every kill leaves no process behind, a signal to the launcher saves and exits 0, a second launch on the same run
directory is refused, a rerun with a model/data change is refused by key, and a crash records `failed`."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pipeline.run_lock import LOCK
from tests.faults import fault_env
from tests.helpers import REPO, launch, scalars

FAST = ["model.num_layers=2", "train.log_interval=1", "train.eval_interval=0", "schedule.warmup_steps=1"]


def status(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


def start(tmp_path: Path, manifest: Path, *extra: str, name: str = "r") -> subprocess.Popen:
    """A long training run through the launcher, as a user starts it from a shell (own process group)."""
    args = [*FAST, "train.steps=2000", f"output_dir={tmp_path}", f"data.manifest={manifest}", f"name={name}", *extra]
    return subprocess.Popen([sys.executable, "-m", "launch", "tiny_rmsnorm", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def wait_for_steps(proc: subprocess.Popen, run: Path, n: int = 2, timeout: float = 240) -> list[psutil.Process]:
    """Block until training has logged n steps; return the launcher's descendants (torchrun, workers, helpers)."""
    deadline = time.time() + timeout
    while not ((run / "tensorboard").exists() and len(scalars(run, "train/loss")) >= n):
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.time() < deadline, "training did not start"
        time.sleep(1)
    return psutil.Process(proc.pid).children(recursive=True)


def workers(family: list[psutil.Process]) -> list[psutil.Process]:
    """The training processes: torchrun's children (their own forked helpers share their command line)."""
    torchrun = next(p for p in family if "torch.distributed.run" in " ".join(p.cmdline()))
    return torchrun.children()


def assert_all_gone(procs: list[psutil.Process], timeout: float = 60) -> None:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"orphans: {[(p.pid, ' '.join(p.cmdline()[:6])) for p in alive]}"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_launcher_saves_waits_and_exits_0(tmp_path, pydocs_manifest, sig):
    proc = start(tmp_path, pydocs_manifest, "launch.nproc_per_node=2")
    run = tmp_path / "r"
    family = wait_for_steps(proc, run)
    assert len(workers(family)) == 2
    os.kill(proc.pid, sig)  # the launcher only: a terminal's Ctrl-C, a parent script's terminate()
    out = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, out[-3000:]
    st = status(run)
    assert st["state"] == "preempted" and 2 <= st["step"] < 2000, st
    assert (run / "checkpoints" / "latest").read_text().strip() == f"step_{st['step']:07d}"
    assert not (run / LOCK).exists()
    assert_all_gone(family)


@pytest.mark.slow
def test_sigkill_of_launcher_leaves_no_orphans_and_a_second_launch_is_refused(tmp_path, pydocs_manifest):
    proc = start(tmp_path, pydocs_manifest, "launch.nproc_per_node=2")
    run = tmp_path / "r"
    family = wait_for_steps(proc, run)
    lock = json.loads((run / LOCK).read_text())

    second = launch("tiny_rmsnorm", [*FAST, "train.steps=5", f"output_dir={tmp_path}",
                                     f"data.manifest={pydocs_manifest}", "name=r"], check=False, timeout=60)
    assert second.returncode == 2
    assert f"is in use by PID {proc.pid}, " in second.stderr and str(lock["pids"][-1]) in second.stderr
    assert status(run)["state"] == "running"  # the refused launch wrote nothing

    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert_all_gone(family, timeout=120)  # torchrun gets SIGTERM (workers save and exit), nothing lingers


@pytest.mark.slow
def test_killed_worker_takes_its_checkpoint_helper_along(tmp_path, pydocs_manifest):
    proc = start(tmp_path, pydocs_manifest)
    family = wait_for_steps(proc, tmp_path / "r")
    worker = workers(family)[0]
    helpers = worker.children(recursive=True)
    assert helpers, "expected the checkpoint writer-queue process under the worker"
    worker.kill()
    assert_all_gone(helpers)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0, out[-2000:]
    assert status(tmp_path / "r")["state"] == "failed"


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, pydocs_manifest):
    run = tmp_path / "r"
    run.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    import socket

    (run / LOCK).write_text(json.dumps({"host": socket.gethostname(), "pids": [dead.pid], "token": "x",
                                        "started": time.time() - 50, "heartbeat": time.time() - 50}))
    out = launch("tiny_rmsnorm", [*FAST, "train.steps=2", f"output_dir={tmp_path}",
                                  f"data.manifest={pydocs_manifest}", "name=r"])
    assert f"taking over the lock of {run}: its holders (PID {dead.pid} on this host) are not running" in out.stderr
    assert status(run)["state"] == "complete" and not (run / LOCK).exists()


@pytest.fixture(scope="module")
def finished(tmp_path_factory, pydocs_manifest) -> tuple[Path, list[str]]:
    """A finished 3-step run to rerun in several ways."""
    root = tmp_path_factory.mktemp("rerun")
    args = [*FAST, "train.steps=3", f"output_dir={root}", f"data.manifest={pydocs_manifest}", "name=r"]
    launch("tiny_dyt", args)
    return root / "r", args


@pytest.mark.parametrize("change, keys", [
    (["model.norm.type=derf"], ["model.norm.type: 'dyt' → 'derf'"]),
    (["model.hidden_size=64", "model.num_attention_heads=4"], ["model.hidden_size: 128 → 64"]),
    (["train.seed=7"], ["train.seed: 1234 → 7"]),
])
def test_rerun_changing_the_model_or_data_is_refused_by_key(finished, change, keys):
    run, args = finished
    before = (run / "config.yaml").read_text()
    out = launch("tiny_dyt", [*args, "train.steps=6", *change], check=False, timeout=60)
    assert out.returncode == 2
    for key in keys:
        assert key in out.stderr, out.stderr
    assert "name=<new name>" in out.stderr and "checkpoint.allow_config_change=" in out.stderr
    assert (run / "config.yaml").read_text() == before  # nothing was written


def test_rerun_at_or_below_the_saved_step(finished):
    run, args = finished
    saved = sorted(p.name for p in (run / "checkpoints").iterdir())
    same = launch("tiny_dyt", args)
    assert "already complete" in same.stdout
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == saved  # nothing re-saved
    below = launch("tiny_dyt", [*args, "train.steps=2", "schedule.warmup_steps=0"], check=False)
    assert below.returncode != 0 and "train.steps: 2 is below the step of the checkpoint" in below.stderr


def test_warmup_not_below_steps_is_a_config_error():
    out = launch("tiny_dyt", ["train.steps=30"], check=False, timeout=30)
    assert out.returncode == 2 and "schedule.warmup_steps" in out.stderr and "below train.steps" in out.stderr


def test_a_crash_records_failed_with_the_error(tmp_path, pydocs_manifest):
    out = launch("tiny_rmsnorm", [*FAST, "train.steps=5", f"output_dir={tmp_path}", f"data.manifest={pydocs_manifest}",
                                  "name=r"], env=fault_env(crash_after_step=2), check=False)
    assert out.returncode == 1
    st = status(tmp_path / "r")
    assert st["state"] == "failed" and st["step"] == 1 and st["error"] == "SystemExit", st  # step 2 never finished
    assert "crash_after_step=2" in st["message"]
