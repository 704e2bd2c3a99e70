"""A run's checkpoint → a Hugging Face model folder (config, weights, tokenizer, model card).

The checkpoint is opened in one process with a TP1/PP1 layout (the engine's own loader reshards any
TP/SP/PP/VPP/distributed-optimizer layout), so what is exported is the engine's full, megatron-named
state dict: any engine whose `load_weights` fills the same GPTModel plugs in here. The folder is
written next to its destination and moved into place only when complete.
"""

import contextlib
import json
import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from pipeline.config.schema import RunConfig
from pipeline.data import Manifest
from pipeline.model.hf_adapter import CUSTOM, AdapterError, Geometry, hf_config, to_hf

from . import weights
from .card import model_card
from .tokenizer import export_tokenizer

CUSTOM_CODE = ("configuration_llama_dyt.py", "modeling_llama_dyt.py")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ExportError(RuntimeError):
    """The export cannot be made; the message names the file or key and what to do."""


def _check_against_hf_model(tensors: dict[str, torch.Tensor], config) -> None:
    """Every tensor the HF model has, with its shape, and nothing else (built on the meta device)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        want.pop("lm_head.weight", None)
    have = {k: tuple(v.shape) for k, v in tensors.items()}
    problems = [f"missing {k}" for k in want.keys() - have.keys()]
    problems += [f"unexpected {k}" for k in have.keys() - want.keys()]
    problems += [f"{k}: shape {have[k]}, HF expects {want[k]}" for k in want.keys() & have.keys() if have[k] != want[k]]
    if problems:
        raise ExportError(f"the checkpoint does not map onto {type(model).__name__}: " + "; ".join(sorted(problems)))


def _hf_config(fields: dict, dtype: torch.dtype):
    from transformers import LlamaConfig

    from .configuration_llama_dyt import LlamaDyTConfig

    kwargs = {k: v for k, v in fields.items() if k != "model_type"}
    config = (LlamaDyTConfig if fields["model_type"] == CUSTOM[0] else LlamaConfig)(**kwargs)
    config.dtype = dtype
    if fields["model_type"] == CUSTOM[0]:
        config.auto_map = {"AutoConfig": "configuration_llama_dyt.LlamaDyTConfig",
                           "AutoModelForCausalLM": "modeling_llama_dyt.LlamaDyTForCausalLM"}
    return config


def _replace_dir(tmp: Path, out: Path) -> None:
    old = out.with_name(f".{out.name}.old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def export_run(run_dir: Path, step: int | None = None, out: Path | None = None, overwrite: bool = False,
               max_shard_size: str = "5GB", dtype: str = "auto", log=print) -> Path:
    """Export `run_dir`'s checkpoint at `step` (default: the latest) to `out` (default
    `<run_dir>/hf/step_NNNNNNN`); returns the folder. Refuses a non-empty `out` unless `overwrite`."""
    from pipeline.checkpoint import CheckpointManager
    from pipeline.run_loader import open_run

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ExportError(f"{run_dir}: not a run directory (no config.yaml)")
    latest = CheckpointManager(run_dir / "checkpoints", None).find_resume("auto") if step is None else None
    name = f"step_{step:07d}" if step is not None else latest.name if latest else "latest"
    out = Path(out) if out else run_dir / "hf" / name
    if out.exists() and any(out.iterdir()) and not overwrite:  # before the (long) load
        raise ExportError(f"{out} is not empty; pass --overwrite to replace it")
    max_bytes = weights.parse_size(max_shard_size)
    log(f"loading {run_dir} at {name} (single process, TP1/PP1)")
    session = open_run(run_dir, step, _cpu_overrides(run_dir))
    with full_state(session) as state:
        return write_folder(session.cfg, session.manifest, state, session.checkpoint, out, max_bytes, dtype, log)


def _cpu_overrides(run_dir: Path) -> list[str]:
    """Export runs on the CPU; fp8 is a GEMM mode of TE on GPUs whose weights are bf16."""
    import yaml

    precision = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("train", {}).get("precision")
    return ["train.device=cpu", *(["train.precision=bf16"] if precision == "fp8" else [])]


@contextlib.contextmanager
def full_state(session) -> Iterator[dict[str, torch.Tensor]]:
    """The engine's full, megatron-named state dict of a single-process `run_loader.Session` (valid inside
    the context: ZeRO-3 parameters are gathered only for its duration)."""
    params = [p for m in session.engine.modules for p in m.parameters()]
    with session.engine.gathered(params):
        yield {k: v.detach() for k, v in session.engine.modules[0].state_dict().items() if v is not None}


def write_folder(cfg: RunConfig, manifest: Manifest, state: dict[str, torch.Tensor], ckpt: Path, out: Path,
                 max_shard_bytes: int = 5 * 10**9, dtype: str = "auto", log=print) -> Path:
    """The HF folder for a run's full megatron-named state dict (from whichever engine loaded `ckpt`)."""
    tok = manifest.tokenizer
    try:
        fields = hf_config(cfg, manifest.vocab_size, tok["bos_id"] if tok["bos_id"] >= 0 else None, tok["eod_id"],
                           tok["pad_id"])
        tensors = to_hf(state, Geometry.of(cfg, manifest.vocab_size))
    except AdapterError as e:
        raise ExportError(f"{ckpt}: {e}") from None
    target = next(iter(tensors.values())).dtype if dtype == "auto" else DTYPES[dtype]
    tensors = {k: v.to(target) for k, v in tensors.items()}
    config = _hf_config(fields, target)
    _check_against_hf_model(tensors, config)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    config.save_pretrained(str(tmp))
    if fields["model_type"] == CUSTOM[0]:
        for name in CUSTOM_CODE:
            shutil.copyfile(Path(__file__).with_name(name), tmp / name)
    _generation_config(fields).save_pretrained(str(tmp))
    files = weights.save(tensors, tmp, max_shard_bytes)
    prepare = cfg.data.prepare
    export_tokenizer(manifest.root / tok["path"], tmp, tok, add_bos=bool(prepare and prepare.append_bos),
                     max_length=cfg.model.seq_length)
    meta = json.loads((ckpt / "meta.json").read_text())
    n_params = sum(t.numel() for t in tensors.values())
    run_dir = ckpt.parent.parent
    cmd = shlex.join(["python", "-m", "pipeline.export_hf", *sys.argv[1:]]) if sys.argv[0].endswith("export_hf.py") \
        else f"python -m pipeline.export_hf {shlex.quote(str(run_dir))} --step {meta['step']}"
    (tmp / "README.md").write_text(model_card(cfg, fields, meta, n_params, cmd, str(run_dir)))
    _replace_dir(tmp, out)
    shards = f"{len(files) - 1} shards + index" if len(files) > 1 else files[0]
    log(f"wrote {out}: {fields['architectures'][0]}, {n_params / 1e6:.2f}M parameters ({shards}, {target})")
    return out


def _generation_config(fields: dict):
    from transformers import GenerationConfig

    return GenerationConfig(bos_token_id=fields["bos_token_id"], eos_token_id=fields["eos_token_id"],
                            pad_token_id=fields["pad_token_id"])
