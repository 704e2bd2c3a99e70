"""Partitions cut files at line starts with true line numbers, pack small files, and the valid split
takes an exact share of every file."""

import math

from data_prep.plan import make_plan
from data_prep.split import valid_selector
from tests.data_prep.helpers import prep_config, write_bytes


def test_plain_file_cut_at_line_starts(tmp_path):
    lines = [("x" * (i * 37 % 300)) + "\n" for i in range(500)]
    data = "".join(lines).encode()
    path = write_bytes(tmp_path / "a.jsonl", data)
    plan = make_plan(prep_config(tmp_path / "out", [path], partition_bytes=4096))
    segs = [s for p in plan for s in p.segments]
    assert len(plan) == len(segs) > 10
    line_starts = {sum(len(line) for line in lines[:i]): i + 1 for i in range(len(lines))}
    assert segs[0].start == 0 and segs[-1].stop == len(data)
    assert all(a.stop == b.start for a, b in zip(segs, segs[1:], strict=False))
    for s in segs:
        assert line_starts[s.start] == s.first_position  # a line start, with its true line number
        assert s.size == s.stop - s.start


def test_small_files_packed_and_compressed_files_whole(tmp_path):
    small = [write_bytes(tmp_path / f"s{i}.jsonl", b'{"text": "a"}\n' * 20) for i in range(5)]  # 280 B each
    big_gz = write_bytes(tmp_path / "big.jsonl.gz", b"".join(b'{"text": "%d"}\n' % i for i in range(20_000)))
    plan = make_plan(prep_config(tmp_path / "out", [*small, big_gz], partition_bytes=600))
    assert [[s.path for s in p.segments] for p in plan] == [
        [str(small[0]), str(small[1])], [str(small[2]), str(small[3])], [str(small[4])], [str(big_gz)]]
    assert plan[-1].segments[0].size == big_gz.stat().st_size > 600  # never cut


def test_valid_split_is_exact_per_file():
    for fraction in (0.01, 0.03, 0.1, 0.5):
        for n in (1, 7, 33, 441, 1000):
            counts = [sum(map(valid_selector(f"file{j}", fraction), range(1, n + 1))) for j in range(50)]
            assert all(math.floor(fraction * n) <= c <= math.ceil(fraction * n) for c in counts)
    # Files shorter than 1/fraction still contribute, through their phase: in total about fraction·n each.
    for fraction, n in ((0.01, 33), (0.1, 7)):
        total = sum(sum(map(valid_selector(f"file{j}", fraction), range(1, n + 1))) for j in range(2000))
        assert abs(total - 2000 * fraction * n) <= 0.15 * 2000 * fraction * n
    assert not any(map(valid_selector("f", 0.0), range(1, 100)))
