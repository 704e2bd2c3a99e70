"""An HF LLaMA / LlamaDyT folder → this rank's megatron model chunks, in any TP/SP/PP/VPP layout
(`checkpoint.init_from=hf:<folder>`).

Each rank asks its own model what it holds: `sharded_state_dict()` names every local tensor by its
global key and its slice of the full tensor (megatron's checkpoint metadata, the same that lets
dist_checkpointing reshard). The adapter builds each full megatron tensor from the HF tensors, the
rank keeps its slice, and megatron's own factory merges reassemble fused pieces (the SwiGLU FC1 is
stored as separate gate/up shards). So no layout logic is written here, nothing is converted to disk
first, and a rank reads only the HF tensors of its own layers.
"""

import functools
import logging
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from pipeline.config.schema import RunConfig
from pipeline.model.dims import padded_vocab_size
from pipeline.model.hf_adapter import AdapterError, Geometry, config_mismatches, from_hf, hf_config

from .weights import Reader

PREFIX = "hf:"
log = logging.getLogger(__name__)


class HFImportError(RuntimeError):
    """The HF folder cannot start this run; the message names the file or key."""


def _check_config(folder: Path, cfg: RunConfig, vocab_size: int) -> None:
    from transformers import AutoConfig

    import pipeline.hf  # noqa: F401  (registers llama_dyt with AutoConfig)

    if not (folder / "config.json").is_file():
        raise HFImportError(f"checkpoint.init_from: {folder} is not a Hugging Face model folder (no config.json)")
    try:
        have = AutoConfig.from_pretrained(str(folder)).to_dict()
        want = hf_config(cfg, vocab_size, None, 0, None)
    except (AdapterError, ValueError) as e:
        raise HFImportError(f"checkpoint.init_from: {folder}: {e}") from None
    problems = config_mismatches(want, have)
    if problems:
        raise HFImportError(f"checkpoint.init_from: {folder}/config.json does not match the run config:\n  "
                            + "\n  ".join(problems))


def _check_vocabulary(folder: Path, sp_model: Path) -> None:
    """The HF tokenizer must give every piece the id the data was tokenized with."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    try:
        theirs = AutoTokenizer.from_pretrained(str(folder)).get_vocab()
    except (OSError, ValueError) as e:
        raise HFImportError(f"checkpoint.init_from: {folder} has no loadable tokenizer, so its vocabulary cannot "
                            f"be checked against the data's ({e})") from None
    sp = spm.SentencePieceProcessor(model_file=str(sp_model))
    ours = {sp.id_to_piece(i): i for i in range(sp.vocab_size())}
    differ = sorted(p for p in ours.keys() | theirs.keys() if ours.get(p) != theirs.get(p))
    if differ:
        shown = ", ".join(f"{p!r}: data {ours.get(p)} / HF {theirs.get(p)}" for p in differ[:5])
        raise HFImportError(f"checkpoint.init_from: the tokenizer in {folder} does not match the data's "
                            f"({sp_model}): {len(differ)} pieces differ, e.g. {shown}")


def _megatron_name(key: str, prepended: tuple[int, ...]) -> str:
    """A sharded key → the full state dict name: layers are stacked under one key in checkpoints
    ('decoder.layers.mlp.linear_fc2.weight' at layer offset 3 → 'decoder.layers.3.mlp.linear_fc2.weight')."""
    if not prepended:
        return key
    head = "decoder.layers."
    if len(prepended) != 1 or not key.startswith(head):
        raise HFImportError(f"{key}: unexpected stacked tensor (not a decoder layer) in the model")
    return f"{head}{prepended[0]}.{key[len(head):]}"


def chunk_state(module: nn.Module, reader: Reader, g: Geometry, read: set[str]) -> dict:
    """The state dict of one model chunk of this rank, sliced from the HF tensors (names read go to `read`)."""
    from megatron.core.dist_checkpointing.dict_utils import dict_list_map_inplace, merge
    from megatron.core.dist_checkpointing.mapping import ShardedObject, ShardedTensor, apply_factory_merges
    from megatron.core.dist_checkpointing.state_dict_utils import load_preprocess

    def get(name: str) -> torch.Tensor:
        read.add(name)
        return reader.get(name)

    @functools.lru_cache(maxsize=2)  # the FC1 gate and up shards come from one full tensor
    def full(name: str, rows: int) -> torch.Tensor:
        return from_hf(name, get, g, rows)

    def fill(x):
        if isinstance(x, ShardedObject):  # TE's fp8 metadata (_extra_state): starts fresh
            return None
        if not isinstance(x, ShardedTensor):
            return x
        n = x.prepend_axis_num
        name = _megatron_name(x.key, tuple(x.global_offset[:n]))
        t = full(name, x.global_shape[n])
        if tuple(t.shape) != tuple(x.global_shape[n:]):
            raise HFImportError(f"{name}: HF gives shape {tuple(t.shape)}, the model needs {tuple(x.global_shape[n:])}")
        return t[x.global_slice()[n:]].to(x.data.dtype).clone()

    sharded, nonpersistent, factories = load_preprocess(module.sharded_state_dict())
    try:
        dict_list_map_inplace(fill, sharded)
    except (AdapterError, KeyError) as e:
        raise HFImportError(f"checkpoint.init_from: {e}") from None
    state = apply_factory_merges(sharded, factories)
    merge(state, nonpersistent)
    return state


def import_weights(spec: str, session) -> None:
    """`checkpoint.init_from=hf:<folder>` into a started run (`run_loader.Session`, collective): check the
    folder against the run, then give every model chunk of every rank its slice."""
    cfg, engine = session.cfg, session.engine
    folder = Path(spec.removeprefix(PREFIX))
    _check_config(folder, cfg, session.vocab_size)
    _check_vocabulary(folder, session.manifest.root / session.manifest.tokenizer["path"])
    try:
        reader = Reader(folder)
    except FileNotFoundError as e:
        raise HFImportError(f"checkpoint.init_from: {e}") from None
    g = Geometry.of(cfg, session.vocab_size)
    rows = padded_vocab_size(session.vocab_size, cfg)
    if rows != session.vocab_size and session.runtime.is_main:
        log.warning("the run pads the vocabulary from %d to %d rows (zero after the import): until training "
                    "pushes their logits down, megatron's softmax also counts them, so the loss starts a little "
                    "above the HF model's (a model.make_vocab_size_divisible_by dividing %d avoids it)",
                    session.vocab_size, rows, session.vocab_size)
    read: set[str] = set()
    params = [p for m in engine.modules for p in m.parameters()]
    with torch.no_grad(), engine.gathered(params):  # sharded_state_dict reads whole (ZeRO-3) parameters
        states = [chunk_state(m, reader, g, read) for m in engine.modules]
    # Every HF tensor must land somewhere: anything left over is a part of the model the run lacks.
    if dist.is_initialized():
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, read)
        read = set().union(*gathered)
    unused = sorted(k for k in reader.keys() - read if not k.endswith("rotary_emb.inv_freq")
                    and not (g.tied and k == "lm_head.weight"))
    if unused:
        raise HFImportError(f"checkpoint.init_from: {folder} has tensors the run's model has no place for: "
                            f"{', '.join(unused[:8])}{' …' if len(unused) > 8 else ''}")
    engine.load_model_state(states)
