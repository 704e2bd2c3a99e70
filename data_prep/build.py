"""`prepare(cfg)`: corpora → tokenizer → shards → manifest.json, resumable and idempotent.

The output directory holds `manifest.json`, `tokenizer.model`, `train/` and `valid/` shards, and
`.state/` (done records of finished partitions, the tokenizer's record) used to resume.
"""

import fcntl
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from .config import PrepareConfig
from .errors import DataPrepError, ErrorLog
from .files import atomic_write_json, read_json, stable_hash
from .inputs import input_fingerprint
from .manifest import MANIFEST, TOOL_VERSION, build_manifest, config_hash, up_to_date
from .megatron_io import token_dtype
from .merge import merge_shards
from .plan import Partition, make_plan
from .progress import Progress
from .runner import run_partitions
from .summary import summary
from .tokenizer import TokenizerInfo, ensure_tokenizer, tokenizer_key
from .validate import validate
from .writer import SPLITS, STATE_DIR, TMP_DIR, EncodeJob, record_path


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """One writer per output directory (two `make pretrain` at once would otherwise interleave)."""
    with open(out / STATE_DIR / "lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"data_prep: waiting for another data_prep writing {out} ...", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _partition_key(part: Partition, cfg: PrepareConfig, tok: TokenizerInfo, dtype: str,
                   fingerprint: dict) -> str:
    """Everything a partition's shards depend on (not weights, workers or on_error): a done record
    with another key is stale."""
    src = next(s for s in cfg.sources if s.name == part.source)
    paths = {s.path for s in part.segments}
    return stable_hash({
        "tool_version": TOOL_VERSION, "tokenizer": tok.sha256, "dtype": dtype, "append_bos": cfg.append_bos,
        "valid_fraction": cfg.valid_fraction, "max_doc_chars": cfg.max_doc_chars,
        "source": {k: v for k, v in asdict(src).items() if k != "weight"}, "partition": asdict(part),
        "inputs": [i for i in fingerprint["sources"][part.source] if "hf" in i or i["path"] in paths]})


def _finished(out: Path, part: Partition, key: str) -> dict | None:
    """The partition's done record if it was made with `key` and its files are all there."""
    rec = read_json(record_path(out, part.name))
    if not rec or rec.get("key") != key:
        return None
    for shard in rec["shards"].values():
        b, i = out / f"{shard['prefix']}.bin", out / f"{shard['prefix']}.idx"
        if not (b.is_file() and i.is_file() and b.stat().st_size == shard["bytes"]):
            return None
    return rec


def _remove_stale(out: Path, manifest: dict, keep_records: set[str]) -> None:
    """Shards and records that the manifest no longer names (old configs, merged partitions)."""
    named = {s["prefix"] for shards in manifest["splits"].values() for s in shards}
    for split in SPLITS:
        for f in (out / split).glob("*.*"):
            if f.suffix in (".bin", ".idx") and f"{split}/{f.stem}" not in named:
                f.unlink()
    for f in (out / STATE_DIR / "parts").glob("*.json"):
        if f.stem not in keep_records:
            f.unlink()
    shutil.rmtree(out / TMP_DIR, ignore_errors=True)


def _no_documents(records: list[dict]) -> DataPrepError:
    log = ErrorLog()
    for r in records:
        log.extend(r["errors"])
    counts = ", ".join(f"{k}: {n}" for k, n in log.counts().items() if n)
    first = f"; first: {log.to_json()[0]['file']} {log.to_json()[0]['example']}" if log.total else ""
    return DataPrepError(f"data.prepare.sources: no training documents in any input ({log.total} bad records"
                         f"{': ' + counts if counts else ''}{first})")


def prepare(cfg: PrepareConfig, force: bool = False) -> Path:
    """Build `<cfg.output_dir>/manifest.json` and return its path. Returns at once when it is complete
    and was built from this config and these inputs; otherwise finished partitions are reused (all
    are redone with `force`). Raises DataPrepError (BadInputError under `on_error: fail`)."""
    validate(cfg)
    out = Path(cfg.output_dir)
    fingerprint = input_fingerprint(cfg)
    chash = config_hash(cfg, fingerprint)
    path = out / MANIFEST
    if not force and up_to_date(path, chash):
        print(f"data_prep: {path} is up to date")
        return path
    (out / STATE_DIR / "parts").mkdir(parents=True, exist_ok=True)
    with _locked(out):
        if not force and up_to_date(path, chash):  # another process just built it
            print(f"data_prep: {path} is up to date")
            return path
        path.unlink(missing_ok=True)  # from here on the directory is incomplete
        plan = make_plan(cfg)
        tok = ensure_tokenizer(cfg, plan, out, out / STATE_DIR / "tokenizer.json",
                               tokenizer_key(cfg, fingerprint), force)
        dtype = token_dtype(tok.vocab_size)
        keys = {p.name: _partition_key(p, cfg, tok, dtype, fingerprint) for p in plan}
        done = {} if force else {p.name: r for p in plan if (r := _finished(out, p, keys[p.name]))}
        todo = [(p, keys[p.name]) for p in plan if p.name not in done]
        job = EncodeJob(out_dir=str(out), tokenizer=tok.path, eod_id=tok.eod_id,
                        bos_id=tok.bos_id if cfg.append_bos else None, dtype=dtype,
                        valid_fraction=cfg.valid_fraction, max_doc_chars=cfg.max_doc_chars,
                        on_error=cfg.on_error, sources={s.name: s for s in cfg.sources},
                        threads=max(1, cfg.workers // max(1, len(todo))))  # cores of idle workers
        sizes_known = all(p.segments[0].format != "hf-stream" for p in plan)
        progress = Progress(sum(p.size for p in plan) if sizes_known else None,
                            sum(p.size for p in plan if p.name in done))
        try:
            new = run_partitions(todo, job, cfg.workers, progress)
        finally:
            progress.close()
        by_name = done | {r["partition"]: r for r in new}
        records = [by_name[p.name] for p in plan]
        if cfg.merge:
            splits = merge_shards(out, [s.name for s in cfg.sources], records, dtype)
        else:
            splits = {s: [r["shards"][s] for r in records if s in r["shards"]] for s in SPLITS}
        if not splits["train"]:
            raise _no_documents(records)
        manifest = build_manifest(cfg, chash, fingerprint, tok, dtype, records, splits)
        atomic_write_json(path, manifest)
        _remove_stale(out, manifest, set() if cfg.merge else set(by_name))
    encoded = [s for r in new for s in r["shards"].values()]
    print(summary(manifest, path, sum(s["documents"] for s in encoded), sum(s["tokens"] for s in encoded),
                  progress.elapsed, len(done), len(plan)))
    return path
