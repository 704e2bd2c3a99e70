"""Our megatron LLaMA ⇄ Hugging Face LLaMA / LlamaDyT: config fields, tensor names and layouts.

One adapter, used by export (megatron → HF) and import (HF → megatron). Per megatron tensor:
  decoder.layers.N.self_attention.linear_qkv.weight   ⇄ model.layers.N.self_attn.{q,k,v}_proj.weight
      megatron packs Q/K/V per query group: [q heads of group 0, k0, v0, q heads of group 1, k1, v1, ...]
  decoder.layers.N.mlp.linear_fc1.weight              ⇄ model.layers.N.mlp.{gate,up}_proj.weight  ([gate; up])
  embedding.word_embeddings.weight / output_layer.weight ⇄ model.embed_tokens.weight / lm_head.weight
      megatron pads the vocabulary (make_vocab_size_divisible_by × TP): padding rows are dropped on
      export and zero on import; a tied head has no lm_head / output_layer tensor of its own
  norms: input_layernorm → input_layernorm, pre_mlp_layernorm → post_attention_layernorm,
      final_layernorm → model.norm, q/k_layernorm → self_attn.{q,k}_proj.norm; Transformer Engine's fused
      `linear_qkv.layer_norm_weight` / `linear_fc1.layer_norm_weight` map like the separate norms
  everything else is a rename (linear_proj → o_proj, linear_fc2 → down_proj, embedding.scale →
  model.embed_tokens.scale). RoPE needs no permutation: megatron and HF both rotate halves.
Plain tensors and dicts: no megatron or transformers objects are involved.
"""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from pipeline.config.schema import RunConfig
from pipeline.norms import embedding_scale, get_spec, site_params

from .dims import ffn_hidden_size

# HF architectures: runs whose norm is LLaMA's own and need nothing extra load as stock LLaMA.
STOCK, CUSTOM = ("llama", "LlamaForCausalLM"), ("llama_dyt", "LlamaDyTForCausalLM")

_P = r"(weight|bias|alpha|shift)"
_LAYER_RENAMES = [(re.compile(mg), hf) for mg, hf in (
    (rf"input_layernorm\.{_P}", r"input_layernorm.\1"),
    (r"self_attention\.linear_qkv\.layer_norm_(weight|bias)", r"input_layernorm.\1"),
    (rf"pre_mlp_layernorm\.{_P}", r"post_attention_layernorm.\1"),
    (r"mlp\.linear_fc1\.layer_norm_(weight|bias)", r"post_attention_layernorm.\1"),
    (rf"self_attention\.q_layernorm\.{_P}", r"self_attn.q_proj.norm.\1"),
    (rf"self_attention\.k_layernorm\.{_P}", r"self_attn.k_proj.norm.\1"),
    (r"self_attention\.linear_proj\.weight", "self_attn.o_proj.weight"),
    (r"mlp\.linear_fc2\.weight", "mlp.down_proj.weight"),
    (r"self_attention\.linear_qkv\.weight", "self_attn.q_proj.weight self_attn.k_proj.weight self_attn.v_proj.weight"),
    (r"mlp\.linear_fc1\.weight", "mlp.gate_proj.weight mlp.up_proj.weight"),
)]
_TOP_RENAMES = [(re.compile(mg), hf) for mg, hf in (
    (rf"decoder\.final_layernorm\.{_P}", r"model.norm.\1"),
    (r"embedding\.scale", "model.embed_tokens.scale"),
    (r"embedding\.word_embeddings\.weight", "model.embed_tokens.weight"),
    (r"output_layer\.weight", "lm_head.weight"),
)]
_LAYER = re.compile(r"decoder\.layers\.(\d+)\.(.+)")
_VOCAB = ("embedding.word_embeddings.weight", "output_layer.weight")


class AdapterError(ValueError):
    """A tensor or config that has no place in the HF LLaMA mapping; the message names it."""


