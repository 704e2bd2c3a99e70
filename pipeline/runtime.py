"""Process setup for training and evaluation: torch.distributed, megatron parallel state, seeds.

NCCL on CUDA, gloo on CPU; on CPU the compatibility shims in `cpu_compat` are switched on here and
nowhere else. Works under torchrun and as a plain single process (it then plays rank 0 of 1).
"""

import datetime
import logging
import os
import socket
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pipeline import cpu_compat
from pipeline.config.schema import RunConfig

# Expected noise, once per process: cpp_extension on a GPU-less box with nvcc, megatron's notes on
# optional TE/Apex fallbacks, and GPTModel's deprecation notice.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
logging.getLogger("megatron.core.models.gpt.gpt_model").setLevel(logging.ERROR)
logging.getLogger("megatron.core.dist_checkpointing.strategies.torch").setLevel(logging.ERROR)
for _msg in (".*(Transformer Engine|Apex) (and Apex )?(is|are) not installed", "full scope is deprecated",
             "MimoModelConfig is experimental"):
    warnings.filterwarnings("ignore", message=_msg)


@dataclass
class Runtime:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    dp_size: int
    dp_rank: int

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def have_transformer_engine() -> bool:
    import importlib.util

    return importlib.util.find_spec("transformer_engine") is not None


def choose_device(want: str) -> torch.device:
    """A GPU per local rank when CUDA is usable (or required), else the CPU with gloo and the shims."""
    if want == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device: cuda requested but no GPU is visible")
    if want == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))


def init(cfg: RunConfig) -> Runtime:
    """Initialise torch.distributed and megatron's parallel state for `cfg.parallel`; seed RNGs."""
    device = choose_device(cfg.train.device)
    needs_te = [k for k, on in (("parallel.cp", cfg.parallel.cp > 1), ("train.precision", cfg.train.precision == "fp8"))
                if on]
    if needs_te and (device.type == "cpu" or not have_transformer_engine()):
        raise RuntimeError(f"{needs_te[0]}: context parallelism and fp8 need GPUs with Transformer Engine "
                           "(pip install -r requirements/gpu.txt); use parallel.cp: 1 / train.precision: bf16")
    if device.type == "cpu":
        cpu_compat.activate()
    else:
        torch.cuda.set_device(device)
    if "RANK" not in os.environ:  # a plain `python -m ...` run: one process, rank 0
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(_free_port()))
    world = int(os.environ["WORLD_SIZE"])
    if world != cfg.world_size:
        raise RuntimeError(f"launch: {world} processes started but the config expects launch.nodes × "
                           f"launch.nproc_per_node = {cfg.world_size}")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=30))

    from megatron.core import parallel_state as ps

    p = cfg.parallel
    ps.initialize_model_parallel(
        tensor_model_parallel_size=p.tp,
        pipeline_model_parallel_size=p.pp,
        virtual_pipeline_model_parallel_size=p.vpp,
        context_parallel_size=p.cp,
    )
    cpu_compat.seed_model_parallel_rng(cfg.train.seed)
    return Runtime(rank=dist.get_rank(), world_size=world, local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                   device=device, dp_size=ps.get_data_parallel_world_size(),
                   dp_rank=ps.get_data_parallel_rank())


def shutdown() -> None:
    from megatron.core import parallel_state as ps

    if ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()


def global_rank() -> int:
    """This process's rank (before or without torch.distributed: from the launcher's environment)."""
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", 0))


def is_main_process() -> bool:
    return global_rank() == 0
