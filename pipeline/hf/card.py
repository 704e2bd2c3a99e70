"""README.md model card of an exported folder: what the model is, how it was trained, how to load it."""

from pipeline.config.schema import RunConfig

_CUSTOM_CODE = """\
This is a `{arch}` model: LLaMA with every norm replaced by **{norm}**, as custom code shipped in this
folder (`configuration_llama_dyt.py`, `modeling_llama_dyt.py`). Loading it runs that code: pass
`trust_remote_code=True` to `AutoModelForCausalLM` and `AutoTokenizer` (read the code first: it is short)
and use `transformers>=5`. With this project installed, `import pipeline.hf` registers the architecture.
"""


def model_card(cfg: RunConfig, hf: dict, meta: dict, n_params: int, export_cmd: str, run_dir: str) -> str:
    m, t = cfg.model, cfg.train
    step = int(meta["step"])
    tokens = step * t.global_batch_size * m.seq_length
    custom = hf["model_type"] != "llama"
    remote = ", trust_remote_code=True" if custom else ""
    loss = meta.get("loss")
    rows = [
        ("architecture", f"`{hf['architectures'][0]}`"),
        ("norm", m.norm.type + (" + QK-norm" if m.norm.qk_norm else "")
         + (" + learnable embedding scale" if hf.get("embedding_scale") else "")),
        ("parameters", f"{n_params:,}"),
        ("layers / hidden / heads / KV groups / FFN", f"{m.num_layers} / {m.hidden_size} / {m.num_attention_heads} / "
                                                      f"{hf['num_key_value_heads']} / {hf['intermediate_size']}"),
        ("vocabulary", f"{hf['vocab_size']} (SentencePiece, `tokenizer.model`)"),
        ("context length", str(m.seq_length)),
        ("RoPE theta", f"{m.rope_theta:g}"),
        ("embeddings", "tied" if hf["tie_word_embeddings"] else "untied"),
        ("training steps", f"{step:,}"),
        ("training tokens", f"{tokens:,} ({t.global_batch_size} × {m.seq_length} per step)"),
        ("final training loss", f"{loss:.4f}" if isinstance(loss, (int, float)) else "not recorded"),
        ("precision / layout", f"{t.precision}, TP{cfg.parallel.tp} PP{cfg.parallel.pp}"
                               + (f" VPP{cfg.parallel.vpp}" if cfg.parallel.vpp else "")),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"""# {cfg.name} (step {step})

Exported from the run `{run_dir}` of the DyT pretraining pipeline.

{_CUSTOM_CODE.format(arch=hf['architectures'][0], norm=m.norm.type) if custom else ''}
| | |
|---|---|
{table}

## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained("PATH"{remote})
model = AutoModelForCausalLM.from_pretrained("PATH"{remote})
ids = tok("def fibonacci(n):", return_tensors="pt").input_ids
print(tok.decode(model.generate(ids, max_new_tokens=40, do_sample=False)[0]))
```

Evaluation harnesses that load HF models work as usual, e.g.
`lm_eval --model hf --model_args pretrained=PATH{remote.replace(', ', ',')} --tasks hellaswag`.

## Provenance

- exported with: `{export_cmd}`
- train again with: `python -m launch {run_dir}/config.yaml` (the run's fully resolved config)
"""
