"""Checkpoints: the engine-neutral save/resume protocol (manager), integrity records, write-error diagnosis,
and `python -m pipeline.checkpoint verify RUN_DIR`."""

from .integrity import IntegrityError
from .manager import (
    CheckpointError,
    CheckpointLoadError,
    CheckpointManager,
    CheckpointSaveError,
    NonFiniteState,
    Resumed,
    async_enabled,
    read_meta,
)

__all__ = ["CheckpointError", "CheckpointLoadError", "CheckpointManager", "CheckpointSaveError", "IntegrityError",
           "NonFiniteState", "Resumed", "async_enabled", "read_meta"]
