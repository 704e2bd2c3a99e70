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


def lines_before(path: str, offset: int) -> int:
    """Lines of an uncompressed file before byte `offset` (a line start): counted only when an error
    needs its file line number at once (on_error: fail)."""
    count = 0
    with open(path, "rb") as f:
        while offset > 0 and (block := f.read(min(offset, 1 << 23))):
            count += block.count(b"\n")
            offset -= len(block)
    return count


@dataclass
class ErrorEntry:
    file: str
    kind: str
    count: int = 0
    lines: list[int] = field(default_factory=list)  # the first KEEP_LINES line numbers
    example: str = ""  # the first message, e.g. "Expecting value at column 1"
    # Byte offset the line numbers count from: a piece of a big file numbers its own lines from 1, as
    # nobody counted the lines before it; `resolve_lines` makes them file line numbers (base 0).
    base: int = 0


class ErrorLog:
    """Counts bad records; raises at the first one when the policy is `fail`."""

    def __init__(self, policy: Literal["skip", "fail"] = "skip") -> None:
        self.policy = policy
        self._entries: dict[tuple[str, str], ErrorEntry] = {}

    def add(self, file: str, line: int, kind: str, message: str, base: int = 0) -> None:
        """`line` counts from byte `base` of the file (0: the file's own line number)."""
        assert kind in ERROR_KINDS, kind
        if self.policy == "fail":
            raise BadInputError(file, line + (lines_before(file, base) if base else 0), kind, message)
        entry = self._entry(file, kind, base, f"line {line}: {message}")
        entry.count += 1
        if len(entry.lines) < KEEP_LINES:
            entry.lines.append(line)

    def extend(self, entries: list[dict], line_offsets: dict[tuple[str, int], int] | None = None) -> None:
        """Add entries in their JSON form (from a done record); same file+kind(+base) entries are combined.
        With `line_offsets` ((file, base) -> lines before base), line numbers become the file's own."""
        for d in entries:
            base, shift = d.get("base", 0), 0
            if line_offsets is not None and base:
                shift, base = line_offsets[d["file"], base], 0
            example = d["example"]
            if shift and example.startswith("line "):
                number, _, rest = example[5:].partition(":")
                example = f"line {int(number) + shift}:{rest}"
            entry = self._entry(d["file"], d["kind"], base, example)
            entry.count += d["count"]
            entry.lines = (entry.lines + [n + shift for n in d["lines"]])[:KEEP_LINES]

    def _entry(self, file: str, kind: str, base: int, example: str) -> ErrorEntry:
        return self._entries.setdefault((file, kind, base), ErrorEntry(file, kind, example=example, base=base))

    def to_json(self) -> list[dict]:
        return [{k: v for k, v in vars(e).items() if k != "base" or v} for e in self._entries.values()]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(ERROR_KINDS, 0)
        for e in self._entries.values():
            out[e.kind] += e.count
        return out

    @property
    def total(self) -> int:
        return sum(e.count for e in self._entries.values())
