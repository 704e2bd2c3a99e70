"""Every class of bad input is counted per file with its line numbers; good records around it survive;
`on_error: fail` stops at the first one and names file and line."""

import json
import re

import pytest

from data_prep import BadInputError, prepare
from data_prep.__main__ import main
from data_prep.config import TokenizerConfig
from data_prep.errors import DataPrepError
from tests.data_prep.helpers import (
    check_roundtrip,
    make_texts,
    prep_config,
    write_bytes,
    write_jsonl,
    write_parquet,
)

MAX_CHARS = 2000  # line limit: 4 * 2000 + 65536 bytes


def _bad_jsonl(texts: list[str]) -> tuple[bytes, dict[str, list[int]]]:
    """Good documents interleaved with one bad line of each kind; returns the data and the bad lines."""
    bad = [
        ("invalid_json", b'{"text": "unterminated'),
        ("missing_key", b'{"body": "no text key"}'),
        ("non_utf8", b'{"text": "caf\xe9 latin-1"}'),
        ("empty", b'{"text": "  \\n "}'),
        ("too_long", json.dumps({"text": "a" * (MAX_CHARS + 1)}).encode()),  # a document over max_doc_chars
        ("too_long", b'{"text": "' + b"b" * 200_000 + b'"}'),  # a line over the line limit
        ("empty", b""),  # a blank line
        ("missing_key", b"[1, 2, 3]"),
        ("missing_key", b'{"text": 5}'),
        ("non_utf8", b'{"text": "lone \\ud800 surrogate"}'),
    ]
    lines, where = [], {}
    for i, t in enumerate(texts):
        lines.append(json.dumps({"text": t}).encode())
        if i < len(bad):
            kind, line = bad[i]
            lines.append(line)
            where.setdefault(kind, []).append(len(lines))
    return b"\n".join(lines) + b"\n", where


def _details(manifest: dict) -> dict[tuple[str, str], list[int]]:
    return {(e["file"].rsplit("/", 1)[-1], e["kind"]): e["lines"]
            for s in manifest["sources"] for e in s["error_details"]}


def test_every_bad_class_counted_with_lines(tmp_path, small_tokenizer):
    texts = make_texts(40)
    data, where = _bad_jsonl(texts)
    full = make_texts(700, start=100)  # the zst part spans several 128 KiB zstd blocks
    gz = write_jsonl(tmp_path / "cut.jsonl.gz", full[:100])
    zst = write_jsonl(tmp_path / "cut.jsonl.zst", full[100:])
    gz.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])  # truncated downloads
    zst.write_bytes(zst.read_bytes()[: zst.stat().st_size // 2])
    nocol = write_parquet(tmp_path / "nocol.parquet", ["x"] * 5, 5, column="body")
    broken = write_parquet(tmp_path / "broken.parquet", ["y"] * 5, 5)
    broken.write_bytes(broken.read_bytes()[:-20])
    txt_lines = ["doc-09000 fine line one", "doc-09002 fine line two"]
    txt = write_bytes(tmp_path / "t.txt", f"{txt_lines[0]}\ndoc-09001 bad \udcff byte\n{txt_lines[1]}\n"
                      .encode(errors="surrogateescape"))
    paths = [write_bytes(tmp_path / "bad.jsonl", data), gz, zst, nocol, broken, txt]
    cfg = prep_config(tmp_path / "out", paths, workers=2, valid_fraction=0.0, max_doc_chars=MAX_CHARS,
                      partition_bytes=20_000, tokenizer=TokenizerConfig(model=str(small_tokenizer)))
    m_path = prepare(cfg)
    m = json.loads(m_path.read_text())
    details = _details(m)
    for kind, lines in where.items():
        assert details["bad.jsonl", kind] == lines, kind
    assert m["sources"][0]["errors"] == {"invalid_json": 1, "missing_key": 4, "non_utf8": 3, "empty": 2,
                                         "too_long": 2, "truncated": 3}
    assert details["t.txt", "non_utf8"] == [2]
    assert details["nocol.parquet", "missing_key"] == [1]
    assert details["broken.parquet", "truncated"] == [1]
    # The records before a truncation are kept, in order; the truncation is reported at the next line.
    kept = {}
    for name, n in (("cut.jsonl.gz", 100), ("cut.jsonl.zst", 600)):
        [line] = details[name, "truncated"]
        kept[name] = line - 1
        assert 0 < kept[name] < n
    good = {i: ("src", t) for i, t in enumerate(texts)} | {
        100 + i: ("src", t) for i, t in enumerate(full[:kept["cut.jsonl.gz"]])} | {
        200 + i: ("src", t) for i, t in enumerate(full[100:100 + kept["cut.jsonl.zst"]])}
    assert m["sources"][0]["documents"] == len(good) + 2  # + the two good txt lines
    check_roundtrip(m_path, good | {9000: ("src", txt_lines[0]), 9002: ("src", txt_lines[1])})


def test_on_error_fail_names_file_and_line(tmp_path, small_tokenizer):
    data, where = _bad_jsonl(make_texts(5))
    path = write_bytes(tmp_path / "bad.jsonl", data)
    cfg = prep_config(tmp_path / "out", [path], workers=1, on_error="fail",
                      tokenizer=TokenizerConfig(model=str(small_tokenizer)))
    with pytest.raises(BadInputError) as e:
        prepare(cfg)
    assert (e.value.file, e.value.line, e.value.kind) == (str(path), where["invalid_json"][0], "invalid_json")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_cli_on_error_fail_exits_nonzero(tmp_path, small_tokenizer, capsys):
    data, where = _bad_jsonl(make_texts(5))
    path = write_bytes(tmp_path / "bad.jsonl", data)
    # Several partitions and workers: the error travels from a worker process.
    args = ["--input", str(path), "--output-dir", str(tmp_path / "o"), "--tokenizer-model",
            str(small_tokenizer), "--on-error", "fail", "--workers", "2", "--partition-bytes", "500"]
    assert main(args) == 1
    err = capsys.readouterr().err
    # Workers run in parallel: the first bad record any of them meets is the one reported.
    match = re.match(rf"data_prep: error: {re.escape(str(path))}:(\d+): (\w+): ", err)
    assert match and int(match[1]) in where[match[2]], err


@pytest.mark.parametrize("data", [b"", b'{"body": "no text key"}\n{"text": ""}\n'], ids=["empty_file", "no_usable"])
def test_no_usable_documents_says_why_before_tokenizer_training(tmp_path, data):
    """Not SentencePiece's `[!sentences_.empty()]`: the source, what was read and why it was skipped."""
    path = write_bytes(tmp_path / "in.jsonl", data)
    with pytest.raises(DataPrepError, match=r"no usable documents to train the tokenizer on: src: 1 input") as e:
        prepare(prep_config(tmp_path / "out", [path]))
    if data:
        assert "2 record(s) skipped (1 missing_key in" in str(e.value) and "1 empty in" in str(e.value)
