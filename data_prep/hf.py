"""Hugging Face `datasets` sources, read shard by shard as iterables (nothing is loaded whole).

A streaming dataset is cut along its own shards (its data files), its records numbered per shard; a
map-style one (a saved dataset directory, or `streaming: false`) into contiguous row ranges of about
partition_bytes, its records numbered by row in the whole split.
"""

import math
from collections.abc import Iterator

from .config import HFSource
from .inputs import is_local_hf_dir


def _load(hf: HFSource):
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    if is_local_hf_dir(hf):  # memory-mapped arrow files: iterating them streams from disk
        ds = datasets.load_from_disk(hf.path)
        return ds[hf.split] if isinstance(ds, datasets.DatasetDict) else ds
    return datasets.load_dataset(hf.path, hf.name, split=hf.split, data_files=hf.data_files or None,
                                 streaming=hf.streaming)


def plan_shards(hf: HFSource, partition_bytes: int) -> tuple[bool, list[tuple[int, int]]]:
    """(streaming, [(number of the shard's first record, its bytes or 0 when unknown)] per shard)."""
    import datasets

    ds = _load(hf)
    if isinstance(ds, datasets.IterableDataset):
        return True, [(1, 0)] * ds.n_shards
    count = max(1, min(len(ds), math.ceil(ds.data.nbytes / partition_bytes)))
    div, mod = divmod(len(ds), count)  # datasets' contiguous shard() boundaries
    return False, [(div * i + min(i, mod) + 1, ds.data.nbytes // count) for i in range(count)]


def iter_shard(hf: HFSource, index: int, count: int) -> Iterator[dict]:
    import datasets

    ds = _load(hf)
    if isinstance(ds, datasets.IterableDataset):
        return iter(ds.shard(num_shards=count, index=index))
    return iter(ds.shard(num_shards=count, index=index, contiguous=True).to_iterable_dataset())


def hf_id(hf: HFSource, shard: tuple[int, int] | None = None) -> str:
    """How records are named in error reports (and what seeds the valid split): the split, plus the
    shard for streaming datasets, whose records are numbered per shard."""
    name = f"hf:{hf.path}{':' + hf.name if hf.name else ''}[{hf.split}]"
    return name if shard is None else f"{name}#{shard[0]}/{shard[1]}"
