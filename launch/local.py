"""Local launcher: torchrun on this machine, one process per GPU (or per CPU worker on CPU)."""

import os
import subprocess
import sys
from pathlib import Path

from pipeline.config import RunConfig


def torchrun_command(cfg: RunConfig, config_path: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={cfg.launch.nproc_per_node}",
            "-m", "pipeline.train", "--config", str(config_path)]


def train_env() -> dict[str, str]:
    env = dict(os.environ)
    # megatron's TP/SP comm-compute overlap relies on a single CUDA work queue; harmless on CPU.
    env.setdefault("CUDA_DEVICE_MAX_CONNECTIONS", "1")
    return env


def run_local(cfg: RunConfig, config_path: Path, dry_run: bool = False) -> int:
    if cfg.launch.nodes != 1:
        print(f"launch.nodes: {cfg.launch.nodes} nodes need LAUNCHER=slurm (the local launcher runs on one node)",
              file=sys.stderr)
        return 2
    cmd = torchrun_command(cfg, config_path)
    print("+", " ".join(cmd), flush=True)
    if dry_run:
        return 0
    return subprocess.call(cmd, env=train_env())
