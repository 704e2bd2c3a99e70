"""Optional merge: each source's partition shards concatenated into one shard per split."""

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
        tmp = out / TMP_DIR / f"merge-{split}-{source}"
        concat_shards([out / p["prefix"] for p in parts], tmp, dtype)
        merged[split].append(publish_shard(tmp, out, f"{split}/{source}", source,
                                           sum(p["documents"] for p in parts), sum(p["tokens"] for p in parts)))
    return merged
