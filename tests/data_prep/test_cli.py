"""The CLI (flags, the stages of a shared-out run) and idempotency: an unchanged job is "up to date" at once.
(A run config's data, `make data CONFIG=...`, is tests/launch/test_data.py.)"""

import json
import os
import subprocess
import sys

from data_prep import prepare
from data_prep.__main__ import _parser, build_config
from data_prep.config import TokenizerConfig
from data_prep.split import doc_hasher, is_valid
from tests.data_prep.helpers import REPO, make_texts, prep_config, subprocess_env, write_jsonl


def _cli(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "data_prep", *args], cwd=cwd, capture_output=True, text=True,
                          env=subprocess_env(), timeout=300)


def test_help_and_no_source():
    r = _cli("--help")
    assert r.returncode == 0 and "--shard-of" in r.stdout and "--input" in r.stdout and "examples:" in r.stdout
    r = _cli("--output-dir", "x")
    assert r.returncode == 2 and "name a source" in r.stderr and "make data CONFIG" in r.stderr


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
    digest = doc_hasher("src")
    assert sum(s["documents"] for s in json.loads(m_path.read_text())["splits"]["valid"]) == sum(
        is_valid(digest(t), 0.5) for t in make_texts(50))
    prepare(cfg)
    assert "up to date" in capsys.readouterr().out
    os.utime(corpus, ns=(corpus.stat().st_atime_ns, corpus.stat().st_mtime_ns + 10**9))  # the input changed
    prepare(cfg)
    assert "wrote" in capsys.readouterr().out
    assert not list((tmp_path / "out").glob("*/*.tmp")) and not (tmp_path / "out" / ".tmp").exists()
