"""Checkpoints you can trust: integrity records, verified resume with fallback, a rerun never rewrites a
complete checkpoint, the divergence guard, a full disk named as such, asynchronous saves."""

import errno
import json
import os
import shutil
import subprocess
import sys

import pytest

from pipeline.checkpoint import integrity
from pipeline.checkpoint.diagnose import describe
from tests.faults import fault_env
from tests.helpers import REPO, launch, run_python, scalars

STEPS = 10
COMMON = [f"train.steps={STEPS}", "train.log_interval=1", "train.eval_interval=0", "schedule.warmup_steps=2",
          "model.num_layers=2", "checkpoint.save_interval=2", "checkpoint.keep_last=5", "logging.norm_stats=false",
          "launch.nproc_per_node=2"]


# -- the integrity record, without a model ------------------------------------------------------------
def _checkpoint(tmp_path):
    d = tmp_path / "step_0000002"
    (d / "sub").mkdir(parents=True)
    (d / "a.bin").write_bytes(os.urandom(4096))
    (d / "sub" / "b.pt").write_bytes(b"x" * 100)
    integrity.write_record(d, {"step": 2, "files": integrity.hash_files(d, integrity.list_files(d))})
    return d


@pytest.mark.parametrize("damage, file, reason", [
    (lambda d: (d / "a.bin").write_bytes((d / "a.bin").read_bytes()[:100]), "a.bin", "100 bytes, the record says 4096"),
    (lambda d: (d / "sub" / "b.pt").write_bytes(b"y" * 100), "sub/b.pt", "CRC-32 mismatch"),
    (lambda d: (d / "a.bin").unlink(), "a.bin", "missing"),
    (lambda d: (d / "sub" / "evil.pt").write_bytes(b"!"), "sub/evil.pt", "not in the integrity record"),
    (lambda d: (d / "meta.json").write_text('{"junk": '), "meta.json", "not valid JSON"),
    (lambda d: (d / "meta.json").write_bytes(b"\xff\xfe\x00"), "meta.json", "not valid JSON"),
    (lambda d: (d / "meta.json").write_text((d / "meta.json").read_text().replace('"step": 2', '"step": 7')),
     "meta.json", "does not match its own checksum"),
    (lambda d: (d / "meta.json").unlink(), "meta.json", "missing"),
], ids=["truncated", "changed", "deleted", "stray_file", "junk_record", "binary_record", "edited_record",
        "no_record"])
def test_integrity_record_names_the_damaged_file(tmp_path, damage, file, reason):
    d = _checkpoint(tmp_path)
    assert integrity.verify(d)["step"] == 2
    damage(d)
    with pytest.raises(integrity.IntegrityError) as e:
        integrity.verify(d)
    assert e.value.file == file and reason in e.value.reason, str(e.value)


def test_write_errors_are_named_by_cause(tmp_path):
    from torch.distributed.checkpoint.api import CheckpointException

    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.distcp"))
    wrapped = CheckpointException("write", {1: (RuntimeError("Worker failure"), None)})
    wrapped.failures[1][0].__cause__ = full
    text = describe(wrapped, tmp_path)
    assert text.startswith("no space left on device") and "x.distcp" in text and "free in" in text
    assert describe(PermissionError(errno.EACCES, "Permission denied", "/ro/ckpt"), tmp_path).startswith(
        "permission denied (/ro/ckpt)")
    assert describe(OSError(errno.EIO, "Input/output error"), tmp_path).startswith("I/O error")


def test_config_fingerprint_follows_the_weights_not_the_place():
    from pipeline.config import load_config
    from pipeline.config.fingerprint import config_fingerprint

    base = config_fingerprint(load_config("tiny_dyt"))
    assert base == config_fingerprint(load_config("tiny_dyt", ["train.steps=999", "output_dir=/elsewhere",
                                                               "parallel.tp=2", "launch.nproc_per_node=2"]))
    assert base != config_fingerprint(load_config("tiny_dyt", ["model.hidden_size=256"]))
    assert base != config_fingerprint(load_config("tiny_dyt", ["optimizer.weight_decay=0.0"]))


def test_non_finite_state_is_never_saved(tmp_path, pydocs_manifest):
    out = run_python(f"""
import torch
from pathlib import Path
from pipeline.checkpoint import CheckpointManager, NonFiniteState
from pipeline.config import load_config
from pipeline.run_loader import start
cfg = load_config("tiny_dyt", ["model.num_layers=2", "data.manifest={pydocs_manifest}", "output_dir={tmp_path}"])
s = start(cfg)
ckpt = CheckpointManager(Path("{tmp_path}") / "ckpt", cfg)
print("finite", s.engine.state_is_finite())
with torch.no_grad():
    next(s.engine.modules[0].parameters())[0] = float("inf")
print("finite", s.engine.state_is_finite())
try:
    ckpt.save(s.engine, 1)
except NonFiniteState as e:
    print("refused:", e)
""")
    assert "finite True" in out and "finite False" in out
    assert "refused: step 1: the weights or optimizer state hold inf/NaN; not saving them" in out
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").iterdir())


