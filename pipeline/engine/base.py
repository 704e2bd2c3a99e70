"""The engine interface the training loop, checkpointing and monitoring rely on.

Small on purpose so a DeepSpeed engine can implement it without touching `train`, `checkpoint` or
`monitor`.
"""

from dataclasses import dataclass
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
    modules: list[torch.nn.Module]  # the unwrapped model chunks of this rank (for stats, hooks)
    scheduler: object  # has state_dict() / load_state_dict()

    def train_step(self, microbatches: list[dict[str, torch.Tensor]]) -> StepResult: ...

    def eval_loss(self, microbatches: list[dict[str, torch.Tensor]]) -> float: ...

    def set_step(self, step: int) -> None: ...

    def model_state(self) -> dict: ...

    def optimizer_state(self, model_state: dict, is_loading: bool) -> dict: ...

    def load_model(self, state: dict) -> None: ...

    def load_optimizer(self, state: dict) -> None: ...
