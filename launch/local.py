"""Local launcher: torchrun on this machine, one process per GPU (or per CPU worker on CPU).

The launcher holds the run directory's lock (handed to the training job), forwards SIGTERM / SIGINT /
SIGUSR1 / SIGHUP to torchrun, which forwards them to the workers and gives them `launch.shutdown_grace_s` to
save, and waits. torchrun dies with the launcher (and the workers with torchrun), even after a SIGKILL.
Its exit code is the run's outcome from status.json: 0 for complete or preempted.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline.config import RunConfig
from pipeline.process import die_with_parent
from pipeline.run_lock import TOKEN_ENV, RunLock
from pipeline.run_status import FINISHED_OK, read_status, write_status

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP)


def torchrun_command(cfg: RunConfig, config_path: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={cfg.launch.nproc_per_node}",
            # torchrun forwards these to the workers (SIGUSR1 is not in its default list) and kills them
            # only after the grace period, so a preemption checkpoint can finish.
            "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
            f"--shutdown-timeout={cfg.launch.shutdown_grace_s}",
            "-m", "pipeline.train", "--config", str(config_path)]


def train_env() -> dict[str, str]:
    env = dict(os.environ)
    # megatron's TP/SP comm-compute overlap relies on a single CUDA work queue; harmless on CPU.
    env.setdefault("CUDA_DEVICE_MAX_CONNECTIONS", "1")
    return env


def run_local(cfg: RunConfig, config_path: Path, lock: RunLock | None = None, dry_run: bool = False) -> int:
    if cfg.launch.nodes != 1:
        print(f"launch.nodes: {cfg.launch.nodes} nodes need LAUNCHER=slurm (the local launcher runs on one node)",
              file=sys.stderr)
        return 2
    cmd = torchrun_command(cfg, config_path)
    print("+", " ".join(cmd), flush=True)
    if dry_run:
        return 0
    run_dir = config_path.parent
    env = train_env()
    if lock is not None:
        env[TOKEN_ENV] = lock.token
    started = time.time()
    # Own session: a terminal's Ctrl-C reaches only this launcher, which forwards it once.
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=lambda: die_with_parent(signal.SIGTERM))
    interrupts = 0

    def forward(signum, frame) -> None:
        nonlocal interrupts
        interrupts += signum == signal.SIGINT
        proc.send_signal(signal.SIGKILL if interrupts > 1 else signum)  # 2nd Ctrl-C: at once

    old = {s: signal.signal(s, forward) for s in FORWARDED}
    try:
        rc = proc.wait()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if lock is not None:
            lock.release()
    status = read_status(run_dir)
    fresh = status.get("time", 0) >= started  # written by this run ("already complete" writes nothing)
    if status.get("state") == "running" or (rc != 0 and not fresh):
        # The workers could not say (killed): record it so nobody mistakes the run for a live one.
        write_status(run_dir, "failed", int(status.get("step", 0)),
                     reason=f"training processes ended without a final status (torchrun exit {rc})")
        return 1
    # torchrun exits non-zero after forwarding a signal even when the workers saved and stopped cleanly.
    return 0 if status.get("state") in FINISHED_OK and (fresh or rc == 0) else 1
