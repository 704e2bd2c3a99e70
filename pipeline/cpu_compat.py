"""The only place that knows megatron-core was written for CUDA. Inert when a GPU is present.

On a CPU-only machine megatron-core needs (each measured on a 2-core CPU box, megatron-core 0.19.2):
  S2  an RNG tracker built on the CPU generator (megatron's uses torch.cuda RNG states),
  S3  torch.cuda.current_device()/synchronize/streams that point at the CPU,
  S4  a TorchFunctionMode that turns device="cuda" / .cuda() into CPU and makes CPU tensors report a
      CUDA type string (megatron's optimizers and clip_grads identify params by `tensor.type()`),
  S6  unbatched pipeline p2p: with gloo, `batch_isend_irecv` under the interleaved (virtual-stage)
      schedule pairs activations with the wrong micro-batch (PP2+VPP2 step-1 loss 8.22800 against
      8.22776 in one process; exact with batch_p2p_comm=False),
  S8  an empty "CUDA RNG state" for activation recomputation, which saves and restores it around each
      recomputed block (on CPU every random stream is a CPU generator state the tracker already keeps),
  S7  fork, not spawn, for dist_checkpointing's long-lived result-queue process: a spawned one re-imports
      the training module (megatron: ~4 s of CPU and ~0.7 GB per rank); nothing in it touches a GPU,
  S9  DeepSpeed: skip the JIT build of its shared-memory all-reduce op on the CPU accelerator (70-130 s of
      C++ compile on 2 cores at the first `init_distributed`; only its inference all-reduce uses it),
  S5  DistributedOptimizer resume fixes for megatron's torch-Adam fallback (always used on CPU, where
      Apex/TE are absent): create state before loading, give every param its own `step` after loading.
"""

import contextlib
from collections.abc import Iterator

import torch

_CUDA_TYPE = {
    "torch.FloatTensor": "torch.cuda.FloatTensor",
    "torch.HalfTensor": "torch.cuda.HalfTensor",
    "torch.BFloat16Tensor": "torch.cuda.BFloat16Tensor",
}
_active = False


def on_cpu() -> bool:
    """Training runs on the CPU: no usable GPU, or the shims were switched on to force the CPU."""
    # The CUDA build of torch reports CUDA in several other places even with no GPU (py312-stack-check §A).
    return _active or not torch.cuda.is_available()


def _is_cuda(device: object) -> bool:
    if isinstance(device, str):
        return device.startswith("cuda")
    if isinstance(device, torch.device):
        return device.type == "cuda"
    return isinstance(device, int) and not isinstance(device, bool)


