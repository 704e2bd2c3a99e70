"""Run the pending partitions: in this process when there is one (or one worker), else in forked
worker processes; their progress reaches one bar through a queue. The first failure stops all."""

import multiprocessing as mp
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from .errors import DataPrepError
from .plan import Partition
from .progress import Progress
from .writer import REPORT_EVERY_S, EncodeJob, encode_partition

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


def _task(part: Partition, key: str, job: EncodeJob) -> dict | None:
    try:
        return encode_partition(part, key, job, _report)
    except _Stopped:
        return None


def _drain(queue, progress: Progress) -> None:
    while not queue.empty():
        progress.update(*queue.get())


def _context():
    # fork: workers inherit megatron and SentencePiece already imported (a spawn would re-import ~5 s each)
    return mp.get_context("fork" if sys.platform == "linux" else "spawn")


def run_partitions(tasks: list[tuple[Partition, str]], job: EncodeJob, workers: int,
                   progress: Progress) -> list[dict]:
    """Encode every (partition, key); the done records, in completion order."""
    if workers == 1 or len(tasks) <= 1:
        return [encode_partition(part, key, job, progress.update) for part, key in tasks]
    ctx = _context()
    queue, stop = ctx.Queue(), ctx.Event()
    records = []
    with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=ctx, initializer=_init_worker,
                             initargs=(queue, stop)) as pool:
        pending = {pool.submit(_task, part, key, job) for part, key in tasks}
        try:
            while pending:
                done, pending = wait(pending, timeout=REPORT_EVERY_S, return_when=FIRST_COMPLETED)
                _drain(queue, progress)
                records += [f.result() for f in done]
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