# -- whole runs (2 processes, megatron) ------------------------------------------------------------------
class Runs:
    def __init__(self, root, manifest):
        self.root, self.manifest = root, manifest
        self.base = self.fresh("base")

    def args(self, name: str, extra: list[str]) -> list[str]:
        return [*COMMON, f"output_dir={self.root}", f"name={name}", f"data.manifest={self.manifest}", *extra]

    def run(self, name: str, extra: list[str] = (), env: dict | None = None, check: bool = True):
        return launch("tiny_dyt", self.args(name, list(extra)), env=env, check=check)

    def fresh(self, name: str):
        self.run(name)
        return self.root / name

    def copy(self, name: str):
        shutil.copytree(self.base, self.root / name)
        return self.root / name

    def record(self, run: str, step: int) -> dict:
        return integrity.read_record(self.root / run / "checkpoints" / f"step_{step:07d}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, pydocs_manifest):
    return Runs(tmp_path_factory.mktemp("ckpt"), pydocs_manifest)


def _reseal(d):
    """Rewrite the record to match the files as they are now (a checkpoint that verifies but cannot load)."""
    record = integrity.read_record(d)
    record["files"] = integrity.hash_files(d, integrity.list_files(d))
    integrity.write_record(d, record)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _status(run) -> str:
    return json.dumps(json.loads((run / "status.json").read_text()))


@pytest.mark.slow
def test_damaged_checkpoints_fall_back_to_the_newest_good_one(runs):
    run = runs.copy("damaged")
    ck = run / "checkpoints"
    (ck / "latest").write_bytes(b"\xff\xfe\x00 not a name")
    _truncate(ck / "step_0000010" / "__0_0.distcp")
    _truncate(ck / "step_0000008" / ".metadata")
    (ck / "step_0000006" / "meta.json").write_text('{"junk": ')
    _truncate(ck / "step_0000004" / "__0_0.distcp")
    _reseal(ck / "step_0000004")

    cli = subprocess.run([sys.executable, "-m", "pipeline.checkpoint", "verify", str(run)], cwd=REPO,
                         capture_output=True, text=True)
    assert cli.returncode == 1, cli.stdout + cli.stderr
    for line in ("step_0000010  FAILED  __0_0.distcp:", "step_0000008  FAILED  .metadata:",
                 "step_0000006  FAILED  meta.json: not valid JSON", "step_0000004  ok", "step_0000002  ok"):
        assert line in cli.stdout, cli.stdout

    named = runs.run("damaged", [f"checkpoint.resume={ck / 'step_0000008'}"], check=False)
    assert named.returncode != 0
    assert f"checkpoint.resume: {ck / 'step_0000008'} failed verification: .metadata: " in named.stderr
    assert "[rank0]: Traceback" not in named.stderr and "failed" in _status(run)

    out = runs.run("damaged")
    assert f"resumed from {ck / 'step_0000002'} at step 2" in out.stdout
    for step, why in ((10, "failed verification: __0_0.distcp: "), (8, "failed verification: .metadata: "),
                      (6, "failed verification: meta.json: not valid JSON"),
                      (4, "verified, but loading failed: CheckpointException")):
        assert f"skipping checkpoint {ck / f'step_{step:07d}'}: {why}" in out.stderr, out.stderr[-3000:]
        assert (ck / f"step_{step:07d}.rejected").is_dir()  # moved aside, never deleted
    assert "latest is unreadable" in out.stderr
    want, got = scalars(runs.base, "train/loss"), scalars(run, "train/loss")
    assert [got[s] for s in range(3, STEPS + 1)] == [want[s] for s in range(3, STEPS + 1)]  # bit for bit
    assert (ck / "latest").read_text().strip() == "step_0000010"
    integrity.verify(ck / "step_0000010")


@pytest.mark.slow
def test_rerun_of_a_finished_run_never_rewrites_its_checkpoint(runs):
    run = runs.copy("rerun")
    final = run / "checkpoints" / "step_0000010"
    before = {f.name: (f.stat().st_ino, f.stat().st_mtime_ns) for f in final.iterdir()}
    runs.run("rerun")
    assert {f.name: (f.stat().st_ino, f.stat().st_mtime_ns) for f in final.iterdir()} == before
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_0000010"
    integrity.verify(final)


@pytest.mark.slow
def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, pydocs_manifest):
    # The recipe: lr 1e6 makes the loss non-finite a few steps in; every later update is skipped.
    proc = launch("tiny_dyt", ["train.steps=12", "train.log_interval=1", "train.eval_interval=0",
                               "schedule.warmup_steps=1", "model.num_layers=2", "optimizer.lr=1e6",
                               "optimizer.min_lr=0", "checkpoint.save_interval=1", "checkpoint.keep_last=1",
                               "train.max_consecutive_skips=3", f"output_dir={tmp_path}",
                               f"data.manifest={pydocs_manifest}"], check=False)
    run = tmp_path / "tiny_dyt"
    skipped = scalars(run, "train/skipped_steps")
    first = min(s for s, n in skipped.items() if n > 0)
    assert proc.returncode != 0 and max(skipped) == first + 3, skipped  # the 4th skip in a row stops it
    assert f"step {first + 3}: 4 consecutive skipped updates (train.max_consecutive_skips: 3)" in proc.stderr
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "diverged" in _status(run)
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir())
    # keep_last: 1, plus the pin: the checkpoint saved just before the first skipped step.
    assert ckpts == [f"step_{first - 1:07d}", f"step_{first + 2:07d}"], ckpts
    assert f"Last good checkpoint (the newest saved before step {first}" in proc.stderr


