"""How training processes live and die: signals that stop a run cleanly, and death with the parent.

- SIGTERM / SIGUSR1 (a scheduler's notice) and a first SIGINT (Ctrl-C) ask for a clean stop: finish the
  step, save, status `preempted`. A second SIGINT stops at once (KeyboardInterrupt, status `failed`).
- `die_with_parent`: Linux's parent-death signal, so no process outlives the one that started it (a worker
  its torchrun, torchrun its launcher, a checkpoint helper its worker), whatever killed the parent.
Pure Python at import time: the launcher uses it without loading torch.
"""

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Have the kernel send `sig` to this process when its parent exits (no-op off Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return
    parent = os.getppid()
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return
    if os.getppid() != parent:  # the parent died before the call: nobody will send the signal
        os.kill(os.getpid(), sig)


class StopRequest:
    """Signals → "stop after this step and save". Ranks agree through an all-reduce, so a signal that
    reached only some processes still stops all of them at the same step."""

    def __init__(self) -> None:
        self.signal: int | None = None
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.signal == signal.SIGINT:
            raise KeyboardInterrupt("second Ctrl-C: stopping without a checkpoint")
        if signum == signal.SIGINT:
            print("Ctrl-C: finishing this step and saving (Ctrl-C again to stop at once)", flush=True)
        self.signal = signum

    def requested(self, device) -> bool:
        import torch
        import torch.distributed as dist

        flag = torch.tensor([1.0 if self.signal else 0.0], device=device)
        if dist.is_initialized():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