@dataclass(frozen=True)
class Geometry:
    """What the tensor layouts depend on."""

    num_heads: int
    num_groups: int
    head_dim: int
    vocab_size: int  # the tokenizer's; megatron rows past it are padding
    tied: bool

    @classmethod
    def of(cls, cfg: RunConfig, vocab_size: int) -> "Geometry":
        m = cfg.model
        return cls(m.num_attention_heads, m.num_query_groups or m.num_attention_heads,
                   m.hidden_size // m.num_attention_heads, vocab_size, not m.untie_embeddings)


def hf_names(name: str) -> list[str]:
    """The HF tensor(s) a megatron tensor becomes (several for the fused QKV and SwiGLU FC1)."""
    layer = _LAYER.fullmatch(name)
    rules, rest, prefix = (_LAYER_RENAMES, layer[2], f"model.layers.{layer[1]}.") if layer else (_TOP_RENAMES, name, "")
    for pattern, hf in rules:
        if m := pattern.fullmatch(rest):
            return [prefix + n for n in m.expand(hf).split()]
    raise AdapterError(f"{name}: not a tensor of the LLaMA architecture (no Hugging Face equivalent)")


def _qkv_split(t: torch.Tensor, g: Geometry) -> list[torch.Tensor]:
    per_group = g.num_heads // g.num_groups
    grouped = t.view(g.num_groups, per_group + 2, g.head_dim, -1)
    q, k, v = grouped.split([per_group, 1, 1], dim=1)
    return [x.reshape(-1, t.shape[-1]).contiguous() for x in (q, k, v)]


def _qkv_merge(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: Geometry) -> torch.Tensor:
    h = q.shape[-1]
    parts = [x.view(g.num_groups, -1, g.head_dim, h) for x in (q, k, v)]
    return torch.cat(parts, dim=1).reshape(-1, h)


def to_hf(state: Mapping[str, torch.Tensor], g: Geometry) -> dict[str, torch.Tensor]:
    """A full (unsharded) megatron state dict → HF tensors."""
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if name.endswith("_extra_state") or (g.tied and name == "output_layer.weight"):
            continue
        names = hf_names(name)
        if name.endswith("linear_qkv.weight"):
            parts = _qkv_split(t, g)
        elif name.endswith("linear_fc1.weight"):
            parts = list(t.chunk(2, dim=0))
        elif name in _VOCAB:
            if t.shape[0] < g.vocab_size:
                raise AdapterError(f"{name}: {t.shape[0]} rows but the tokenizer has {g.vocab_size} tokens")
            parts = [t[: g.vocab_size]]
        else:
            parts = [t]
        out.update((n, p.contiguous()) for n, p in zip(names, parts, strict=True))
    return out


def from_hf(name: str, read: Callable[[str], torch.Tensor], g: Geometry, rows: int | None = None) -> torch.Tensor:
    """One full megatron tensor from HF tensors (`read(hf_name)`); `rows` pads the vocabulary."""
    if g.tied and name == "output_layer.weight":
        name = "embedding.word_embeddings.weight"
    parts = [read(n) for n in hf_names(name)]
    if name.endswith("linear_qkv.weight"):
        return _qkv_merge(*parts, g)
    if name.endswith("linear_fc1.weight"):
        return torch.cat(parts, dim=0)
    (t,) = parts
    if name in _VOCAB and rows is not None and rows != t.shape[0]:
        if rows < t.shape[0]:
            raise AdapterError(f"{name}: the model has {rows} vocabulary rows, fewer than the {t.shape[0]} of HF")
        t = torch.cat([t, t.new_zeros(rows - t.shape[0], *t.shape[1:])])
    return t


# -- config ------------------------------------------------------------------------------------------------
def hf_config(cfg: RunConfig, vocab_size: int, bos_id: int | None, eos_id: int, pad_id: int | None) -> dict:
    """config.json fields for a run: stock `llama` when nothing but LLaMA is needed, else `llama_dyt`."""
    m, norm = cfg.model, cfg.model.norm
    hf_norm = get_spec(norm.type).hf_norm
    if hf_norm is None:
        raise AdapterError(f"model.norm.type: {norm.type!r} has no Hugging Face architecture that matches it "
                           "exactly (exportable: norms registered with hf_norm, e.g. rmsnorm, dyt, derf)")
    scale = embedding_scale(m.embedding_scale, norm.type, m.hidden_size)
    fields = {
        "vocab_size": vocab_size,
        "hidden_size": m.hidden_size,
        "intermediate_size": ffn_hidden_size(cfg),
        "num_hidden_layers": m.num_layers,
        "num_attention_heads": m.num_attention_heads,
        "num_key_value_heads": m.num_query_groups or m.num_attention_heads,
        "head_dim": m.hidden_size // m.num_attention_heads,
        "hidden_act": "silu",
        "max_position_embeddings": m.seq_length,
        "initializer_range": m.init_method_std,
        "rms_norm_eps": norm.eps,
        "tie_word_embeddings": not m.untie_embeddings,
        "rope_parameters": {"rope_type": "default", "rope_theta": float(m.rope_theta)},
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
    }
    if hf_norm == "rmsnorm" and not norm.qk_norm and scale is None:
        return {"model_type": STOCK[0], "architectures": [STOCK[1]], **fields}
    sites = {site: site_params(norm, m.hidden_size, site) for site in ("attention", "mlp", "final")}
    return {"model_type": CUSTOM[0], "architectures": [CUSTOM[1]], **fields, "norm_type": hf_norm,
            "norm_bias": bool(sites["attention"].get("bias", False)),
            "alpha_init": {site: p.get("alpha_init", 0.5) for site, p in sites.items()},
            "qk_norm": norm.qk_norm, "embedding_scale": scale}


# Fields that decide the tensors (an HF folder must agree on all to be imported), with the run key each
# comes from. alpha_init and embedding_scale values are only initial values: not compared.
_RUN_KEYS = {
    "model_type": "model.norm.type / model.norm.qk_norm / model.embedding_scale",
    "norm_type": "model.norm.type",
    "norm_bias": "model.norm.bias",
    "qk_norm": "model.norm.qk_norm",
    "vocab_size": "the data manifest's tokenizer",
    "hidden_size": "model.hidden_size",
    "intermediate_size": "model.ffn_hidden_size",
    "num_hidden_layers": "model.num_layers",
    "num_attention_heads": "model.num_attention_heads",
    "num_key_value_heads": "model.num_query_groups",
    "head_dim": "model.hidden_size / model.num_attention_heads",
    "hidden_act": "SwiGLU (silu)",
    "rms_norm_eps": "model.norm.eps",
    "tie_word_embeddings": "model.untie_embeddings (negated)",
    "rope_parameters": "model.rope_theta (plain RoPE)",
    "attention_bias": "no biases",
    "mlp_bias": "no biases",
}


def config_mismatches(want: dict, have: dict) -> list[str]:
    """Human-readable differences between the run's HF config (`want`) and an HF folder's (`have`)."""
    out = []
    for key, run_key in _RUN_KEYS.items():
        if key == "rms_norm_eps" and want.get("norm_type", "rmsnorm") != "rmsnorm":
            continue
        if key in want and have.get(key) != want[key]:
            out.append(f"{key}: HF has {have.get(key)!r}, the run needs {want[key]!r} (from {run_key})")
    if (want.get("embedding_scale") is None) != (have.get("embedding_scale") is None):
        out.append(f"embedding_scale: HF has {have.get('embedding_scale')!r}, the run "
                   f"{'has' if want.get('embedding_scale') is not None else 'has no'} learnable embedding scalar "
                   "(from model.embedding_scale)")
    return out
