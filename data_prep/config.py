"""The `data.prepare` section of a run config: which corpora become which shards, and how.

Plain dataclasses: `pipeline.config` validates them like every other section (unknown keys, types),
and the `python -m data_prep` CLI builds the same objects from its flags. This module imports nothing
else of data_prep, so reading a config stays cheap.
"""

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class HFSource:
    """A Hugging Face `datasets` source, read in streaming mode."""

    path: str  # hub name ("allenai/c4") or a local dataset directory / loading script
    name: str | None = None  # dataset config name
    split: str = "train"
    data_files: list[str] = field(default_factory=list)
    streaming: bool = True


@dataclass
class MegatronSource:
    """Existing megatron .bin/.idx shards (e.g. from Megatron-LM's tools/preprocess_data.py), used where
    they are: the manifest points at them, nothing is copied or re-encoded."""

    prefix: str | list[str]  # shard path(s) without .bin/.idx, globs allowed: all go to the train split
    valid_prefix: str | list[str] = field(default_factory=list)  # shards for the valid split, if any


@dataclass
class SourceConfig:
    name: str
    paths: list[str] = field(default_factory=list)  # files or globs: .jsonl[.gz|.zst], .parquet, .txt
    hf: HFSource | None = None
    megatron: MegatronSource | None = None
    text_key: str = "text"
    weight: float = 1.0  # relative weight in the training blend
    txt_document: Literal["line", "file"] = "line"  # .txt inputs: one document per line, or per file


@dataclass
class TokenizerConfig:
    model: str | None = None  # an existing SentencePiece .model; when set nothing is trained
    type: Literal["bpe", "unigram"] = "bpe"
    vocab_size: int = 4096
    byte_fallback: bool = True
    character_coverage: float = 0.9995
    sample_docs: int = 100_000  # bounded sample of the corpus used to train the tokenizer
    sample_chars: int = 100_000_000  # ... and a bound on its characters (trainer memory)
    num_threads: int = 4  # trainer threads; fixed (not `workers`) because the model depends on it


@dataclass
class PrepareConfig:
    output_dir: str = "data/prepared/default"
    sources: list[SourceConfig] = field(default_factory=list)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    append_bos: bool = False  # an EOD is always appended per document
    workers: int = 2
    valid_fraction: float = 0.01  # documents routed to the valid split, chosen by a hash of their text
    on_error: Literal["skip", "fail"] = "skip"
    max_doc_chars: int = 10_000_000  # longer documents count as bad input
    partition_bytes: int = 256 * 2**20  # input bytes per partition (= per shard); small files are packed
    merge: bool = False  # concatenate each source's partition shards into one shard per split
    # SentencePiece ids through a cache of text pieces that no token can span: the same ids, about 2x
    # faster (checked on a sample of every run; SentencePiece alone on any difference). See docs/data.md.
    fast_encode: bool = True
