"""Encode the chunks of a partition, then assemble its train/valid shards: everything is written under
temp names, renamed into place, then a done record; a partition without its done record is redone
from scratch."""

import functools
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .config import SourceConfig
from .encoder import Encoder, first_difference
from .errors import ErrorLog
from .files import atomic_write_json, fsync_file, read_json, sha256_file
from .megatron_io import concat_shards, indexed_dataset
from .plan import Partition, Segment
from .readers import SegmentReader
from .split import doc_hasher, is_valid

SPLITS = ("train", "valid")
STATE_DIR = ".state"  # done records and the tokenizer's record
TMP_DIR = ".tmp"  # partitions being written
MISMATCH = "units_mismatch.json"  # in STATE_DIR: the unit cache once gave other ids than SentencePiece
# Texts encoded at once: big batches make the unit cache's set and SentencePiece calls cheaper per
# token (8 MiB: ~15% faster than 1 MiB), for ~100 MB of memory per worker.
BATCH_CHARS = 8 << 20
BATCH_DOCS = 4096
REPORT_EVERY_S = 0.25
CHECK_FIRST = 8  # with the unit cache, the first documents of every chunk are also encoded plainly ...
CHECK_ONE_IN = 128  # ... and one in this many of the others (by content hash), and compared

Report = Callable[[int, int, int], None]  # (documents, tokens, input bytes) since the last call


@dataclass(frozen=True)
class EncodeJob:
    """What every chunk needs to know; sent to the worker processes."""

    out_dir: str
    tokenizer: str
    eod_id: int
    bos_id: int | None  # prepended to every document when set
    dtype: str  # numpy dtype of the token ids
    valid_fraction: float
    max_doc_chars: int
    on_error: str
    sources: dict[str, SourceConfig]
    fast_encode: bool  # use the unit cache (encoder.py) unless a mismatch was ever seen here


class _Mismatch(Exception):
    pass


def record_path(out: Path, name: str) -> Path:
    return out / STATE_DIR / "parts" / f"{name}.json"


def mismatch_seen(out: Path) -> dict | None:
    return read_json(out / STATE_DIR / MISMATCH)


def batches(docs: Iterable[str]) -> Iterator[list[str]]:
    batch, chars = [], 0
    for doc in docs:
        batch.append(doc)
        chars += len(doc)
        if chars >= BATCH_CHARS or len(batch) >= BATCH_DOCS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


class _Reporter:
    """Progress to `report` at most every REPORT_EVERY_S: what was done since the previous call."""

    def __init__(self, report: Report, reader: SegmentReader) -> None:
        self.report, self.reader = report, reader
        self.documents = self.tokens = self.sent_bytes = 0
        self.last = time.monotonic()

    def add(self, tokens: int) -> None:
        self.documents += 1
        self.tokens += tokens

    def send(self, consumed: int | None = None) -> None:
        """Now (with `consumed` = all input bytes at the end), else only when it is time."""
        if consumed is None and time.monotonic() - self.last < REPORT_EVERY_S:
            return
        consumed = self.reader.consumed() if consumed is None else consumed
        self.report(self.documents, self.tokens, consumed - self.sent_bytes)
        self.documents = self.tokens = 0
        self.sent_bytes, self.last = consumed, time.monotonic()


@functools.cache
def _encoder(model: str, dtype: str, units: bool) -> Encoder:
    """One per process and model: the unit cache carries over from chunk to chunk."""
    import numpy

    return Encoder(model, numpy.dtype(dtype).char, units)


def _chunk_prefix(out: Path, part: Partition, index: int, split: str) -> Path:
    return out / TMP_DIR / part.name / f"{index:05d}-{split}"


