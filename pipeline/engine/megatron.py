"""The megatron-core engine: DDP-wrapped GPTModel chunks, megatron optimizer, LR schedule, one step, and
dist_checkpointing as its checkpoint format.

Parallelism (TP/SP/PP/VPP/DP/CP, distributed optimizer) is megatron's: this file only wires it.
"""

import functools
import logging
import signal
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing
from megatron.core import parallel_state as ps
from megatron.core.dist_checkpointing.dict_utils import nested_values
from megatron.core.dist_checkpointing.mapping import ShardedObject, ShardedTensor, ShardedTensorFactory
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.optimizer import get_megatron_optimizer
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.tensor_parallel import get_cuda_rng_tracker
from megatron.core.transformer.module import Float16Module

from pipeline import cpu_compat
from pipeline.config.schema import RunConfig
from pipeline.model import build_model, norm_sites, transformer_config
from pipeline.process import die_with_parent
from pipeline.runtime import Runtime

from .base import (
    StepResult,
    causal_mask,
    dp_loss_range,
    exact_inits,
    no_gather,
    per_token_loss,
    sum_of_squares,
    tp_unique,
)
from .optim import build_scheduler, optimizer_config, weight_decay_overrides

log = logging.getLogger(__name__)


def _loss_func(loss_mask: torch.Tensor, output: torch.Tensor):
    """Per-token loss: megatron divides gradients by the global token count (calculate_per_token_loss)."""
    loss, count = per_token_loss(output, loss_mask)
    return loss, count.to(torch.int), {"lm loss": torch.stack([loss.detach(), count])}


_writer_managers: list = []


def _writer_queue_process_init() -> None:
    # SLURM signals every process of a job step on preemption: ignoring SIGTERM/SIGUSR1 keeps this process
    # alive for the preemption checkpoint; it dies with its worker instead (even a SIGKILLed one).
    for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(s, signal.SIG_IGN)
    die_with_parent(signal.SIGKILL)


def _start_writer_queue() -> None:
    """dist_checkpointing reports writes through a Manager process that lives as long as training. We start
    it ourselves (megatron's `get_write_results_queue` takes no initializer) and hand megatron its queue."""
    from multiprocessing import get_context
    from multiprocessing.managers import SyncManager

    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if filesystem_async._results_queue is None:
        manager = SyncManager(ctx=get_context(cpu_compat.checkpoint_queue_start_method()))
        manager.start(initializer=_writer_queue_process_init)
        filesystem_async._results_queue = manager.Queue()
        _writer_managers.append(manager)  # a Manager shuts down when garbage-collected


def _check_same_model(directory: Path, template: dict) -> None:
    """Collective: the checkpoint holds exactly this model's tensors. dist_checkpointing loads what the model asks for
    and ignores the rest, so a DyT checkpoint read into an RMSNorm model would keep every γ and drop every α."""
    with warnings.catch_warnings():  # torch DCP's note on reading metadata outside a process group
        warnings.simplefilter("ignore")
        saved = {k for k in dist_checkpointing.load_tensors_metadata(str(directory)) if not k.startswith("optimizer.")}
    wanted = {v.key for v in nested_values(template) if isinstance(v, (ShardedTensor, ShardedTensorFactory))}
    everyone: list = [None] * dist.get_world_size()  # pipeline stages hold different parts of the model
    dist.all_gather_object(everyone, wanted)
    wanted = set().union(*everyone)
    if saved != wanted:
        raise RuntimeError(f"{directory} holds another model than this config builds: tensors only in the checkpoint: "
                           f"{sorted(saved - wanted) or 'none'}; only in the model: {sorted(wanted - saved) or 'none'}")


