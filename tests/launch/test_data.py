"""`make data CONFIG=...` (python -m launch.data): the run config's data.prepare with overrides, "up to
date" at once, and on SLURM a tokenizer job, a shard array and a finish job whose result equals a
one-shot run byte for byte (on the loopback cluster)."""

import json
import re
import subprocess
import sys
import time

import pytest
import yaml

from launch.data import main
from tests.data_prep.helpers import make_texts, subprocess_env, tree_bytes, write_jsonl
from tests.helpers import REPO
from tests.launch.test_slurm_jobs import excerpt, wait_done
from tests.launch.test_slurm_script import check_shell


def _data_cli(*args: str, cwd=REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launch.data", *args], cwd=cwd, capture_output=True, text=True,
                          env=subprocess_env(**(env or {})), timeout=300)


def _run_config(path, prepare: dict) -> str:
    path.write_text(yaml.safe_dump({"name": "t", "data": {"prepare": prepare}}))
    return str(path)


def test_run_config_with_overrides_then_up_to_date(tmp_path, small_tokenizer, monkeypatch, capsys):
    texts = make_texts(60)
    write_jsonl(tmp_path / "c.jsonl", texts)
    config = _run_config(tmp_path / "run.yaml", {
        "output_dir": "prepared", "sources": [{"name": "c", "paths": ["c.jsonl"]}],
        "tokenizer": {"model": str(small_tokenizer)}})
    monkeypatch.chdir(tmp_path)  # paths in the run config are relative to the working directory
    assert main([config, "data.prepare.valid_fraction=0.5", "data.prepare.workers=1"]) == 0
    assert "wrote prepared/manifest.json" in capsys.readouterr().out
    m = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    assert m["sources"][0]["inputs"][0]["path"] == "c.jsonl" and m["sources"][0]["documents"] == 60
    assert 10 < sum(s["documents"] for s in m["splits"]["valid"]) < 50  # about half, from the override

    # In a fresh process: the check must be quick (it imports neither megatron nor torch).
    start = time.monotonic()
    r = _data_cli(config, "data.prepare.valid_fraction=0.5", "data.prepare.workers=4", cwd=tmp_path)
    assert r.returncode == 0 and "up to date" in r.stdout, r.stdout + r.stderr
    assert time.monotonic() - start < 4

    assert main([config, "data.prepare.wrkers=2"]) == 2
    assert "wrkers: unknown key" in capsys.readouterr().err


def test_slurm_dry_run_scripts(tmp_path, capsys):
    config = _run_config(tmp_path / "big.yaml", {
        "output_dir": str(tmp_path / "out"), "workers": 16, "sources": [{"name": "c", "paths": ["x.jsonl"]}]})
    assert main([config, "--launcher", "slurm", "--nodes", "4", "launch.slurm.partition=cpu",
                 "launch.slurm.time=1-00:00:00", "--dry-run"]) == 0
    out = capsys.readouterr().out
    scripts = dict(re.findall(r"# ---- (\w+) ----\n(.*?)(?=# ---- |\Z)", out, re.S))
    assert list(scripts) == ["tokenizer", "encode", "finish"]
    for step, script in scripts.items():
        check_shell(script, tmp_path)
        assert "#SBATCH --nodes=1" in script and "#SBATCH --cpus-per-task=16" in script, step
        assert "#SBATCH --partition=cpu" in script and "#SBATCH --time=1-00:00:00" in script
        assert "gpus" not in script  # data preparation needs none
    assert "#SBATCH --array=0-3" in scripts["encode"]
    assert "launch.nodes" not in out and "--nodes=4" not in out  # NODES counts shards, not training nodes
    assert '--shard-of "$SLURM_ARRAY_TASK_ID/4"' in scripts["encode"]
    assert "--stage tokenizer" in scripts["tokenizer"] and "--stage finish" in scripts["finish"]
    assert main([config, "--dry-run"]) == 0 and "would prepare" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


@pytest.mark.slow
def test_slurm_shards_equal_one_shot_run(slurm, tmp_path):
    texts = make_texts(1500)
    corpus = write_jsonl(tmp_path / "c.jsonl", texts)
    prep = {"workers": 2, "valid_fraction": 0.1, "partition_bytes": 100_000,
            "sources": [{"name": "c", "paths": [str(corpus)]}], "tokenizer": {"vocab_size": 600, "num_threads": 1}}
    one_shot = _run_config(tmp_path / "one.yaml", prep | {"output_dir": str(tmp_path / "one")})
    sharded = _run_config(tmp_path / "sharded.yaml", prep | {"output_dir": str(tmp_path / "sharded")})
    r = _data_cli(sharded, "--launcher", "slurm", "--nodes", "2", env=slurm.env)
    assert r.returncode == 0, r.stdout + r.stderr
    ids = re.findall(r"submitted (\w+) job (\d+)", r.stdout)
    assert [step for step, _ in ids] == ["tokenizer", "encode", "finish"], r.stdout
    logs = sorted((tmp_path / "sharded" / "slurm" / "logs").glob("*.out"))
    recs = [rec for _, job in ids for rec in wait_done(slurm, int(job), logs, timeout=300)]
    text = "\n".join(excerpt(p.read_text()) for p in sorted((tmp_path / "sharded" / "slurm" / "logs").glob("*")))
    assert [rec["JobState"] for rec in recs] == ["COMPLETED"] * 4, text  # tokenizer, 2 shards, finish
    assert "shard 0/2" in text and "shard 1/2" in text and "wrote" in text

    assert main([one_shot]) == 0
    sharded_files = {k: v for k, v in tree_bytes(tmp_path / "sharded").items() if not k.startswith("slurm/")}
    assert sharded_files == tree_bytes(tmp_path / "one")
