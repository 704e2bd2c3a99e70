"""The DeepSpeed engine: the same megatron-core GPTModel (same specs, norms, recipe, kernels and initial
weights), wrapped by `deepspeed.initialize` with ZeRO 0-3, megatron tensor parallelism through `mpu`
(the Megatron-DeepSpeed arrangement), bf16 with fp32 master weights, CPU offload, and DeepSpeed's own
checkpoints. Pipeline parallelism stays megatron's (config validation refuses pp > 1 here).

Same optimizer semantics as the megatron engine (`optim.py`): AdamW, megatron's param groups for the
weight-decay policy, megatron's LR schedule object, clipping by global norm, per-token loss averaging.
"""

import json
import logging
from pathlib import Path

import deepspeed
import torch
import torch.distributed as dist
from megatron.core import parallel_state as ps
from megatron.core.optimizer import _get_param_groups
from megatron.core.tensor_parallel import get_cuda_rng_tracker

from pipeline import cpu_compat
from pipeline.config.schema import RunConfig
from pipeline.model import build_model, norm_sites, transformer_config
from pipeline.runtime import Runtime

from .base import (
    StepResult,
    causal_mask,
    dp_loss_range,
    exact_inits,
    per_token_loss,
    sum_of_squares,
    tp_unique,
)
from .optim import build_scheduler, optimizer_config, weight_decay_overrides

log = logging.getLogger(__name__)
TAG = "deepspeed"  # DeepSpeed's sub-folder inside our step_N/ checkpoint directory
CONFIG_FILE = "deepspeed_config.json"


class MegatronMPU:
    """megatron's parallel_state under the older names DeepSpeed calls (`get_model_parallel_*`)."""

    get_model_parallel_rank = staticmethod(ps.get_tensor_model_parallel_rank)
    get_model_parallel_world_size = staticmethod(ps.get_tensor_model_parallel_world_size)
    get_model_parallel_group = staticmethod(ps.get_tensor_model_parallel_group)

    def __getattr__(self, name: str):
        return getattr(ps, name)


