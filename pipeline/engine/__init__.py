"""Training engines behind one small interface (megatron-core now; DeepSpeed later)."""

from .base import Engine, StepResult
from .megatron import MegatronEngine

__all__ = ["Engine", "MegatronEngine", "StepResult"]
