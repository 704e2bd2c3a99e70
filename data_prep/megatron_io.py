"""megatron-core's indexed dataset module, imported on first use (5 s, and noisy on CPU machines)."""

import functools
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
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
