"""Which documents go to the valid split: a pure function of (source name, text), so the split does not
depend on paths, file order, partitions or workers, and copies of a document all land on the same side
(an exact duplicate cannot leak from train into valid)."""

import hashlib
from collections.abc import Callable

_SPACE = 2**64


def doc_hasher(source: str) -> Callable[[str], int]:
    """text -> a 64-bit hash of (source, text)."""
    base = hashlib.blake2b(source.encode() + b"\0", digest_size=8)

    def digest(text: str) -> int:
        h = base.copy()
        h.update(text.encode("utf-8", "surrogatepass"))
        return int.from_bytes(h.digest(), "little")

    return digest


def is_valid(doc_hash: int, fraction: float) -> bool:
    """The document is in the valid split: its hash falls in the first `fraction` of the hash space
    (each document independently, so a source gets about fraction·n, not exactly)."""
    return doc_hash < fraction * _SPACE
