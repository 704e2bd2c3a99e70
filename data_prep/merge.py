"""Optional merge: each source's partition shards concatenated into one shard per split."""

import os
from pathlib import Path

from .megatron_io import concat_shards
from .writer import SPLITS, TMP_DIR, publish_shard


def merge_shards(out: Path, source: str, records: list[dict], dtype: str) -> dict[str, list[dict]]:
    """The source's partition `records` in plan order; its merged shards per split (`<split>/<source>`)."""
    merged: dict[str, list[dict]] = {s: [] for s in SPLITS}
    (out / TMP_DIR).mkdir(exist_ok=True)
    for split in SPLITS:
        parts = [r["shards"][split] for r in records if split in r["shards"]]
        if not parts:
            continue
        prefix = f"{split}/{source}"
        if len(parts) == 1:  # nothing to concatenate: the partition's shard under the merged name
            for ext in ("bin", "idx"):
                os.replace(out / f"{parts[0]['prefix']}.{ext}", out / f"{prefix}.{ext}")
            merged[split].append(parts[0] | {"prefix": prefix})
            continue
        tmp = out / TMP_DIR / f"merge-{split}-{source}"
        concat_shards([out / p["prefix"] for p in parts], tmp, dtype)
        merged[split].append(publish_shard(tmp, out, prefix, source, sum(p["documents"] for p in parts),
                                           sum(p["tokens"] for p in parts)))
    return merged
