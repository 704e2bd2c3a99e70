"""What both command lines share (`python -m data_prep` and `python -m launch.data`): the flags that
share the work between machines, and running `prepare` with the CLI's error handling."""

import argparse
import sys

from .build import STAGES, Stage, prepare
from .config import PrepareConfig
from .errors import DataPrepError


def add_stage_flags(p: argparse.ArgumentParser) -> None:
    """--stage and --shard-of (shared with `python -m launch.data`)."""
    g = p.add_argument_group("sharing the work between machines (one output directory on a shared file system)")
    g.add_argument("--stage", choices=STAGES, help="all (default): everything here; tokenizer: train or copy it "
                   "(once, first); finish: write the manifest (once, last; encodes what no shard did)")
    g.add_argument("--shard-of", metavar="K/N", type=shard_of,
                   help="encode shard K of N (K from 0): about 1/N of the partitions; the tokenizer stage "
                        "must have run")


def shard_of(value: str) -> tuple[int, int]:
    k, sep, n = value.partition("/")
    if not (sep and k.isdigit() and n.isdigit() and 0 <= int(k) < int(n)):
        raise argparse.ArgumentTypeError(f"{value!r}: expected K/N with 0 <= K < N, e.g. 0/4")
    return int(k), int(n)


def run(cfg: PrepareConfig, force: bool = False, stage: Stage | None = None,
        shard: tuple[int, int] | None = None) -> int:
    """`prepare` with the CLI's error handling: an exit status."""
    try:
        prepare(cfg, force=force, stage=stage or ("encode" if shard else "all"), shard=shard)
    except DataPrepError as e:
        print(f"data_prep: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("data_prep: interrupted; finished partitions are kept, run again to resume", file=sys.stderr)
        return 130
    return 0
