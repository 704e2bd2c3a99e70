"""Rebuild the bundled corpus `pydocs.jsonl.gz` from a CPython standard library.

The corpus is every docstring (module, class, function) of the stdlib's pure-Python modules, one
JSON line per module: {"id": "<module path>", "text": "<docstrings joined by blank lines>"}.
It is committed so that every machine trains on the same bytes; this script documents where the
bytes came from. Licence: Python Software Foundation License v2 (see LICENSE-PSF.txt here).

    python data/corpus/build_pydocs.py [--stdlib DIR] [--out data/corpus/pydocs.jsonl.gz]
"""

import argparse
import ast
import gzip
import json
import sysconfig
from pathlib import Path


def module_docstrings(path: Path) -> str:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return ""
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    docs = [ast.get_docstring(n) for n in nodes]
    return "\n\n".join(d.strip() for d in docs if d and len(d.strip()) >= 40)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stdlib", type=Path, default=Path(sysconfig.get_paths()["stdlib"]))
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("pydocs.jsonl.gz"))
    args = ap.parse_args()
    skip = ("site-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo")
    files = sorted(p for p in args.stdlib.rglob("*.py") if not set(p.relative_to(args.stdlib).parts) & set(skip))
    n = 0
    # mtime=0 keeps the gzip bytes reproducible.
    with open(args.out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        for f in files:
            text = module_docstrings(f)
            if text:
                rec = {"id": str(f.relative_to(args.stdlib)), "text": text}
                gz.write((json.dumps(rec, ensure_ascii=False) + "\n").encode())
                n += 1
    print(f"wrote {n} documents to {args.out}")


if __name__ == "__main__":
    main()
