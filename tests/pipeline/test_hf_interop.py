"""Hugging Face interop end to end: runs trained here (TP2×PP2+SP and one process) export to folders that
`transformers` loads, in a fresh interpreter without this project, with megatron's logits and greedy
generation; HF LLaMA weights start a TP2×PP2 run with the HF model's loss, and export back unchanged."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO, launch, run_python, scalars

pytestmark = pytest.mark.slow

COMMON = ["train.steps=3", "schedule.warmup_steps=1", "train.eval_interval=0", "train.log_interval=1",
          "logging.norm_stats=false"]
# Each run also covers a mapping variant: GQA + QK-norm + embedding scalar under TP/SP/PP, a tied head
# (stock LlamaForCausalLM), Derf with β.
RUNS = {
    "dyt_tp2pp2": ("tiny_dyt", ["model.norm.qk_norm=true", "parallel.tp=2", "parallel.pp=2", "parallel.sp=true",
                                "launch.nproc_per_node=4"]),
    "rmsnorm_tied": ("tiny_rmsnorm", ["model.untie_embeddings=false", "model.output_init_std=null"]),
    "derf_bias": ("tiny_derf", ["model.norm.bias=true"]),
}
EXPECTED_CLASS = {"dyt_tp2pp2": "LlamaDyTForCausalLM", "rmsnorm_tied": "LlamaForCausalLM",
                  "derf_bias": "LlamaDyTForCausalLM"}

# megatron side, in one process: open the run (TP1/PP1), optionally write the HF folder, and record
# logits on corpus text, a 20-token greedy continuation and SentencePiece ids of some texts.
REFERENCE = r"""
import gzip, json, torch, sentencepiece as spm
from pathlib import Path
from pipeline.engine.base import causal_mask
from pipeline.hf.export import full_state, write_folder
from pipeline.run_loader import open_run

run_dir, out, ref_path = Path({run_dir!r}), {out!r}, Path({ref!r})
run = open_run(run_dir)
if out:
    write_folder(run.cfg, run.manifest, full_state(run), run.checkpoint, Path(out))
manifest = run.manifest
sp = spm.SentencePieceProcessor(model_file=str(manifest.root / manifest.tokenizer["path"]))
vocab, eos = manifest.vocab_size, manifest.tokenizer["eod_id"]
docs = [json.loads(line)["text"] for line in gzip.open({corpus!r}, "rt")][:30]
texts = docs + ["", " ", "  two leading spaces", "tabs\tand\nnewlines\n\n    indented", "ünïcödé 日本語 🙂",
                "x = 1234567"]
model = run.engine.modules[0].eval()

def logits(tokens):
    pos = torch.arange(tokens.shape[1])[None].expand_as(tokens)
    with torch.no_grad():
        return model(tokens, pos, causal_mask(tokens.shape[1], tokens.device))[..., :vocab]

tokens = torch.tensor([ids[:64] for ids in map(sp.encode, docs) if len(ids) >= 64][:3])
seq = tokens[:1, :16]
for _ in range(20):
    nxt = logits(seq)[:, -1].argmax(-1, keepdim=True)
    seq = torch.cat([seq, nxt], 1)
    if nxt.item() == eos:
        break
torch.save({{"texts": texts, "ids": [sp.encode(t) for t in texts], "tokens": tokens, "logits": logits(tokens),
            "prompt": tokens[0, :16], "generated": seq[0, 16:].tolist()}}, ref_path)
"""

# HF side, in a fresh interpreter (-I, outside the repo): only what `transformers` users have.
HF_SIDE = r"""
import importlib.util, json, sys, torch
assert importlib.util.find_spec("pipeline") is None, "this project must not be importable here"
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, ref = sys.argv[1], torch.load(sys.argv[2])
tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)  # reads config.json: llama_dyt is custom
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
with torch.no_grad():
    logits = model(ref["tokens"]).logits
    prompt = ref["prompt"][None]
    gen = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20, do_sample=False)
print(json.dumps({
    "class": type(model).__name__,
    "max_abs_diff": (logits - ref["logits"]).abs().max().item(),
    "logit_scale": ref["logits"].abs().max().item(),
    "generated": gen[0, prompt.shape[1]:].tolist(),
    "ids_differ": [t for t, ids in zip(ref["texts"], ref["ids"])
                   if tok(t, add_special_tokens=False)["input_ids"] != ids],
    "foreign_modules": sorted({m.split(".")[0] for m in sys.modules} & {"pipeline", "megatron", "data_prep"}),
}))
"""


def hf_side(folder: Path, ref: Path, cwd: Path) -> dict:
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HF_HOME": str(cwd / "hf_home"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-I", "-c", HF_SIDE, str(folder), str(ref)], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def export_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.export_hf", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


class Runs:
    """This module's training runs, exports and megatron references, each made once."""

    def __init__(self, root: Path, manifest: Path) -> None:
        self.root, self.manifest, self.done = root, manifest, set()

    def train(self, name: str, config: str, extra: list[str]) -> Path:
        if name not in self.done:
            launch(config, [*COMMON, f"output_dir={self.root}", f"name={name}", f"data.manifest={self.manifest}",
                            *extra])
            self.done.add(name)
        return self.root / name

    def reference(self, run_dir: Path, out: Path | None) -> Path:
        """Megatron's outputs for the run (and its HF folder at `out` written from the same process)."""
        ref = run_dir / "reference.pt"
        if not ref.is_file():
            run_python(REFERENCE.format(run_dir=str(run_dir), out=str(out) if out else None, ref=str(ref),
                                        corpus=str(REPO / "data/corpus/pydocs.jsonl.gz")))
        return ref

    def exported(self, name: str) -> tuple[Path, Path]:
        """(HF folder, megatron reference) of a run of RUNS."""
        run_dir = self.train(name, *RUNS[name])
        out = run_dir / "hf" / "step_0000003"
        return out, self.reference(run_dir, out)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, pydocs_manifest) -> Runs:
    return Runs(tmp_path_factory.mktemp("hf"), pydocs_manifest)


