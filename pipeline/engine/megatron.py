"""The megatron-core engine: DDP-wrapped GPTModel chunks, megatron optimizer, LR schedule, one step.

Parallelism (TP/SP/PP/VPP/DP/CP, distributed optimizer) is megatron's: this file only wires it.
"""

import functools
import os

import torch
import torch.distributed as dist
from megatron.core import parallel_state as ps
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.transformer.module import Float16Module

from pipeline import cpu_compat
from pipeline.config.schema import RunConfig
from pipeline.model import build_model, transformer_config
from pipeline.norms import decay_norm_params
from pipeline.runtime import Runtime

from .base import StepResult

# Test hook: comma-separated steps whose loss is replaced by NaN (exercises train.nan_policy).
INJECT_NAN_ENV = "DYT_INJECT_NAN_STEPS"


def _loss_func(loss_mask: torch.Tensor, output: torch.Tensor):
    """Per-token loss: megatron divides gradients by the global token count (calculate_per_token_loss)."""
    losses = output.float().view(-1)
    mask = loss_mask.float().view(-1)
    loss = torch.sum(losses * mask)
    tokens = mask.sum().to(torch.int)
    return loss, tokens, {"lm loss": torch.stack([loss.detach(), mask.sum()])}


def causal_mask(seq_length: int, device: torch.device) -> torch.Tensor:
    """True = masked. Passed explicitly: megatron's default mask is built on 'cuda'."""
    return torch.triu(torch.ones(seq_length, seq_length, dtype=torch.bool, device=device), 1)[None, None]


