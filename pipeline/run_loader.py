"""One way to open a run: config → runtime → data manifest → vocabulary → engine (→ weights).

Training starts here (`start`), and so does everything that reads a trained run in one process
(`open_run`: bench-model, S-curves, HF export), so they all build exactly the model the run trained.
"""

from dataclasses import dataclass
from pathlib import Path

from pipeline import runtime
from pipeline.checkpoint import CheckpointError, CheckpointManager
from pipeline.config import RunConfig, load_config
from pipeline.data import Manifest, check_tokenizer, load_manifest
from pipeline.engine import Engine, build_engine

# A trained run reopened in one process, whatever layout it trained with: checkpoints reshard on load and
# the model's math does not depend on the layout.
SINGLE_PROCESS = ["parallel.tp=1", "parallel.pp=1", "parallel.vpp=null", "parallel.cp=1", "parallel.sp=false",
                  "parallel.distributed_optimizer=false", "parallel.overlap_param_gather=false",
                  "parallel.overlap_grad_reduce=false", "launch.nodes=1", "launch.nproc_per_node=1"]


@dataclass
class Session:
    cfg: RunConfig
    runtime: runtime.Runtime
    manifest: Manifest
    vocab_size: int  # the tokenizer's (unpadded) vocabulary
    engine: Engine
    checkpoint: Path | None = None  # the checkpoint whose weights were loaded, if any
    step: int = 0


def start(cfg: RunConfig) -> Session:
    """Processes, data manifest and a freshly initialised engine for `cfg` (collective)."""
    rt = runtime.init(cfg)
    manifest = load_manifest(cfg.data.manifest_path, cfg.data.external_paths_allowed)
    check_tokenizer(manifest, cfg.model.vocab_size)
    vocab = cfg.model.vocab_size or manifest.vocab_size
    return Session(cfg, rt, manifest, vocab, build_engine(cfg, rt, vocab))


def open_run(run_dir: str | Path, step: int | None = None, overrides: list[str] | None = None) -> Session:
    """A trained run in this single process with the weights of its `latest` checkpoint (or of `step`)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.yaml)")
    cfg = load_config(str(run_dir / "config.yaml"), [*SINGLE_PROCESS, *(overrides or [])])
    ckpt = CheckpointManager(run_dir / "checkpoints", cfg)
    path = None
    if step is not None:
        path = run_dir / "checkpoints" / f"step_{step:07d}"
        done = [p.name for p in ckpt.complete_checkpoints()]
        if path.name not in done:
            raise CheckpointError(f"{path}: no complete checkpoint at step {step} "
                                  f"(complete: {', '.join(done) or 'none'})")
    session = start(cfg)
    if path is None:
        path, record = ckpt.load_newest_weights(session.engine)
    else:
        record = ckpt.load_weights(session.engine, path)
    session.checkpoint, session.step = path, int(record["step"])
    return session
