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

    def write_run_files(self, run_dir: Path) -> None:
        """Engine-specific files for inspection beside the run's config.yaml (rank 0 writes)."""


@contextlib.contextmanager
def no_gather(params: list[torch.nn.Parameter]) -> Iterator[None]:
    """`Engine.gathered` for engines whose parameters are always whole on their rank."""
    yield


def per_token_loss(losses: torch.Tensor, loss_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of masked per-token losses, token count) of one micro-batch, in fp32."""
    mask = loss_mask.float().view(-1)
    return torch.sum(losses.float().view(-1) * mask), mask.sum()


def causal_mask(seq_length: int, device: torch.device) -> torch.Tensor:
    """True = masked. Passed explicitly: megatron's default mask is built on 'cuda'."""
    return torch.triu(torch.ones(seq_length, seq_length, dtype=torch.bool, device=device), 1)[None, None]
