"""Check checkpoints without loading a model: every file's size and CRC-32 against its integrity record.

    python -m pipeline.checkpoint verify runs/tiny_dyt            # a run directory (or its checkpoints/)
    python -m pipeline.checkpoint verify runs/tiny_dyt/checkpoints/step_0000300

Exit status: 0 when every checkpoint verifies, 1 when one does not (or there is none).
"""

import argparse
import sys
import time
from pathlib import Path

from .diagnose import human
from .integrity import IntegrityError, verify
from .manager import STEP_DIR, step_of


def _checkpoint_dirs(path: Path) -> tuple[Path, list[Path]]:
    if STEP_DIR.fullmatch(path.name):
        return path.parent, [path]
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if not root.is_dir():
        raise SystemExit(f"{path}: no such run or checkpoint directory")
    return root, sorted((p for p in root.iterdir() if p.is_dir() and STEP_DIR.fullmatch(p.name)), key=step_of)


def verify_all(path: Path) -> bool:
    root, dirs = _checkpoint_dirs(path)
    print(root)
    good = []
    for d in dirs:
        try:
            r = verify(d)
        except IntegrityError as e:
            print(f"  {d.name}  FAILED  {e.file}: {e.reason}")
            continue
        good.append(d)
        size = sum(f["size"] for f in r["files"].values())
        saved = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["saved_at"]))
        print(f"  {d.name}  ok      step {r['step']}, {r['engine']}, {len(r['files'])} files, {human(size)}, "
              f"config {r['config_fingerprint']}, saved {saved}")
    if len(dirs) > 1 or not dirs:
        for other in sorted(p for p in root.iterdir() if p.is_dir() and p not in dirs):
            print(f"  {other.name}  (not a checkpoint: "
                  f"{'an interrupted save' if other.name.endswith('.partial') else 'moved aside'})")
        latest = root / "latest"
        if latest.is_file():
            try:
                print(f"  latest -> {latest.read_bytes().decode('utf-8').strip()}")
            except UnicodeDecodeError:
                print("  latest is unreadable (not UTF-8): resume ignores it")
        print(f"newest usable: {good[-1].name if good else 'none'} (what checkpoint.resume=auto would load)")
    return bool(dirs) and len(good) == len(dirs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.checkpoint", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="check every file of each checkpoint against its integrity record")
    v.add_argument("paths", nargs="+", type=Path, help="run directory, checkpoints directory or one checkpoint")
    args = ap.parse_args(argv)
    ok = [verify_all(p) for p in args.paths]
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
