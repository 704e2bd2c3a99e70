"""Cut every source into partitions of about `partition_bytes` input bytes; each becomes one shard.

Partitions depend on the inputs and the config only (never on `workers`), and the shards listed in
order give back each source's documents in input order. Uncompressed line files are cut at newlines
(found by seeking, so planning never reads a file through), parquet files between row groups; a
compressed file cannot be cut and is one piece. Small pieces are packed together.

The same cuts, finer, split a partition into chunks (`chunks`): the units the workers encode in
parallel, so one big file keeps every worker busy. A partition's shard is its chunks' shards
concatenated, byte for byte what one worker writes for the whole partition.
"""

from dataclasses import dataclass, replace

from .config import PrepareConfig, SourceConfig
from .inputs import InputFile, resolve_files
from .streams import compression

_PROBE = 1 << 16  # bytes read at a time when looking for the next newline


@dataclass(frozen=True)
class Segment:
    """A contiguous run of records of one input."""

    path: str  # the file (for hf*: the dataset path as configured)
    format: str  # jsonl | txt | txt-file (one document) | parquet | hf (map-style rows) | hf-stream
    start: int  # jsonl/txt: byte offset; parquet: first row group; hf*: shard index
    stop: int  # jsonl/txt: end byte offset; parquet: row group end; hf*: number of shards
    # Number of the first record, from 1: parquet/hf rows of the whole file or split; jsonl/txt lines
    # count from `start` (the line number in the file is resolved from the done records, see errors.py).
    first_position: int
    size: int  # input bytes as stored, for packing and progress (0 = unknown)

    @property
    def lines_from(self) -> int:
        """Byte offset line numbers count from (0 for all but the pieces of a cut line file)."""
        return self.start if self.format in ("jsonl", "txt") else 0


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


def _next_line_start(f, pos: int, end: int) -> int:
    """The first line start at or after `pos` (`end` when none is before it)."""
    if pos <= 0:
        return 0
    f.seek(pos - 1)
    while pos - 1 < end:
        block = f.read(_PROBE)
        if not block:
            return end
        i = block.find(b"\n")
        if i >= 0:
            return min(pos + i, end)
        pos += len(block)
    return end


def _cut_lines(seg: Segment, target: int) -> list[Segment]:
    """Pieces of about `target` bytes, each starting at a line start."""
    cuts = [seg.start]
    with open(seg.path, "rb") as f:
        while (cut := _next_line_start(f, cuts[-1] + target, seg.stop)) < seg.stop:
            cuts.append(cut)
    ends = cuts[1:] + [seg.stop]
    return [replace(seg, start=a, stop=b, first_position=1, size=b - a) for a, b in zip(cuts, ends, strict=True)]


def _cut_row_groups(seg: Segment, target: int) -> list[Segment]:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(seg.path).metadata
    pieces, g0, first, row, acc = [], seg.start, seg.first_position, seg.first_position, 0
    for g in range(seg.start, seg.stop):
        rg = meta.row_group(g)
        acc += sum(rg.column(c).total_compressed_size for c in range(rg.num_columns))
        row += rg.num_rows
        if acc >= target or g == seg.stop - 1:
            pieces.append(replace(seg, start=g0, stop=g + 1, first_position=first, size=acc))
            g0, first, acc = g + 1, row, 0
    return pieces


def cut(seg: Segment, target: int) -> list[Segment]:
    """`seg` in pieces of about `target` bytes where its format allows, else whole."""
    if seg.size <= target:
        return [seg]
    if seg.format == "parquet" and seg.stop - seg.start > 1:
        return _cut_row_groups(seg, target)
    if seg.format in ("jsonl", "txt") and not compression(seg.path):
        return _cut_lines(seg, target)
    return [seg]


def _whole(f: InputFile, src: SourceConfig) -> Segment:
    if f.format == "parquet":
        import pyarrow.parquet as pq

        try:
            meta = pq.ParquetFile(f.path).metadata
        except (OSError, ValueError):  # unreadable: one piece; the reader counts it as bad input
            return Segment(f.path, "parquet", 0, 0, 1, f.size)
        size = sum(meta.row_group(g).column(c).total_compressed_size
                   for g in range(meta.num_row_groups) for c in range(meta.num_columns))
        return Segment(f.path, "parquet", 0, meta.num_row_groups, 1, size)
    fmt = "txt-file" if f.format == "txt" and src.txt_document == "file" else f.format
    return Segment(f.path, fmt, 0, f.size, 1, f.size)


def _hf_pieces(src: SourceConfig, target: int) -> list[Segment]:
    from .hf import plan_shards

    streaming, shards = plan_shards(src.hf, target)
    fmt = "hf-stream" if streaming else "hf"
    return [Segment(src.hf.path, fmt, i, len(shards), first, size) for i, (first, size) in enumerate(shards)]


def pack(pieces: list[Segment], target: int) -> list[tuple[Segment, ...]]:
    """Consecutive pieces share a group while their total stays within `target` (hf shards never)."""
    groups: list[list[Segment]] = []
    for p in pieces:
        if groups and not p.format.startswith("hf") and sum(s.size for s in groups[-1]) + p.size <= target:
            groups[-1].append(p)
        else:
            groups.append([p])
    return [tuple(g) for g in groups]


def make_plan(cfg: PrepareConfig) -> list[Partition]:
    plan: list[Partition] = []
    for i, src in enumerate(cfg.sources):
        if src.megatron is not None:  # existing shards: nothing to encode
            continue
        if src.hf is not None:
            pieces = _hf_pieces(src, cfg.partition_bytes)
        else:
            files = resolve_files(src, f"data.prepare.sources[{i}]")
            pieces = [p for f in files for p in cut(_whole(f, src), cfg.partition_bytes)]
        plan += [Partition(src.name, k, g) for k, g in enumerate(pack(pieces, cfg.partition_bytes))]
    return plan


def chunks(part: Partition, target: int) -> list[tuple[Segment, ...]]:
    """The partition's segments cut into pieces of about `target` bytes (one chunk each when it is
    at least the partition's size)."""
    if target >= part.size:
        return [part.segments]
    return pack([p for s in part.segments for p in cut(s, target)], target)


def shard_partitions(plan: list[Partition], shard: int, shards: int) -> list[Partition]:
    """Shard `shard` of `shards` (from 0): a contiguous run of partitions with about 1/shards of the
    input bytes (of the partitions when sizes are unknown). The same plan always gives the same runs."""
    weights = [p.size for p in plan] if all(p.size for p in plan) else [1] * len(plan)
    total, before, mine = max(1, sum(weights)), 0, []
    for p, w in zip(plan, weights, strict=True):
        if (before + w / 2) * shards // total == shard:  # by each partition's middle
            mine.append(p)
        before += w
    return mine
