"""The CLI (run config + overrides, flags) and idempotency: an unchanged job is "up to date" at once."""

import json
import os
import subprocess
import sys
import time

import yaml

from data_prep import prepare
from data_prep.__main__ import _parser, build_config, main
from data_prep.config import TokenizerConfig
from tests.data_prep.helpers import REPO, make_texts, prep_config, subprocess_env, write_jsonl


def _cli(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "data_prep", *args], cwd=cwd, capture_output=True, text=True,
                          env=subprocess_env(), timeout=300)


def test_help():
    r = _cli("--help")
    assert r.returncode == 0 and "--config" in r.stdout and "--input" in r.stdout and "examples:" in r.stdout


def test_run_config_with_overrides_then_up_to_date(tmp_path, small_tokenizer, monkeypatch, capsys):
    write_jsonl(tmp_path / "c.jsonl", make_texts(60))
    run = {"name": "t", "data": {"prepare": {
        "output_dir": "prepared", "sources": [{"name": "c", "paths": ["c.jsonl"]}],
        "tokenizer": {"model": str(small_tokenizer)}}}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    monkeypatch.chdir(tmp_path)  # paths in the run config are relative to the working directory
    overrides = ["-o", "data.prepare.valid_fraction=0.2"]
    assert main(["--config", "run.yaml", *overrides, "-o", "data.prepare.workers=1"]) == 0
    assert "wrote prepared/manifest.json" in capsys.readouterr().out
    m = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    assert m["sources"][0]["inputs"][0]["path"] == "c.jsonl" and m["sources"][0]["documents"] == 60
    assert sum(s["documents"] for s in m["splits"]["valid"]) == 12  # 0.2 of 60, from the override

    # In a fresh process: the check must be quick (it imports neither megatron nor torch).
    start = time.monotonic()
    r = _cli("--config", "run.yaml", *overrides, "-o", "data.prepare.workers=4", cwd=tmp_path)
    assert r.returncode == 0 and "up to date" in r.stdout, r.stdout + r.stderr
    assert time.monotonic() - start < 4

    assert main(["--config", "run.yaml", "-o", "data.prepare.wrkers=2"]) == 1
    assert "wrkers: unknown key" in capsys.readouterr().err


def test_flags_build_the_config():
    args = _parser().parse_args(["--input", "a/*.jsonl.zst", "--input", "b.parquet", "--output-dir", "o",
                                 "--vocab-size", "32000", "--tokenizer-type", "unigram", "--no-byte-fallback",
                                 "--workers", "16", "--text-key", "content", "--merge", "--name", "web"])
    cfg = build_config(args)
    assert [s.paths for s in cfg.sources] == [["a/*.jsonl.zst", "b.parquet"]]
    assert (cfg.sources[0].name, cfg.sources[0].text_key, cfg.output_dir, cfg.workers, cfg.merge) == (
        "web", "content", "o", 16, True)
    tok = cfg.tokenizer
    assert (tok.vocab_size, tok.type, tok.byte_fallback) == (32000, "unigram", False)


def test_prepare_is_idempotent(tmp_path, small_tokenizer, capsys):
    corpus = write_jsonl(tmp_path / "c.jsonl", make_texts(50))
    cfg = prep_config(tmp_path / "out", [corpus], workers=1,
                      tokenizer=TokenizerConfig(model=str(small_tokenizer)))
    m_path = prepare(cfg)
    stamp = m_path.stat().st_mtime_ns
    cfg.workers = 3  # how the job runs, not what it makes
    assert prepare(cfg) == m_path and m_path.stat().st_mtime_ns == stamp
    assert "up to date" in capsys.readouterr().out
    cfg.valid_fraction = 0.5  # what it makes
    prepare(cfg)
    assert "wrote" in capsys.readouterr().out
    assert sum(s["documents"] for s in json.loads(m_path.read_text())["splits"]["valid"]) == 25
    prepare(cfg)
    assert "up to date" in capsys.readouterr().out
    os.utime(corpus, ns=(corpus.stat().st_atime_ns, corpus.stat().st_mtime_ns + 10**9))  # the input changed
    prepare(cfg)
    assert "wrote" in capsys.readouterr().out
    assert not list((tmp_path / "out").glob("*/*.tmp")) and not (tmp_path / "out" / ".tmp").exists()
