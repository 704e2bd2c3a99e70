"""Which documents go to the valid split: a pure function of (file, position), so the split does not
depend on workers, partitions or what else is in the corpus."""

import hashlib
import math
from collections.abc import Callable


def valid_selector(file_id: str, fraction: float) -> Callable[[int], bool]:
    """Every 1/fraction-th position (exactly floor or ceil of fraction·n of n positions), with a phase
    drawn from the file's name so that files shorter than 1/fraction still contribute."""
    if fraction <= 0:
        return lambda position: False
    phase = int.from_bytes(hashlib.sha256(file_id.encode()).digest()[:8], "big") / 2**64
    return lambda pos: math.floor(pos * fraction + phase) > math.floor((pos - 1) * fraction + phase)