def _in_tmpfs(size: int, run_dir, copy_to, args: list[str]) -> subprocess.CompletedProcess:
    """`python -m launch` with the run directory on a tmpfs of `size` bytes (a private mount namespace);
    the run directory is copied out before the namespace (and the tmpfs) goes away."""
    script = (f'mount -t tmpfs -o size={size} tmpfs "{run_dir}" && "{sys.executable}" -m launch tiny_dyt "$@"; '
              f'rc=$?; cp -a "{run_dir}/." "{copy_to}/"; exit $rc')
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def _tmpfs_available() -> bool:
    probe = "d=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs $d"
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", probe], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _tmpfs_available(), reason="needs unprivileged user+mount namespaces (unshare) for a tmpfs")
@pytest.mark.parametrize("policy", ["fail", "continue"])
def test_disk_full_is_named_and_keeps_the_previous_checkpoint(runs, tmp_path, policy):
    size = sum(f["size"] for f in runs.record("base", 2)["files"].values())
    # fail: room for one checkpoint, not two; continue: not even for one (the write itself runs out).
    tmpfs, out = tmp_path / "tmpfs", tmp_path / "out"
    tmpfs.mkdir(), out.mkdir()
    proc = _in_tmpfs(int(size * 1.5) if policy == "fail" else size // 2, tmpfs, out,
                     runs.args("full", ["train.steps=6", f"output_dir={tmpfs}", f"checkpoint.on_save_error={policy}"]))
    run, ck = out / "full", out / "full" / "checkpoints"
    assert proc.returncode != 0
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed"
    assert "no space left on device" in status["message"] and "could not be saved in" in status["message"]
    assert not list(ck.glob("*.partial"))  # removed (or marked .failed: neither is left as a .partial)
    if policy == "fail":
        assert "step_0000004.partial" in status["message"] and status["step"] == 4
        assert (ck / "latest").read_text().strip() == "step_0000002"
        integrity.verify(ck / "step_0000002")
        assert [p.name for p in ck.iterdir() if p.is_dir()] == ["step_0000002"]
    else:  # every save failed; training went on to the end, whose save must succeed or fail the run
        assert "checkpoint step_0000002 could not be saved" in proc.stderr and "Training continues" in proc.stderr
        assert "step_0000006.partial" in status["message"] and status["step"] == 6
        assert not (ck / "latest").exists() and not [p for p in ck.iterdir() if p.is_dir()]


@pytest.mark.slow
def test_async_saves_match_sync_ones_and_a_crash_falls_back(runs, tmp_path):
    crashed = runs.run("async", ["checkpoint.async_save=true"], env=fault_env(crash_after_step=5), check=False)
    run, ck = runs.root / "async", runs.root / "async" / "checkpoints"
    assert crashed.returncode != 0
    # The save of step 4 was in flight (or written but not yet completed on every rank): never committed.
    assert (ck / "latest").read_text().strip() == "step_0000002" and not (ck / "step_0000004").exists()
    resumed = runs.run("async", ["checkpoint.async_save=true"])
    assert f"resumed from {ck / 'step_0000002'} at step 2" in resumed.stdout
    want, got = scalars(runs.base, "train/loss"), scalars(run, "train/loss")
    assert [got[s] for s in range(3, STEPS + 1)] == [want[s] for s in range(3, STEPS + 1)]
    for step in (2, 4, 6, 8, 10):
        rec, sync = runs.record("async", step), runs.record("base", step)
        assert rec["async"] == (step != STEPS) and not sync["async"]  # the final save is synchronous
        # What the writer stored is the state of its own step, equal to the synchronous save's: training had
        # moved on while it wrote (and, from step 4 on, had crashed and resumed).
        assert _state(run, step, tmp_path) == _state(runs.base, step, tmp_path), step


def _state(run, step: int, tmp_path) -> dict:
    """A checkpoint's content (megatron's torch-DCP files), flattened: path -> bytes or repr."""
    import io

    import torch
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = tmp_path / f"{run.name}_{step}.pt"
    dcp_to_torch_save(run / "checkpoints" / f"step_{step:07d}", out)
    flat = {}

    def walk(x, path: str) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{path}/{k}")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, f"{path}[{i}]")
        elif isinstance(x, torch.Tensor):
            flat[path] = (x.dtype, tuple(x.shape), bytes(x.detach().reshape(-1).view(torch.uint8).numpy()))
        else:
            flat[path] = x.getvalue() if isinstance(x, io.BytesIO) else repr(x)

    walk(torch.load(out, weights_only=False), "")  # our own test checkpoint: trusted
    return flat
