"""Byte streams of input files (plain, gzip, zstd) and a line reader whose memory is bounded."""

import gzip
import io
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import zstandard

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
# What a truncated or corrupt compressed stream raises while it is read.
STREAM_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError)
_CHUNK = 1 << 16


def compression(path: str) -> str | None:
    return COMPRESSIONS.get(Path(path).suffix.lower())


class _ZstdReader(io.RawIOBase):
    """Decompresses every frame of a zstd file and, unlike zstandard's stream_reader, raises EOFError
    when the file ends inside a frame (a truncated download would otherwise look like a clean end)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._dobj = self._dctx.decompressobj()
        self._in_frame = False
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            chunk = self._raw.read(_CHUNK)
            if not chunk:
                if self._in_frame:
                    raise EOFError("zstd stream ended before the end of its frame")
                return 0
            self._buf = memoryview(self._decompress(chunk))
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def _decompress(self, chunk: bytes) -> bytes:
        out = []
        while chunk:
            if self._dobj.eof:  # concatenated frames (pzstd, appended files)
                self._dobj = self._dctx.decompressobj()
            out.append(self._dobj.decompress(chunk))
            chunk = self._dobj.unused_data if self._dobj.eof else b""
        self._in_frame = not self._dobj.eof
        return b"".join(out)


def open_stream(path: str, start: int = 0) -> tuple[BinaryIO, BinaryIO]:
    """(decompressed reader, raw file); `raw.tell()` is how far into the file on disk the reader is.
    `start` (a byte offset) is only meaningful for uncompressed files."""
    raw = open(path, "rb")
    kind = compression(path)
    if kind is None:
        raw.seek(start)
        return raw, raw
    if start:
        raise ValueError(f"{path}: a compressed file cannot be read from an offset")
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    return io.BufferedReader(_ZstdReader(raw), buffer_size=_CHUNK), raw


def iter_lines(f: BinaryIO, limit: int, end: int | None = None) -> Iterator[bytes | None]:
    """Lines (with their newline) up to byte offset `end`; None for a line longer than `limit` bytes,
    which is skipped in chunks so that it is never held in memory whole."""
    while end is None or f.tell() < end:
        line = f.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):
                line = f.readline(_CHUNK)
            yield None
        else:
            yield line
