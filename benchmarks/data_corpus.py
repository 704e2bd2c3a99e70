"""The real-text corpus and the tokenizer of the data-prep benchmarks.

With no corpus given, the benchmarks build one from this machine's Python installation: every .py,
.md, .rst, .txt file and package METADATA of the standard library, then of site-packages, in sorted
order, one document per file, until the size asked for. That is real text (code, docstrings, comments,
package descriptions; mostly English), the same on every machine with the same pinned packages, and
needs no network. Its sha256 goes into the results, so a rerun can tell whether it measured the same.
"""

import hashlib
import json
import sysconfig
from pathlib import Path

SUFFIXES = (".py", ".md", ".rst", ".txt")


def python_corpus(path: Path, megabytes: float) -> dict:
    """Write the corpus (JSON lines {"text", "id"}); its documents, bytes and sha256."""
    target, written, docs = megabytes * 2**20, 0, 0
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for key in ("stdlib", "purelib"):
            root = Path(sysconfig.get_paths()[key])
            for p in sorted(root.rglob("*")):
                if written >= target:
                    break
                if not (p.suffix in SUFFIXES or p.name == "METADATA") or not p.is_file():
                    continue
                try:
                    text = p.read_text(encoding="utf-8")
                except (UnicodeDecodeError, OSError):
                    continue
                if text.strip():
                    line = (json.dumps({"text": text, "id": str(p.relative_to(root))}, ensure_ascii=False)
                            + "\n").encode()
                    f.write(line)
                    digest.update(line)
                    written, docs = written + len(line), docs + 1
    return {"source": "python installation (stdlib + site-packages text files)", "documents": docs,
            "bytes": written, "sha256": digest.hexdigest()}


def describe(path: Path) -> dict:
    """documents, bytes and sha256 of a given corpus file."""
    digest, docs = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for line in f:
            digest.update(line)
            docs += 1
    return {"source": str(path), "documents": docs, "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def train_tokenizer(corpus: Path, dest: Path, vocab: int, kind: str = "bpe", sample_docs: int = 3000) -> Path:
    """data_prep's tokenizer recipe on the first documents of the corpus."""
    from data_prep.config import TokenizerConfig
    from data_prep.tokenizer import train

    with open(corpus) as f:
        texts = (json.loads(line)["text"] for _, line in zip(range(sample_docs), f, strict=False))
        dest.write_bytes(train(texts, TokenizerConfig(type=kind, vocab_size=vocab, num_threads=2)))
    return dest
