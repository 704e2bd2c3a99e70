"""Errors the user must act on, and the accounting of bad input records (per file, class and line)."""

from dataclasses import dataclass, field
from typing import Literal

# Every class of bad record; `truncated` also covers corrupt compressed streams and unreadable parquet.
ERROR_KINDS = ("invalid_json", "missing_key", "non_utf8", "empty", "too_long", "truncated")
KEEP_LINES = 20  # line numbers remembered per (file, kind); the count is always exact


class DataPrepError(Exception):
    """A problem with the config, the inputs or the output directory; the CLI prints it, no traceback."""


class BadInputError(DataPrepError):
    """A bad record under `on_error: fail`."""

    def __init__(self, file: str, line: int, kind: str, message: str) -> None:
        super().__init__(f"{file}:{line}: {kind}: {message} (on_error: fail; on_error: skip would skip it)")
        self.file, self.line, self.kind, self.message = file, line, kind, message

    def __reduce__(self):  # survives the trip from a worker process to the parent
        return type(self), (self.file, self.line, self.kind, self.message)


@dataclass
class ErrorEntry:
    file: str
    kind: str
    count: int = 0
    lines: list[int] = field(default_factory=list)  # the first KEEP_LINES line numbers
    example: str = ""  # the first message, e.g. "Expecting value at column 1"


class ErrorLog:
    """Counts bad records; raises at the first one when the policy is `fail`."""

    def __init__(self, policy: Literal["skip", "fail"] = "skip") -> None:
        self.policy = policy
        self._entries: dict[tuple[str, str], ErrorEntry] = {}

    def add(self, file: str, line: int, kind: str, message: str) -> None:
        assert kind in ERROR_KINDS, kind
        if self.policy == "fail":
            raise BadInputError(file, line, kind, message)
        entry = self._entry(file, kind, f"line {line}: {message}")
        entry.count += 1
        if len(entry.lines) < KEEP_LINES:
            entry.lines.append(line)

    def extend(self, entries: list[dict]) -> None:
        """Add entries in their JSON form (from a partition record); same file+kind entries are combined."""
        for d in entries:
            entry = self._entry(d["file"], d["kind"], d["example"])
            entry.count += d["count"]
            entry.lines = (entry.lines + d["lines"])[:KEEP_LINES]

    def _entry(self, file: str, kind: str, example: str) -> ErrorEntry:
        return self._entries.setdefault((file, kind), ErrorEntry(file, kind, example=example))

    def to_json(self) -> list[dict]:
        return [vars(e).copy() for e in self._entries.values()]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(ERROR_KINDS, 0)
        for e in self._entries.values():
            out[e.kind] += e.count
        return out

    @property
    def total(self) -> int:
        return sum(e.count for e in self._entries.values())
