"""Optimizer semantics shared by every engine: AdamW settings, the per-parameter weight-decay policy and
the LR schedule. Both engines build their param groups and schedule here, so their updates and LR values
agree at every step (the DeepSpeed equivalence tests compare them)."""

import math

from megatron.core.optimizer import OptimizerConfig, get_standard_config_overrides
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

from pipeline.config.schema import RunConfig
from pipeline.norms import decay_norm_params


def optimizer_config(cfg: RunConfig, params_dtype, bf16: bool) -> OptimizerConfig:
    o, p = cfg.optimizer, cfg.parallel
    return OptimizerConfig(
        optimizer="adam", lr=o.lr, min_lr=o.min_lr, weight_decay=o.weight_decay, adam_beta1=o.beta1,
        adam_beta2=o.beta2, adam_eps=o.eps, clip_grad=o.clip_grad, bf16=bf16, params_dtype=params_dtype,
        use_distributed_optimizer=p.distributed_optimizer and cfg.engine == "megatron",
        overlap_param_gather=p.overlap_param_gather,
    )


def weight_decay_overrides(cfg: RunConfig, opt_config: OptimizerConfig) -> dict:
    """megatron param-group overrides: {} decays every parameter (the paper's DyT recipe, α included);
    megatron's standard overrides exempt 1-D params and biases (its default for LayerNorm/RMSNorm)."""
    return {} if decay_norm_params(cfg.model.norm) else get_standard_config_overrides(opt_config)


class FmsFsdpScheduler(OptimizerParamScheduler):
    """The DyT paper's LLaMA schedule (jiachenzhu/DyT other_tasks/LLaMA/main_training_llama.py, IBM fms-fsdp):
        lr(x) = max_lr · min(1 − (1 − min(x, w)/w)², m + ½(1 − m)(1 + cos(π·min(x, N)/N))),  m = min_lr/max_lr
    x = applied updates so far, w = warmup steps (the official code: min(2000, N/20)), N = decay steps. Unlike
    megatron's cosine, the cosine runs from step 0, not from the end of warmup; the two meet near x = w."""

    def get_lr(self, param_group: dict) -> float:
        max_lr = param_group.get("max_lr", self.max_lr)
        floor = param_group.get("min_lr", self.min_lr) / max_lr
        x, w, n = self.num_steps, self.lr_warmup_steps, self.lr_decay_steps
        ramp = 1 - (1 - min(x, w) / w) ** 2 if w > 0 else 1.0
        cosine = floor + 0.5 * (1 - floor) * (1 + math.cos(math.pi * min(x, n) / n))
        return max_lr * min(ramp, cosine)


def build_scheduler(optimizer, cfg: RunConfig) -> OptimizerParamScheduler:
    """Warmup then cosine / WSD / constant (megatron's), or the fms-fsdp schedule; stepped once per applied
    update."""
    o, s, steps = cfg.optimizer, cfg.schedule, cfg.train.steps
    decay_steps = max(steps - s.warmup_steps, 1)
    styles = {"cosine": "cosine", "wsd": "WSD", "constant": "constant", "fms_fsdp": "fms_fsdp"}
    return (FmsFsdpScheduler if s.decay == "fms_fsdp" else OptimizerParamScheduler)(
        optimizer, init_lr=0.0, max_lr=o.lr, min_lr=o.min_lr, lr_warmup_steps=s.warmup_steps,
        lr_decay_steps=steps, lr_decay_style=styles[s.decay],
        start_wd=o.weight_decay, end_wd=o.weight_decay, wd_incr_steps=steps, wd_incr_style="constant",
        wsd_decay_steps=max(int(s.wsd_decay_fraction * decay_steps), 1) if s.decay == "wsd" else None,
        lr_wsd_decay_style="cosine" if s.decay == "wsd" else None,
    )
