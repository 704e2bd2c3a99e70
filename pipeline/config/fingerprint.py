"""One fingerprint of a run config: what decides the weights a run produces, nothing that only says where or
how it runs. Recorded in every checkpoint's integrity record; the rerun check uses the same function.

Left out on purpose: the run's name and paths, launch/SLURM, logging, checkpoint policy, evaluation cadence,
the parallel layout (checkpoints reshard across layouts) and train.steps (a run may be extended).
"""

import hashlib
import json

from .loader import to_dict
from .schema import RunConfig

IGNORED = ("name", "output_dir", "launch", "logging", "checkpoint", "parallel", "deepspeed", "train.steps",
           "train.log_interval", "train.eval_interval", "train.eval_iters", "train.device",
           "data.prepare")


def fingerprinted(cfg: RunConfig, ignored: tuple[str, ...] = IGNORED) -> dict:
    """The config as a dict without the `ignored` dotted keys."""
    out = to_dict(cfg)
    for key in ignored:
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return out


def config_fingerprint(cfg: RunConfig, ignored: tuple[str, ...] = IGNORED) -> str:
    """16 hex digits of SHA-256 over the canonical JSON of `fingerprinted(cfg)`."""
    text = json.dumps(fingerprinted(cfg, ignored), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
