"""The engine interface that the training loop, checkpointing, monitoring and evaluation rely on.

An engine owns everything framework-specific: building and wrapping the model, the optimizer and LR
schedule, one training step, evaluation, and its own checkpoint format inside a directory it is given.
Nothing here imports megatron or deepspeed.
"""

import contextlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist


@dataclass
class StepResult:
    loss: float  # token-weighted mean over the global batch
    grad_norm: float
    lr: float
    tokens: int  # tokens in the global batch
    skipped: bool  # no update was applied (non-finite loss)


class PendingSave(Protocol):
    """An asynchronous save in flight (the checkpoint manager completes it)."""

    def done(self, blocking: bool) -> bool:
        """Collective: True once every rank's writes are on disk; raises if a rank's write failed."""


class Engine(Protocol):
    modules: list[torch.nn.Module]  # the unwrapped model chunks of this rank (same keys for every engine)

    def train_step(self, microbatches: list[dict[str, torch.Tensor]]) -> StepResult:
        """One optimizer step over this rank's micro-batches of the global batch."""

    def eval_loss(self, microbatches: list[dict[str, torch.Tensor]]) -> float:
        """Token-weighted mean loss over the global batch, no update."""

    def layout(self) -> dict:
        """What a checkpoint must have been saved with to be restored exactly (optimizer shards, RNG)."""

    def save(self, directory: Path, step: int, async_save: bool = False) -> PendingSave | None:
        """Collective: write model, optimizer, schedule and RNG state into `directory` (it exists). With
        `async_save` the state is captured now and written in the background: returns the pending save."""

    def state_is_finite(self) -> bool:
        """Collective and cheap: no inf/NaN in the weights or the optimizer state of any rank."""

    def load(self, directory: Path, saved_layout: dict) -> int:
        """Collective: restore everything saved by `save`; returns the step. When `saved_layout` differs from
        `layout()` the engine restores what it can (and says so) or raises with what to do instead."""

    def load_weights(self, directory: Path, saved_layout: dict) -> None:
        """Collective: model weights only, from a checkpoint of this engine in any parallel layout."""

    def norm_sites(self) -> dict[str, torch.nn.Module]:
        """Norm modules of this rank by site name ("attention/layer_01", "mlp/layer_01", "final")."""

    def gathered(self, params: list[torch.nn.Parameter]) -> contextlib.AbstractContextManager:
        """Collective context in which `params` hold their full values (ZeRO-3 partitions them)."""

    def num_parameters(self) -> int:
        """Parameters of the whole model (all ranks, replicas counted once)."""

    def write_run_files(self, run_dir: Path) -> None:
        """Engine-specific files for inspection beside the run's config.yaml (rank 0 writes)."""


@contextlib.contextmanager
def no_gather(params: list[torch.nn.Parameter]) -> Iterator[None]:
    """`Engine.gathered` for engines whose parameters are always whole on their rank."""
    yield


def optimizer_tensors(optimizers: Iterable[torch.optim.Optimizer]) -> Iterator[torch.Tensor]:
    """What torch optimizers step and keep: their (master) parameters and every state tensor."""
    for opt in optimizers:
        for group in opt.param_groups:
            yield from group["params"]
        for state in opt.state.values():
            yield from (v for v in state.values() if isinstance(v, torch.Tensor))


def all_finite(tensors: Iterable[torch.Tensor], device: torch.device) -> bool:
    """Collective: every floating-point tensor of every rank is finite. One max-|x| per tensor, batched per
    device and dtype (a max cannot overflow where a sum could)."""
    groups: dict[tuple, list[torch.Tensor]] = defaultdict(list)
    for t in tensors:
        if t.is_floating_point() and t.numel():
            groups[(t.device, t.dtype)].append(t.detach())
    ok = torch.ones(1, device=device)
    for ts in groups.values():
        if not torch.isfinite(torch.stack(torch._foreach_norm(ts, float("inf")))).all():
            ok.zero_()
    if dist.is_initialized():
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok.item())


def per_token_loss(losses: torch.Tensor, loss_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of masked per-token losses, token count) of one micro-batch, in fp32."""
    mask = loss_mask.float().view(-1)
    return torch.sum(losses.float().view(-1) * mask), mask.sum()


def causal_mask(seq_length: int, device: torch.device) -> torch.Tensor:
    """True = masked. Passed explicitly: megatron's default mask is built on 'cuda'."""
    return torch.triu(torch.ones(seq_length, seq_length, dtype=torch.bool, device=device), 1)[None, None]


def nan_injection_steps() -> set[int]:
    """Test hook (DYT_INJECT_NAN_STEPS=2,5): 0-based engine steps whose loss is made NaN, to exercise
    train.nan_policy identically in every engine."""
    import os

    return {int(s) for s in os.environ.get("DYT_INJECT_NAN_STEPS", "").split(",") if s.strip()}
