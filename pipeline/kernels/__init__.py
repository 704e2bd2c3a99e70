"""DyT / Derf kernels behind one dispatch function per op (see dispatch.py for the kernel choice)."""

from pipeline.kernels.dispatch import KERNELS, add_dyt, derf, dyt, resolve_kernel

__all__ = ["KERNELS", "add_dyt", "derf", "dyt", "resolve_kernel"]
