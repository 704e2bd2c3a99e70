"""megatron-core's indexed dataset module, imported on first use (5 s, and noisy on CPU machines)."""

import functools
import gc
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType


@functools.cache
def indexed_dataset() -> ModuleType:
    cpp_ext = logging.getLogger("torch.utils.cpp_extension")  # "No CUDA runtime is found" on CPU boxes
    level = cpp_ext.level
    cpp_ext.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Transformer Engine and Apex are not installed ..."
            from megatron.core.datasets import indexed_dataset as module
    finally:
        cpp_ext.setLevel(level)
    return module


def token_dtype(vocab_size: int) -> str:
    """Megatron's own choice: uint16 below 65500 ids, else int32."""
    return indexed_dataset().DType.optimal_dtype(vocab_size).__name__


@contextmanager
def no_rank_warning() -> Iterator[None]:
    """Reading an index outside torch.distributed warns "Could not determine rank"; data_prep has none."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Could not determine rank")
        yield


def concat_shards(prefixes: list[Path], dest: Path, dtype: str) -> None:
    """`dest`.bin/.idx: the shards at `prefixes` one after the other (megatron's add_index)."""
    import numpy

    builder = indexed_dataset().IndexedDatasetBuilder(f"{dest}.bin", dtype=getattr(numpy, dtype))
    # add_index runs gc.collect() per shard: 0.5 s each with torch loaded, unless the objects that
    # exist already are frozen out of collection.
    gc.freeze()
    try:
        with no_rank_warning():
            for p in prefixes:
                builder.add_index(str(p))
    finally:
        gc.unfreeze()
    builder.finalize(f"{dest}.idx")
