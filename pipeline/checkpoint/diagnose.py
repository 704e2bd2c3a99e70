"""Why a checkpoint write failed, in words a user can act on (no space / quota / permission / I/O).

Writers bury the cause: torch's zip writer turns ENOSPC into "unexpected pos 704 vs 598", and
dist_checkpointing wraps each rank's exception in a CheckpointException. So: look for an OSError with a
telling errno anywhere in the exception's chain; failing that, ask the filesystem how much space is left.
"""

import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.EIO: "I/O error",
}
LOW_SPACE = 64 << 20  # below this, a write error without an errno is taken for a full disk


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, its causes and contexts, and the per-rank exceptions of a torch CheckpointException."""
    todo, seen = [exc], set()
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__]
        for failure in getattr(e, "failures", {}).values():  # {rank: (exception, traceback)}
            todo.append(failure[0] if isinstance(failure, tuple) else failure)


def free_bytes(directory: Path) -> int | None:
    """Space available in the filesystem that holds `directory` (its nearest existing parent)."""
    path = Path(directory)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def summary(exc: BaseException) -> str:
    """`Type: first line`; for torch's CheckpointException (whose text only lists ranks), a rank's own error."""
    for rank, failure in sorted(getattr(exc, "failures", {}).items()):
        inner = failure[0] if isinstance(failure, tuple) else failure
        return f"{type(exc).__name__} on rank {rank}: {summary(inner)}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def describe(exc: BaseException, directory: Path) -> str:
    """One line: the cause, where, and the free space left where the checkpoint was being written."""
    free = free_bytes(directory)
    space = f"{human(free)} free in {directory}" if free is not None else f"free space in {directory} unknown"
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in CAUSES:
            detail = f": {e.strerror}" if e.strerror and e.strerror != os.strerror(e.errno) else ""
            where = f" ({e.filename})" if e.filename else ""
            return f"{CAUSES[e.errno]}{detail}{where}; {space}"
    if free is not None and free < LOW_SPACE:
        return f"no space left on device ({space}; the writer reported {summary(exc)})"
    return f"write error: {summary(exc)} ({space})"
