"""The generated sbatch script: content, shell validity, and config values that must never reach it."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from launch.__main__ import main as launch_main
from launch.slurm import env_exports, time_limit_s
from launch.sweep import read_entries, sweep_configs
from pipeline.config import ConfigError, load_config

# A llama8b-like layout on CPU-free hardware: 4 nodes × 8 GPUs, every sbatch setting in use.
BIG = ["--launcher", "slurm", "--nodes", "4", "launch.nproc_per_node=8", "train.device=cuda",
       "train.micro_batch_size=1", "train.global_batch_size=64", "launch.slurm.partition=gpu",
       "launch.slurm.account=proj-123", "launch.slurm.qos=high", "launch.slurm.constraint=h100&ib",
       "launch.slurm.cpus_per_task=96", "launch.slurm.time=2-00:00:00", "launch.slurm.signal_grace_s=300",
       "launch.slurm.max_restarts=5", "launch.slurm.extra_sbatch=[--exclusive, --mem=0]",
       "launch.slurm.env={NCCL_IB_HCA: mlx5, NCCL_DEBUG: WARN}"]


def dry_run(capsys, *argv: str) -> str:
    rc = launch_main(["tiny_dyt", *argv, "--dry-run"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out.out


def check_shell(script: str, tmp_path: Path) -> None:
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)
    if shutil.which("shellcheck"):  # installed by scripts/install_system_deps.sh (so always in CI)
        res = subprocess.run(["shellcheck", "--severity=style", str(path)], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout


def sbatch_lines(script: str) -> list[str]:
    return [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH ")]


def test_multi_node_gpu_script(capsys, tmp_path):
    script = dry_run(capsys, *BIG, f"output_dir={tmp_path}/runs")
    check_shell(script, tmp_path)
    assert sbatch_lines(script) == [
        "--job-name=tiny_dyt", "--nodes=4", "--ntasks-per-node=1", "--gpus-per-node=8", "--cpus-per-task=96",
        "--time=2-00:00:00", "--partition=gpu", "--account=proj-123", "--qos=high", "--constraint=h100&ib",
        "--signal=TERM@300", "--requeue", "--open-mode=append",
        f"--output={tmp_path}/runs/tiny_dyt/logs/slurm-%j.out", "--exclusive", "--mem=0"]
    for line in ("export CUDA_DEVICE_MAX_CONNECTIONS=1", "export NCCL_IB_HCA=mlx5", "MAX_RESTARTS=5",
                 "srun --nodes=4 --ntasks-per-node=1 --cpus-per-task=96", "--nnodes=4 --nproc-per-node=8",
                 '--rdzv-backend=c10d --rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT"',
                 'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
                 f"CONFIG={tmp_path}/runs/tiny_dyt/config.yaml", 'scontrol requeue "$SLURM_JOB_ID"'):
        assert line in script
    assert not (tmp_path / "runs").exists(), "a dry run writes nothing"


def test_cpu_job_requests_no_gpus(capsys, tmp_path):
    script = dry_run(capsys, "--launcher", "slurm", "--nodes", "2", "train.device=cpu")
    check_shell(script, tmp_path)
    assert not any("gpu" in o for o in sbatch_lines(script))
    explicit = dry_run(capsys, "--launcher", "slurm", "launch.slurm.gpus_per_node=4")
    assert "--gpus-per-node=4" in sbatch_lines(explicit)


def test_array_script(capsys, tmp_path):
    script = dry_run(capsys, "--launcher", "slurm", f"output_dir={tmp_path}", "--sweep", "train.seed=1",
                     "--sweep", "tiny_rmsnorm name=rms", "--max-parallel", "1")
    check_shell(script, tmp_path)
    opts = sbatch_lines(script)
    assert "--array=0-1%1" in opts and "--job-name=tiny_dyt-sweep" in opts
    assert f"--output={tmp_path}/tiny_dyt-sweep/logs/slurm-%A_%a.out" in opts
    assert f"0) RUN_DIR={tmp_path}/tiny_dyt-0; CONFIG={tmp_path}/tiny_dyt-0/config.yaml ;;" in script
    assert f"1) RUN_DIR={tmp_path}/rms; CONFIG={tmp_path}/rms/config.yaml ;;" in script


def test_sweep_entries(tmp_path):
    f = tmp_path / "sweep.txt"
    f.write_text("# seeds\ntrain.seed=3\n\ntiny_rmsnorm train.seed=4 name=rms-4  # a comment\n")
    entries = read_entries(["train.seed=1 'schedule.decay=constant'"], str(f))
    assert entries == [["train.seed=1", "schedule.decay=constant"], ["train.seed=3"],
                       ["tiny_rmsnorm", "train.seed=4", "name=rms-4"]]
    cfgs = sweep_configs("tiny_dyt", ["train.steps=70"], entries)
    assert [(c.name, c.train.seed, c.train.steps, c.model.norm.type) for c in cfgs] == [
        ("tiny_dyt-0", 1, 70, "dyt"), ("tiny_dyt-1", 3, 70, "dyt"), ("rms-4", 4, 70, "rmsnorm")]
    with pytest.raises(ConfigError, match="both write to"):
        sweep_configs("tiny_dyt", [], [["name=a"], ["name=a", "train.seed=2"]])
    with pytest.raises(ConfigError, match=r"sweep entry 1 .*train\.stepz"):
        sweep_configs("tiny_dyt", [], [["train.seed=1"], ["train.stepz=1"]])


def test_sweep_needs_the_same_resources(capsys):
    assert launch_main(["tiny_dyt", "--launcher", "slurm", "--sweep", "train.seed=1", "--sweep",
                        "launch.slurm.time=1:00:00", "--dry-run"]) == 2
    assert "same launch section" in capsys.readouterr().err
    assert launch_main(["tiny_dyt", "--sweep", "train.seed=1", "--dry-run"]) == 2
    assert "--launcher slurm" in capsys.readouterr().err


@pytest.mark.parametrize("value,seconds", [("30", 1800), ("10:30", 630), ("04:00:00", 14400), ("1-0", 86400),
                                           ("1-02:03", 93780), ("2-00:00:01", 172801), ("UNLIMITED", None)])
def test_time_limit(value, seconds):
    assert time_limit_s(value) == seconds


# (key path, value, text the error must contain). Each must be refused before any script exists.
BAD = [
    (("launch", "slurm", "partition"), "gpu\n#SBATCH --uid=0", "launch.slurm.partition"),
    (("launch", "slurm", "account"), "acct; rm -rf ~", "launch.slurm.account"),
    (("launch", "slurm", "qos"), "$(reboot)", "launch.slurm.qos"),
    (("launch", "slurm", "constraint"), "a`id`", "launch.slurm.constraint"),
    (("launch", "slurm", "constraint"), "a # b", "launch.slurm.constraint"),
    (("launch", "slurm", "time"), "1:00:00 --uid=0", "launch.slurm.time"),
    (("launch", "slurm", "time"), "forever", "launch.slurm.time"),
    (("launch", "slurm", "signal_grace_s"), 0, "launch.slurm.signal_grace_s"),
    (("launch", "slurm", "signal_grace_s"), 14400, "not shorter than launch.slurm.time"),
    (("launch", "slurm", "max_restarts"), -1, "launch.slurm.max_restarts"),
    (("launch", "slurm", "extra_sbatch"), ["--exclusive\n#SBATCH --uid=0"], "launch.slurm.extra_sbatch[0]"),
    (("launch", "slurm", "extra_sbatch"), ["#SBATCH --uid=0"], "launch.slurm.extra_sbatch[0]"),
    (("launch", "slurm", "extra_sbatch"), ["--comment=a b"], "launch.slurm.extra_sbatch[0]"),
    (("launch", "slurm", "extra_sbatch"), ["rm -rf /"], "launch.slurm.extra_sbatch[0]"),
    (("launch", "slurm", "extra_sbatch"), ["exclusive"], "not an sbatch option"),
    (("launch", "slurm", "extra_sbatch"), ["--mem=0", "--output=/tmp/x"], "launch.slurm.extra_sbatch[1]"),
    (("launch", "slurm", "extra_sbatch"), ["--part=big"], "--partition is set by the launcher"),
    (("launch", "slurm", "extra_sbatch"), ["-pbig"], "--partition is set by the launcher"),
    (("launch", "slurm", "extra_sbatch"), ["--array=0-9"], "--sweep"),
    (("launch", "slurm", "env"), {"A;B": "1"}, "launch.slurm.env.A;B"),
    (("launch", "slurm", "env"), {"NCCL_DEBUG": "INFO\nreboot"}, "launch.slurm.env.NCCL_DEBUG"),
    (("name",), "run x", "name"),
    (("name",), "run$(id)", "name"),
    (("output_dir",), "/tmp/my runs", "output_dir"),
    (("output_dir",), "/tmp/100%", "output_dir"),
]


@pytest.mark.parametrize("path,value,message", BAD, ids=[f"{'.'.join(p)}={v!r}" for p, v, _ in BAD])
def test_rejects_unsafe_values(path, value, message, tmp_path, capsys):
    # Through a YAML file, so strings keep newlines and characters that a key=value override would not.
    data: dict = {"defaults": ["tiny_dyt"]}
    node = data
    for p in path[:-1]:
        node = node.setdefault(p, {})
    node[path[-1]] = value
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text(yaml.safe_dump(data))
    assert launch_main([str(cfg_file), "--launcher", "slurm", "--dry-run"]) == 2
    out = capsys.readouterr()
    assert out.out == "", "nothing printed: no script"
    assert out.err.startswith("config error: ") and message in out.err, out.err


def test_env_values_reach_the_job_literally(tmp_path):
    nasty = {"A": "$(touch pwned1)", "B": "`touch pwned2`; touch pwned3", "C": "it's \"quoted\" \\ $HOME",
             "D": "", "E": "x' ; touch pwned4 ; '"}
    script = "\n".join([*env_exports(nasty), *(f'printf "%s\\0" "${k}"' for k in nasty)])
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout
    assert out.split("\0")[:-1] == list(nasty.values())
    assert not list(tmp_path.iterdir()), "nothing ran"


def test_submit_refuses_missing_data(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # sbatch is never reached: the data check comes first
    cfg = load_config("tiny_dyt", [f"output_dir={tmp_path}", "data.manifest=nowhere/manifest.json"])
    from launch.slurm import submit

    assert submit(cfg, tmp_path / "tiny_dyt" / "config.yaml") == 2
    assert re.search(r"nowhere/manifest\.json not found", capsys.readouterr().err)
