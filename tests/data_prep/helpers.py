"""Corpus generators and readers shared by the data_prep tests (everything is generated: no network)."""

import gzip
import json
import os
import random
from pathlib import Path

import sentencepiece as spm
import zstandard

from data_prep.config import PrepareConfig, SourceConfig, TokenizerConfig
from data_prep.megatron_io import no_rank_warning
from tests.helpers import REPO

_SYLLABLES = ["ka", "lo", "mi", "tor", "en", "pra", "zu", "qui", "def", "ret", "urn", "ix", "self", "ba"]
_EXTRA = ["é", "ß", "日本", "😀", "Ω", "->", "==", "(x)", "{}", "\t"]


def make_texts(n: int, start: int = 0, seed: int = 0, multiline: bool = True) -> list[str]:
    """Documents tagged "doc-NNNNN" (their global index) so that a decoded document names itself."""
    rng = random.Random(seed)
    texts = []
    for i in range(start, start + n):
        words = ["".join(rng.choices(_SYLLABLES, k=rng.randint(1, 3))) for _ in range(rng.randint(20, 120))]
        for _ in range(rng.randint(0, 3)):
            words.insert(rng.randrange(len(words)), rng.choice(_EXTRA))
        if multiline:
            for _ in range(rng.randint(0, 3)):
                words.insert(rng.randrange(len(words)), rng.choice(["\n", "\n    ", "\n\n"]))
        texts.append(f"doc-{i:05d} " + " ".join(words))
    return texts


def write_jsonl(path: Path, texts: list[str], key: str = "text") -> Path:
    data = "".join(json.dumps({key: t, "id": i}) + "\n" for i, t in enumerate(texts)).encode()
    return write_bytes(path, data)


def write_bytes(path: Path, data: bytes) -> Path:
    """Compressed by the file's suffix (.gz, .zst)."""
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    elif path.suffix == ".zst":
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def write_parquet(path: Path, texts: list, row_group_size: int, column: str = "text") -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({column: texts}), path, row_group_size=row_group_size)
    return path


def doc_index(text: str) -> int:
    assert text.startswith("doc-"), text[:40]
    return int(text[4:9])


def read_split(manifest_path: Path, split: str) -> list[tuple[str, list[int]]]:
    """(source, token ids) of every document of a split, shards in manifest order, via megatron's reader."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    m = json.loads(manifest_path.read_text())
    docs = []
    for shard in m["splits"][split]:
        with no_rank_warning():
            ds = IndexedDataset(str(manifest_path.parent / shard["prefix"]))
        assert ds.index.dtype.__name__ == m["dtype"]
        assert len(ds.document_indices) - 1 == len(ds) == shard["documents"]
        docs += [(shard["source"], ds[i].tolist()) for i in range(len(ds))]
        assert sum(len(d) for _, d in docs[-len(ds):]) == shard["tokens"]
    return docs


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every output file that matters (state and locks excluded), by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".state" not in p.parts}


def prep_config(out: Path, paths: list, vocab: int = 600, **kw) -> PrepareConfig:
    src = SourceConfig(name="src", paths=[str(p) for p in paths])
    kw.setdefault("tokenizer", TokenizerConfig(vocab_size=vocab, num_threads=1))
    return PrepareConfig(output_dir=str(out), sources=[src], **kw)


def subprocess_env(**extra: str) -> dict[str, str]:
    return os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"} | extra


def check_roundtrip(manifest_path: Path, expected: dict[int, tuple[str, str]], bos: bool = False) -> dict:
    """`expected`: doc index -> (source, text). Every document comes back exactly once, in input order
    within each split and source; returns doc index -> split."""
    m = json.loads(manifest_path.read_text())
    sp = spm.SentencePieceProcessor(model_file=str(manifest_path.parent / m["tokenizer"]["path"]))
    eod, head = m["tokenizer"]["eod_id"], [m["tokenizer"]["bos_id"]] if bos else []
    where = {}
    for split in ("train", "valid"):
        last = {}
        for source, ids in read_split(manifest_path, split):
            assert ids[-1] == eod and ids[:len(head)] == head
            i = doc_index(sp.decode(ids[len(head):-1]))
            assert expected[i][0] == source
            assert ids == head + sp.encode(expected[i][1]) + [eod], f"document {i} differs"
            assert i > last.get(source, -1), f"document {i} out of order in {split}"
            assert i not in where, f"document {i} twice"
            last[source], where[i] = i, split
    assert sorted(where) == sorted(expected)
    return where
