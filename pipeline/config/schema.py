"""The run config: one typed dataclass per section. Defaults here are the base every YAML extends.

A YAML run file may set any of these keys (nested by section); anything else is an error that names
the key. `pipeline.config.loader` builds and validates a `RunConfig` from YAML + overrides.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from data_prep.config import PrepareConfig
from pipeline.norms.recipe import AlphaInit


@dataclass
class NormConfig:
    type: str = "rmsnorm"  # registered name (layernorm, rmsnorm, dyt, derf, yours) or "pkg.module:Class"
    alpha_init: Literal["auto"] | AlphaInit = "auto"  # auto: paper table by width
    bias: bool = False  # β in DyT/Derf (the paper's LLM recipe has none)
    eps: float = 1e-5  # used by LayerNorm/RMSNorm only
    kernel: Literal["auto", "eager", "compile", "triton"] = "auto"  # auto: triton on CUDA, eager on CPU
    fuse_residual_add: bool = False  # fused residual-add + norm before the MLP (norms with a fused-add kernel: dyt)
    qk_norm: bool = False  # normalise queries/keys per head with the same norm type
    # Weight decay on 1-D params (norm weights, α, the embedding scalar). auto: every parameter for DyT-like norms
    # (the paper's code), megatron's exemption of 1-D params otherwise; paper: every parameter for ANY norm, as the
    # paper's code did for its RMSNorm baseline too (use it in both arms of a reproduction); all / none to force.
    weight_decay: Literal["auto", "paper", "all", "none"] = "auto"


@dataclass
class ModelConfig:
    num_layers: int = 2
    hidden_size: int = 64
    num_attention_heads: int = 4
    num_query_groups: int | None = None  # GQA groups; None = num_attention_heads (MHA)
    ffn_hidden_size: int | None = None  # None = LLaMA rule: 8/3·h rounded up to a multiple of 64
    seq_length: int = 128
    vocab_size: int | None = None  # None = from the data manifest's tokenizer
    make_vocab_size_divisible_by: int = 128
    rope_theta: float = 500_000.0
    init_method_std: float = 0.02
    # LM-head init std (None = init_method_std). Small widths need more than 0.02 with DyT: the head's
    # starting logits (≈ std·√d) are then too small, the residual stream grows until every DyT
    # saturates and the model stalls at the unigram loss (see configs/model/tiny.yaml).
    output_init_std: float | None = None
    untie_embeddings: bool = True
    dropout: float = 0.0
    norm: NormConfig = field(default_factory=NormConfig)
    embedding_scale: Literal["auto", "learnable", "off"] = "auto"  # auto: learnable √d for DyT/Derf


@dataclass
class ParallelConfig:
    tp: int = 1
    pp: int = 1
    vpp: int | None = None  # virtual pipeline stages per rank (interleaved 1F1B)
    cp: int = 1
    sp: bool = False  # sequence parallelism (needs tp > 1)
    distributed_optimizer: bool = False
    overlap_grad_reduce: bool = False
    overlap_param_gather: bool = False
    recompute: Literal["none", "selective", "full"] = "none"


@dataclass
class TrainConfig:
    steps: int = 100
    micro_batch_size: int = 4
    global_batch_size: int = 8
    precision: Literal["fp32", "bf16", "fp8"] = "fp32"  # fp8: bf16 + TE's fp8 GEMMs (GPU with TE only)
    seed: int = 1234
    log_interval: int = 10
    eval_interval: int = 50  # 0 = no validation
    eval_iters: int = 4
    nan_policy: Literal["skip", "stop"] = "skip"
    # Divergence guard: skipped updates (non-finite loss or gradients) in a row before the run stops as
    # failed, keeping the last checkpoint from before them (docs/checkpoints.md). 0 = no limit.
    max_consecutive_skips: int = 5
    max_skipped_steps: int = 100  # the same for skipped updates in the whole run (resumes included); 0 = no limit
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when visible (SLURM: asks for GPUs if cuda)


@dataclass
class OptimizerConfig:
    lr: float = 3e-3
    min_lr: float = 3e-4
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    clip_grad: float = 1.0


@dataclass
class ScheduleConfig:
    warmup_steps: int = 10
    # cosine | wsd | constant: megatron's, after a linear warmup. fms_fsdp: the DyT paper's LLaMA code (IBM
    # fms-fsdp): lr = min(quadratic warmup 1-(1-t/w)², cosine from step 0 over train.steps down to min_lr).
    decay: Literal["cosine", "wsd", "constant", "fms_fsdp"] = "cosine"
    wsd_decay_fraction: float = 0.2  # WSD: share of steps spent decaying at the end


@dataclass
class DataConfig:
    manifest: str = ""  # manifest.json written by data_prep; "" = <prepare.output_dir>/manifest.json
    prepare: PrepareConfig | None = None  # how `make data` builds the manifest
    # Shard and tokenizer paths in the manifest must stay inside its directory unless this is true (or the
    # prepare section itself names existing megatron shards, which stay where they are).
    allow_external_paths: bool = False

    @property
    def manifest_path(self) -> Path:
        return Path(self.manifest or Path(self.prepare.output_dir) / "manifest.json")

    @property
    def external_paths_allowed(self) -> bool:
        """The user said so: the key, or a `megatron:` source in this run's own prepare section."""
        sources = self.prepare.sources if self.prepare is not None else []
        return self.allow_external_paths or any(src.megatron is not None for src in sources)


