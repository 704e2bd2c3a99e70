"""The models `gpu_e2e.py` times: one real megatron GPTModel per norm variant, built by `build_model`.

Every variant of a shape is built from the same run config (LLaMA-3 8B or 70B layer shapes from
configs/model/, fewer layers) with only the norm keys changed, and megatron's local modules with SDPA
attention (`pipeline.model.sdpa`: Transformer Engine is not installed where this runs). The variants of a
shape then share their weight matrices and those matrices' AdamW state, so all of them fit in memory at
once and timing rounds can interleave; each keeps its own norm parameters, and a step of any variant does
exactly the work of a standalone step (forward, backward, grad-norm clipping, AdamW).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from megatron.core.transformer.module import Float16Module

from pipeline.config import RunConfig, load_config
from pipeline.kernels import reference
from pipeline.model import build_model, transformer_config
from pipeline.model.sdpa import SDPASpecProvider
from pipeline.norms.torch_norms import RMSNorm

VOCAB = 128_256  # LLaMA-3's tokenizer


@dataclasses.dataclass(frozen=True)
class Variant:
    label: str
    description: str
    overrides: tuple[str, ...]
    triton_ops: tuple[str, ...] = ()  # kernels the correctness gate must pass first (pipeline/kernels/checks.py)
    reference: str | None = None  # the variant whose weight gradients this one must reproduce


VARIANTS = (
    Variant("rmsnorm[torch]", "RMSNorm, torch's F.rms_norm (our RMSNorm module)", ("model.norm.type=rmsnorm",)),
    Variant("rmsnorm[compile]", "RMSNorm, torch.compile'd F.rms_norm",
            ("model.norm.type=e2e_model:CompiledRMSNorm",), reference="rmsnorm[torch]"),
    Variant("dyt[eager]", "DyT, eager torch ops", ("model.norm.type=dyt", "model.norm.kernel=eager")),
    Variant("dyt[triton]", "DyT, our Triton kernels", ("model.norm.type=dyt", "model.norm.kernel=triton"), ("dyt",),
            reference="dyt[eager]"),
    Variant("dyt[triton+add]", "DyT, Triton, residual add fused into the pre-MLP DyT",
            ("model.norm.type=dyt", "model.norm.kernel=triton", "model.norm.fuse_residual_add=true"),
            ("dyt", "add_dyt"), reference="dyt[eager]"),
    Variant("derf[triton]", "Derf, our Triton kernels", ("model.norm.type=derf", "model.norm.kernel=triton"),
            ("derf",)),
)
BASELINES = ("rmsnorm[torch]", "rmsnorm[compile]")  # ratios are against the first and the faster of these

# name -> (model config, layers); the dry run swaps in tiny widths (same code, CPU-sized).
SHAPES = {"8b": ("model/llama3_8b", 4), "70b": ("model/llama3_70b", 2)}
DRY_SHAPES = {
    "8b": ["model.hidden_size=64", "model.num_attention_heads=4", "model.num_query_groups=2",
           "model.ffn_hidden_size=160", "model.seq_length=32", "model.vocab_size=512"],
    "70b": ["model.hidden_size=128", "model.num_attention_heads=8", "model.num_query_groups=2",
            "model.ffn_hidden_size=320", "model.seq_length=32", "model.vocab_size=512"],
}


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


class CompiledRMSNorm(RMSNorm):
    """Our RMSNorm with its forward through torch.compile (Inductor's fused Triton kernel on GPU)."""

    kernel = "compile"  # "eager" runs the uncompiled op (the model-level check flips it)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fn = reference.compiled(_rms_norm) if self.kernel == "compile" else _rms_norm
        return fn(x, self.weight, self.eps)


def shape_config(shape: str, layers: int, variant: Variant, device: torch.device, dry: bool) -> RunConfig:
    """The run config of one variant at one shape: bf16, one sequence per step, TP/PP/DP 1."""
    path, _ = SHAPES[shape]
    common = [f"model.num_layers={layers}", f"model.vocab_size={VOCAB}", "train.precision=bf16",
              "train.micro_batch_size=1", "train.global_batch_size=1", f"train.device={device.type}",
              "optimizer.lr=3e-4",  # configs/parallel/gpu_node.yaml's LLaMA rate
              "data.manifest=unused"]  # never read: the steps train on random tokens
    return load_config(path, [*common, *(DRY_SHAPES[shape] if dry else []), *variant.overrides])


@dataclasses.dataclass
class Built:
    variant: Variant
    cfg: RunConfig
    model: torch.nn.Module
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer

    @property
    def tokens(self) -> int:
        return self.cfg.train.micro_batch_size * self.cfg.model.seq_length


def build(cfg: RunConfig, variant: Variant, device: torch.device, shared: Built | None) -> Built:
    """One variant's model and optimizer; with `shared`, its weight matrices (and their AdamW state)
    are the ones `shared` holds, its own copies freed."""
    (chunk,) = build_model(cfg, cfg.model.vocab_size, on_gpu=device.type == "cuda", backend=SDPASpecProvider())
    model = Float16Module(transformer_config(cfg, device.type == "cuda"), chunk.to(device))
    if shared is not None:
        mine = dict(model.named_parameters())
        for name, p in shared.model.named_parameters():
            if p.dim() >= 2 and name in mine and mine[name].shape == p.shape:
                owner, _, leaf = name.rpartition(".")
                setattr(model.get_submodule(owner), leaf, p)
    model.train()
    params = list(model.parameters())
    o = cfg.optimizer
    opt = torch.optim.AdamW(params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay,
                            fused=True)
    if shared is not None:
        opt.state = shared.optimizer.state  # keyed by parameter: shared matrices share their moments
    return Built(variant, cfg, model, params, opt)


def build_all(shape: str, layers: int, variants: list[Variant], device: torch.device, dry: bool) -> list[Built]:
    out: list[Built] = []
    for v in variants:
        out.append(build(shape_config(shape, layers, v, device, dry), v, device, out[0] if out else None))
    if len(out) > 1:  # every matrix of every variant is variant 0's
        first = {id(p) for p in out[0].params if p.dim() >= 2}
        stray = [b.variant.label for b in out[1:] if any(p.dim() >= 2 and id(p) not in first for p in b.params)]
        if stray:
            raise RuntimeError(f"weight sharing failed for {stray}: parameter names differ between variants")
    return out


def random_batch(cfg: RunConfig, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """Uniform random tokens (never zeros: they can time faster than real data)."""
    b, s = cfg.train.micro_batch_size, cfg.model.seq_length
    tokens = torch.randint(0, cfg.model.vocab_size, (b, s + 1), generator=torch.Generator().manual_seed(seed))
    return {"tokens": tokens[:, :-1].to(device), "labels": tokens[:, 1:].to(device),
            "position_ids": torch.arange(s).expand(b, s).to(device)}


def loss(b: Built, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    # attention_mask None: SDPA attends causally by construction
    return b.model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"]).mean()


def train_step(b: Built, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """One full step; returns the loss without synchronising."""
    b.optimizer.zero_grad(set_to_none=True)
    value = loss(b, batch)
    value.backward()
    torch.nn.utils.clip_grad_norm_(b.params, b.cfg.optimizer.clip_grad, foreach=True)
    b.optimizer.step()
    return value.detach()


def matrix_grads(b: Built, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Gradients of the weight matrices from one forward+backward (no update; the grads are left set)."""
    b.optimizer.zero_grad(set_to_none=True)
    loss(b, batch).backward()
    return {n: p.grad for n, p in b.model.named_parameters() if p.dim() >= 2 and p.grad is not None}


def norm_kernels(b: Built) -> list[torch.nn.Module]:
    """The norm modules with a switchable kernel (DyT, Derf, CompiledRMSNorm)."""
    return [m for m in b.model.modules() if isinstance(getattr(m, "kernel", None), str)]


@contextlib.contextmanager
def eager_norms(b: Built) -> Iterator[None]:
    """Every norm of `b` on its eager path for the duration."""
    norms = norm_kernels(b)
    kernels = [m.kernel for m in norms]
    for m in norms:
        m.kernel = "eager"
    try:
        yield
    finally:
        for m, k in zip(norms, kernels, strict=True):
            m.kernel = k


def grad_error(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> tuple[float, str]:
    """The largest relative L2 difference over the matrices, and where (NaN counts as the largest)."""
    errors = {n: float(torch.linalg.vector_norm((got[n] - g).float()) / torch.linalg.vector_norm(g.float()))
              for n, g in ref.items()}
    worst = max(errors, key=lambda n: errors[n] if errors[n] == errors[n] else math.inf)
    return errors[worst], worst
