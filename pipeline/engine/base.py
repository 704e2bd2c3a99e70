"""The engine interface that the training loop, checkpointing, monitoring and evaluation rely on.

An engine owns everything framework-specific: building and wrapping the model, the optimizer and LR
schedule, one training step, evaluation, and its own checkpoint format inside a directory it is given.
Nothing here imports megatron or deepspeed.
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch


@dataclass
class StepResult:
    loss: float  # token-weighted mean over the global batch
    grad_norm: float
    lr: float
    tokens: int  # tokens in the global batch
    skipped: bool  # no update was applied (non-finite loss)
    dp_loss_range: tuple[float, float] | None = None  # (min, max) of the data-parallel ranks' mean losses; DP > 1


class Engine(Protocol):
    modules: list[torch.nn.Module]  # the unwrapped model chunks of this rank (same keys for every engine)

    def train_step(self, microbatches: list[dict[str, torch.Tensor]]) -> StepResult:
        """One optimizer step over this rank's micro-batches of the global batch."""

    def eval_loss(self, microbatches: list[dict[str, torch.Tensor]]) -> float:
        """Token-weighted mean loss over the global batch, no update."""

    def layout(self) -> dict:
        """What a checkpoint must have been saved with to be restored exactly (optimizer shards, RNG)."""

    def save(self, directory: Path, step: int) -> None:
        """Collective: write model, optimizer, schedule and RNG state into `directory` (it exists)."""

    def load(self, directory: Path, saved_layout: dict) -> int:
        """Collective: restore everything saved by `save`; returns the step. When `saved_layout` differs from
        `layout()` the engine restores what it can (and says so) or raises with what to do instead."""

    def load_weights(self, directory: Path) -> None:
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
