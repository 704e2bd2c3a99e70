"""Run the pending partitions: each cut into chunks (so that every worker has work whatever the file
sizes), the chunks encoded in this process (one worker) or in forked worker processes, and each
partition's shards assembled as soon as its chunks are done. Progress reaches one bar through a
queue. The first failure stops all."""

import multiprocessing as mp
import shutil
import sys
from collections import defaultdict
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from .errors import DataPrepError
from .megatron_io import frozen_gc, indexed_dataset
from .plan import Partition, Segment, chunks
from .progress import Progress
from .writer import REPORT_EVERY_S, TMP_DIR, EncodeJob, Report, assemble, encode_chunk

CHUNKS_PER_WORKER = 4  # enough that workers finishing early find more work
MIN_CHUNK_BYTES = 64 * 2**10

_queue = None  # set in each worker: where progress goes
_stop = None  # set by the parent after a failure: the other workers give up at their next report


class _Stopped(Exception):
    pass


def _init_worker(queue, stop) -> None:
    global _queue, _stop
    _queue, _stop = queue, stop


def _report(documents: int, tokens: int, nbytes: int) -> None:
    if _stop.is_set():
        raise _Stopped
    _queue.put((documents, tokens, nbytes))


def _encode(part: Partition, key: str, index: int, segments: tuple[Segment, ...], whole: bool, job: EncodeJob,
            report: Report) -> dict:
    """A chunk's result; for a partition in one chunk, its done record straight away (in the worker)."""
    result = encode_chunk(part, index, segments, job, report)
    return assemble(part, key, [result], job) if whole else result


def _task(*args) -> dict | None:
    try:
        return _encode(*args, _report)
    except _Stopped:
        return None


def _drain(queue, progress: Progress) -> None:
    while not queue.empty():
        progress.update(*queue.get())


def _context():
    # fork: workers inherit megatron and SentencePiece already imported (a spawn would re-import ~5 s each)
    return mp.get_context("fork" if sys.platform == "linux" else "spawn")


def chunk_bytes(parts: list[Partition], workers: int) -> int:
    """Chunk size for this run: none with one worker (every partition whole), else about
    CHUNKS_PER_WORKER chunks per worker. Chunks never change the output, only who encodes what."""
    total = sum(p.size for p in parts)
    return total if workers == 1 else max(MIN_CHUNK_BYTES, total // (CHUNKS_PER_WORKER * workers))


def run_partitions(todo: list[tuple[Partition, str]], job: EncodeJob, workers: int,
                   progress: Progress) -> list[dict]:
    """Encode every (partition, key); the done records, in completion order."""
    indexed_dataset()  # imported before the workers fork, and before the objects alive are frozen
    with frozen_gc():
        return _run(todo, job, workers, progress)


def _run(todo: list[tuple[Partition, str]], job: EncodeJob, workers: int, progress: Progress) -> list[dict]:
    size = chunk_bytes([p for p, _ in todo], workers)
    work = []
    for part, key in todo:
        shutil.rmtree(Path(job.out_dir) / TMP_DIR / part.name, ignore_errors=True)  # an interrupted attempt
        (Path(job.out_dir) / TMP_DIR / part.name).mkdir(parents=True)
        pieces = chunks(part, size)
        work += [(part, key, i, segs, len(pieces) == 1) for i, segs in enumerate(pieces)]
    remaining = defaultdict(int)
    for part, *_ in work:
        remaining[part.name] += 1
    results: dict[str, list[dict]] = defaultdict(list)
    records = []

    def collect(part: Partition, key: str, whole: bool, result: dict) -> None:
        if whole:
            records.append(result)
            return
        results[part.name].append(result)
        remaining[part.name] -= 1
        if not remaining[part.name]:
            records.append(assemble(part, key, results.pop(part.name), job))

    if workers == 1 or len(work) <= 1:
        for part, key, i, segs, whole in work:
            collect(part, key, whole, _encode(part, key, i, segs, whole, job, progress.update))
        return records
    ctx = _context()
    queue, stop = ctx.Queue(), ctx.Event()
    with ProcessPoolExecutor(min(workers, len(work)), mp_context=ctx, initializer=_init_worker,
                             initargs=(queue, stop)) as pool:
        pending = {pool.submit(_task, part, key, i, segs, whole, job): (part, key, whole)
                   for part, key, i, segs, whole in work}
        try:
            while pending:
                done, _ = wait(pending, timeout=REPORT_EVERY_S, return_when=FIRST_COMPLETED)
                _drain(queue, progress)
                for f in done:
                    collect(*pending.pop(f), f.result())
        except BrokenProcessPool:
            raise DataPrepError("a worker process died (out of memory? killed?); finished partitions are "
                                "kept: run again to resume") from None
        except BaseException:
            stop.set()
            for f in pending:
                f.cancel()
            raise
    _drain(queue, progress)
    return records
