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
    dp_loss_range: tuple[float, float] | None = None  # (min, max) of the data-parallel ranks' mean losses; DP > 1


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

    def load_model_state(self, states: list[dict]) -> None:
        """Collective: set the weights of this rank's model chunks from their state dicts (this layout's
        slices, e.g. from a Hugging Face import), keeping any master copy the optimizer holds in sync."""

    def norm_sites(self) -> dict[str, torch.nn.Module]:
        """Norm modules of this rank by site name ("attention/layer_01", "mlp/layer_01", "final")."""

    def gathered(self, params: list[torch.nn.Parameter]) -> contextlib.AbstractContextManager:
        """Collective context in which `params` hold their full values (ZeRO-3 partitions them)."""

    def num_parameters(self) -> int:
        """Parameters of the whole model (all ranks, replicas counted once)."""

    def params_norm(self) -> float:
        """Collective: L2 norm of all the model's parameters (all ranks, replicas counted once)."""

    def write_run_files(self, run_dir: Path) -> None:
        """Engine-specific files for inspection beside the run's config.yaml (rank 0 writes)."""


def exact_inits(modules: list[torch.nn.Module]) -> list[tuple[torch.nn.Parameter, float]]:
    """Constant-initialised parameters whose intended value bf16 cannot hold (α₀, √d; see
    `pipeline.model.factory.tag_exact_inits`): each engine writes these into its fp32 master copy."""
    return [(p, p.exact_init) for m in modules for p in m.parameters() if hasattr(p, "exact_init")]


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


def tp_unique(params, tp_rank: int) -> list[torch.nn.Parameter]:
    """Parameters counted once over tensor-parallel ranks: TP shards on every rank, replicas (norms, scalars)
    on TP rank 0."""
    return [p for p in params if getattr(p, "tensor_model_parallel", False) or tp_rank == 0]


def sum_of_squares(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Σ x² over `tensors`, accumulated in fp64 chunk by chunk: temporaries of at most 2 × 16 MB, never an fp32
    copy of a whole (bf16) weight, so the memory peak that monitoring reports stays training's own."""
    total = torch.zeros((), dtype=torch.float64, device=device)
    for t in tensors:
        for chunk in t.detach().reshape(-1).split(1 << 22):
            total += chunk.float().square().sum(dtype=torch.float64).to(device)
    return total


def dp_loss_range(rows: torch.Tensor) -> tuple[float, float] | None:
    """(min, max) over data-parallel ranks of each rank's token-weighted mean loss; rows[r] = (loss sum, tokens)
    of DP rank r. None with one DP rank."""
    if rows.shape[0] < 2:
        return None
    means = rows[:, 0] / rows[:, 1]
    return float(means.min()), float(means.max())


def per_token_loss(losses: torch.Tensor, loss_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of masked per-token losses, token count) of one micro-batch, in fp32."""
    mask = loss_mask.float().view(-1)
    return torch.sum(losses.float().view(-1) * mask), mask.sum()


def causal_mask(seq_length: int, device: torch.device) -> torch.Tensor:
    """True = masked. Passed explicitly: megatron's default mask is built on 'cuda'."""
    return torch.triu(torch.ones(seq_length, seq_length, dtype=torch.bool, device=device), 1)[None, None]
