"""The documents of one partition, in input order; every bad record is counted in an ErrorLog.

A document is (file id, position, text): the position is the record's line number (row number for
parquet, record number for a datasets shard), counted from 1. Lines are never held whole beyond
`4 × max_doc_chars` bytes (UTF-8's widest character), so one giant line cannot exhaust memory.
"""

import json
from collections.abc import Iterator

from .config import SourceConfig
from .errors import ErrorLog
from .plan import Partition, Segment
from .streams import STREAM_ERRORS, compression, iter_lines, open_stream

LINE_BYTES_PER_CHAR = 4
LINE_SLACK = 1 << 16  # JSON keys and escapes around the text


class PartitionReader:
    def __init__(self, part: Partition, src: SourceConfig, errors: ErrorLog, max_doc_chars: int) -> None:
        self.part, self.src, self.errors, self.max_doc_chars = part, src, errors, max_doc_chars
        self.line_limit = LINE_BYTES_PER_CHAR * max_doc_chars + LINE_SLACK
        self._finished_bytes = 0
        self._tell = lambda: 0  # input bytes read so far in the current segment

    def consumed(self) -> int:
        """Input bytes read so far (as stored on disk), for progress."""
        return self._finished_bytes + self._tell()

    def __iter__(self) -> Iterator[tuple[str, int, str]]:
        for seg in self.part.segments:
            fid = seg_file_id(seg, self.src)
            for pos, text in self._records(seg, fid):
                if not text.strip():
                    self.errors.add(fid, pos, "empty", "the document has no text")
                elif len(text) > self.max_doc_chars:
                    msg = f"{len(text)} chars > max_doc_chars={self.max_doc_chars}"
                    self.errors.add(fid, pos, "too_long", msg)
                else:
                    yield fid, pos, text
            self._finished_bytes += seg.size
            self._tell = lambda: 0

    def _records(self, seg: Segment, fid: str) -> Iterator[tuple[int, str]]:
        if seg.format == "jsonl":
            return self._jsonl(seg, fid)
        if seg.format == "txt":
            return self._txt_file(seg, fid) if self.src.txt_document == "file" else self._txt_lines(seg, fid)
        if seg.format == "parquet":
            return self._parquet(seg, fid)
        return self._hf(seg, fid)  # hf, hf-stream

    def _lines(self, seg: Segment, fid: str) -> Iterator[tuple[int, str]]:
        """Decoded lines with their numbers; too long, non-UTF-8 and truncated input are counted here."""
        f, raw = open_stream(seg.path, seg.start)
        self._tell = lambda: raw.tell() - seg.start
        end = None if compression(seg.path) else seg.stop
        line_no = seg.first_position - 1
        with f, raw:
            try:
                for line in iter_lines(f, self.line_limit, end):
                    line_no += 1
                    if line is None:
                        self.errors.add(fid, line_no, "too_long", f"line longer than {self.line_limit} bytes")
                        continue
                    try:
                        yield line_no, line.decode("utf-8")
                    except UnicodeDecodeError as e:
                        self.errors.add(fid, line_no, "non_utf8", f"invalid UTF-8 at byte {e.start + 1}")
            except STREAM_ERRORS as e:
                self.errors.add(fid, line_no + 1, "truncated", f"{type(e).__name__}: {e}; the rest is lost")

    def _jsonl(self, seg: Segment, fid: str) -> Iterator[tuple[int, str]]:
        key = self.src.text_key
        for pos, line in self._lines(seg, fid):
            if not line.strip():
                self.errors.add(fid, pos, "empty", "blank line")
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                self.errors.add(fid, pos, "invalid_json", f"{e.msg} (column {e.colno})")
                continue
            if not isinstance(obj, dict):
                self.errors.add(fid, pos, "missing_key", f"a JSON {type(obj).__name__}, not an object")
                continue
            text = obj.get(key)
            if not isinstance(text, str):
                self.errors.add(fid, pos, "missing_key", _not_text(obj, key))
            elif "\\u" in line and not _encodable(text):
                self.errors.add(fid, pos, "non_utf8", "a lone UTF-16 surrogate escape (\\ud800-\\udfff)")
            else:
                yield pos, text

    def _txt_lines(self, seg: Segment, fid: str) -> Iterator[tuple[int, str]]:
        for pos, line in self._lines(seg, fid):
            text = line.rstrip("\r\n")
            if text.strip():  # blank lines separate documents; they are not bad records
                yield pos, text

    def _txt_file(self, seg: Segment, fid: str) -> Iterator[tuple[int, str]]:
        f, raw = open_stream(seg.path)
        self._tell = raw.tell
        with f, raw:
            try:
                data = f.read(self.line_limit + 1)
            except STREAM_ERRORS as e:
                self.errors.add(fid, 1, "truncated", f"{type(e).__name__}: {e}")
                return
        self._tell = lambda: seg.size
        if len(data) > self.line_limit:
            self.errors.add(fid, 1, "too_long", f"file longer than {self.line_limit} bytes")
            return
        try:
            yield 1, data.decode("utf-8")
        except UnicodeDecodeError as e:
            self.errors.add(fid, 1, "non_utf8", f"invalid UTF-8 at byte {e.start + 1}")

    def _parquet(self, seg: Segment, fid: str) -> Iterator[tuple[int, str]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        key, row = self.src.text_key, seg.first_position - 1
        try:
            pf = pq.ParquetFile(seg.path)
            if key not in pf.schema_arrow.names:
                names = pf.schema_arrow.names
                self.errors.add(fid, row + 1, "missing_key", f"no column {key!r} (columns: {names})")
                return
            groups = range(seg.start, seg.stop)
            rows = max(1, sum(pf.metadata.row_group(g).num_rows for g in groups))
            self._tell = lambda: seg.size * (row - seg.first_position + 1) // rows
            for batch in pf.iter_batches(batch_size=1024, row_groups=groups, columns=[key]):
                for value in batch.column(0).to_pylist():
                    row += 1
                    if isinstance(value, bytes):
                        try:
                            value = value.decode("utf-8")
                        except UnicodeDecodeError as e:
                            self.errors.add(fid, row, "non_utf8", f"invalid UTF-8 at byte {e.start + 1}")
                            continue
                    if isinstance(value, str):
                        yield row, value
                    else:
                        self.errors.add(fid, row, "missing_key", _not_text({key: value}, key))
        except (pa.ArrowException, OSError) as e:
            self.errors.add(fid, row + 1, "truncated", f"unreadable parquet: {e}")

    def _hf(self, seg: Segment, fid: str) -> Iterator[tuple[int, str]]:
        from .hf import iter_shard

        key = self.src.text_key
        for pos, rec in enumerate(iter_shard(self.src.hf, seg.start, seg.stop), start=seg.first_position):
            text = rec.get(key)
            if isinstance(text, str):
                yield pos, text
            else:
                self.errors.add(fid, pos, "missing_key", _not_text(rec, key))


def _not_text(record: dict, key: str) -> str:
    return f"no {key!r} key" if key not in record else f"{key!r} is {type(record[key]).__name__}, not text"


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def seg_file_id(seg: Segment, src: SourceConfig) -> str:
    """The name records of this segment carry in error reports; it also seeds the valid split."""
    if not seg.format.startswith("hf"):
        return seg.path
    from .hf import hf_id

    return hf_id(src.hf, (seg.start, seg.stop) if seg.format == "hf-stream" else None)
