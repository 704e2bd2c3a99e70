"""Every parallel path writes the bytes of the single-process one: one big file cut into chunks for all
workers (line files and parquet), the unit cache against plain SentencePiece, shards of a shared-out
run plus the finish stage; a planted unit-cache mismatch falls back to SentencePiece; the valid split
does not move with the files."""

import json
import re
import shutil

import pytest

from data_prep import encoder, prepare
from data_prep.config import SourceConfig, TokenizerConfig
from data_prep.errors import DataPrepError
from data_prep.plan import chunks, make_plan
from data_prep.runner import chunk_bytes
from data_prep.writer import MISMATCH
from tests.data_prep.helpers import (
    check_roundtrip,
    make_texts,
    prep_config,
    read_split,
    tree_bytes,
    write_bytes,
    write_jsonl,
    write_parquet,
)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """One ~1.2 MB jsonl with bad lines at known places, and a parquet file of 80 row groups."""
    d = tmp_path_factory.mktemp("big")
    texts = make_texts(4000)
    lines, bad = [], []
    for i, t in enumerate(texts[:2400]):
        lines.append(json.dumps({"text": t}))
        if i % 400 == 399:
            lines.append('{"text": broken')
            bad.append(len(lines))
    jsonl = write_bytes(d / "big.jsonl", ("\n".join(lines) + "\n").encode())
    parquet = write_parquet(d / "big.parquet", texts[2400:], row_group_size=20)
    return [jsonl, parquet], {i: ("src", t) for i, t in enumerate(texts)}, bad


def test_big_file_chunked_for_every_worker_same_bytes(tmp_path, big, small_tokenizer):
    paths, expected, bad = big
    tok = TokenizerConfig(model=str(small_tokenizer))
    one = prepare(prep_config(tmp_path / "w1", paths, workers=1, fast_encode=False, tokenizer=tok))
    three = prepare(prep_config(tmp_path / "w3", paths, workers=3, tokenizer=tok))
    assert tree_bytes(one.parent) == tree_bytes(three.parent)  # manifest included
    [record] = [json.loads(p.read_text()) for p in (tmp_path / "w3" / ".state" / "parts").glob("*.json")]
    assert record["chunks"] >= 6 and record["encoder"] == "units" and record["checked"] >= 8 * 6
    [part] = make_plan(prep_config(tmp_path, paths))  # both files, one partition: cut for the workers
    pieces = [s for c in chunks(part, chunk_bytes([part], 3)) for s in c]
    assert sum(s.format == "parquet" for s in pieces) > 1 and sum(s.format == "jsonl" for s in pieces) > 1
    m = json.loads(three.read_text())
    [entry] = m["sources"][0]["error_details"]
    assert entry["kind"] == "invalid_json" and entry["lines"] == bad  # the file's line numbers
    check_roundtrip(three, expected)


def test_shards_then_finish_equal_one_shot(tmp_path, big, capsys):
    paths, _, _ = big
    tok = TokenizerConfig(vocab_size=600, num_threads=1)  # trained by the tokenizer stage
    one = prepare(prep_config(tmp_path / "one", paths, workers=1, partition_bytes=200_000, tokenizer=tok))
    cfg = prep_config(tmp_path / "parts", paths, workers=2, partition_bytes=200_000, tokenizer=tok)
    with pytest.raises(DataPrepError, match="run the tokenizer stage first"):
        prepare(cfg, stage="encode", shard=(0, 3))
    assert prepare(cfg, stage="tokenizer") is None
    for k in (0, 2):  # shard 1 "failed": the finish stage encodes its partitions
        assert prepare(cfg, stage="encode", shard=(k, 3)) is None
        assert f"shard {k}/3" in capsys.readouterr().out
    assert not (tmp_path / "parts" / "manifest.json").exists()
    assert prepare(cfg, stage="finish") == tmp_path / "parts" / "manifest.json"
    out = capsys.readouterr().out
    kept = re.search(r"(\d+) kept from an earlier run", out)
    assert kept and 0 < int(kept[1]) < len(make_plan(cfg)), out
    assert tree_bytes(tmp_path / "parts") == tree_bytes(one.parent)


