"""Compressed streams: concatenated zstd frames and gzip members read whole, a cut zstd frame is an
error (zstandard's own reader would end quietly), and an overlong line is skipped in bounded memory."""

import gzip
import io

import pytest
import zstandard

from data_prep.streams import iter_lines, open_stream
from tests.data_prep.helpers import write_bytes


def _lines(path, limit=1 << 20):
    f, raw = open_stream(str(path))
    with f, raw:
        return list(iter_lines(f, limit))


def test_concatenated_frames_and_members(tmp_path):
    a, b = b"".join(b"a%d\n" % i for i in range(5000)), b"".join(b"b%d\n" % i for i in range(5000))
    zst = tmp_path / "x.jsonl.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(a) + zstandard.ZstdCompressor().compress(b))
    gz = tmp_path / "x.jsonl.gz"
    gz.write_bytes(gzip.compress(a) + gzip.compress(b))
    expected = (a + b).splitlines(keepends=True)
    assert _lines(zst) == expected and _lines(gz) == expected


def test_cut_zstd_frame_raises(tmp_path):
    data = b"".join(b"line %d\n" % i for i in range(200_000))  # several zstd blocks
    path = write_bytes(tmp_path / "x.jsonl.zst", data)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(EOFError):
        _lines(path)
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(path.read_bytes())).read()  # no error there


def test_overlong_line_skipped(tmp_path):
    path = write_bytes(tmp_path / "x.jsonl", b"short\n" + b"x" * 5_000_000 + b"\nafter\nlast-no-newline")
    assert _lines(path, limit=1000) == [b"short\n", None, b"after\n", b"last-no-newline"]
