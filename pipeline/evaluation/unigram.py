"""A no-context reference loss: the cross-entropy of the validation tokens under the unigram (token
frequency) distribution of the training tokens. A model whose validation loss sits at this level has learned
which tokens are common, but nothing from context.

Frequencies follow the manifest's blend (each shard weighted as the training data loader weights it), with
add-½ smoothing over the tokenizer's vocabulary so unseen tokens cost a finite amount. Each shard contributes
at most its first `max_tokens` tokens (enough for a stable estimate, bounded time on large corpora).
"""

import numpy as np

from pipeline.data import Manifest


def _distribution(manifest: Manifest, split: str, max_tokens: int) -> np.ndarray | None:
    blend = manifest.blend(split)
    if blend is None:
        return None
    dtype = np.dtype(manifest.raw["dtype"])
    total = np.zeros(manifest.vocab_size, dtype=np.float64)
    for prefix, weight in zip(*blend, strict=True):
        tokens = np.memmap(f"{prefix}.bin", dtype=dtype, mode="r")[:max_tokens]  # .bin: the raw token ids
        counts = np.bincount(tokens, minlength=manifest.vocab_size).astype(np.float64)
        total += weight * counts / counts.sum()
    return total / total.sum()


def unigram_reference(manifest: Manifest, max_tokens: int = 50_000_000) -> dict[str, float] | None:
    """{"train_entropy", "valid_cross_entropy"} in nats per token, or None without a valid split."""
    train = _distribution(manifest, "train", max_tokens)
    valid = _distribution(manifest, "valid", max_tokens)
    if train is None or valid is None:
        return None
    n = sum(s["tokens"] for s in manifest.raw["splits"]["train"])
    smoothed = (train * n + 0.5) / (n + 0.5 * manifest.vocab_size)
    seen = train > 0
    return {"train_entropy": float(-(train[seen] * np.log(train[seen])).sum()),
            "valid_cross_entropy": float(-(valid * np.log(smoothed)).sum())}
