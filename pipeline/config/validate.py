"""Checks that need several keys at once (layouts, batch arithmetic). Each error names one key."""

from pipeline.norms import AlphaInit, lookup, registered_norms

from .errors import ConfigError
from .schema import NormConfig, RunConfig


def _fail(key: str, msg: str) -> None:
    raise ConfigError(f"{key}: {msg}")


def validate(cfg: RunConfig) -> None:
    m, p, t = cfg.model, cfg.parallel, cfg.train
    for key, v in (("model.num_layers", m.num_layers), ("model.hidden_size", m.hidden_size),
                   ("model.num_attention_heads", m.num_attention_heads), ("model.seq_length", m.seq_length),
                   ("model.make_vocab_size_divisible_by", m.make_vocab_size_divisible_by),
                   ("parallel.tp", p.tp), ("parallel.pp", p.pp), ("parallel.cp", p.cp),
                   ("train.steps", t.steps), ("train.micro_batch_size", t.micro_batch_size),
                   ("train.global_batch_size", t.global_batch_size), ("launch.nodes", cfg.launch.nodes),
                   ("launch.nproc_per_node", cfg.launch.nproc_per_node)):
        if v < 1:
            _fail(key, f"must be >= 1, got {v}")
    if "/" in cfg.name or not cfg.name.strip():
        _fail("name", f"must be a plain directory name, got {cfg.name!r}")

    groups = m.num_query_groups or m.num_attention_heads
    if m.hidden_size % m.num_attention_heads:
        _fail("model.hidden_size", f"{m.hidden_size} is not divisible by num_attention_heads={m.num_attention_heads}")
    if (m.hidden_size // m.num_attention_heads) % 2:
        _fail("model.hidden_size", f"head dimension {m.hidden_size}/{m.num_attention_heads} = "
              f"{m.hidden_size // m.num_attention_heads} is odd; rotary embeddings rotate pairs of channels")
    if m.num_attention_heads % groups:
        _fail("model.num_query_groups", f"{groups} does not divide num_attention_heads={m.num_attention_heads}")
    if m.num_attention_heads % p.tp:
        _fail("parallel.tp", f"tp={p.tp} does not divide model.num_attention_heads={m.num_attention_heads}")
    if groups % p.tp:
        _fail("parallel.tp", f"tp={p.tp} does not divide the query groups ({groups})")
    if m.ffn_hidden_size is not None and m.ffn_hidden_size % p.tp:
        _fail("model.ffn_hidden_size", f"{m.ffn_hidden_size} is not divisible by tp={p.tp} (the MLP is split "
              "across tensor-parallel ranks)")

    model_parallel = p.tp * p.pp * p.cp
    if cfg.world_size % model_parallel:
        _fail("parallel", f"tp×pp×cp = {p.tp}×{p.pp}×{p.cp} = {model_parallel} does not divide the world size "
              f"{cfg.world_size} (launch.nodes × launch.nproc_per_node)")
    dp = cfg.world_size // model_parallel
    if t.global_batch_size % (t.micro_batch_size * dp):
        _fail("train.global_batch_size", f"{t.global_batch_size} is not divisible by micro_batch_size × dp = "
              f"{t.micro_batch_size} × {dp}")

    if p.sp and p.tp == 1:
        _fail("parallel.sp", "sequence parallelism needs parallel.tp > 1")
    if p.sp and m.seq_length % p.tp:
        _fail("model.seq_length", f"{m.seq_length} is not divisible by tp={p.tp} (sequence parallel)")
    if p.cp > 1 and m.seq_length % (2 * p.cp):
        _fail("model.seq_length", f"{m.seq_length} is not divisible by 2×cp={2 * p.cp}")
    stages = p.pp * (p.vpp or 1)
    if p.vpp is not None and (p.pp == 1 or p.vpp < 2):
        _fail("parallel.vpp", "virtual stages need parallel.pp > 1 and vpp >= 2 (or null)")
    if m.num_layers % stages:
        _fail("model.num_layers", f"{m.num_layers} layers do not split into pp×vpp = {stages} stages")
    if p.vpp is not None and (t.global_batch_size // (t.micro_batch_size * dp)) % p.pp:
        _fail("train.global_batch_size", f"interleaved pipelining needs the number of micro-batches "
              f"({t.global_batch_size // (t.micro_batch_size * dp)}) to be a multiple of pp={p.pp}")
    if p.overlap_param_gather and not p.distributed_optimizer:
        _fail("parallel.overlap_param_gather", "needs parallel.distributed_optimizer: true")

    _validate_norm(m.norm)
    if m.output_init_std is not None and not m.untie_embeddings:
        _fail("model.output_init_std", "needs model.untie_embeddings: true (a tied head is the embedding)")
    if m.dropout < 0 or m.dropout >= 1:
        _fail("model.dropout", f"must be in [0, 1), got {m.dropout}")

    s, o = cfg.schedule, cfg.optimizer
    if s.warmup_steps < 0 or s.warmup_steps >= t.steps:
        _fail("schedule.warmup_steps", f"must be >= 0 and below train.steps={t.steps} (the LR decays over the "
              f"steps after warmup), got {s.warmup_steps}; e.g. schedule.warmup_steps={max(t.steps // 10, 0)}")
    if not 0 < s.wsd_decay_fraction <= 1:
        _fail("schedule.wsd_decay_fraction", f"must be in (0, 1], got {s.wsd_decay_fraction}")
    if o.lr <= 0 or o.min_lr < 0 or o.min_lr > o.lr:
        _fail("optimizer.min_lr" if o.lr > 0 else "optimizer.lr", f"need 0 <= min_lr <= lr, lr > 0 "
              f"(lr={o.lr}, min_lr={o.min_lr})")
    if cfg.checkpoint.keep_last < 1:
        _fail("checkpoint.keep_last", f"must be >= 1, got {cfg.checkpoint.keep_last}")
    if t.log_interval < 1:
        _fail("train.log_interval", f"must be >= 1, got {t.log_interval}")
    _validate_diagnostics(cfg)
    if cfg.engine == "deepspeed":
        _validate_deepspeed(cfg)
    if not cfg.data.manifest and cfg.data.prepare is None:
        _fail("data", "set data.manifest or a data.prepare section")


def _validate_norm(n: NormConfig) -> None:
    """Against the norm's registered traits; a "pkg.module:Class" norm is checked when the model imports it
    (importing it here would import torch)."""
    if ":" in n.type:
        return
    spec = lookup(n.type)
    if spec is None:
        _fail("model.norm.type", f"unknown norm {n.type!r}: use one of {', '.join(registered_norms())}, an "
              "import path 'package.module:Class', or list the module that registers it in custom_imports")
    if n.fuse_residual_add and spec.fused_add_op is None:
        fusable = [name for name in registered_norms() if lookup(name).fused_add_op]
        _fail("model.norm.fuse_residual_add", f"no fused residual-add kernel for {n.type!r} "
              f"(norms with one: {', '.join(fusable)})")
    if isinstance(n.alpha_init, AlphaInit) and not spec.has_alpha:
        _fail("model.norm.alpha_init", f"{n.type!r} has no α (set it for a norm registered with has_alpha)")


def _validate_diagnostics(cfg: RunConfig) -> None:
    d = cfg.logging.diagnostics
    if d.interval is not None and d.interval < 0:
        _fail("logging.diagnostics.interval", f"must be >= 0 (0 = off) or null (= log_interval), got {d.interval}")
    if d.tokens < 1:
        _fail("logging.diagnostics.tokens", f"must be >= 1, got {d.tokens}")
    if not d.thresholds or any(t <= 0 for t in d.thresholds):
        _fail("logging.diagnostics.thresholds", f"need at least one positive |α·x| level, got {d.thresholds}")
    if not 0 < d.warn_fraction <= 1:
        _fail("logging.diagnostics.warn_fraction", f"must be in (0, 1], got {d.warn_fraction}")
    unknown = sorted(set(d.warn_sites) - {"attention", "mlp", "final"})
    if unknown:
        _fail("logging.diagnostics.warn_sites", f"unknown site kind {unknown[0]!r} (attention, mlp, final)")
    if d.warn_samples < 1:
        _fail("logging.diagnostics.warn_samples", f"must be >= 1, got {d.warn_samples}")


def _validate_deepspeed(cfg: RunConfig) -> None:
    """The DeepSpeed engine wraps the same GPTModel with ZeRO; pipeline parallelism stays megatron's."""
    p, d = cfg.parallel, cfg.deepspeed
    for key, on in (("parallel.pp", p.pp > 1), ("parallel.cp", p.cp > 1),
                    ("parallel.distributed_optimizer", p.distributed_optimizer),
                    ("parallel.overlap_grad_reduce", p.overlap_grad_reduce),
                    ("parallel.overlap_param_gather", p.overlap_param_gather)):
        if on:
            _fail(key, "is a megatron-engine feature; with engine: deepspeed use deepspeed.zero_stage (ZeRO "
                  "partitions optimizer state, gradients and parameters) or set engine: megatron")
    if p.sp:
        _fail("parallel.sp", "sequence parallelism needs the megatron engine (its norm gradients are reduced "
              "across tensor-parallel ranks by megatron's DDP, which DeepSpeed replaces); use engine: megatron")
    if cfg.train.precision == "bf16" and d.zero_stage == 0:
        _fail("deepspeed.zero_stage", "bf16 needs ZeRO stage >= 1 (DeepSpeed 0.19's stage-0 bf16 optimizer cannot "
              "load its own checkpoints)")
    if d.offload_optimizer != "none" and d.zero_stage == 0:
        _fail("deepspeed.offload_optimizer", "needs deepspeed.zero_stage >= 1")
    if d.offload_param != "none" and d.zero_stage != 3:
        _fail("deepspeed.offload_param", "needs deepspeed.zero_stage: 3")
    if cfg.train.precision == "fp8":
        _fail("train.precision", "fp8 runs through Transformer Engine in the megatron engine; use bf16 here")
