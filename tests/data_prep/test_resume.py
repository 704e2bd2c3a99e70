"""A run killed with SIGKILL mid-partition resumes: finished shards are kept, the partial one is redone,
and the result equals an uninterrupted run byte for byte."""

import json
import signal
import subprocess
import sys

import pytest
import yaml

from data_prep import prepare
from data_prep.build import _finished
from data_prep.config import TokenizerConfig
from data_prep.plan import make_plan
from tests.data_prep.helpers import make_texts, prep_config, subprocess_env, tree_bytes, write_jsonl
from tests.faults import fault_env


def _run_config(tmp_path, out: str, corpus) -> str:
    """A run config (YAML) whose data.prepare section describes the job."""
    prep = {"output_dir": out, "workers": 2, "valid_fraction": 0.05, "partition_bytes": 12_000,
            "sources": [{"name": "src", "paths": [str(corpus)]}],
            "tokenizer": {"vocab_size": 600, "num_threads": 1}}
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump({"data": {"prepare": prep}}))
    return str(path)


def _cli(config: str, cwd, **env) -> subprocess.CompletedProcess:
    # A session of its own: the kill hook takes down the whole process group, as `kill -9 -<pgid>` would.
    return subprocess.run([sys.executable, "-m", "launch.data", config], cwd=cwd, text=True,
                          capture_output=True, env=subprocess_env(**env), timeout=300, start_new_session=True)


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted(tmp_path, monkeypatch, capsys):
    from launch.data import main
    from pipeline.config import load_config

    corpus = write_jsonl(tmp_path / "c.jsonl", make_texts(300))
    killed = _run_config(tmp_path, "killed", corpus)
    # The 4th partition starts only after one of the first three finished (2 workers), so when it is
    # killed at its 5th document, at least two partitions are complete and one is half written.
    r = _cli(killed, tmp_path, **fault_env(kill_data_prep_at="src-00003:5"))
    assert r.returncode == -signal.SIGKILL, r.stderr
    out = tmp_path / "killed"
    assert not (out / "manifest.json").exists()
    assert (out / ".tmp" / "src-00003").is_dir()  # the partial partition, never under a final name
    assert not (out / ".state" / "parts" / "src-00003.json").exists()
    finished = sorted(p.stem for p in (out / ".state" / "parts").glob("*.json"))
    assert len(finished) >= 2
    stamps = {p: p.stat().st_mtime_ns for p in (out / "train").glob("*.bin")}

    monkeypatch.chdir(tmp_path)
    assert main([killed]) == 0  # the resumed run, in this process
    assert f"{len(finished)} kept from an earlier run" in capsys.readouterr().out
    for p, t in stamps.items():
        if p.stem in finished:
            assert p.stat().st_mtime_ns == t, f"{p.name} was rewritten"
    assert not (out / ".tmp").exists()

    # The same job, uninterrupted, in this process.
    clean = prepare(load_config(_run_config(tmp_path, str(tmp_path / "clean"), corpus)).data.prepare)
    assert tree_bytes(clean.parent) == tree_bytes(out)
    assert json.loads((out / "manifest.json").read_text())["sources"][0]["documents"] == 300


def test_damaged_finished_shard_is_redone(tmp_path, small_tokenizer):
    """A done record whose shard file is missing or has the wrong size does not count as finished."""
    corpus = write_jsonl(tmp_path / "c.jsonl", make_texts(120))
    cfg = prep_config(tmp_path / "out", [corpus], workers=1, partition_bytes=20_000,
                      tokenizer=TokenizerConfig(model=str(small_tokenizer)))
    m_path = prepare(cfg)
    before = tree_bytes(m_path.parent)
    shard = m_path.parent / "train" / "src-00001.bin"
    shard.write_bytes(shard.read_bytes()[:-2])  # e.g. a copy that stopped short
    part = make_plan(cfg)[1]
    record = json.loads((m_path.parent / ".state" / "parts" / "src-00001.json").read_text())
    assert _finished(m_path.parent, part, record["key"]) is None
    assert prepare(cfg) == m_path  # not "up to date": the shard size no longer matches the manifest
    assert tree_bytes(m_path.parent) == before
