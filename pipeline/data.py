"""Training data: a data_prep manifest → megatron-core GPTDatasets (blended across sources) → batches.

Sample order is a pure function of (seed, step): step s reads samples [s·gbs, (s+1)·gbs) of the
blended dataset, DP rank r its contiguous slice. Resuming at step s therefore needs no loader state,
and every parallel layout sees the same tokens per step.
"""

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.tokenizers import MegatronTokenizerBase

MANIFEST_FORMAT = "dyt-pipeline-manifest/1"


class DataError(RuntimeError):
    """The manifest or the shards it names cannot be used; the message says which and why."""


@dataclass
class Manifest:
    path: Path
    raw: dict

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def tokenizer(self) -> dict:
        return self.raw["tokenizer"]

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer["vocab_size"])

    def blend(self, split: str) -> tuple[list[str], list[float]] | None:
        """Shard prefixes and weights: a source's weight is shared among its shards by token count."""
        shards = [s for s in self.raw["splits"].get(split, []) if s["tokens"] > 0]
        if not shards:
            return None
        source_weight = {s["name"]: float(s.get("weight", 1.0)) for s in self.raw["sources"]}
        source_tokens: dict[str, int] = {}
        for s in shards:
            source_tokens[s["source"]] = source_tokens.get(s["source"], 0) + s["tokens"]
        prefixes = [str(self.root / s["prefix"]) for s in shards]
        weights = [source_weight.get(s["source"], 1.0) * s["tokens"] / source_tokens[s["source"]] for s in shards]
        return prefixes, weights


def load_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data.manifest: {path} does not exist (run `make data CONFIG=...` to build it)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"data.manifest: {path} is not valid JSON ({e}); rebuild it with `make data`") from None
    if raw.get("format") != MANIFEST_FORMAT:
        raise DataError(f"data.manifest: {path} has format {raw.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    m = Manifest(path, raw)
    for split in ("train", "valid"):
        for shard in raw["splits"].get(split, []):
            for ext in (".bin", ".idx"):
                f = m.root / (shard["prefix"] + ext)
                if not f.is_file():
                    raise DataError(f"data.manifest: shard file {f} listed in {path} is missing")
    if m.blend("train") is None:
        raise DataError(f"data.manifest: {path} has no training tokens")
    return m


def check_tokenizer(manifest: Manifest, model_vocab_size: int | None) -> None:
    """Data and model must agree on the vocabulary; a silent mismatch trains on garbage ids."""
    tok = manifest.tokenizer
    tok_path = manifest.root / tok["path"]
    if not tok_path.is_file():
        raise DataError(f"data.manifest: tokenizer {tok_path} is missing")
    digest = hashlib.sha256(tok_path.read_bytes()).hexdigest()
    if digest != tok["sha256"]:
        raise DataError(f"data.manifest: tokenizer {tok_path} has sha256 {digest[:12]}…, but the shards were "
                        f"written with {tok['sha256'][:12]}…; rebuild the data or restore the tokenizer")
    if model_vocab_size is not None and model_vocab_size != manifest.vocab_size:
        raise DataError(f"model.vocab_size: {model_vocab_size} does not match the data's tokenizer vocabulary "
                        f"({manifest.vocab_size} in {manifest.path}); set model.vocab_size: null to take it from "
                        "the data")


def data_fingerprint(manifest: Manifest) -> str:
    """What the data stream depends on: the shards (prefix, documents, tokens per split), the source weights
    and the tokenizer's hash. Recorded in checkpoints; a resume onto other data is refused."""
    keep = {"splits": manifest.raw.get("splits"), "tokenizer": manifest.tokenizer.get("sha256"),
            "weights": {s["name"]: s.get("weight", 1.0) for s in manifest.raw.get("sources", [])}}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()


class ManifestTokenizer(MegatronTokenizerBase):
    """The megatron tokenizer contract GPTDataset needs (ids only; text is data_prep's business)."""

    def __init__(self, manifest: Manifest) -> None:
        tok = manifest.tokenizer
        super().__init__(str(manifest.root / tok["path"]), {})
        self._vocab_size = int(tok["vocab_size"])
        self._eod = int(tok["eod_id"])
        self._pad = int(tok.get("pad_id", -1))
        self.unique_identifiers = {"class": type(self).__name__, "sha256": tok["sha256"]}

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def eod(self) -> int:
        return self._eod

    @property
    def pad(self) -> int:
        return self._pad

    def tokenize(self, text: str):  # pragma: no cover - GPTDataset never tokenizes
        raise NotImplementedError

    def detokenize(self, ids):  # pragma: no cover
        raise NotImplementedError

    def vocab(self):  # pragma: no cover
        raise NotImplementedError

    def apply_chat_template(self, *args, **kwargs):  # pragma: no cover
        raise NotImplementedError


def build_datasets(manifest: Manifest, seq_length: int, seed: int, num_train: int, num_valid: int,
                   cache_dir: Path) -> tuple[GPTDataset, GPTDataset | None]:
    """Train and valid GPTDatasets (blends when the manifest has several shards/sources)."""
    import torch.distributed as dist

    valid_blend = manifest.blend("valid") if num_valid > 0 else None
    config = GPTDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length,
        blend_per_split=[manifest.blend("train"), valid_blend, None],
        tokenizer=ManifestTokenizer(manifest),
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        path_to_cache=str(cache_dir),
        mid_level_dataset_surplus=0.05,
    )
    # Rank 0 builds the index cache first; the others then read it (megatron's own protocol).
    rank0 = not dist.is_initialized() or dist.get_rank() == 0
    sizes = [num_train, num_valid if valid_blend else 0, 0]
    if rank0:
        train, valid, _ = BlendedMegatronDatasetBuilder(GPTDataset, sizes, lambda: True, config).build()
    if dist.is_initialized():
        dist.barrier()
    if not rank0:
        train, valid, _ = BlendedMegatronDatasetBuilder(GPTDataset, sizes, lambda: True, config).build()
    return train, valid


def _collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([torch.as_tensor(s[k]) for s in samples]) for k in
            ("tokens", "labels", "loss_mask", "position_ids")}


def step_microbatches(dataset, step: int, global_batch: int, micro_batch: int, dp_rank: int,
                      dp_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """The micro-batches of one optimizer step for this DP rank (deterministic in `step`)."""
    per_rank = global_batch // dp_size
    first = step * global_batch + dp_rank * per_rank
    for start in range(first, first + per_rank, micro_batch):
        yield _collate([dataset[i % len(dataset)] for i in range(start, start + micro_batch)])
