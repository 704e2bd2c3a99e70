"""manifest.json: what `pipeline.data` trains on. Paths in it are relative to its directory.

    {"format", "tool_version", "config_hash",
     "tokenizer": {"path", "sha256", "vocab_size", "eod_id", "bos_id", "pad_id", "type"},
     "dtype": "uint16" | "int32",
     "sources": [{"name", "weight", "inputs", "documents", "tokens", "errors": {kind: count},
                  "error_details": [{"file", "kind", "count", "lines", "example"}]}],
     "splits": {"train": [shard, ...], "valid": [shard, ...]}}
    shard = {"prefix", "source", "documents", "tokens", "bytes" (of .bin), "sha256": {"bin", "idx"}}
    existing megatron shards (a `megatron` source): absolute "prefix", "external": true, no "sha256"

Shards are listed in input order: per source, its partitions in order. Error line numbers are the
files' own (resolved from the line counts in the done records, see errors.py).
"""

from dataclasses import asdict
from pathlib import Path

from .config import PrepareConfig
from .errors import ErrorLog
from .files import read_json, stable_hash
from .tokenizer import TokenizerInfo
from .writer import SPLITS

FORMAT = "dyt-pipeline-manifest/1"
TOOL_VERSION = "data_prep 2.0"  # bump when the same config would produce different shards
MANIFEST = "manifest.json"
# Settings that change how a run goes, not what it produces.
_NOT_HASHED = ("workers", "on_error", "output_dir", "fast_encode")


def config_hash(cfg: PrepareConfig, fingerprint: dict) -> str:
    """The prepare section (less _NOT_HASHED), the inputs' sizes and mtimes, and the tool version."""
    prepare = {k: v for k, v in asdict(cfg).items() if k not in _NOT_HASHED}
    return stable_hash({"prepare": prepare, "inputs": fingerprint, "tool_version": TOOL_VERSION})


def shard_files(manifest: dict) -> list[tuple[str, int | None]]:
    """(relative path, expected size or None) of every file the manifest names."""
    files: list[tuple[str, int | None]] = [(manifest["tokenizer"]["path"], None)]
    for shards in manifest["splits"].values():
        for s in shards:
            files += [(s["prefix"] + ".bin", s["bytes"]), (s["prefix"] + ".idx", None)]
    return files


def up_to_date(path: Path, chash: str) -> bool:
    """Complete and built from this very config and these inputs (a cheap check: stats only)."""
    m = read_json(path)
    if not m or m.get("format") != FORMAT or m.get("config_hash") != chash:
        return False
    try:
        files = shard_files(m)
    except (KeyError, TypeError):
        return False
    return all((path.parent / f).is_file() and (size is None or (path.parent / f).stat().st_size == size)
               for f, size in files)


def line_offsets(records: list[dict]) -> dict[tuple[str, int], int]:
    """(file, byte offset of a piece) -> lines of the file before it, from every piece's line count."""
    counts: dict[str, dict[int, int]] = {}
    for r in records:
        for path, start, lines in r["lines"]:
            counts.setdefault(path, {})[start] = lines
    offsets = {}
    for path, by_start in counts.items():
        before = 0
        for start in sorted(by_start):
            offsets[path, start] = before
            before += by_start[start]
    return offsets


def build_manifest(cfg: PrepareConfig, chash: str, fingerprint: dict, tok: TokenizerInfo, dtype: str,
                   records: list[dict], shards: dict[str, dict[str, list[dict]]]) -> dict:
    """`records`: the done records of every partition, in plan order; `shards`: source -> split -> the
    shards listed (partition shards, merged ones, or existing megatron shards)."""
    offsets = line_offsets(records)
    sources = []
    for src in cfg.sources:
        log = ErrorLog()
        for r in records:
            if r["source"] == src.name:
                log.extend(r["errors"], offsets)
        mine = [s for split in SPLITS for s in shards[src.name][split]]
        sources.append({"name": src.name, "weight": src.weight, "inputs": fingerprint["sources"][src.name],
                        "documents": sum(s["documents"] for s in mine), "tokens": sum(s["tokens"] for s in mine),
                        "errors": log.counts(), "error_details": log.to_json()})
    return {"format": FORMAT, "tool_version": TOOL_VERSION, "config_hash": chash,
            "tokenizer": tok.manifest_entry(), "dtype": dtype, "sources": sources,
            "splits": {split: [s for src in cfg.sources for s in shards[src.name][split]] for split in SPLITS}}