class _CudaToCpuMode(torch.overrides.TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda(args[1]):
            args = (args[0], "cpu", *args[2:])
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            name = func(*args)
            return _CUDA_TYPE.get(name, name)
        return func(*args, **kwargs)


class _NullStream:
    def __init__(self, *args, **kwargs) -> None: ...
    def wait_stream(self, *args, **kwargs) -> None: ...
    def wait_event(self, *args, **kwargs) -> None: ...
    def record_event(self, *args, **kwargs) -> "_NullStream":
        return self
    def record(self, *args, **kwargs) -> None: ...
    def synchronize(self) -> None: ...
    def query(self) -> bool:
        return True


def activate() -> None:
    """Apply S3+S4 process-wide (idempotent); runtime calls it only when training on the CPU."""
    global _active
    if _active:
        return
    torch.cuda.current_device = lambda: torch.device("cpu")
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.Stream = torch.cuda.Event = _NullStream
    torch.cuda.current_stream = lambda *a, **k: _NullStream()
    torch.cuda.stream = lambda *a, **k: contextlib.nullcontext()
    torch.cuda.max_memory_allocated = lambda *a, **k: 0
    torch.cuda.get_rng_state = torch.cuda.random.get_rng_state = lambda *a, **k: torch.empty(0, dtype=torch.uint8)
    _CudaToCpuMode().__enter__()  # process-wide, for the life of the process
    _active = True


def adapt_model_config(config):
    """S6 on a megatron Transformer/ModelParallelConfig; returns it. No-op on CUDA (NCCL batches fine)."""
    if on_cpu():
        config.batch_p2p_comm = False
    return config


def checkpoint_queue_start_method() -> str:
    """S7: how dist_checkpointing should start its result-queue process (megatron's default on GPU)."""
    return "fork" if on_cpu() else "spawn"


def seed_model_parallel_rng(seed: int) -> None:
    """megatron's `model_parallel_cuda_manual_seed`, with a CPU generator behind it on CPU (S2)."""
    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel import random as mrandom

    if not on_cpu():
        mrandom.model_parallel_cuda_manual_seed(seed)
        return

    class CPURNGStatesTracker(mrandom.CudaRNGStatesTracker):
        def add(self, name: str, seed: int) -> None:
            self._is_initialized = True
            if seed in self.seeds_ or name in self.states_:
                raise RuntimeError(f"RNG state {name} / seed {seed} already added")
            self.seeds_.add(seed)
            saved = torch.get_rng_state()
            torch.manual_seed(seed)
            self.states_[name] = torch.get_rng_state()
            torch.set_rng_state(saved)

        @contextlib.contextmanager
        def fork(self, name: str = mrandom._MODEL_PARALLEL_RNG_TRACKER_NAME) -> Iterator[None]:
            saved = torch.get_rng_state()
            torch.set_rng_state(self.states_[name])
            try:
                yield
            finally:
                self.states_[name] = torch.get_rng_state()
                torch.set_rng_state(saved)

    tracker = CPURNGStatesTracker()
    mrandom._CUDA_RNG_STATE_TRACKER = tracker
    mrandom._CUDA_RNG_STATE_TRACKER_INITIALIZED = True
    tp, ep, etp = (ps.get_tensor_model_parallel_rank(), ps.get_expert_model_parallel_rank(),
                   ps.get_expert_tensor_parallel_rank())
    torch.manual_seed(seed)
    # Same offsets as megatron's model_parallel_cuda_manual_seed.
    tracker.add(mrandom._DATA_PARALLEL_RNG_TRACKER_NAME, seed)
    tracker.add(mrandom._MODEL_PARALLEL_RNG_TRACKER_NAME, seed + 2718 + tp)
    tracker.add(mrandom._EXPERT_PARALLEL_RNG_TRACKER_NAME, seed + 1024 + 100 * ep + etp)


def _torch_adams(opt) -> list:
    # The S5 bugs live in megatron's fallback to torch Adam (no Apex/TE): always so on CPU, possible on GPU.
    inner = [o for o in getattr(opt, "chained_optimizers", [opt]) if getattr(o, "optimizer", None) is not None]
    return [o for o in inner if isinstance(o.optimizer, (torch.optim.Adam, torch.optim.AdamW))]


def prepare_optimizer_for_load(opt) -> None:
    """S5a: torch Adam has no state before its first step; the DistributedOptimizer needs it to load."""
    for o in _torch_adams(opt):
        if not o.optimizer.state and getattr(o, "init_state_fn", None):
            o.init_state_fn(o.optimizer, o.config)
            for st in o.optimizer.state.values():
                st.setdefault("step", torch.tensor(0.0))


def fix_optimizer_after_load(opt) -> None:
    """S5b: loading assigns one shared `step` tensor to every param; give each its own."""
    for o in _torch_adams(opt):
        for group in o.optimizer.param_groups:
            for p in group["params"]:
                st = o.optimizer.state.get(p, {})
                if "step" in group and "step" in st:
                    st["step"] = torch.tensor(float(group["step"]))


def prepare_deepspeed() -> None:
    """S9, before DeepSpeed initialises its comm layer; no-op on CUDA."""
    if not on_cpu():
        return
    import importlib

    # importlib, not `import deepspeed.comm.torch as m`: that name resolves to the torch package, because
    # deepspeed.comm has an attribute called torch.
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
