"""Hugging Face interop end to end. Runs trained here (megatron TP2×PP2+SP and one process, DeepSpeed
ZeRO-3) export to folders that `transformers` loads, in a fresh interpreter without this project or
megatron, with our logits and greedy generation. HF weights start runs (megatron TP2×PP2, DeepSpeed
ZeRO-3) with the HF model's loss and export back unchanged; a bf16 run (fp32 master weights) keeps them
through its optimizer steps."""

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
# (stock LlamaForCausalLM), Derf with β on the DeepSpeed engine (ZeRO-3 partitions every parameter),
# started from a random HF LlamaDyT (import into DeepSpeed) and exported in shards.
RUNS = {
    "dyt_tp2pp2": ("tiny_dyt", ["model.norm.qk_norm=true", "parallel.tp=2", "parallel.pp=2", "parallel.sp=true",
                                "launch.nproc_per_node=4"]),
    "rmsnorm_tied": ("tiny_rmsnorm", ["model.untie_embeddings=false", "model.output_init_std=null"]),
    "derf_zero3": ("tiny_derf", ["model.norm.bias=true", "engine=deepspeed", "deepspeed.zero_stage=3"]),
}
EXPECTED_CLASS = {"dyt_tp2pp2": "LlamaDyTForCausalLM", "rmsnorm_tied": "LlamaForCausalLM",
                  "derf_zero3": "LlamaDyTForCausalLM"}
SHARD_BYTES = {"derf_zero3": 10**6}
FROM_HF = ("derf_zero3",)

# Our side, in one process: open the run (TP1/PP1), optionally write the HF folder, and record
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
    with full_state(run) as state:
        write_folder(run.cfg, run.manifest, state, run.checkpoint, Path(out), max_shard_bytes={shard_bytes})
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

# HF side, in a fresh interpreter outside the repo, with this project and megatron made unimportable.
HF_SIDE = r"""
import importlib.abc, json, sys, torch

class Block(importlib.abc.MetaPathFinder):  # this project and megatron may be installed: make them absent
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pipeline", "data_prep", "launch", "megatron"):
            raise ModuleNotFoundError(f"{name} is not available to a transformers user")

sys.meta_path.insert(0, Block())
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
        self.start_model = None  # the HF model a FROM_HF run started from

    def train(self, name: str, config: str, extra: list[str]) -> Path:
        if name not in self.done:
            launch(config, [*COMMON, f"output_dir={self.root}", f"name={name}", f"data.manifest={self.manifest}",
                            *extra])
            self.done.add(name)
        return self.root / name

    def reference(self, run_dir: Path, out: Path | None = None, shard_bytes: int = 5 * 10**9) -> Path:
        """Our model's outputs for the run (and its HF folder at `out`, written from the same process)."""
        ref = run_dir / "reference.pt"
        if not ref.is_file():
            run_python(REFERENCE.format(run_dir=str(run_dir), out=str(out) if out else None, ref=str(ref),
                                        shard_bytes=shard_bytes, corpus=str(REPO / "data/corpus/pydocs.jsonl.gz")))
        return ref

    def random_hf(self, name: str):
        """A randomly initialised HF model (ours: LlamaDyT for DyT/Derf) shaped like run `name`, saved with
        the data's tokenizer; its norm parameters are moved off their init so a misplaced one would show."""
        from pipeline.config import load_config
        from pipeline.data import load_manifest
        from pipeline.hf import LlamaDyTConfig, LlamaDyTForCausalLM
        from pipeline.hf.tokenizer import export_tokenizer
        from pipeline.model.hf_adapter import hf_config

        config, overrides = RUNS[name]
        manifest = load_manifest(self.manifest)
        fields = hf_config(load_config(config, overrides), manifest.vocab_size, 1, 2, 0)
        torch.manual_seed(0)
        model = LlamaDyTForCausalLM(LlamaDyTConfig(**{k: v for k, v in fields.items() if k != "model_type"})).eval()
        with torch.no_grad():
            for key, p in model.named_parameters():
                if "norm" in key or "scale" in key:
                    p.mul_(torch.empty_like(p).uniform_(0.5, 1.5)).add_(torch.empty_like(p).uniform_(-0.1, 0.1))
        folder = self.root / f"hf_{name}"
        model.save_pretrained(folder)
        export_tokenizer(manifest.root / manifest.tokenizer["path"], folder, manifest.tokenizer, False, 128)
        return folder, model

    def exported(self, name: str) -> tuple[Path, Path]:
        """(HF folder, reference) of a run of RUNS."""
        config, overrides = RUNS[name]
        if name in FROM_HF and name not in self.done:
            folder, self.start_model = self.random_hf(name)
            overrides = [*overrides, f"checkpoint.init_from=hf:{folder}"]
        run_dir = self.train(name, config, overrides)
        out = run_dir / "hf" / "step_0000003"
        return out, self.reference(run_dir, out, SHARD_BYTES.get(name, 5 * 10**9))


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
    if name in SHARD_BYTES:
        index = json.loads((out / "model.safetensors.index.json").read_text())
        assert len(set(index["weight_map"].values())) > 1 and not (out / "model.safetensors").exists()
    if name == "dyt_tp2pp2":  # custom code travels with the folder
        assert json.loads((out / "config.json").read_text())["auto_map"]["AutoModelForCausalLM"] == \
            "modeling_llama_dyt.LlamaDyTForCausalLM"
    if name in FROM_HF:  # its first loss is the HF model's: the import reached every parameter
        from pipeline.data import load_manifest

        loss = hf_loss(runs.start_model, load_manifest(runs.manifest), tmp_path)
        assert scalars(runs.root / name, "train/loss")[1] == pytest.approx(loss, rel=1e-5)
    card = (out / "README.md").read_text()
    assert "| training steps | 3 |" in card and "final training loss" in card