class MegatronEngine:
    def __init__(self, cfg: RunConfig, runtime: Runtime, vocab_size: int) -> None:
        self.cfg, self.rt = cfg, runtime
        p, o, t = cfg.parallel, cfg.optimizer, cfg.train
        self.config = transformer_config(cfg, runtime.on_gpu)
        self.config.calculate_per_token_loss = True
        self.modules = build_model(cfg, vocab_size, runtime.on_gpu)
        for m in self.modules:
            m.to(runtime.device)
        bf16 = t.precision in ("bf16", "fp8")  # fp8 GEMMs run inside TE; params and master weights as bf16
        chunks = [Float16Module(self.config, m) for m in self.modules] if bf16 else self.modules
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True,
            overlap_grad_reduce=p.overlap_grad_reduce,
            overlap_param_gather=p.overlap_param_gather,
            use_distributed_optimizer=p.distributed_optimizer,
        )
        self.model = [
            DistributedDataParallel(config=self.config, ddp_config=ddp_config, module=c,
                                    disable_bucketing=i > 0)  # megatron's choice for virtual chunks > 0
            for i, c in enumerate(chunks)
        ]
        opt_config = OptimizerConfig(
            optimizer="adam", lr=o.lr, min_lr=o.min_lr, weight_decay=o.weight_decay, adam_beta1=o.beta1,
            adam_beta2=o.beta2, adam_eps=o.eps, clip_grad=o.clip_grad, bf16=bf16,
            params_dtype=self.config.params_dtype, use_distributed_optimizer=p.distributed_optimizer,
            overlap_param_gather=p.overlap_param_gather,
        )
        # {} = no wd exemptions (the paper decays every param, α included); None = megatron's default.
        overrides = {} if decay_norm_params(cfg.model.norm) else None
        self.optimizer = get_megatron_optimizer(opt_config, self.model, config_overrides=overrides)
        s = cfg.schedule
        decay_steps = max(t.steps - s.warmup_steps, 1)
        self.scheduler = OptimizerParamScheduler(
            self.optimizer, init_lr=0.0, max_lr=o.lr, min_lr=o.min_lr, lr_warmup_steps=s.warmup_steps,
            lr_decay_steps=t.steps, lr_decay_style={"cosine": "cosine", "wsd": "WSD", "constant": "constant"}[s.decay],
            start_wd=o.weight_decay, end_wd=o.weight_decay, wd_incr_steps=t.steps, wd_incr_style="constant",
            wsd_decay_steps=max(int(s.wsd_decay_fraction * decay_steps), 1) if s.decay == "wsd" else None,
            lr_wsd_decay_style="cosine" if s.decay == "wsd" else None,
        )
        self.config.finalize_model_grads_func = finalize_model_grads
        self.config.grad_scale_func = self.optimizer.scale_loss
        no_sync = [m.no_sync for m in self.model]
        self.config.no_sync_func = no_sync[0] if len(no_sync) == 1 else no_sync
        if p.overlap_param_gather:
            sync = [m.start_param_sync for m in self.model]
            self.config.param_sync_func = sync[0] if len(sync) == 1 else sync
        self._mask = causal_mask(cfg.model.seq_length, runtime.device)
        self._nan_steps = {int(s) for s in os.environ.get(INJECT_NAN_ENV, "").split(",") if s.strip()}
        self._step = 0

    # -- one step -----------------------------------------------------------------------------------
    def _forward_step(self, data_iterator, model, inject_nan: bool = False):
        batch = next(data_iterator)
        dev = self.rt.device
        output = model(batch["tokens"].to(dev), batch["position_ids"].to(dev), self._mask,
                       labels=batch["labels"].to(dev))
        if inject_nan:
            output = output * float("nan")
        return output, functools.partial(_loss_func, batch["loss_mask"].to(dev))

    def _run(self, microbatches: list[dict], forward_only: bool, inject_nan: bool = False) -> tuple[float, int]:
        iters = [iter(microbatches) for _ in self.model]
        reports = get_forward_backward_func()(
            forward_step_func=functools.partial(self._forward_step, inject_nan=inject_nan),
            data_iterator=iters if len(iters) > 1 else iters[0],
            model=self.model if len(self.model) > 1 else self.model[0],
            num_microbatches=len(microbatches),
            seq_length=self.cfg.model.seq_length,
            micro_batch_size=self.cfg.train.micro_batch_size,
            forward_only=forward_only,
        )
        # Loss sums live on the last pipeline stage; TP/CP replicas scale sum and count alike, so a
        # world all-reduce of (sum, count) gives every rank the exact global mean.
        total = torch.zeros(2, dtype=torch.float64, device=self.rt.device)
        for r in reports:
            total += r["lm loss"].to(total)
        if not ps.is_pipeline_last_stage(ignore_virtual=True) or not reports:
            total.zero_()
        dist.all_reduce(total)
        tokens = int(total[1].item()) // (ps.get_tensor_model_parallel_world_size()
                                         * ps.get_context_parallel_world_size())
        return (total[0] / total[1]).item(), tokens

    def train_step(self, microbatches: list[dict]) -> StepResult:
        for m in self.model:
            m.zero_grad_buffer()
        self.optimizer.zero_grad()
        loss, tokens = self._run(microbatches, forward_only=False, inject_nan=self._step in self._nan_steps)
        lr = self.optimizer.param_groups[0]["lr"]
        self._step += 1
        if not torch.isfinite(torch.tensor(loss)):
            # Never apply an update computed from a non-finite loss; the loop decides skip vs stop.
            for m in self.model:
                m.zero_grad_buffer()
            return StepResult(loss=loss, grad_norm=float("nan"), lr=lr, tokens=tokens, skipped=True)
        ok, grad_norm, _ = self.optimizer.step()
        if ok:
            self.scheduler.step(increment=1)
        return StepResult(loss=loss, grad_norm=float(grad_norm if grad_norm is not None else float("nan")),
                          lr=lr, tokens=tokens, skipped=not ok)

    @torch.no_grad()
    def eval_loss(self, microbatches: list[dict]) -> float:
        for m in self.model:
            m.eval()
        try:
            return self._run(microbatches, forward_only=True)[0]
        finally:
            for m in self.model:
                m.train()

    # -- checkpoint state ---------------------------------------------------------------------------
    def set_step(self, step: int) -> None:
        self._step = step

    # Unwrapped chunks: their keys are the model's own (no DDP / Float16Module prefixes).
    def model_state(self) -> dict:
        if len(self.modules) == 1:
            return {"model": self.modules[0].sharded_state_dict()}
        return {f"model{i}": m.sharded_state_dict() for i, m in enumerate(self.modules)}

    def optimizer_state(self, model_state: dict, is_loading: bool) -> dict:
        if is_loading:
            cpu_compat.prepare_optimizer_for_load(self.optimizer)
        # dp_reshardable: the one DistributedOptimizer format that round-trips exactly here
        # (shared/research/megatron-core-cpu.md Q5).
        metadata = {"distrib_optim_sharding_type": "dp_reshardable"}
        return self.optimizer.sharded_state_dict(model_state, is_loading=is_loading, metadata=metadata)

    def load_model(self, state: dict) -> None:
        if len(self.modules) == 1:
            self.modules[0].load_state_dict(state["model"])
        else:
            for i, m in enumerate(self.modules):
                m.load_state_dict(state[f"model{i}"])

    def load_optimizer(self, state: dict) -> None:
        with torch.no_grad():  # fp32 DistributedOptimizer main params are views of model params
            self.optimizer.load_state_dict(state)
        cpu_compat.fix_optimizer_after_load(self.optimizer)
