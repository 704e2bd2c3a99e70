"""Kernel tests run the Triton kernels on CPU through the interpreter when there is no GPU.

TRITON_INTERPRET must be set before `pipeline.kernels.dyt_triton` (the @triton.jit definitions) is
imported; dispatch imports that module lazily, so setting it at conftest import time is early enough.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
