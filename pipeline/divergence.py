"""The divergence guard: a run whose updates keep being skipped has diverged; stop it, keep its last good weights.

train.nan_policy: skip drops an update whose loss (or gradient) is not finite. A few such steps are noise;
a streak means the weights are already bad. When a streak begins, the checkpoint saved just before it is
pinned (retention keeps it whatever keep_last says) until a step succeeds again.
"""

from pipeline.checkpoint import CheckpointManager
from pipeline.config.schema import TrainConfig


class Diverged(RuntimeError):
    pass


class DivergenceGuard:
    def __init__(self, t: TrainConfig, ckpt: CheckpointManager, skipped_before: int = 0) -> None:
        self.t, self.ckpt = t, ckpt
        self.total = skipped_before  # skipped updates in the whole run, resumes included (kept in checkpoints)
        self.streak = 0
        self.streak_start = 0

    def update(self, step: int, skipped: bool) -> None:
        """After each step; raises Diverged when a limit is exceeded."""
        if not skipped:
            if self.streak:
                self.ckpt.unpin()
            self.streak = 0
            return
        if self.streak == 0:
            self.streak_start = step
            self.ckpt.pin_last_good(step)
        self.streak += 1
        self.total += 1
        t, why = self.t, []
        if t.max_consecutive_skips and self.streak > t.max_consecutive_skips:
            why.append(f"{self.streak} consecutive skipped updates (train.max_consecutive_skips: "
                       f"{t.max_consecutive_skips})")
        if t.max_skipped_steps and self.total > t.max_skipped_steps:
            why.append(f"{self.total} skipped updates in this run (train.max_skipped_steps: {t.max_skipped_steps})")
        if why:
            good = self.ckpt.last_good()
            raise Diverged(f"step {step}: {' and '.join(why)}: the run has diverged; stopping. Last good checkpoint "
                           f"(the newest saved before step {self.streak_start}, where the skipping began): "
                           f"{good or 'none'}. Resume from it with checkpoint.resume=<that path> and a lower "
                           "optimizer.lr, or raise the limits.")
