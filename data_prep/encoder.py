"""Token ids of documents, as bytes in the shard's dtype: SentencePiece, or SentencePiece through a cache
of text "units" — the same ids, about twice as fast on one core.

Why a cache can give the same ids. SentencePiece (BPE or unigram) segments the whole normalized text,
but a token never spans a point where no vocabulary piece could: if no piece holds characters c1c2
next to each other, the segmentations left and right of a c1|c2 boundary are independent, and the ids
of the document are the ids of its parts, each encoded alone. `UnitEncoder` cuts a text at such
boundaries — before a run of spaces (SentencePiece's "▁"; pieces only start with it), and between
ASCII letters, digits and other ASCII characters (SentencePiece's trainer never mixes Unicode scripts
or digits in a piece) — and encodes each distinct unit once. What makes this exact is checked on the
model itself: its normalization (identity, spaces kept), and every vocabulary piece must be one unit;
a character that joins two classes inside some piece sends the documents holding it to plain
SentencePiece, and so do units with unknown characters (SentencePiece fuses adjacent unknowns) and the
literal "▁".

Hugging Face `tokenizers` was measured as the alternative (the model converted to a BPE `Tokenizer`
gave identical ids) but is not faster than SentencePiece per core on whole documents, and slower on
short units (benchmarks/results/data/profile.md), so it is not used.
"""

import array
import itertools
import re
from collections.abc import Iterable

# Units: optional leading spaces, then characters up to the next cut: a cut falls between two ASCII
# characters of different classes (letters, digits, the rest), never next to a non-ASCII character
# (SentencePiece joins "’" with "." or "é" with "caf", and telling them apart would need Unicode
# categories: slow). A trailing run of spaces is a unit too. Character ranges and possessive
# quantifiers keep the regex fast.
_ASCII_CLASSES = ("A-Za-z", "0-9", "\x00-\x1f\x21-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f")
_RUN = "(?:" + "|".join(f"[{c}]++" for c in _ASCII_CLASSES) + ")"
_GLUE = "[^\x00-\x7f]++"
UNIT = re.compile(f" *+(?:{_GLUE}{_RUN}?+|{_RUN})(?:{_GLUE}{_RUN}?+)*+| ++")
_CLASS_OF = [re.compile(f"[{c}]") for c in _ASCII_CLASSES]
_ALWAYS_SLOW = "\u2581\0"  # SentencePiece's own space mark, and NUL: plain SentencePiece decides
CACHE_UNITS = 1 << 19  # distinct units kept per process (~60 MB); the cache is emptied when full
BPE, UNIGRAM = 2, 1  # ModelProto.TrainerSpec.model_type
_PIECE_TYPES = (1, 4, 5)  # NORMAL, USER_DEFINED, UNUSED: pieces matched against text


def _cut_between(a: str, b: str) -> bool:
    return a.isascii() and b.isascii() and not any(p.match(a) and p.match(b) for p in _CLASS_OF)


def unit_plan(proto) -> tuple[str | None, str]:
    """(why the model cannot use units, or None; the characters whose documents go to plain
    SentencePiece). `proto`: a sentencepiece_model_pb2.ModelProto."""
    norm, spec = proto.normalizer_spec, proto.trainer_spec
    if spec.model_type not in (BPE, UNIGRAM):
        return f"model type {spec.model_type} (only BPE and unigram)", ""
    if norm.precompiled_charsmap or norm.remove_extra_whitespaces or not norm.escape_whitespaces:
        return "its normalization changes the text (units need identity normalization, spaces kept)", ""
    if spec.treat_whitespace_as_suffix:
        return "it treats whitespace as a suffix", ""
    slow = set(_ALWAYS_SLOW)
    for p in proto.pieces:
        text = p.piece.replace("\u2581", " ")
        if p.type not in _PIECE_TYPES or len(UNIT.findall(text)) == 1:
            continue
        if re.search(r"[^ ] ", text):
            return f"piece {p.piece!r} has a space after other characters", ""
        for a, b in itertools.pairwise(text.lstrip(" ")):  # a piece that joins two classes
            if a not in slow and b not in slow and _cut_between(a, b):
                slow.add(b)
    return None, "".join(sorted(slow))


class UnitEncoder:
    """Ids of texts from a cache of unit ids; None for a text that plain SentencePiece must encode."""

    def __init__(self, model_bytes: bytes, slow_chars: str, typecode: str) -> None:
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2 as pb

        proto = pb.ModelProto()
        proto.ParseFromString(model_bytes)
        self._prefix = " " if proto.normalizer_spec.add_dummy_prefix else ""
        proto.normalizer_spec.add_dummy_prefix = False  # units after the first carry their own spaces
        self._sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
        self._unk = self._sp.unk_id()
        self._slow = slow_chars
        self._typecode = typecode
        self._cache: dict[str, bytes | None] = {}

    def _unit_bytes(self, ids: list[int]) -> bytes | None:
        return None if self._unk in ids else array.array(self._typecode, ids).tobytes()

    def encode(self, texts: list[str]) -> list[bytes | None]:
        units = [None if any(c in t for c in self._slow) else UNIT.findall(self._prefix + t) for t in texts]
        distinct = set(itertools.chain.from_iterable(u for u in units if u is not None))
        if len(self._cache) + len(distinct) > CACHE_UNITS:
            self._cache.clear()
        missing = list(distinct.difference(self._cache))
        if missing:
            self._cache.update(zip(missing, map(self._unit_bytes, self._sp.encode(missing)), strict=True))
        get = self._cache.__getitem__
        out: list[bytes | None] = []
        for u in units:
            try:
                out.append(None if u is None else b"".join(map(get, u)))
            except TypeError:  # a unit with unknown characters
                out.append(None)
        return out


class Encoder:
    """Documents -> token bytes (typecode: array typecode of the shard dtype)."""

    def __init__(self, model_path: str, typecode: str, units: bool) -> None:
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2 as pb

        with open(model_path, "rb") as f:
            model = f.read()
        self._sp = spm.SentencePieceProcessor(model_proto=model)
        self._typecode = typecode
        self.units: UnitEncoder | None = None
        self.why_not_units = None if units else "fast_encode: false"
        if units:
            proto = pb.ModelProto()
            proto.ParseFromString(model)
            self.why_not_units, slow = unit_plan(proto)
            if self.why_not_units is None:
                self.units = UnitEncoder(model, slow, typecode)

    def plain(self, texts: list[str]) -> list[bytes]:
        return [array.array(self._typecode, ids).tobytes() for ids in self._sp.encode(texts)]

    def encode(self, texts: list[str]) -> list[bytes]:
        if self.units is None:
            return self.plain(texts)
        out = self.units.encode(texts)
        slow = [i for i, b in enumerate(out) if b is None]
        for i, b in zip(slow, self.plain([texts[i] for i in slow]), strict=True):
            out[i] = b
        return out


def first_difference(a: Iterable[int], b: Iterable[int]) -> int:
    """Index of the first id where two encodings differ."""
    return next((i for i, (x, y) in enumerate(itertools.zip_longest(a, b)) if x != y), -1)
