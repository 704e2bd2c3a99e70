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


def is_local_hf_dir(hf: HFSource) -> bool:
    """A directory written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`."""
    return any(Path(hf.path, f).is_file() for f in ("state.json", "dataset_dict.json"))


def _tree_fingerprint(root: str) -> list[dict]:
    files = sorted(p for p in Path(root).rglob("*") if p.is_file())
    return [{"path": str(p), "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in files]


def source_inputs(src: SourceConfig, key: str) -> list[dict]:
    """What the manifest records as a source's inputs; any change here means the data is out of date."""
    if src.hf is None:
        return [asdict(f) for f in resolve_files(src, key)]
    hf = asdict(src.hf)
    if Path(src.hf.path).is_dir():
        hf["files"] = _tree_fingerprint(src.hf.path)
    for f in src.hf.data_files:  # local data files of a builder such as "json"
        if os.path.isfile(f):
            hf.setdefault("files", []).append({"path": f, "size": os.path.getsize(f),
                                               "mtime_ns": os.stat(f).st_mtime_ns})
    return [{"hf": hf}]


def input_fingerprint(cfg: PrepareConfig) -> dict:
    """Inputs of every source plus the given tokenizer model, if any."""
    out: dict = {"sources": {s.name: source_inputs(s, f"data.prepare.sources[{i}]")
                             for i, s in enumerate(cfg.sources)}}
    if cfg.tokenizer.model:
        st = os.stat(cfg.tokenizer.model)
        out["tokenizer_model"] = {"path": cfg.tokenizer.model, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return out
