"""Checks on a `PrepareConfig` that types alone do not catch; each error names its key."""

import os
import re

from .config import PrepareConfig
from .errors import DataPrepError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # becomes part of shard file names


def _fail(key: str, msg: str) -> None:
    raise DataPrepError(f"data.prepare.{key}: {msg}")


def validate(cfg: PrepareConfig) -> None:
    if not cfg.sources:
        _fail("sources", "empty: name at least one source (paths or hf)")
    seen: set[str] = set()
    for i, s in enumerate(cfg.sources):
        key = f"sources[{i}]"
        if not _NAME.match(s.name):
            _fail(f"{key}.name", f"{s.name!r} must be letters, digits, '_', '.', '-' (it names shard files)")
        if s.name in seen:
            _fail(f"{key}.name", f"{s.name!r} is used by another source")
        seen.add(s.name)
        if [bool(s.paths), s.hf is not None, s.megatron is not None].count(True) != 1:
            _fail(key, "set exactly one of 'paths' (files or globs), 'hf' (a datasets source) and 'megatron' "
                  "(existing .bin/.idx shards)")
        if s.megatron is not None and cfg.tokenizer.model is None:
            _fail(f"{key}.megatron", "existing shards need the tokenizer they were made with: set "
                  "data.prepare.tokenizer.model to its SentencePiece .model")
        if not s.weight > 0:
            _fail(f"{key}.weight", f"must be > 0, got {s.weight}")
        if not s.text_key:
            _fail(f"{key}.text_key", "must not be empty")
    t = cfg.tokenizer
    if t.model is not None and not os.path.isfile(t.model):
        _fail("tokenizer.model", f"{t.model} is not a file")
    if t.model is None and not 16 <= t.vocab_size < 2**31:
        _fail("tokenizer.vocab_size", f"must be in [16, 2^31), got {t.vocab_size}")
    if not 0 < t.character_coverage <= 1:
        _fail("tokenizer.character_coverage", f"must be in (0, 1], got {t.character_coverage}")
    for key, v in (("tokenizer.sample_docs", t.sample_docs), ("tokenizer.sample_chars", t.sample_chars),
                   ("tokenizer.num_threads", t.num_threads), ("workers", cfg.workers),
                   ("max_doc_chars", cfg.max_doc_chars), ("partition_bytes", cfg.partition_bytes)):
        if v < 1:
            _fail(key, f"must be >= 1, got {v}")
    if not 0 <= cfg.valid_fraction < 1:
        _fail("valid_fraction", f"must be in [0, 1), got {cfg.valid_fraction}")
