"""Cut every source into partitions of about `partition_bytes` input bytes; each becomes one shard.

Partitions depend on the inputs and the config only (never on `workers`), and the shards listed in
order give back each source's documents in input order. Uncompressed line files are cut at newlines
(one pass counting lines, so that every record keeps its true line number), parquet files between
row groups; a compressed file cannot be cut and is one piece. Small pieces are packed together.
"""

from dataclasses import dataclass

from .config import PrepareConfig, SourceConfig
from .inputs import InputFile, resolve_files
from .streams import compression

_SCAN = 1 << 23


@dataclass(frozen=True)
class Segment:
    """A contiguous run of records of one input."""

    path: str  # the file (for hf*: the dataset path as configured)
    format: str  # jsonl | txt | parquet | hf (map-style rows) | hf-stream (a streaming shard)
    start: int  # jsonl/txt: byte offset; parquet: first row group; hf*: shard index
    stop: int  # jsonl/txt: end byte offset; parquet: row group end; hf*: number of shards
    first_position: int  # line (or row, or record) number of the first record, from 1
    size: int  # input bytes as stored, for packing and progress (0 = unknown)


@dataclass(frozen=True)
class Partition:
    source: str
    index: int
    segments: tuple[Segment, ...]

    @property
    def name(self) -> str:
        return f"{self.source}-{self.index:05d}"

    @property
    def size(self) -> int:
        return sum(s.size for s in self.segments)


def _line_cuts(path: str, size: int, target: int) -> list[tuple[int, int]]:
    """(byte offset, line number) of each piece start: the first line start at or after every `target`
    bytes since the previous cut."""
    cuts, lines, pos, next_cut = [(0, 1)], 0, 0, target
    with open(path, "rb") as f:
        while block := f.read(_SCAN):
            while next_cut < pos + len(block):
                i = block.find(b"\n", max(next_cut - pos, 0))
                if i < 0:
                    break
                cut = pos + i + 1
                if cut < size:
                    cuts.append((cut, lines + block.count(b"\n", 0, i + 1) + 1))
                next_cut = cut + target
            lines += block.count(b"\n")
            pos += len(block)
    return cuts


def _file_pieces(f: InputFile, src: SourceConfig, target: int) -> list[Segment]:
    if f.format == "parquet":
        import pyarrow.parquet as pq

        try:
            meta = pq.ParquetFile(f.path).metadata
        except (OSError, ValueError):  # unreadable: one piece; the reader counts it as bad input
            return [Segment(f.path, "parquet", 0, 0, 1, f.size)]
        pieces, g0, row, first_row, acc = [], 0, 0, 1, 0
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            acc += sum(rg.column(c).total_compressed_size for c in range(rg.num_columns))
            row += rg.num_rows
            if acc >= target or g == meta.num_row_groups - 1:
                pieces.append(Segment(f.path, "parquet", g0, g + 1, first_row, acc))
                g0, first_row, acc = g + 1, row + 1, 0
        return pieces or [Segment(f.path, "parquet", 0, 0, 1, f.size)]
    whole = Segment(f.path, f.format, 0, f.size, 1, f.size)
    if compression(f.path) or f.size <= target or (f.format == "txt" and src.txt_document == "file"):
        return [whole]
    cuts = _line_cuts(f.path, f.size, target)
    ends = [a for a, _ in cuts[1:]] + [f.size]
    return [Segment(f.path, f.format, a, b, line, b - a) for (a, line), b in zip(cuts, ends, strict=True)]


def _hf_pieces(src: SourceConfig, target: int) -> list[Segment]:
    from .hf import plan_shards

    streaming, shards = plan_shards(src.hf, target)
    fmt = "hf-stream" if streaming else "hf"
    return [Segment(src.hf.path, fmt, i, len(shards), first, size) for i, (first, size) in enumerate(shards)]


def _pack(source: str, pieces: list[Segment], target: int) -> list[Partition]:
    """Consecutive pieces share a partition while their total stays within `target` (hf shards never)."""
    groups: list[list[Segment]] = []
    for p in pieces:
        if groups and not p.format.startswith("hf") and sum(s.size for s in groups[-1]) + p.size <= target:
            groups[-1].append(p)
        else:
            groups.append([p])
    return [Partition(source, i, tuple(g)) for i, g in enumerate(groups)]


def make_plan(cfg: PrepareConfig) -> list[Partition]:
    plan: list[Partition] = []
    for i, src in enumerate(cfg.sources):
        if src.hf is not None:
            pieces = _hf_pieces(src, cfg.partition_bytes)
        else:
            files = resolve_files(src, f"data.prepare.sources[{i}]")
            pieces = [p for f in files for p in _file_pieces(f, src, cfg.partition_bytes)]
        plan += _pack(src.name, pieces, cfg.partition_bytes)
    return plan