def _encode(part: Partition, index: int, segments: tuple[Segment, ...], job: EncodeJob, units: bool,
            report: Report) -> dict:
    import numpy

    out = Path(job.out_dir)
    errors = ErrorLog(job.on_error)
    reader = SegmentReader(segments, job.sources[part.source], errors, job.max_doc_chars)
    dtype = numpy.dtype(job.dtype)
    builders = {s: indexed_dataset().IndexedDatasetBuilder(f"{_chunk_prefix(out, part, index, s)}.bin",
                                                           dtype=dtype.type) for s in SPLITS}
    enc = _encoder(job.tokenizer, job.dtype, units)
    digest = doc_hasher(part.source)
    head = b"" if job.bos_id is None else numpy.array([job.bos_id], dtype).tobytes()
    tail = numpy.array([job.eod_id], dtype).tobytes()
    counts = {s: [0, 0] for s in SPLITS}
    written = checked = 0
    progress = _Reporter(report, reader)
    for batch in batches(reader):
        for text, body in zip(batch, enc.encode(batch), strict=True):
            h = digest(text)
            if enc.units is not None and (written < CHECK_FIRST or h % CHECK_ONE_IN == 0):
                plain = enc.plain([text])[0]
                if plain != body:
                    a, b = numpy.frombuffer(body, dtype), numpy.frombuffer(plain, dtype)
                    i = first_difference(a.tolist(), b.tolist())
                    raise _Mismatch(f"{part.name} chunk {index}: a document starting {text[:60]!r} differs at "
                                    f"token {i}: {a[i:i + 4].tolist()} (units) vs {b[i:i + 4].tolist()}")
                checked += 1
            split = "valid" if is_valid(h, job.valid_fraction) else "train"
            doc = numpy.frombuffer(head + body + tail, dtype)
            builders[split].add_document(doc, [doc.size])
            counts[split][0] += 1
            counts[split][1] += doc.size
            progress.add(doc.size)
            written += 1
        progress.send()
    for split, builder in builders.items():
        builder.finalize(f"{_chunk_prefix(out, part, index, split)}.idx")
    progress.send(consumed=sum(s.size for s in segments))
    return {"index": index, "splits": counts, "errors": errors.to_json(), "lines": reader.line_counts,
            "encoder": "units" if enc.units is not None else "sentencepiece", "checked": checked,
            "why_not_units": enc.why_not_units}


def encode_chunk(part: Partition, index: int, segments: tuple[Segment, ...], job: EncodeJob,
                 report: Report) -> dict:
    """Write chunk `index` of the partition to temp shards; its counts, errors and line counts. When the
    unit cache disagrees with SentencePiece on a checked document, that is recorded (MISMATCH: no
    later chunk here uses the cache) and the chunk is encoded again by SentencePiece alone."""
    out = Path(job.out_dir)
    if not job.fast_encode:
        return _encode(part, index, segments, job, False, report)
    if mismatch_seen(out) is not None:
        return _encode(part, index, segments, job, False, report) | {"why_not_units": f"it gave other ids "
                                                                      f"once (.state/{MISMATCH})"}
    try:
        return _encode(part, index, segments, job, True, report)
    except _Mismatch as e:
        atomic_write_json(out / STATE_DIR / MISMATCH, {"example": str(e)})
        print(f"data_prep: WARNING: the unit cache gave other ids than SentencePiece ({e}); "
              "encoding with SentencePiece alone from now on", flush=True)
        return _encode(part, index, segments, job, False, report)


def publish_shard(tmp: Path, out: Path, prefix: str, source: str, documents: int, tokens: int) -> dict:
    """Move the temp shard `tmp`.bin/.idx to `out`/`prefix`.bin/.idx (on disk before anything says
    so); its manifest entry."""
    files = {ext: Path(f"{tmp}.{ext}") for ext in ("bin", "idx")}
    shard = {"prefix": prefix, "source": source, "documents": documents, "tokens": tokens,
             "bytes": files["bin"].stat().st_size, "sha256": {e: sha256_file(p) for e, p in files.items()}}
    (out / prefix).parent.mkdir(parents=True, exist_ok=True)
    for ext, path in files.items():
        fsync_file(path)
        os.replace(path, out / f"{prefix}.{ext}")
    return shard


def assemble(part: Partition, key: str, results: list[dict], job: EncodeJob) -> dict:
    """The partition's shards from its chunks' (concatenated in order: the same bytes as one chunk would
    give), and its done record; `key` (what the shards depend on) goes into the record."""
    out = Path(job.out_dir)
    results = sorted(results, key=lambda r: r["index"])
    shards = {}
    for split in SPLITS:
        parts = [r for r in results if r["splits"][split][0]]
        if not parts:  # an empty split gets no files
            continue
        tmp = out / TMP_DIR / part.name / split
        if len(parts) == 1:
            for ext in ("bin", "idx"):
                os.replace(f"{_chunk_prefix(out, part, parts[0]['index'], split)}.{ext}", f"{tmp}.{ext}")
        else:
            concat_shards([_chunk_prefix(out, part, r["index"], split) for r in parts], tmp, job.dtype)
        docs, tokens = (sum(r["splits"][split][i] for r in parts) for i in (0, 1))
        shards[split] = publish_shard(tmp, out, f"{split}/{part.name}", part.source, docs, tokens)
    errors = ErrorLog()
    for r in results:
        errors.extend(r["errors"])
    record = {"key": key, "partition": part.name, "source": part.source, "input_bytes": part.size,
              "shards": shards, "errors": errors.to_json(), "lines": [c for r in results for c in r["lines"]],
              "encoder": "units" if any(r["encoder"] == "units" for r in results) else "sentencepiece",
              "checked": sum(r["checked"] for r in results), "chunks": len(results),
              "why_not_units": next((r["why_not_units"] for r in results if r["why_not_units"]), None)}
    atomic_write_json(record_path(out, part.name), record)
    shutil.rmtree(out / TMP_DIR / part.name)
    return record