def deepspeed_config(cfg: RunConfig, dp_size: int) -> dict:
    """The DeepSpeed JSON, generated from our config (one source of truth); `deepspeed.extra` merges last."""
    t, d = cfg.train, cfg.deepspeed
    zero: dict = {"stage": d.zero_stage, "overlap_comm": d.overlap_comm,
                  "contiguous_gradients": d.contiguous_gradients, "reduce_bucket_size": d.reduce_bucket_size,
                  "allgather_bucket_size": d.allgather_bucket_size}
    if d.zero_stage == 3:
        zero.update(stage3_prefetch_bucket_size=d.stage3_prefetch_bucket_size,
                    stage3_param_persistence_threshold=d.stage3_param_persistence_threshold,
                    stage3_max_live_parameters=d.stage3_max_live_parameters,
                    stage3_max_reuse_distance=d.stage3_max_reuse_distance)
    if d.offload_optimizer != "none":
        zero["offload_optimizer"] = {"device": d.offload_optimizer, "pin_memory": True}
    if d.offload_param != "none":
        zero["offload_param"] = {"device": d.offload_param, "pin_memory": True}
    out = {
        "train_batch_size": t.global_batch_size,
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": t.global_batch_size // (t.micro_batch_size * dp_size),
        "gradient_clipping": cfg.optimizer.clip_grad,
        "bf16": {"enabled": t.precision == "bf16"},
        "zero_optimization": zero,
        # Our AdamW is a client optimizer (torch's: no JIT-compiled DeepSpeed op needed, CPU Adam included).
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 2**31 - 1,  # our monitor logs
        "wall_clock_breakdown": False,
    }
    return _merge(out, d.extra)


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _skippable(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """An optimizer whose next step can be turned into a no-op: DeepSpeed always steps at the accumulation
    boundary, and a non-finite loss must leave weights *and* Adam moments untouched (as megatron does)."""
    step = optimizer.step
    optimizer.skip_next = False

    def maybe_step(*args, **kwargs):
        if optimizer.skip_next:
            return None
        return step(*args, **kwargs)

    optimizer.step = maybe_step
    return optimizer


def _zero3_valid(param: torch.nn.Parameter) -> int:
    """Elements of this rank's ZeRO-3 partition of `param` that hold the parameter (the rest is padding)."""
    size = param.ds_tensor.numel()
    start = dist.get_rank(group=param.ds_process_group) * size
    return max(0, min(param.ds_numel - start, size))


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "tracker": get_cuda_rng_tracker().get_states(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


class DeepSpeedEngine:
    def __init__(self, cfg: RunConfig, runtime: Runtime, vocab_size: int) -> None:
        self.cfg, self.rt = cfg, runtime
        cpu_compat.prepare_deepspeed()
        bf16 = cfg.train.precision == "bf16"
        self.config = transformer_config(cfg, runtime.on_gpu)
        self.modules = build_model(cfg, vocab_size, runtime.on_gpu)
        assert len(self.modules) == 1, "no virtual pipeline stages under DeepSpeed (validated)"
        self.modules[0].to(runtime.device)
        opt_config = optimizer_config(cfg, self.config.params_dtype, bf16)
        groups = _get_param_groups(self.modules, opt_config, weight_decay_overrides(cfg, opt_config))
        o = cfg.optimizer
        offloaded = cfg.deepspeed.offload_optimizer != "none"
        client = torch.optim.AdamW([g for g in groups if g["params"]], lr=o.lr, betas=(o.beta1, o.beta2),
                                   eps=o.eps, weight_decay=o.weight_decay,
                                   fused=runtime.on_gpu and not offloaded)
        self.ds_config = deepspeed_config(cfg, runtime.dp_size)
        self.ds, self.optimizer, _, _ = deepspeed.initialize(
            model=self.modules[0], optimizer=_skippable(client), config=self.ds_config, mpu=MegatronMPU())
        self.scheduler = build_scheduler(self.optimizer, cfg)
        if bf16:
            self._exact_masters()
        self._client = client
        self._mask = causal_mask(cfg.model.seq_length, runtime.device)

    @torch.no_grad()
    def _exact_masters(self) -> None:
        """ZeRO's fp32 master partitions of constant-initialised parameters start from the intended value,
        not from its bf16 rounding (DeepSpeed's public fp32-parameter API)."""
        from deepspeed.utils import safe_get_local_fp32_param, safe_set_full_fp32_param, safe_set_local_fp32_param

        for param, value in exact_inits(self.modules):
            if hasattr(param, "ds_id"):  # ZeRO-3: this rank's partition, its padding left as it is
                local = safe_get_local_fp32_param(param)
                local[:_zero3_valid(param)] = value
                safe_set_local_fp32_param(param, local)
            else:  # ZeRO 1/2: the fragment this rank owns, if any
                safe_set_full_fp32_param(param, torch.full(param.shape, value, dtype=torch.float32,
                                                           device=param.device))

    # -- one step -----------------------------------------------------------------------------------
    def _forward(self, mb: dict) -> tuple[torch.Tensor, torch.Tensor]:
        dev = self.rt.device
        losses = self.ds(mb["tokens"].to(dev), mb["position_ids"].to(dev), self._mask, labels=mb["labels"].to(dev))
        return per_token_loss(losses, mb["loss_mask"].to(dev))

    def _dp_sum(self, values: list[float] | torch.Tensor) -> torch.Tensor:
        """Sum over data-parallel ranks (tensor-parallel ranks hold the same data)."""
        t = torch.as_tensor(values, dtype=torch.float64, device=self.rt.device)
        dist.all_reduce(t, group=ps.get_data_parallel_group())
        return t

    def train_step(self, microbatches: list[dict]) -> StepResult:
        # DeepSpeed divides each micro-batch loss by the accumulation steps and averages gradients over
        # DP; scaling by (accumulation × DP / global tokens) makes that the megatron per-token mean.
        local_tokens = float(sum(mb["loss_mask"].sum() for mb in microbatches))
        tokens = int(self._dp_sum([local_tokens])[0].item())
        scale = len(microbatches) * self.rt.dp_size / tokens
        lr = self.optimizer.param_groups[0]["lr"]
        loss_sum = 0.0
        for i, mb in enumerate(microbatches):
            loss, _ = self._forward(mb)
            loss_sum += float(loss.detach())
            self.ds.backward(loss * scale)
            if i == len(microbatches) - 1:  # the boundary: decide before DeepSpeed applies the update
                rows = torch.zeros(self.rt.dp_size, 2, dtype=torch.float64)
                rows[self.rt.dp_rank] = torch.tensor([loss_sum, local_tokens])
                rows = self._dp_sum(rows)  # (loss sum, tokens) of each DP rank
                mean = (rows[:, 0].sum() / tokens).item()
                self._client.skip_next = not torch.isfinite(torch.tensor(mean)).item()
            self.ds.step()
        if self._client.skip_next:
            return StepResult(loss=mean, grad_norm=float("nan"), lr=lr, tokens=tokens, skipped=True,
                              dp_loss_range=dp_loss_range(rows))
        self.scheduler.step(increment=1)
        norm = self.ds.get_global_grad_norm()
        return StepResult(loss=mean, grad_norm=float(norm) if norm is not None else float("nan"), lr=lr,
                          tokens=tokens, skipped=False, dp_loss_range=dp_loss_range(rows))

    @torch.no_grad()
    def eval_loss(self, microbatches: list[dict]) -> float:
        self.ds.eval()
        try:
            sums = [self._forward(mb) for mb in microbatches]
            total = self._dp_sum([float(sum(s for s, _ in sums)), float(sum(c for _, c in sums))])
            return (total[0] / total[1]).item()
        finally:
            self.ds.train()

    # -- introspection ------------------------------------------------------------------------------
    def norm_sites(self) -> dict[str, torch.nn.Module]:
        return norm_sites(self.modules)

    def gathered(self, params: list[torch.nn.Parameter]):
        """ZeRO-3 keeps only a partition of each parameter on a rank; gather the full values to read."""
        return deepspeed.zero.GatheredParameters(params, enabled=self.cfg.deepspeed.zero_stage == 3)

    def _tp_unique(self) -> list[torch.nn.Parameter]:
        return tp_unique(list(self.modules[0].parameters()), ps.get_tensor_model_parallel_rank())

    def num_parameters(self) -> int:
        local = sum(getattr(p, "ds_numel", p.numel()) for p in self._tp_unique())
        total = torch.tensor([local], dtype=torch.int64, device=self.rt.device)
        dist.all_reduce(total, group=ps.get_tensor_model_parallel_group())
        return int(total.item())

    def params_norm(self) -> float:
        """ZeRO-3 holds one partition of each parameter per DP rank: sum the partitions (less padding) over DP;
        below ZeRO-3 every DP rank holds them whole, so DP rank 0 counts them."""
        if self.cfg.deepspeed.zero_stage == 3:
            tensors = [p.ds_tensor[:_zero3_valid(p)] for p in self._tp_unique()]
        else:
            tensors = self._tp_unique() if self.rt.dp_rank == 0 else []
        total = sum_of_squares(tensors, self.rt.device)
        dist.all_reduce(total)
        return float(total.sqrt())

    def write_run_files(self, run_dir: Path) -> None:
        if self.rt.is_main:
            (run_dir / CONFIG_FILE).write_text(json.dumps(self.ds_config, indent=2))

    # -- checkpoint format: DeepSpeed's save/load_checkpoint inside our step directory --------------
    def layout(self) -> dict:
        return {"engine": "deepspeed", "tp": self.cfg.parallel.tp, "dp": self.rt.dp_size,
                "zero_stage": self.cfg.deepspeed.zero_stage, "precision": self.cfg.train.precision}

    def save(self, directory: Path, step: int) -> None:
        self.ds.save_checkpoint(str(directory), tag=TAG, save_latest=False, client_state={
            "step": step, "scheduler": self.scheduler.state_dict(),
            # ds_to_universal needs this record; TP slices are not resharded (TP changes are refused).
            "universal_checkpoint_info": {"universal_checkpoint_version": 0.2}})
        rng_dir = directory / "rng"
        if self.rt.is_main:
            rng_dir.mkdir(exist_ok=True)
            (directory / CONFIG_FILE).write_text(json.dumps(self.ds_config, indent=2))
        dist.barrier()
        torch.save(_rng_state(), rng_dir / f"rank_{self.rt.rank:05d}.pt")

    def load(self, directory: Path, saved_layout: dict) -> int:
        same = saved_layout == self.layout()
        source = directory
        if not same:
            source = self._to_universal(directory, saved_layout)
            self.ds._config.load_universal_checkpoint = True
        try:
            path, client = self.ds.load_checkpoint(str(source), tag=TAG, load_optimizer_states=True,
                                                   load_lr_scheduler_states=False)
        finally:
            self.ds._config.load_universal_checkpoint = False
        if path is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint under {source}/{TAG}")
        self.scheduler.load_state_dict(client["scheduler"])
        if same:
            rng = torch.load(directory / "rng" / f"rank_{self.rt.rank:05d}.pt", weights_only=True)
            torch.set_rng_state(rng["torch"])
            get_cuda_rng_tracker().set_states(rng["tracker"])
            if rng.get("cuda") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state(rng["cuda"])
        elif self.rt.is_main:
            log.warning("checkpoint %s was saved with %s; now %s: resumed through DeepSpeed's universal "
                        "checkpoint (weights, optimizer state, schedule; RNG streams restart from the seed)",
                        directory, saved_layout, self.layout())
        return int(client["step"])

    def _to_universal(self, directory: Path, saved_layout: dict) -> Path:
        """DeepSpeed's `ds_to_universal` conversion (once per checkpoint, cached in the run's cache dir)."""
        if saved_layout.get("tp") != self.cfg.parallel.tp:
            raise RuntimeError(f"saved with tp={saved_layout.get('tp')}, now parallel.tp={self.cfg.parallel.tp}: "
                               "DeepSpeed checkpoints reshard across data-parallel size and ZeRO stage only; keep "
                               "the tensor-parallel size, or start a new run from its weights with "
                               "checkpoint.init_from=hf:<exported dir>")
        out = directory.parent.parent / "cache" / "universal" / directory.name
        if self.rt.is_main and not (out / "done").is_file():
            import argparse
            import shutil

            from deepspeed.checkpoint import ds_to_universal

            shutil.rmtree(out, ignore_errors=True)
            source = out / "input"
            source.mkdir(parents=True)
            for f in (directory / TAG).iterdir():
                if f.name.startswith("mp_rank_"):
                    # megatron's linear layers report an `_extra_state` of None, which ds_to_universal cannot
                    # convert; they carry nothing (no fp8 state outside TE), so the input copy drops them.
                    state = torch.load(f, map_location="cpu", weights_only=False)
                    state["module"] = {k: v for k, v in state["module"].items() if v is not None}
                    torch.save(state, source / f.name)
                else:
                    (source / f.name).symlink_to(f.resolve())
            ds_to_universal.main(argparse.Namespace(
                input_folder=str(source), output_folder=str(out / TAG), num_extract_workers=1,
                num_merge_workers=1, keep_temp_folder=False, strict=True, inject_missing_state=False))
            shutil.rmtree(source)
            (out / "done").write_text("")
        dist.barrier()
        return out

    def load_weights(self, directory: Path) -> None:
        """Weights from a DeepSpeed checkpoint of any DP size / ZeRO stage at the same TP size (DeepSpeed's
        zero_to_fp32 consolidation), into this engine's module and its fp32 master copy."""
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        saved = json.loads((directory / "meta.json").read_text())["layout"]
        if saved.get("tp") != self.cfg.parallel.tp:
            raise RuntimeError(f"weights saved with tp={saved.get('tp')} cannot be loaded at parallel.tp="
                               f"{self.cfg.parallel.tp} by the DeepSpeed engine")
        if saved["zero_stage"] >= 1 and self.cfg.parallel.tp == 1:  # fp32 masters, any DP size
            state = get_fp32_state_dict_from_zero_checkpoint(str(directory), tag=TAG)
        elif saved["zero_stage"] < 3:  # this TP rank's whole module is in its model-states file
            mp_file = directory / TAG / f"mp_rank_{ps.get_tensor_model_parallel_rank():02d}_model_states.pt"
            state = torch.load(mp_file, map_location="cpu", weights_only=False)["module"]
        else:
            raise RuntimeError("weights of a ZeRO-3 run with tensor parallelism load only by resuming in the "
                               "same layout (checkpoint.resume)")
        self.load_model_state([state])

    def load_model_state(self, states: list[dict]) -> None:
        (state,) = states
        params = list(self.modules[0].parameters())
        with deepspeed.zero.GatheredParameters(params, modifier_rank=0,
                                               enabled=self.cfg.deepspeed.zero_stage == 3):
            self.modules[0].load_state_dict(state)
        if hasattr(self.optimizer, "refresh_fp32_params"):
            self.optimizer.refresh_fp32_params()
