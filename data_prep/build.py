"""`prepare(cfg)`: corpora → tokenizer → shards → manifest.json, resumable and idempotent.

The output directory holds `manifest.json`, `tokenizer.model`, `train/` and `valid/` shards, and
`.state/` (done records of finished partitions, the tokenizer's record) used to resume.

One process does it all (`stage="all"`), or the work is shared out (several nodes, one output
directory on a shared file system): `stage="tokenizer"` once, then `stage="encode", shard=(k, n)`
for every k < n (each writes only its own partitions), then `stage="finish"` once: it encodes any
partition still missing (none when every shard finished) and writes the manifest.
"""

import fcntl
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Literal

from .config import PrepareConfig
from .errors import DataPrepError, ErrorLog
from .files import atomic_write_json, read_json, stable_hash
from .inputs import input_fingerprint
from .manifest import MANIFEST, TOOL_VERSION, build_manifest, config_hash, up_to_date
from .megatron_io import token_dtype
from .megatron_source import external_shards
from .merge import merge_shards
from .plan import Partition, make_plan, shard_partitions
from .progress import Progress
from .runner import run_partitions
from .summary import shard_summary, summary
from .tokenizer import TokenizerInfo, current_tokenizer, ensure_tokenizer, tokenizer_key
from .validate import validate
from .writer import MISMATCH, SPLITS, STATE_DIR, TMP_DIR, EncodeJob, mismatch_seen, record_path

Stage = Literal["all", "tokenizer", "encode", "finish"]
STAGES = ("all", "tokenizer", "encode", "finish")
_TOKENIZER_STATE = "tokenizer.json"


@contextmanager
def _locked(out: Path, name: str) -> Iterator[None]:
    """One writer per output directory and lock name (two `make pretrain` at once would otherwise
    interleave; the shards of a shared-out run each lock their own)."""
    with open(out / STATE_DIR / name, "w") as f:
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
    """The partition's done record if it was made with `key` and its files are all there (and, once
    the unit cache was caught disagreeing with SentencePiece, was not made with it)."""
    rec = read_json(record_path(out, part.name))
    if not rec or rec.get("key") != key:
        return None
    if rec.get("encoder") == "units" and mismatch_seen(out) is not None:
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


def _partition_shards(cfg: PrepareConfig, out: Path, records: list[dict], dtype: str) -> dict:
    """source -> split -> the shards of its partitions (merged into one per split with `merge`)."""
    shards = {}
    for src in cfg.sources:
        if src.megatron is None:
            recs = [r for r in records if r["source"] == src.name]
            shards[src.name] = (merge_shards(out, src.name, recs, dtype) if cfg.merge else
                                {s: [r["shards"][s] for r in recs if s in r["shards"]] for s in SPLITS})
    return shards


def _encode(cfg: PrepareConfig, out: Path, parts: list[Partition], keys: dict[str, str], job: EncodeJob,
            force: bool) -> tuple[dict[str, dict], list[dict], Progress]:
    """Encode the partitions not finished yet (all with `force`): (every done record by partition,
    the new ones, the progress bar). After a unit-cache mismatch, the partitions made with the cache
    are made again by SentencePiece alone."""
    done = {} if force else {p.name: r for p in parts if (r := _finished(out, p, keys[p.name]))}
    sizes_known = all(p.segments[0].format != "hf-stream" for p in parts)
    progress = Progress(sum(p.size for p in parts) if sizes_known else None,
                        sum(p.size for p in parts if p.name in done))
    new: list[dict] = []
    try:
        for _ in range(2):
            todo = [(p, keys[p.name]) for p in parts if p.name not in done]
            new += run_partitions(todo, job, cfg.workers, progress)
            done |= {r["partition"]: r for r in new}
            if mismatch_seen(out) is None:
                break
            done = {n: r for n, r in done.items() if r.get("encoder") != "units"}
    finally:
        progress.close()
    new = [r for r in new if done.get(r["partition"]) is r]
    return done, new, progress


