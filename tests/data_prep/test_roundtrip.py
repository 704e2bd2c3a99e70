"""Documents → shards → megatron IndexedDataset gives back exactly encode(doc) + [eod], in order."""

import hashlib
import json
from pathlib import Path

import pytest
import sentencepiece as spm

from data_prep import prepare
from data_prep.config import SourceConfig, TokenizerConfig
from data_prep.plan import make_plan
from data_prep.split import doc_hasher, is_valid
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
def corpus(tmp_path_factory) -> tuple[list[Path], dict[int, tuple[str, str]], dict[str, range]]:
    """Five formats in one source (plain jsonl large enough to be cut at newlines, gz, zst, parquet
    with row groups, txt lines) and a second jsonl source."""
    d = tmp_path_factory.mktemp("corpus")
    texts = make_texts(400)
    files = {"a.jsonl": range(0, 150), "b.jsonl.gz": range(150, 210), "c.jsonl.zst": range(210, 270),
             "d.parquet": range(270, 350)}
    paths = [write_jsonl(d / f, texts[r.start:r.stop]) for f, r in files.items() if "jsonl" in f]
    paths.append(write_parquet(d / "d.parquet", texts[270:350], row_group_size=20))
    lines = make_texts(50, start=350, multiline=False)
    paths.append(write_bytes(d / "e.txt", ("\n".join(lines) + "\n").encode()))
    files["e.txt"] = range(350, 400)
    other = make_texts(60, start=1000, seed=1)
    other_path = write_jsonl(d / "other.jsonl", other)
    expected = {i: ("src", t) for i, t in enumerate(texts[:350] + lines)} | {
        1000 + i: ("other", t) for i, t in enumerate(other)}
    return paths + [other_path], expected, files


def _config(out: Path, paths: list[Path], workers: int):
    cfg = prep_config(out, paths[:-1], workers=workers, valid_fraction=0.1, partition_bytes=18_000)
    cfg.sources.append(SourceConfig(name="other", paths=[str(paths[-1])], weight=2.0))
    return cfg


def test_roundtrip_all_formats_independent_of_workers(tmp_path, corpus):
    paths, expected, _ = corpus
    one = prepare(_config(tmp_path / "w1", paths, workers=1))
    three = prepare(_config(tmp_path / "w3", paths, workers=3))
    assert tree_bytes(one.parent) == tree_bytes(three.parent)  # byte for byte, manifest included

    m = json.loads(one.read_text())
    assert m["dtype"] == "uint16" and m["tokenizer"]["vocab_size"] == 600
    plan = make_plan(_config(tmp_path, paths, workers=1))
    assert len(plan) >= 5 and any(len(p.segments) > 1 for p in plan), "cut files and packed ones expected"
    assert len(m["splits"]["train"]) == len(plan)
    assert [s["name"] for s in m["sources"]] == ["src", "other"]
    assert m["sources"][0]["documents"] == 400 and m["sources"][1]["documents"] == 60
    assert all(n == 0 for s in m["sources"] for n in s["errors"].values())
    where = check_roundtrip(one, expected)
    # A document is in the valid split exactly when the hash of its source and text says so.
    hashers = {name: doc_hasher(name) for name in ("src", "other")}
    assert where == {i: "valid" if is_valid(hashers[src](text), 0.1) else "train"
                     for i, (src, text) in expected.items()}
    assert 0.05 < sum(s == "valid" for s in where.values()) / len(where) < 0.15


def test_bos_and_existing_tokenizer(tmp_path, corpus, small_tokenizer):
    paths, expected, _ = corpus
    cfg = _config(tmp_path / "out", paths, workers=2)
    cfg.append_bos = True
    cfg.tokenizer = TokenizerConfig(model=str(small_tokenizer))
    m_path = prepare(cfg)
    m = json.loads(m_path.read_text())
    assert (m_path.parent / "tokenizer.model").read_bytes() == small_tokenizer.read_bytes()
    assert m["tokenizer"]["sha256"] == hashlib.sha256(small_tokenizer.read_bytes()).hexdigest()
    assert (m["tokenizer"]["pad_id"], m["tokenizer"]["bos_id"], m["tokenizer"]["eod_id"]) == (0, 1, 2)
    check_roundtrip(m_path, expected, bos=True)


def _large_vocab_model(base: bytes, extra: int) -> bytes:
    """A real SentencePiece model with `extra` user-defined pieces <x0>, <x1>, ... appended: a vocabulary
    above 65500 without training one (which would take minutes)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    model = pb.ModelProto()
    model.ParseFromString(base)
    for i in range(extra):
        piece = model.pieces.add()
        piece.piece, piece.score, piece.type = f"<x{i}>", 0.0, pb.ModelProto.SentencePiece.USER_DEFINED
    return model.SerializeToString()


def test_int32_tokens_for_large_vocab(tmp_path, small_tokenizer):
    model = tmp_path / "big.model"
    model.write_bytes(_large_vocab_model(small_tokenizer.read_bytes(), 66_000))
    texts = [t.replace(" ", f" <x{65_999 - 7 * i}> ", 1) for i, t in enumerate(make_texts(120))]
    cfg = prep_config(tmp_path / "out", [write_jsonl(tmp_path / "big.jsonl", texts)], workers=2,
                      valid_fraction=0.1, partition_bytes=8_000, tokenizer=TokenizerConfig(model=str(model)))
    m_path = prepare(cfg)
    m = json.loads(m_path.read_text())
    assert m["tokenizer"]["vocab_size"] == 66_600 and m["dtype"] == "int32"
    check_roundtrip(m_path, {i: ("src", t) for i, t in enumerate(texts)})
    assert max(max(ids) for _, ids in read_split(m_path, "train")) > 65_535  # would not fit uint16


def test_merge_concatenates_partitions(tmp_path, corpus):
    paths, expected, _ = corpus
    split_path = prepare(_config(tmp_path / "parts", paths, workers=2))
    cfg = _config(tmp_path / "merged", paths, workers=2)
    cfg.merge = True
    merged_path = prepare(cfg)
    m = json.loads(merged_path.read_text())
    assert [s["prefix"] for s in m["splits"]["train"]] == ["train/src", "train/other"]
    for split in ("train", "valid"):
        assert read_split(merged_path, split) == read_split(split_path, split)
    assert sorted(p.name for p in (merged_path.parent / "train").iterdir()) == [
        "other.bin", "other.idx", "src.bin", "src.idx"]


def test_trained_tokenizer_is_reproducible(tmp_path):
    from data_prep.tokenizer import train

    texts = make_texts(100)
    tok = TokenizerConfig(type="unigram", vocab_size=500, num_threads=2)
    a, b = train(iter(texts), tok), train(iter(texts), tok)
    assert a == b
    sp = spm.SentencePieceProcessor(model_proto=a)
    s = "def f(x):\n    return  x  # é 😀"
    assert sp.decode(sp.encode(s)) == s  # whitespace and newlines survive
