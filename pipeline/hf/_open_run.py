"""TEMPORARY (replaced by the engine seam's run loader): a run's checkpoint opened in one process.

Builds the run's model in a TP1/PP1 layout on the CPU and loads the checkpoint's weights into it;
megatron's dist_checkpointing reshards whatever layout the run was trained with.
"""

import warnings
from dataclasses import dataclass
from pathlib import Path

SINGLE_PROCESS = ["parallel.tp=1", "parallel.pp=1", "parallel.vpp=null", "parallel.sp=false", "parallel.cp=1",
                  "parallel.distributed_optimizer=false", "parallel.overlap_grad_reduce=false",
                  "parallel.overlap_param_gather=false", "launch.nodes=1", "launch.nproc_per_node=1",
                  "train.device=cpu"]


@dataclass
class OpenRun:
    cfg: object  # RunConfig
    engine: object
    state: dict  # the full megatron state dict


def _check_same_architecture(ckpt: Path, template: dict) -> None:
    """The checkpoint's model tensors are exactly the model's (a DyT checkpoint read into an RMSNorm
    model would otherwise load its `weight`s and silently drop every α)."""
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory

    want = {v.key for v in nested_values(template) if isinstance(v, (ShardedTensor, ShardedTensorFactory))}
    with warnings.catch_warnings():  # torch DCP's notes on reading metadata outside a process group
        warnings.simplefilter("ignore")
        have = {k for k in dist_checkpointing.load_tensors_metadata(str(ckpt)) if not k.startswith("optimizer.")}
    if want != have:
        extra, missing = sorted(have - want), sorted(want - have)
        raise RuntimeError(f"{ckpt} holds another architecture than the run's config.yaml: "
                           f"tensors only in the checkpoint: {extra or 'none'}; only in the model: {missing or 'none'}")


def open_run(run_dir: Path, ckpt: Path) -> OpenRun:
    from megatron.core import dist_checkpointing

    from pipeline import runtime
    from pipeline.config import load_config
    from pipeline.data import load_manifest
    from pipeline.engine import MegatronEngine
    from pipeline.train import manifest_path

    cfg = load_config(str(run_dir / "config.yaml"), SINGLE_PROCESS)
    if cfg.train.precision == "fp8":  # fp8 is a GEMM mode; its weights are bf16
        cfg.train.precision = "bf16"
    rt = runtime.init(cfg)
    engine = MegatronEngine(cfg, rt, cfg.model.vocab_size or load_manifest(manifest_path(cfg)).vocab_size)
    template = engine.model_state()
    _check_same_architecture(ckpt, template)
    engine.load_model(dist_checkpointing.load(template, str(ckpt)))
    return OpenRun(cfg, engine, engine.modules[0].state_dict())