def test_export_refuses_a_non_empty_folder(runs):
    out, _ = runs.exported("rmsnorm_tied")
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    refused = export_cli(runs.root / "rmsnorm_tied", "--out", out)
    assert refused.returncode == 1 and "not empty; pass --overwrite" in refused.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # nothing touched


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


def hf_loss(model, manifest, cache: Path) -> float:
    """The HF model's mean loss on the first global batch (16 × 128) a run with the default seed trains on."""
    from pipeline.data import build_datasets, step_microbatches

    train, _ = build_datasets(manifest, 128, 1234, 16, 0, cache)
    total = count = 0.0
    with torch.no_grad():
        for mb in step_microbatches(train, 0, 16, 8, 0, 1):
            ce = torch.nn.functional.cross_entropy(model(mb["tokens"]).logits.flatten(0, 1), mb["labels"].flatten(),
                                                   reduction="none")
            total += (ce * mb["loss_mask"].flatten()).sum().item()
            count += mb["loss_mask"].sum().item()
    return total / count


@pytest.fixture(scope="module")
def hf_llama(tmp_path_factory, pydocs_manifest):
    """A randomly initialised LlamaForCausalLM shaped like tiny_rmsnorm, saved with the data's tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from pipeline.data import load_manifest
    from pipeline.hf.tokenizer import export_tokenizer

    manifest = load_manifest(pydocs_manifest)
    folder = tmp_path_factory.mktemp("hf_llama")
    config = LlamaConfig(vocab_size=manifest.vocab_size, hidden_size=128, intermediate_size=352, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, initializer_range=0.1)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # norms off their all-ones init, so a swapped norm would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(folder)
    export_tokenizer(manifest.root / manifest.tokenizer["path"], folder, manifest.tokenizer, False, 128)
    return folder, model, manifest


# A learning rate too small to move a weight: after the step the checkpoint holds the imported weights.
FROZEN = ["schedule.warmup_steps=0", "optimizer.lr=1e-30", "optimizer.min_lr=0"]


def test_hf_llama_imports_into_tp2_pp2_and_exports_back_unchanged(runs, hf_llama, tmp_path):
    from safetensors.torch import load_file

    folder, model, manifest = hf_llama
    run_dir = runs.train("import_tp2pp2", "tiny_rmsnorm", [
        f"checkpoint.init_from=hf:{folder}", "train.steps=1", *FROZEN, "parallel.tp=2", "parallel.pp=2",
        "launch.nproc_per_node=4"])
    # Step 1's loss is computed by the TP2×PP2 model before its update: the HF model's loss.
    assert scalars(run_dir, "train/loss")[1] == pytest.approx(hf_loss(model, manifest, tmp_path), rel=1e-5)

    out = run_dir / "hf" / "back"
    ref = torch.load(runs.reference(run_dir, out))
    source, back = load_file(folder / "model.safetensors"), load_file(out / "model.safetensors")
    assert sorted(back) == sorted(source)
    assert all(torch.equal(back[k], source[k]) for k in source)
    with torch.no_grad():  # our model's logits from the imported weights are the HF model's
        assert (model(ref["tokens"]).logits - ref["logits"]).abs().max() <= 1e-4


def test_bf16_run_keeps_imported_weights_through_optimizer_steps(runs, hf_llama):
    # bf16 trains fp32 master copies: they must take the imported weights too, or the first update
    # would put the run's own random initialisation back.
    from safetensors.torch import load_file

    folder, _, _ = hf_llama
    run_dir = runs.train("import_bf16", "tiny_rmsnorm", [f"checkpoint.init_from=hf:{folder}", "train.steps=2", *FROZEN,
                                                         "train.precision=bf16"])
    out = run_dir / "hf" / "step_0000002"
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("from an earlier export")
    done = export_cli(run_dir, "--overwrite")
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (out / "stale.txt").exists()
    source, back = load_file(folder / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(back[k].dtype == torch.bfloat16 and torch.equal(back[k], source[k].to(torch.bfloat16)) for k in source)