@dataclass
class DeepSpeedConfig:
    """ZeRO knobs of the DeepSpeed engine (defaults: DeepSpeed's documented ones). Batch sizes, precision,
    clipping and the optimizer come from the train/optimizer sections: one source of truth."""

    zero_stage: Literal[0, 1, 2, 3] = 1
    offload_optimizer: Literal["none", "cpu"] = "none"  # ZeRO 1-3: optimizer state (and step) in host memory
    offload_param: Literal["none", "cpu"] = "none"  # ZeRO 3: parameters in host memory
    overlap_comm: bool = False
    contiguous_gradients: bool = True
    reduce_bucket_size: int = 500_000_000
    allgather_bucket_size: int = 500_000_000
    stage3_prefetch_bucket_size: int = 50_000_000
    stage3_param_persistence_threshold: int = 100_000
    stage3_max_live_parameters: int = 1_000_000_000
    stage3_max_reuse_distance: int = 1_000_000_000
    extra: dict[str, Any] = field(default_factory=dict)  # merged last into the generated DeepSpeed JSON (expert use)


@dataclass
class CheckpointConfig:
    save_interval: int = 0  # 0 = only at the end (and on preemption)
    keep_last: int = 2
    resume: str = "auto"  # auto (latest in the run dir) | none | <path to a checkpoint dir>
    # Weights only, at step 0, from any checkpoint (any parallel layout), or "hf:<folder>": a Hugging Face
    # LLaMA / LlamaDyT folder whose config and tokenizer match the run's.
    init_from: str | None = None
    # Resuming this run dir with changed model/data keys or a new parallel layout is refused unless the
    # keys (or prefixes such as "parallel") are listed here: see pipeline/config/rerun.py.
    allow_config_change: list[str] = field(default_factory=list)
    # Write in the background while training goes on (megatron engine). auto: on for GPU runs.
    async_save: Literal["auto"] | bool = "auto"
    # A save that fails (disk full, permissions, I/O): stop the run as failed, or log it and keep training
    # (the final save at the end / on preemption always stops the run as failed).
    on_save_error: Literal["fail", "continue"] = "fail"


@dataclass
class DiagnosticsConfig:
    """Saturation of DyT-like norms and the residual-stream scale, sampled cheaply: on sampled steps only, the
    first micro-batch's input at every norm site, `tokens` token rows of it (spread over the sequence)."""

    interval: int | None = None  # steps between samples; None = train.log_interval; 0 = off
    tokens: int = 256  # token rows read per site per sample
    thresholds: list[float] = field(default_factory=lambda: [2.5, 4.0])  # |α·x| where tanh is flat (0.987, 0.9993)
    # Early warning (printed, training goes on): the fraction of |α·x| > thresholds[0] at a watched site kind
    # reaches warn_fraction in warn_samples consecutive samples (README "Small widths").
    warn_fraction: float = 0.5
    warn_sites: list[str] = field(default_factory=lambda: ["final", "attention"])  # final | attention | mlp
    warn_samples: int = 3


@dataclass
class WandbConfig:
    """Weights & Biases, optional (`pip install wandb`): the same scalars and the resolved config."""

    project: str = "dyt-pipeline"
    entity: str | None = None
    mode: Literal["offline", "online", "disabled"] = "offline"  # offline: files in <run>/wandb/, `wandb sync` later


@dataclass
class LoggingConfig:
    tensorboard: bool = True
    norm_stats: bool = True  # per-site α / γ statistics for DyT-like norms
    peak_tflops: float | None = None  # device peak for MFU; None = built-in table (GPUs only)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    wandb: WandbConfig | None = None  # null = off; a mapping (even {}) turns it on


@dataclass
class SlurmConfig:
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str = "04:00:00"
    constraint: str | None = None
    cpus_per_task: int | None = None
    gpus_per_node: int | None = None  # None: launch.nproc_per_node when train.device is cuda, else no GPUs
    extra_sbatch: list[str] = field(default_factory=list)  # extra "#SBATCH" options, e.g. "--exclusive"
    env: dict[str, str] = field(default_factory=dict)  # exported in the job (NCCL settings, ...)
    signal_grace_s: int = 120  # SIGTERM this long before the time limit
    max_restarts: int = 3  # requeues after preemption before giving up


@dataclass
class LaunchConfig:
    launcher: Literal["local", "slurm"] = "local"
    nodes: int = 1
    nproc_per_node: int = 1  # GPUs per node (processes per node on CPU)
    shutdown_grace_s: int = 120  # after a signal, how long workers may take to save before they are killed
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


@dataclass
class RunConfig:
    name: str = "run"
    # Modules imported before validation, e.g. ones that `@register_norm` your own norms (importable from
    # the working directory or PYTHONPATH; torchtitan's `custom_imports`).
    custom_imports: list[str] = field(default_factory=list)
    output_dir: str = "runs"  # the run lives in <output_dir>/<name>
    engine: Literal["megatron", "deepspeed"] = "megatron"  # see docs/engines.md "Choosing an engine"
    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    data: DataConfig = field(default_factory=DataConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)

    @property
    def world_size(self) -> int:
        return self.launch.nodes * self.launch.nproc_per_node
