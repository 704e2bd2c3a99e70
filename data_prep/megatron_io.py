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


_frozen = 0


@contextmanager
def frozen_gc() -> Iterator[None]:
    """The objects alive now (megatron and torch: millions) are left out of garbage collection for a
    while: every full collection would walk them (add_index even runs gc.collect() per shard: 0.5 s
    each), and in forked workers the walk copies their pages. Nests."""
    global _frozen
    if not _frozen:
        gc.freeze()
    _frozen += 1
    try:
        yield
    finally:
        _frozen -= 1
        if not _frozen:
            gc.unfreeze()


def concat_shards(prefixes: list[Path], dest: Path, dtype: str) -> None:
    """`dest`.bin/.idx: the shards at `prefixes` one after the other (megatron's add_index)."""
    import numpy

    builder = indexed_dataset().IndexedDatasetBuilder(f"{dest}.bin", dtype=getattr(numpy, dtype))
    with frozen_gc(), no_rank_warning():
        for p in prefixes:
            builder.add_index(str(p))
    builder.finalize(f"{dest}.idx")
