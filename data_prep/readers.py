"""The documents (texts) of some segments, in input order; every bad record is counted in an ErrorLog
with its position: its line number (counted from the segment's start for the pieces of a cut line
file, see Segment.first_position), its row number for parquet, its record number for a datasets shard.
Lines are never held whole beyond `4 × max_doc_chars` bytes (UTF-8's widest character), so one giant
line cannot exhaust memory.
"""

import json
from collections.abc import Iterator

from .config import SourceConfig
from .errors import ErrorLog
from .plan import Segment
from .streams import STREAM_ERRORS, compression, iter_lines, open_stream

LINE_BYTES_PER_CHAR = 4
LINE_SLACK = 1 << 16  # JSON keys and escapes around the text


class SegmentReader:
    def __init__(self, segments: tuple[Segment, ...], src: SourceConfig, errors: ErrorLog,
                 max_doc_chars: int) -> None:
        self.segments, self.src, self.errors, self.max_doc_chars = segments, src, errors, max_doc_chars
        self.line_limit = LINE_BYTES_PER_CHAR * max_doc_chars + LINE_SLACK
        self.line_counts: list[list] = []  # [path, start, lines] of every line-file segment read
        self._finished_bytes = 0
        self._tell = lambda: 0  # input bytes read so far in the current segment
        self._fid, self._base = "", 0  # the current segment's name in reports; where its lines count from

    def consumed(self) -> int:
        """Input bytes read so far (as stored on disk), for progress."""
        return self._finished_bytes + self._tell()

    def _bad(self, pos: int, kind: str, message: str) -> None:
        self.errors.add(self._fid, pos, kind, message, self._base)

    def __iter__(self) -> Iterator[str]:
        for seg in self.segments:
            self._fid, self._base = seg_file_id(seg, self.src), seg.lines_from
            for pos, text in self._records(seg):
                if not text.strip():
                    self._bad(pos, "empty", "the document has no text")
                elif len(text) > self.max_doc_chars:
                    self._bad(pos, "too_long", f"{len(text)} chars > max_doc_chars={self.max_doc_chars}")
                else:
                    yield text
            self._finished_bytes += seg.size
            self._tell = lambda: 0

    def _records(self, seg: Segment) -> Iterator[tuple[int, str]]:
        if seg.format == "jsonl":
            return self._jsonl(seg)
        if seg.format == "txt":
            return self._txt_lines(seg)
        if seg.format == "txt-file":
            return self._txt_file(seg)
        if seg.format == "parquet":
            return self._parquet(seg)
        return self._hf(seg)  # hf, hf-stream

    def _lines(self, seg: Segment) -> Iterator[tuple[int, str]]:
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
                        self._bad(line_no, "too_long", f"line longer than {self.line_limit} bytes")
                        continue
                    try:
                        yield line_no, line.decode("utf-8")
                    except UnicodeDecodeError as e:
                        self._bad(line_no, "non_utf8", f"invalid UTF-8 at byte {e.start + 1}")
            except STREAM_ERRORS as e:
                self._bad(line_no + 1, "truncated", f"{type(e).__name__}: {e}; the rest is lost")
        self.line_counts.append([seg.path, seg.start, line_no - seg.first_position + 1])

    def _jsonl(self, seg: Segment) -> Iterator[tuple[int, str]]:
        key = self.src.text_key
        for pos, line in self._lines(seg):
            if not line.strip():
                self._bad(pos, "empty", "blank line")
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                self._bad(pos, "invalid_json", f"{e.msg} (column {e.colno})")
                continue
            if not isinstance(obj, dict):
                self._bad(pos, "missing_key", f"a JSON {type(obj).__name__}, not an object")
                continue
            text = obj.get(key)
            if not isinstance(text, str):
                self._bad(pos, "missing_key", _not_text(obj, key))
            elif "\\u" in line and not _encodable(text):
                self._bad(pos, "non_utf8", "a lone UTF-16 surrogate escape (\\ud800-\\udfff)")
            else:
                yield pos, text

    def _txt_lines(self, seg: Segment) -> Iterator[tuple[int, str]]:
        for pos, line in self._lines(seg):
            text = line.rstrip("\r\n")
            if text.strip():  # blank lines separate documents; they are not bad records
                yield pos, text

    def _txt_file(self, seg: Segment) -> Iterator[tuple[int, str]]:
        f, raw = open_stream(seg.path)
        self._tell = raw.tell
        with f, raw:
            try:
                data = f.read(self.line_limit + 1)
            except STREAM_ERRORS as e:
                self._bad(1, "truncated", f"{type(e).__name__}: {e}")
                return
        self._tell = lambda: seg.size
        if len(data) > self.line_limit:
            self._bad(1, "too_long", f"file longer than {self.line_limit} bytes")
            return
        try:
            yield 1, data.decode("utf-8")
        except UnicodeDecodeError as e:
            self._bad(1, "non_utf8", f"invalid UTF-8 at byte {e.start + 1}")

    def _parquet(self, seg: Segment) -> Iterator[tuple[int, str]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        key, row = self.src.text_key, seg.first_position - 1
        try:
            pf = pq.ParquetFile(seg.path)
            if key not in pf.schema_arrow.names:
                self._bad(row + 1, "missing_key", f"no column {key!r} (columns: {pf.schema_arrow.names})")
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
                            self._bad(row, "non_utf8", f"invalid UTF-8 at byte {e.start + 1}")
                            continue
                    if isinstance(value, str):
                        yield row, value
                    else:
                        self._bad(row, "missing_key", _not_text({key: value}, key))
        except (pa.ArrowException, OSError) as e:
            self._bad(row + 1, "truncated", f"unreadable parquet: {e}")

    def _hf(self, seg: Segment) -> Iterator[tuple[int, str]]:
        from .hf import iter_shard

        key = self.src.text_key
        for pos, rec in enumerate(iter_shard(self.src.hf, seg.start, seg.stop), start=seg.first_position):
            text = rec.get(key)
            if isinstance(text, str):
                yield pos, text
            else:
                self._bad(pos, "missing_key", _not_text(rec, key))


def _not_text(record: dict, key: str) -> str:
    return f"no {key!r} key" if key not in record else f"{key!r} is {type(record[key]).__name__}, not text"


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def seg_file_id(seg: Segment, src: SourceConfig) -> str:
    """The name records of this segment carry in error reports."""
    if not seg.format.startswith("hf"):
        return seg.path
    from .hf import hf_id

    return hf_id(src.hf, (seg.start, seg.stop) if seg.format == "hf-stream" else None)
