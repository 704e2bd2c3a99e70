"""Encode one partition into its train/valid shards: written under temp names, renamed into place,
then a done record; a partition without its done record is redone from scratch."""

import os
import shutil
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .config import SourceConfig
from .errors import ErrorLog
from .files import atomic_write_json, fsync_file, sha256_file
from .megatron_io import indexed_dataset
from .plan import Partition
from .readers import PartitionReader
from .split import valid_selector

SPLITS = ("train", "valid")
STATE_DIR = ".state"  # done records and the tokenizer's record
TMP_DIR = ".tmp"  # partitions being written
BATCH_CHARS = 1 << 20  # texts handed to SentencePiece at once
BATCH_DOCS = 1024
REPORT_EVERY_S = 0.25

Report = Callable[[int, int, int], None]  # (documents, tokens, input bytes) since the last call


@dataclass(frozen=True)
class EncodeJob:
    """What every partition needs to know; sent to the worker processes."""

    out_dir: str
    tokenizer: str
    eod_id: int
    bos_id: int | None  # prepended to every document when set
    dtype: str  # numpy dtype of the token ids
    valid_fraction: float
    max_doc_chars: int
    on_error: str
    threads: int  # SentencePiece threads per partition (> 1 only when partitions are fewer than workers)
    sources: dict[str, SourceConfig]


def record_path(out: Path, name: str) -> Path:
    return out / STATE_DIR / "parts" / f"{name}.json"


def _batches(docs: Iterable[tuple[str, int, str]]) -> Iterator[list[tuple[str, int, str]]]:
    batch, chars = [], 0
    for doc in docs:
        batch.append(doc)
        chars += len(doc[2])
        if chars >= BATCH_CHARS or len(batch) >= BATCH_DOCS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _kill_point(name: str) -> int | None:
    """Test hook: DATA_PREP_KILL_AT=<partition>:<docs> SIGKILLs the whole process group once that
    partition has written that many documents, like a `kill -9` of the job (no cleanup runs)."""
    part, _, docs = os.environ.get("DATA_PREP_KILL_AT", "").partition(":")
    return int(docs) if part == name else None


class _Reporter:
    """Progress to `report` at most every REPORT_EVERY_S: what was done since the previous call."""

    def __init__(self, report: Report, reader: PartitionReader) -> None:
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


def _encode(part: Partition, job: EncodeJob, reader: PartitionReader, builders: dict, report: Report) -> dict:
    """Tokenize the partition's documents into the builders; (documents, tokens) per split."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=job.tokenizer)
    counts = {s: [0, 0] for s in SPLITS}
    bos = [] if job.bos_id is None else [job.bos_id]
    selectors: dict[str, Callable[[int], bool]] = {}
    kill_at, written = _kill_point(part.name), 0
    progress = _Reporter(report, reader)
    for batch in _batches(reader):
        encoded = sp.encode([b[2] for b in batch], num_threads=job.threads)
        for (fid, pos, _), ids in zip(batch, encoded, strict=True):
            if fid not in selectors:
                selectors[fid] = valid_selector(fid, job.valid_fraction)
            split = "valid" if selectors[fid](pos) else "train"
            doc = bos + ids + [job.eod_id]
            builders[split].add_document(doc, [len(doc)])
            counts[split][0] += 1
            counts[split][1] += len(doc)
            progress.add(len(doc))
            written += 1
            if written == kill_at:
                os.killpg(os.getpgid(0), signal.SIGKILL)
        progress.send()
    progress.send(consumed=part.size)
    return counts


def encode_partition(part: Partition, key: str, job: EncodeJob, report: Report) -> dict:
    """Write the partition's shards; `key` (what they depend on) goes into the done record."""
    import numpy

    out = Path(job.out_dir)
    tmp = out / TMP_DIR / part.name
    shutil.rmtree(tmp, ignore_errors=True)  # leftovers of an interrupted attempt
    tmp.mkdir(parents=True)
    errors = ErrorLog(job.on_error)
    reader = PartitionReader(part, job.sources[part.source], errors, job.max_doc_chars)
    builder_cls, dtype = indexed_dataset().IndexedDatasetBuilder, getattr(numpy, job.dtype)
    builders = {s: builder_cls(str(tmp / f"{s}.bin"), dtype=dtype) for s in SPLITS}
    counts = _encode(part, job, reader, builders, report)

    shards = {}
    for split, builder in builders.items():
        builder.finalize(str(tmp / f"{split}.idx"))
        docs, tokens = counts[split]
        if not docs:  # an empty split gets no files
            continue
        prefix = f"{split}/{part.name}"
        src = {ext: tmp / f"{split}.{ext}" for ext in ("bin", "idx")}
        shards[split] = {"prefix": prefix, "source": part.source, "documents": docs, "tokens": tokens,
                         "bytes": src["bin"].stat().st_size,
                         "sha256": {e: sha256_file(p) for e, p in src.items()}}
        (out / split).mkdir(exist_ok=True)
        for ext, path in src.items():
            fsync_file(path)  # on disk before the done record says so
            os.replace(path, out / f"{prefix}.{ext}")
    record = {"key": key, "partition": part.name, "source": part.source, "input_bytes": part.size,
              "shards": shards, "errors": errors.to_json()}
    atomic_write_json(record_path(out, part.name), record)
    shutil.rmtree(tmp)
    return record