def prepare(cfg: PrepareConfig, force: bool = False, stage: Stage = "all",
            shard: tuple[int, int] | None = None) -> Path | None:
    """Build `<cfg.output_dir>/manifest.json` and return its path (None for the tokenizer and encode
    stages). Returns at once when the manifest is complete and was built from this config and these
    inputs; otherwise finished partitions are reused (all are redone with `force`). Raises
    DataPrepError (BadInputError under `on_error: fail`)."""
    validate(cfg)
    if stage not in STAGES:
        raise DataPrepError(f"stage: {stage!r} is not one of {', '.join(STAGES)}")
    if (shard is not None) != (stage == "encode"):
        raise DataPrepError("--shard-of K/N goes with the encode stage (and the encode stage needs it)")
    out = Path(cfg.output_dir)
    fingerprint = input_fingerprint(cfg)
    chash = config_hash(cfg, fingerprint)
    path = out / MANIFEST
    if not force and up_to_date(path, chash):
        print(f"data_prep: {path} is up to date")
        return None if stage in ("tokenizer", "encode") else path
    (out / STATE_DIR / "parts").mkdir(parents=True, exist_ok=True)
    with _locked(out, "lock" if shard is None else f"lock-{shard[0]}-of-{shard[1]}"):
        if not force and up_to_date(path, chash):  # another process just built it
            print(f"data_prep: {path} is up to date")
            return None if stage in ("tokenizer", "encode") else path
        if stage != "encode":
            path.unlink(missing_ok=True)  # from here on the directory is incomplete
        if force and stage in ("all", "tokenizer"):
            (out / STATE_DIR / MISMATCH).unlink(missing_ok=True)
        plan = make_plan(cfg)
        state, tkey = out / STATE_DIR / _TOKENIZER_STATE, tokenizer_key(cfg, fingerprint)
        if stage in ("all", "tokenizer"):
            tok = ensure_tokenizer(cfg, plan, out, state, tkey, force)
        elif (tok := current_tokenizer(out, state, tkey)) is None:
            raise DataPrepError(f"{out}/tokenizer.model is missing or was made from another config: run the "
                                "tokenizer stage first (--stage tokenizer)")
        dtype = token_dtype(tok.vocab_size)
        # Existing shards are checked before anything is encoded (in every stage but the shards').
        shards = {s.name: external_shards(s, f"data.prepare.sources[{i}]", tok, dtype)
                  for i, s in enumerate(cfg.sources) if s.megatron is not None and stage != "encode"}
        if stage == "tokenizer":
            print(f"data_prep: {out / 'tokenizer.model'} ready (vocab {tok.vocab_size}); {len(plan)} partitions "
                  "to encode")
            return None
        keys = {p.name: _partition_key(p, cfg, tok, dtype, fingerprint) for p in plan}
        job = EncodeJob(out_dir=str(out), tokenizer=tok.path, eod_id=tok.eod_id,
                        bos_id=tok.bos_id if cfg.append_bos else None, dtype=dtype,
                        valid_fraction=cfg.valid_fraction, max_doc_chars=cfg.max_doc_chars,
                        on_error=cfg.on_error, sources={s.name: s for s in cfg.sources},
                        fast_encode=cfg.fast_encode)
        start = time.monotonic()
        mine = plan if shard is None else shard_partitions(plan, *shard)
        done, new, progress = _encode(cfg, out, mine, keys, job, force and stage != "finish")
        if stage == "encode":
            print(shard_summary(shard, new, len(mine) - len(new), time.monotonic() - start))
            return None
        records = [done[p.name] for p in plan]
        manifest = build_manifest(cfg, chash, fingerprint, tok, dtype, records,
                                  shards | _partition_shards(cfg, out, records, dtype))
        if not manifest["splits"]["train"]:
            raise _no_documents(records)
        atomic_write_json(path, manifest)
        _remove_stale(out, manifest, set() if cfg.merge else set(done))
    print(summary(manifest, path, new, progress.elapsed, len(plan) - len(new), len(plan)))
    return path