def _plant(monkeypatch, tag: str) -> None:
    """A unit cache that cuts "doc" into "do" + "c" in the document tagged `tag`: other ids than
    SentencePiece's for that document only."""
    monkeypatch.setattr(encoder, "UNIT", re.compile(rf" ?do(?=c-{tag})|" + encoder.UNIT.pattern))


def test_planted_mismatch_falls_back_to_sentencepiece(tmp_path, big, small_tokenizer, monkeypatch, capsys):
    paths, _, _ = big
    kw = {"partition_bytes": 150_000, "tokenizer": TokenizerConfig(model=str(small_tokenizer))}
    plain = prepare(prep_config(tmp_path / "plain", paths[:1], workers=1, fast_encode=False, **kw))
    cfg = prep_config(tmp_path / "fast", paths[:1], workers=1, **kw)
    last = make_plan(cfg)[-1].segments[0]
    with open(last.path, "rb") as f:  # the first document of the last partition is always checked
        f.seek(last.start)
        tag = json.loads(f.readline())["text"][4:9]
    _plant(monkeypatch, tag)
    m_path = prepare(cfg)
    out = capsys.readouterr().out
    assert "the unit cache gave other ids than SentencePiece" in out and "; SentencePiece" in out
    assert json.loads((tmp_path / "fast" / ".state" / MISMATCH).read_text())["example"].startswith("src-")
    records = [json.loads(p.read_text()) for p in (tmp_path / "fast" / ".state" / "parts").glob("*.json")]
    assert len(records) > 2 and {r["encoder"] for r in records} == {"sentencepiece"}  # earlier ones redone
    assert tree_bytes(m_path.parent) == tree_bytes(plain.parent)


def test_mismatch_in_one_shard_redoes_the_others_at_finish(tmp_path, big, small_tokenizer, monkeypatch):
    paths, _, _ = big
    kw = {"partition_bytes": 150_000, "tokenizer": TokenizerConfig(model=str(small_tokenizer))}
    plain = prepare(prep_config(tmp_path / "plain", paths[:1], workers=1, fast_encode=False, **kw))
    cfg = prep_config(tmp_path / "fast", paths[:1], workers=1, **kw)
    prepare(cfg, stage="tokenizer")
    prepare(cfg, stage="encode", shard=(0, 2))  # a clean shard: made with the unit cache
    _plant(monkeypatch, "0")  # every document of shard 1 mismatches ("doc-0....")
    prepare(cfg, stage="encode", shard=(1, 2))
    prepare(cfg, stage="finish")  # redoes shard 0's partitions by SentencePiece alone
    assert tree_bytes(tmp_path / "fast") == tree_bytes(plain.parent)


def test_valid_split_same_after_moving_the_files(tmp_path, small_tokenizer):
    texts = make_texts(600)
    a = tmp_path / "a"
    a.mkdir()
    files = [write_jsonl(a / "x.jsonl", texts[:350]), write_jsonl(a / "y.jsonl", texts[350:])]
    tok = TokenizerConfig(model=str(small_tokenizer))
    first = prepare(prep_config(tmp_path / "o1", files, workers=1, valid_fraction=0.1, tokenizer=tok))
    b = tmp_path / "elsewhere" / "renamed"
    b.mkdir(parents=True)
    moved = [shutil.move(str(f), str(b / f"part-{i}.jsonl")) for i, f in enumerate(files)]
    second = prepare(prep_config(tmp_path / "o2", moved, workers=2, valid_fraction=0.1, partition_bytes=30_000,
                                 tokenizer=tok))
    assert read_split(first, "valid") == read_split(second, "valid") != []
    assert len(json.loads(second.read_text())["splits"]["valid"]) > 1  # other partitions, same documents


def test_source_name_changes_the_split(tmp_path, small_tokenizer):
    path = write_jsonl(tmp_path / "c.jsonl", make_texts(300))
    tok = TokenizerConfig(model=str(small_tokenizer))
    cfg = prep_config(tmp_path / "o1", [path], workers=1, valid_fraction=0.2, tokenizer=tok)
    renamed = prep_config(tmp_path / "o2", [path], workers=1, valid_fraction=0.2, tokenizer=tok)
    renamed.sources = [SourceConfig(name="other", paths=[str(path)])]
    valid = [ids for _, ids in read_split(prepare(cfg), "valid")]
    assert valid and valid != [ids for _, ids in read_split(prepare(renamed), "valid")]
