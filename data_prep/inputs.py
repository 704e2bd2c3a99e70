"""Which files a source names (globs resolved, formats known) and their fingerprints (size, mtime)."""

import glob
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import HFSource, PrepareConfig, SourceConfig
from .errors import DataPrepError
from .streams import COMPRESSIONS

_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "txt", ".parquet": "parquet"}


@dataclass(frozen=True)
class InputFile:
    path: str
    format: str  # jsonl | txt | parquet
    size: int
    mtime_ns: int


def file_format(path: str) -> str | None:
    p = Path(path.lower())
    compressed = p.suffix in COMPRESSIONS
    fmt = _FORMATS.get((p.with_suffix("") if compressed else p).suffix)
    return None if fmt == "parquet" and compressed else fmt


def resolve_files(src: SourceConfig, key: str) -> list[InputFile]:
    """Every file the source's paths/globs match, in the order given (each glob sorted), once each."""
    out: dict[str, InputFile] = {}
    for i, pattern in enumerate(src.paths):
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        matches = [m for m in matches if os.path.isfile(m)]
        if not matches:
            raise DataPrepError(f"{key}.paths[{i}]: {pattern!r} matches no file")
        for m in matches:
            fmt = file_format(m)
            if fmt is None:
                raise DataPrepError(f"{key}.paths[{i}]: {m}: unsupported file type (use .jsonl, .ndjson or "
                                    ".txt, optionally .gz/.zst compressed, or .parquet)")
            st = os.stat(m)
            out.setdefault(m, InputFile(m, fmt, st.st_size, st.st_mtime_ns))
    return list(out.values())


def resolve_prefixes(patterns: str | list[str], key: str) -> list[str]:
    """Every shard prefix (path without .bin/.idx) the patterns name, each glob sorted, once each."""
    out: dict[str, None] = {}
    for i, pattern in enumerate([patterns] if isinstance(patterns, str) else patterns):
        where = key if isinstance(patterns, str) else f"{key}[{i}]"
        pattern = pattern.removesuffix(".bin").removesuffix(".idx")  # a file named instead of its prefix
        idx = sorted(glob.glob(pattern + ".idx", recursive=True)) if glob.has_magic(pattern) else [pattern + ".idx"]
        found = [m.removesuffix(".idx") for m in idx if os.path.isfile(m)]
        if not found:
            raise DataPrepError(f"{where}: {pattern!r} matches no megatron shard (no {pattern}.idx)")
        for prefix in found:
            if not os.path.isfile(prefix + ".bin"):
                raise DataPrepError(f"{where}: {prefix}.bin is missing (its .idx is there)")
            out.setdefault(prefix)
    return list(out)


def megatron_prefixes(src: SourceConfig, key: str) -> dict[str, list[str]]:
    """split -> the shard prefixes of a megatron source."""
    m = src.megatron
    return {"train": resolve_prefixes(m.prefix, f"{key}.megatron.prefix"),
            "valid": resolve_prefixes(m.valid_prefix, f"{key}.megatron.valid_prefix") if m.valid_prefix else []}


def _stat(path: str) -> dict:
    st = os.stat(path)
    return {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def is_local_hf_dir(hf: HFSource) -> bool:
    """A directory written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`."""
    return any(Path(hf.path, f).is_file() for f in ("state.json", "dataset_dict.json"))


def source_inputs(src: SourceConfig, key: str) -> list[dict]:
    """What the manifest records as a source's inputs; any change here means the data is out of date."""
    if src.megatron is not None:
        return [_stat(p + ext) for ps in megatron_prefixes(src, key).values() for p in ps for ext in (".bin", ".idx")]
    if src.hf is None:
        return [asdict(f) for f in resolve_files(src, key)]
    hf = asdict(src.hf)
    if Path(src.hf.path).is_dir():
        hf["files"] = [_stat(str(p)) for p in sorted(Path(src.hf.path).rglob("*")) if p.is_file()]
    for f in src.hf.data_files:  # local data files of a builder such as "json"
        if os.path.isfile(f):
            hf.setdefault("files", []).append(_stat(f))
    return [{"hf": hf}]


def input_fingerprint(cfg: PrepareConfig) -> dict:
    """Inputs of every source plus the given tokenizer model, if any."""
    out: dict = {"sources": {s.name: source_inputs(s, f"data.prepare.sources[{i}]")
                             for i, s in enumerate(cfg.sources)}}
    if cfg.tokenizer.model:
        out["tokenizer_model"] = _stat(cfg.tokenizer.model)
    return out
