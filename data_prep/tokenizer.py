"""The SentencePiece tokenizer: trained on a bounded sample of the corpus, or an existing .model.

Trained models use fixed special ids: pad 0, bos 1, eos 2 (the EOD appended to every document),
unk 3. Normalisation is the identity and whitespace is kept (code indentation survives), digits are
split and byte fallback (default on) makes every string encodable, so decode(encode(text)) == text.
"""

import io
import math
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import PrepareConfig, TokenizerConfig
from .errors import DataPrepError, ErrorLog
from .files import atomic_write_bytes, atomic_write_json, read_json, sha256_file, stable_hash
from .plan import Partition
from .readers import SegmentReader
from .split import doc_hasher, is_valid

SPECIAL_IDS = {"pad_id": 0, "bos_id": 1, "eos_id": 2, "unk_id": 3}
MODEL_FILE = "tokenizer.model"
_PIECE_CHARS = 4096  # the trainer drops "sentences" longer than max_sentence_length bytes


@dataclass(frozen=True)
class TokenizerInfo:
    path: str
    sha256: str
    vocab_size: int
    eod_id: int
    bos_id: int  # -1: the model has none
    pad_id: int

    def manifest_entry(self) -> dict:
        entry = asdict(self) | {"path": MODEL_FILE, "type": "sentencepiece"}
        return {k: entry[k] for k in ("path", "sha256", "vocab_size", "eod_id", "bos_id", "pad_id", "type")}


def load_info(path: Path) -> TokenizerInfo:
    import sentencepiece as spm

    try:
        sp = spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as e:
        raise DataPrepError(f"{path}: not a SentencePiece model ({e})") from None
    if sp.eos_id() < 0:
        raise DataPrepError(f"{path}: the model has no eos piece, which data_prep appends as the EOD token")
    # A model without a pad piece pads with EOD: padded positions are masked out of the loss anyway.
    pad = sp.pad_id() if sp.pad_id() >= 0 else sp.eos_id()
    return TokenizerInfo(str(path), sha256_file(path), sp.vocab_size(), sp.eos_id(), sp.bos_id(), pad)


def _pieces(text: str) -> Iterator[str]:
    for para in text.split("\n\n"):
        for i in range(0, len(para), _PIECE_CHARS):
            if para[i:i + _PIECE_CHARS].strip():
                yield para[i:i + _PIECE_CHARS]


def sample_texts(cfg: PrepareConfig, plan: list[Partition]) -> Iterator[str]:
    """At most sample_docs documents and about sample_chars characters of training documents: each
    source's share follows its weight and is taken evenly from the starts of its partitions, so only
    a small part of a big corpus is ever read."""
    tok, total_weight = cfg.tokenizer, sum(s.weight for s in cfg.sources)
    sampled, seen = 0, []
    for src in cfg.sources:
        parts = [p for p in plan if p.source == src.name]
        share = src.weight / total_weight
        per_part, chars = math.ceil(tok.sample_docs * share / max(1, len(parts))), tok.sample_chars * share
        digest = doc_hasher(src.name)
        errors, held_out = ErrorLog("skip"), 0
        for part in parts:
            docs = iter(SegmentReader(part.segments, src, errors, cfg.max_doc_chars))
            taken = 0
            for text in docs:
                if is_valid(digest(text), cfg.valid_fraction):
                    held_out += 1
                    continue
                yield text
                taken, chars = taken + 1, chars - len(text)
                if taken >= per_part or chars <= 0:
                    break
            sampled += taken
            docs.close()
            if chars <= 0:
                break
        seen.append(_sample_summary(src.name, len(parts), held_out, errors))
    if not sampled:  # SentencePiece would only say "[!sentences_.empty()]"
        raise DataPrepError("no usable documents to train the tokenizer on: " + "; ".join(seen) +
                            ". Check the paths, text_key and the input format (`python -m data_prep --help`)")


def _sample_summary(source: str, partitions: int, held_out: int, errors: ErrorLog) -> str:
    reasons = ", ".join(f"{e['count']} {e['kind']} in {e['file']} ({e['example']})" for e in errors.to_json()[:3])
    return (f"{source}: {partitions} input partition(s), {errors.total} record(s) skipped"
            f"{' (' + reasons + ')' if reasons else ''}, {held_out} held out for the valid split")


def train(texts: Iterator[str], tok: TokenizerConfig) -> bytes:
    import sentencepiece as spm

    pieces = (p for t in texts for p in _pieces(t))
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=pieces, model_writer=buf, model_type=tok.type, vocab_size=tok.vocab_size,
            byte_fallback=tok.byte_fallback, character_coverage=tok.character_coverage,
            num_threads=tok.num_threads, max_sentence_length=4 * _PIECE_CHARS,
            normalization_rule_name="identity", remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True, split_digits=True, minloglevel=2, **SPECIAL_IDS)
    except RuntimeError as e:
        raise DataPrepError(f"data.prepare.tokenizer: SentencePiece training failed: {e}") from None
    return buf.getvalue()


def current_tokenizer(out: Path, state: Path, key: str) -> TokenizerInfo | None:
    """<out>/tokenizer.model when it was made from `key` and is intact, else None."""
    dest = out / MODEL_FILE
    record = read_json(state)
    if record and record.get("key") == key and dest.is_file() and sha256_file(dest) == record["sha256"]:
        return load_info(dest)
    return None


def ensure_tokenizer(cfg: PrepareConfig, plan: list[Partition], out: Path, state: Path, key: str,
                     force: bool) -> TokenizerInfo:
    """<out>/tokenizer.model, reused when `key` (what it was made from) is unchanged."""
    dest = out / MODEL_FILE
    info = None if force else current_tokenizer(out, state, key)
    if info is None:
        if cfg.tokenizer.model:
            tmp = dest.with_name(dest.name + ".tmp")
            shutil.copyfile(cfg.tokenizer.model, tmp)
            tmp.replace(dest)
        else:
            atomic_write_bytes(dest, train(sample_texts(cfg, plan), cfg.tokenizer))
        atomic_write_json(state, {"key": key, "sha256": sha256_file(dest)})
        info = load_info(dest)
    if cfg.append_bos and info.bos_id < 0:
        raise DataPrepError(f"data.prepare.append_bos: the tokenizer {cfg.tokenizer.model} has no bos piece")
    return info


def tokenizer_key(cfg: PrepareConfig, fingerprint: dict) -> str:
    """Everything the tokenizer file depends on."""
    if cfg.tokenizer.model:
        return stable_hash({"model": fingerprint["tokenizer_model"]})
    return stable_hash({"tokenizer": asdict(cfg.tokenizer),
                        "sources": [asdict(s) for s in cfg.sources if s.megatron is None],
                        "inputs": fingerprint["sources"], "valid_fraction": cfg.valid_fraction,
                        "max_doc_chars": cfg.max_doc_chars, "partition_bytes": cfg.partition_bytes})