def _rng_state() -> ShardedObject:
    state = {"torch": torch.get_rng_state(), "tracker": get_cuda_rng_tracker().get_states(),
             "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}
    # One object per (pp, tp) rank; DP replicas share RNG streams in megatron.
    return ShardedObject("rng_state", state, (ps.get_pipeline_model_parallel_world_size(),
                         ps.get_tensor_model_parallel_world_size()),
                         (ps.get_pipeline_model_parallel_rank(), ps.get_tensor_model_parallel_rank()),
                         replica_id=ps.get_data_parallel_rank(with_context_parallel=True))


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    get_cuda_rng_tracker().set_states(state["tracker"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class MegatronEngine:
    def __init__(self, cfg: RunConfig, runtime: Runtime, vocab_size: int) -> None:
        self.cfg, self.rt = cfg, runtime
        p, t = cfg.parallel, cfg.train
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
        opt_config = optimizer_config(cfg, self.config.params_dtype, bf16)
        self.optimizer = get_megatron_optimizer(opt_config, self.model,
                                                config_overrides=weight_decay_overrides(cfg, opt_config))
        self.scheduler = build_scheduler(self.optimizer, cfg)
        if bf16:
            self._exact_masters()
        self.config.finalize_model_grads_func = finalize_model_grads
        self.config.grad_scale_func = self.optimizer.scale_loss
        no_sync = [m.no_sync for m in self.model]
        self.config.no_sync_func = no_sync[0] if len(no_sync) == 1 else no_sync
        if p.overlap_param_gather:
            sync = [m.start_param_sync for m in self.model]
            self.config.param_sync_func = sync[0] if len(sync) == 1 else sync
        self._mask = causal_mask(cfg.model.seq_length, runtime.device)
        _start_writer_queue()

    @torch.no_grad()
    def _exact_masters(self) -> None:
        """fp32 master copies (Float16Optimizer: whole; DistributedOptimizer: this rank's shard, or None) of
        constant-initialised parameters start from the intended value, not from its bf16 rounding."""
        for param, value in exact_inits(self.modules):
            main = getattr(param, "main_param", None)
            if main is not None:
                main.fill_(value)

    # -- one step -----------------------------------------------------------------------------------
    def _forward_step(self, data_iterator, model):
        batch = next(data_iterator)
        dev = self.rt.device
        output = model(batch["tokens"].to(dev), batch["position_ids"].to(dev), self._mask,
                       labels=batch["labels"].to(dev))
        return output, functools.partial(_loss_func, batch["loss_mask"].to(dev))

    def _run(self, microbatches: list[dict], forward_only: bool) -> tuple[float, int, torch.Tensor]:
        iters = [iter(microbatches) for _ in self.model]
        reports = get_forward_backward_func()(
            forward_step_func=self._forward_step,
            data_iterator=iters if len(iters) > 1 else iters[0],
            model=self.model if len(self.model) > 1 else self.model[0],
            num_microbatches=len(microbatches),
            seq_length=self.cfg.model.seq_length,
            micro_batch_size=self.cfg.train.micro_batch_size,
            forward_only=forward_only,
        )
        # Loss sums live on the last pipeline stage; TP/CP replicas scale sum and count alike, so a
        # world all-reduce of (sum, count) per DP rank gives every rank the exact global mean (and each DP
        # rank's own, for the loss spread across data-parallel ranks).
        rows = torch.zeros(self.rt.dp_size, 2, dtype=torch.float64, device=self.rt.device)
        if ps.is_pipeline_last_stage(ignore_virtual=True):
            for r in reports:
                rows[ps.get_data_parallel_rank()] += r["lm loss"].to(rows)
        dist.all_reduce(rows)
        total = rows.sum(0)
        tokens = int(total[1].item()) // (ps.get_tensor_model_parallel_world_size()
                                         * ps.get_context_parallel_world_size())
        return (total[0] / total[1]).item(), tokens, rows

    def train_step(self, microbatches: list[dict]) -> StepResult:
        for m in self.model:
            m.zero_grad_buffer()
        self.optimizer.zero_grad()
        loss, tokens, rows = self._run(microbatches, forward_only=False)
        lr = self.optimizer.param_groups[0]["lr"]
        if not torch.isfinite(torch.tensor(loss)):
            # Never apply an update computed from a non-finite loss; the loop decides skip vs stop.
            for m in self.model:
                m.zero_grad_buffer()
            return StepResult(loss=loss, grad_norm=float("nan"), lr=lr, tokens=tokens, skipped=True,
                              dp_loss_range=dp_loss_range(rows))
        ok, grad_norm, _ = self.optimizer.step()
        if ok:
            self.scheduler.step(increment=1)
        return StepResult(loss=loss, grad_norm=float(grad_norm if grad_norm is not None else float("nan")),
                          lr=lr, tokens=tokens, skipped=not ok, dp_loss_range=dp_loss_range(rows))

    @torch.no_grad()
    def eval_loss(self, microbatches: list[dict]) -> float:
        for m in self.model:
            m.eval()
        try:
            return self._run(microbatches, forward_only=True)[0]
        finally:
            for m in self.model:
                m.train()

    # -- introspection ------------------------------------------------------------------------------
    def norm_sites(self) -> dict[str, torch.nn.Module]:
        return norm_sites(self.modules)

    gathered = staticmethod(no_gather)

    def _own_params(self) -> list[torch.nn.Parameter]:
        """This (pp, tp) rank's parameters, tensor-parallel replicas only on tp rank 0; none on DP replicas."""
        if ps.get_data_parallel_rank(with_context_parallel=True) != 0:
            return []
        return tp_unique([p for m in self.modules for p in m.parameters()], ps.get_tensor_model_parallel_rank())

    def num_parameters(self) -> int:
        total = torch.tensor([sum(p.numel() for p in self._own_params())], dtype=torch.int64, device=self.rt.device)
        dist.all_reduce(total)
        return int(total.item())

    def params_norm(self) -> float:
        total = sum_of_squares(self._own_params(), self.rt.device)
        dist.all_reduce(total)
        return float(total.sqrt())

    def write_run_files(self, run_dir: Path) -> None:
        """Nothing beyond config.yaml: the TransformerConfig is derived from it."""

    # -- checkpoint format: megatron dist_checkpointing (any layout reads any other's weights) ------
    def layout(self) -> dict:
        p = self.cfg.parallel
        return {"engine": "megatron", "tp": p.tp, "pp": p.pp, "vpp": p.vpp, "cp": p.cp,
                "world_size": self.rt.world_size, "distributed_optimizer": p.distributed_optimizer,
                "precision": self.cfg.train.precision}

    # Unwrapped chunks: their keys are the model's own (no DDP / Float16Module prefixes).
    def _model_state(self) -> dict:
        if len(self.modules) == 1:
            return {"model": self.modules[0].sharded_state_dict()}
        return {f"model{i}": m.sharded_state_dict() for i, m in enumerate(self.modules)}

    def _optimizer_state(self, model_state: dict, is_loading: bool) -> dict:
        if is_loading:
            cpu_compat.prepare_optimizer_for_load(self.optimizer)
        # dp_reshardable: the one DistributedOptimizer format that round-trips exactly on CPU/gloo.
        metadata = {"distrib_optim_sharding_type": "dp_reshardable"}
        return self.optimizer.sharded_state_dict(model_state, is_loading=is_loading, metadata=metadata)

    def _load_model(self, state: dict) -> None:
        self.load_model_state([state["model"]] if len(self.modules) == 1 else
                              [state[f"model{i}"] for i in range(len(self.modules))])

    def save(self, directory: Path, step: int) -> None:
        state = self._model_state()
        state["optimizer"] = self._optimizer_state(state, is_loading=False)
        state["scheduler"] = self.scheduler.state_dict()
        state["step"] = step
        state["rng_state"] = _rng_state()
        dist_checkpointing.save(state, str(directory))

    def load(self, directory: Path, saved_layout: dict) -> int:
        """Across a different parallel layout only the weights (and schedule/step) are restored: the
        optimizer shards and RNG streams follow the old layout."""
        same_layout = saved_layout == self.layout()
        template = self._model_state()
        if same_layout:
            template["optimizer"] = self._optimizer_state(template, is_loading=True)
            template["rng_state"] = _rng_state()
        state = dist_checkpointing.load(template, str(directory))
        self._load_model(state)
        if same_layout:
            with torch.no_grad():  # fp32 DistributedOptimizer main params are views of model params
                self.optimizer.load_state_dict(state["optimizer"])
            cpu_compat.fix_optimizer_after_load(self.optimizer)
            _set_rng_state(state["rng_state"])
        elif self.rt.is_main:
            log.warning("checkpoint %s was saved with layout %s; now %s: loaded weights, schedule and step, "
                        "optimizer state starts fresh", directory, saved_layout, self.layout())
        common = dist_checkpointing.load_common_state_dict(str(directory))
        self.scheduler.load_state_dict(common["scheduler"])
        return int(common["step"])

    def load_weights(self, directory: Path) -> None:
        template = self._model_state()
        _check_same_model(directory, template)
        self._load_model(dist_checkpointing.load(template, str(directory)))

    def load_model_state(self, states: list[dict]) -> None:
        for module, state in zip(self.modules, states, strict=True):
            module.load_state_dict(state)
        # bf16: the fp32 masters (whole or DistributedOptimizer shards) are copies made at build time; without
        # this the first step would write them, i.e. the initial weights, back over the loaded ones. (A
        # resume in the same layout then loads the saved masters over these.)
        self.optimizer.reload_model_params()
