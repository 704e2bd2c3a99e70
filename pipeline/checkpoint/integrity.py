"""The integrity record of one checkpoint directory: what the save wrote, checked before anything is read.

`meta.json` (JSON, never pickle) is written last, by rank 0, once every rank's files are on disk. It names
every file of the checkpoint with its size and CRC-32, plus the step, the engine and its layout and the
config fingerprint, and carries a SHA-256 of its own content so that an edited or damaged record is
noticed too. Verifying a checkpoint = the record parses and seals, every listed file exists with that size
and checksum, and no other file is present (a loader may glob for files: a stray one must not be read).

CRC-32, not a cryptographic hash, per file: the record guards against damage (truncation, bit rot, a torn
copy), not against an attacker, who could rewrite the record as well (docs/checkpoints.md). zlib's CRC-32 is
far cheaper than SHA-256 and releases the GIL, so an asynchronous save checksums in a background thread.

Nothing here imports torch: `python -m pipeline.checkpoint verify` checks checkpoints without a model.
"""

import hashlib
import json
import os
import zlib
from pathlib import Path

RECORD = "meta.json"
FORMAT = "dyt-checkpoint/1"
_SEAL = "record_sha256"


class IntegrityError(Exception):
    """The checkpoint at `path` is not intact; `file` is the first file found at fault."""

    def __init__(self, path: Path, file: str, reason: str) -> None:
        super().__init__(f"{Path(path) / file}: {reason}")
        self.path, self.file, self.reason = Path(path), file, reason


def list_files(directory: Path) -> list[str]:
    """Every file under `directory` but the record, as sorted relative POSIX paths."""
    directory = Path(directory)
    out = []
    for root, _, files in os.walk(directory):
        for name in files:
            rel = (Path(root) / name).relative_to(directory).as_posix()
            if rel != RECORD:
                out.append(rel)
    return sorted(out)


def digest(path: Path, chunk: int = 8 << 20) -> dict:
    """{"size", "crc32"} of one file, read in chunks into one reused buffer."""
    crc, size, buf = 0, 0, bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            crc = zlib.crc32(view[:n], crc)
            size += n
    return {"size": size, "crc32": f"{crc:08x}"}


def hash_files(directory: Path, names: list[str]) -> dict[str, dict]:
    return {name: digest(Path(directory) / name) for name in names}


def _seal_of(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != _SEAL}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def write_record(directory: Path, record: dict) -> None:
    """Seal and write atomically (temp file + rename): a reader sees the whole record or none."""
    record = {"format": FORMAT, **record}
    record[_SEAL] = _seal_of(record)
    tmp = Path(directory) / f"{RECORD}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(record, indent=2))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(Path(directory) / RECORD)


def read_record(directory: Path) -> dict:
    """The parsed, sealed record; raises IntegrityError saying what is wrong with it."""
    path = Path(directory) / RECORD
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise IntegrityError(directory, RECORD, "missing (the save never completed)") from None
    except OSError as e:
        raise IntegrityError(directory, RECORD, f"unreadable ({e.strerror or e})") from None
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IntegrityError(directory, RECORD, f"not valid JSON ({e})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise IntegrityError(directory, RECORD, f"not an integrity record of format {FORMAT} (found {found!r}; "
                             "checkpoints written before integrity records existed cannot be verified)")
    if record.get(_SEAL) != _seal_of(record) or not isinstance(record.get("files"), dict):
        raise IntegrityError(directory, RECORD, "its content does not match its own checksum (edited or damaged)")
    return record


def check_listing(directory: Path, record: dict, present: list[str]) -> None:
    """The files on disk are exactly the recorded ones."""
    missing, stray = sorted(set(record["files"]) - set(present)), sorted(set(present) - set(record["files"]))
    if missing:
        raise IntegrityError(directory, missing[0], "listed in the integrity record but missing")
    if stray:
        raise IntegrityError(directory, stray[0], "not in the integrity record (a stray file must not be loaded)")


def check_files(directory: Path, record: dict, names: list[str]) -> None:
    """Size, then CRC-32, of `names` (a share of the recorded files) against the record."""
    for name in names:
        want, path = record["files"][name], Path(directory) / name
        try:
            size = path.stat().st_size
            if size != want["size"]:
                raise IntegrityError(directory, name, f"{size} bytes, the record says {want['size']} (truncated "
                                     "or overwritten)")
            if digest(path)["crc32"] != want["crc32"]:
                raise IntegrityError(directory, name, "content differs from the record (CRC-32 mismatch)")
        except OSError as e:
            raise IntegrityError(directory, name, f"unreadable ({e.strerror or e})") from None


def verify(directory: Path) -> dict:
    """Whole check in this process (the CLI); returns the record, raises IntegrityError."""
    record = read_record(directory)
    check_listing(directory, record, list_files(directory))
    check_files(directory, record, sorted(record["files"]))
    return record
