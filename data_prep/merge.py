"""Optional merge: each source's partition shards concatenated into one shard per split."""

import gc
from pathlib import Path

from .files import fsync_file, sha256_file
from .megatron_io import indexed_dataset, no_rank_warning
from .writer import SPLITS, TMP_DIR


def merge_shards(out: Path, sources: list[str], records: list[dict], dtype: str) -> dict[str, list[dict]]:
    """`records` in plan order; returns the merged shards per split (`<split>/<source>`)."""
    import numpy

    builder_cls = indexed_dataset().IndexedDatasetBuilder
    merged: dict[str, list[dict]] = {s: [] for s in SPLITS}
    (out / TMP_DIR).mkdir(exist_ok=True)
    for name in sources:
        for split in SPLITS:
            parts = [r["shards"][split] for r in records if r["source"] == name and split in r["shards"]]
            if not parts:
                continue
            tmp = out / TMP_DIR / f"merge-{split}-{name}"
            builder = builder_cls(f"{tmp}.bin", dtype=getattr(numpy, dtype))
            # add_index runs gc.collect() per shard: 0.5 s each with torch loaded, unless the objects
            # that exist already are frozen out of collection.
            gc.freeze()
            try:
                with no_rank_warning():
                    for p in parts:
                        builder.add_index(str(out / p["prefix"]))
            finally:
                gc.unfreeze()
            builder.finalize(f"{tmp}.idx")
            prefix = f"{split}/{name}"
            src = {ext: Path(f"{tmp}.{ext}") for ext in ("bin", "idx")}
            merged[split].append({"prefix": prefix, "source": name,
                                  "documents": sum(p["documents"] for p in parts),
                                  "tokens": sum(p["tokens"] for p in parts),
                                  "bytes": src["bin"].stat().st_size,
                                  "sha256": {e: sha256_file(p) for e, p in src.items()}})
            for ext, path in src.items():
                fsync_file(path)
                path.replace(out / f"{prefix}.{ext}")
    return merged