@pytest.mark.parametrize("name", RUNS)
def test_exported_model_matches_megatron(runs, name, tmp_path):
    out, ref = runs.exported(name)
    got = hf_side(out, ref, tmp_path)
    want = torch.load(ref)
    assert got["class"] == EXPECTED_CLASS[name]
    assert got["foreign_modules"] == []
    assert got["max_abs_diff"] <= 1e-4 and got["logit_scale"] > 0.1, got  # logits that are not ~0
    assert got["generated"] == want["generated"] and len(want["generated"]) == 20
    assert got["ids_differ"] == []
    if name == "dyt_tp2pp2":  # custom code travels with the folder
        assert json.loads((out / "config.json").read_text())["auto_map"]["AutoModelForCausalLM"] == \
            "modeling_llama_dyt.LlamaDyTForCausalLM"
    card = (out / "README.md").read_text()
    assert "| training steps | 3 |" in card and "final training loss" in card


def test_export_refuses_non_empty_folder_then_overwrites_in_shards(runs, tmp_path):
    out, ref = runs.exported("rmsnorm_tied")
    before = (out / "model.safetensors").stat().st_mtime_ns
    refused = export_cli(runs.root / "rmsnorm_tied", "--out", out)
    assert refused.returncode == 1 and "not empty; pass --overwrite" in refused.stderr
    assert (out / "model.safetensors").stat().st_mtime_ns == before  # nothing touched

    done = export_cli(runs.root / "rmsnorm_tied", "--out", out, "--overwrite", "--max-shard-size", "1MB")
    assert done.returncode == 0, done.stderr[-3000:]
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and not (out / "model.safetensors").exists()
    got = hf_side(out, ref, tmp_path)
    assert got["max_abs_diff"] <= 1e-4 and got["generated"] == torch.load(ref)["generated"]


def test_export_bad_checkpoints_fail_clearly(runs, tmp_path):
    src = runs.train("dyt_tp2pp2", *RUNS["dyt_tp2pp2"])
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(src / "config.yaml", partial)
    shutil.copytree(src / "checkpoints", partial / "checkpoints")
    (partial / "checkpoints" / "step_0000003" / "meta.json").unlink()  # a save that never completed
    out = export_cli(partial, "--step", "3")
    assert out.returncode == 1 and "no complete checkpoint at step 3" in out.stderr, out.stderr[-2000:]
    out = export_cli(partial)
    assert out.returncode == 1 and "no complete checkpoint" in out.stderr, out.stderr[-2000:]

    other = tmp_path / "other_arch"  # a DyT checkpoint under an RMSNorm config
    other.mkdir()
    (other / "config.yaml").write_text((src / "config.yaml").read_text().replace("type: dyt", "type: rmsnorm"))
    shutil.copytree(src / "checkpoints", other / "checkpoints")
    out = export_cli(other)
    assert out.returncode == 1 and "holds another model" in out.stderr and "alpha" in out.stderr, out.stderr[-2000:]


def test_hf_llama_imports_into_tp2_pp2_and_exports_back_unchanged(runs, tmp_path, pydocs_manifest):
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM

    from pipeline.data import build_datasets, load_manifest, step_microbatches
    from pipeline.hf.tokenizer import export_tokenizer

    manifest = load_manifest(pydocs_manifest)
    hf_dir = tmp_path / "hf_llama"
    config = LlamaConfig(vocab_size=manifest.vocab_size, hidden_size=128, intermediate_size=352, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, initializer_range=0.1)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # norms off their all-ones init, so a swapped norm would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(hf_dir)
    export_tokenizer(manifest.root / manifest.tokenizer["path"], hf_dir, manifest.tokenizer, False, 128)

    # One step with a learning rate too small to move an fp32 weight: the checkpoint holds the import.
    run_dir = runs.train("import_tp2pp2", "tiny_rmsnorm", [
        f"checkpoint.init_from=hf:{hf_dir}", "train.steps=1", "schedule.warmup_steps=0", "optimizer.lr=1e-30",
        "optimizer.min_lr=0", "parallel.tp=2", "parallel.pp=2", "launch.nproc_per_node=4"])
    train, _ = build_datasets(manifest, 128, 1234, 16, 0, tmp_path / "cache")
    total = count = 0.0
    with torch.no_grad():
        for mb in step_microbatches(train, 0, 16, 8, 0, 1):
            ce = torch.nn.functional.cross_entropy(model(mb["tokens"]).logits.flatten(0, 1), mb["labels"].flatten(),
                                                   reduction="none")
            total += (ce * mb["loss_mask"].flatten()).sum().item()
            count += mb["loss_mask"].sum().item()
    assert scalars(run_dir, "train/loss")[1] == pytest.approx(total / count, rel=1e-5)

    out = run_dir / "hf" / "back"
    ref = runs.reference(run_dir, out)
    source, back = load_file(hf_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert sorted(back) == sorted(source)
    assert all(torch.equal(back[k], source[k]) for k in source)
    with torch.no_grad():  # megatron's logits from the imported weights are the HF model's
        assert (model(torch.load(ref)["tokens"]).logits - torch.load(ref)["logits"]).abs().max() <= 1e-4
