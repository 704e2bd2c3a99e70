"""Partitions and chunks cut files at line starts (or between row groups) without reading them through,
small files are packed, shards of a shared-out run cover every partition once, and the valid split
takes about its share by content."""

import random

from data_prep.plan import Partition, Segment, chunks, make_plan, shard_partitions
from data_prep.split import doc_hasher, is_valid
from tests.data_prep.helpers import prep_config, write_bytes, write_parquet


def _covers_at_line_starts(segs, data: bytes) -> None:
    """Segments tile the file, each starting at a line start, their lines counted from there."""
    line_starts = {0} | {i + 1 for i, b in enumerate(data) if b == ord("\n")}
    assert segs[0].start == 0 and segs[-1].stop == len(data)
    assert all(a.stop == b.start for a, b in zip(segs, segs[1:], strict=False))
    for s in segs:
        assert s.start in line_starts and s.first_position == 1 and s.size == s.stop - s.start


def test_plain_file_cut_at_line_starts_and_chunked_finer(tmp_path):
    lines = [("x" * (i * 37 % 300)) + "\n" for i in range(500)]
    data = "".join(lines).encode()
    path = write_bytes(tmp_path / "a.jsonl", data)
    plan = make_plan(prep_config(tmp_path / "out", [path], partition_bytes=4096))
    segs = [s for p in plan for s in p.segments]
    assert len(plan) == len(segs) > 10
    _covers_at_line_starts(segs, data)
    # Chunks of every partition, finer still: together the same bytes.
    pieces = [s for p in plan for c in chunks(p, 700) for s in c]
    assert len(pieces) > 2 * len(segs)
    _covers_at_line_starts(pieces, data)
    assert chunks(plan[0], plan[0].size) == [plan[0].segments]  # a chunk as big as the partition: itself


def test_parquet_chunked_by_row_groups(tmp_path):
    path = write_parquet(tmp_path / "p.parquet", [f"row {i} " * 40 for i in range(200)], row_group_size=20)
    [part] = make_plan(prep_config(tmp_path / "out", [path], partition_bytes=1 << 30))
    pieces = [s for c in chunks(part, part.size // 4) for s in c]
    assert len(pieces) >= 3
    assert [(s.start, s.first_position) for s in pieces][0] == (0, 1)
    for a, b in zip(pieces, pieces[1:], strict=False):
        assert a.stop == b.start and b.first_position == 1 + 20 * b.start  # rows counted across groups
    assert pieces[-1].stop == 10


def test_small_files_packed_and_compressed_files_whole(tmp_path):
    small = [write_bytes(tmp_path / f"s{i}.jsonl", b'{"text": "a"}\n' * 20) for i in range(5)]  # 280 B each
    big_gz = write_bytes(tmp_path / "big.jsonl.gz", b"".join(b'{"text": "%d"}\n' % i for i in range(20_000)))
    plan = make_plan(prep_config(tmp_path / "out", [*small, big_gz], partition_bytes=600))
    assert [[s.path for s in p.segments] for p in plan] == [
        [str(small[0]), str(small[1])], [str(small[2]), str(small[3])], [str(small[4])], [str(big_gz)]]
    assert plan[-1].segments[0].size == big_gz.stat().st_size > 600  # never cut
    assert chunks(plan[-1], 600) == [plan[-1].segments]  # nor chunked


def test_shards_cover_every_partition_once_balanced():
    rng = random.Random(0)
    plan = [Partition("s", i, (Segment("f", "jsonl", 0, n, 1, n),)) for i, n in
            enumerate(rng.randint(1, 100) for _ in range(37))]
    total = sum(p.size for p in plan)
    for n in (1, 2, 5, 37, 50):
        shards = [shard_partitions(plan, k, n) for k in range(n)]
        assert [p for s in shards for p in s] == plan  # each once, in order: contiguous runs
        if n <= 5:  # balanced by bytes, within one partition
            assert all(abs(sum(p.size for p in s) - total / n) <= 100 for s in shards)


def test_valid_split_by_content():
    texts = [f"document {i} " + "w" * (i % 50) for i in range(20_000)]
    for fraction in (0.01, 0.1, 0.5):
        digest = doc_hasher("web")
        n = sum(is_valid(digest(t), fraction) for t in texts)
        sd = (len(texts) * fraction * (1 - fraction)) ** 0.5
        assert abs(n - len(texts) * fraction) < 4 * sd, (fraction, n)
    a, b = doc_hasher("web"), doc_hasher("code")
    assert a("same text") == a("same text") != b("same text")  # the source name counts, nothing else
    assert not any(is_valid(a(t), 0.0) for t in texts[:100])
