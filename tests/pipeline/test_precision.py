"""bf16 runs keep α₀ and √d exact where it matters: the fp32 master weights start from 0.8 and √128, not from
their bf16 roundings (0.80078125, 11.3125), in both engines and every optimizer flavour; the bf16 model copy
is the rounding, as in the paper's FSDP bf16 compute."""

import pytest

from tests.helpers import run_python

ALPHA = "model.norm.alpha_init={attention: 0.8, mlp: 0.2, final: 0.2}"
MASTERS = {  # how each engine exposes the fp32 master of a model parameter
    "megatron": "lambda p: p.main_param",
    "deepspeed": "lambda p: (safe_get_local_fp32_param(p)[:1] if hasattr(p, 'ds_id') else safe_get_full_fp32_param(p))",
}
CASES = {
    "megatron": ["engine=megatron"],
    "megatron_distopt": ["engine=megatron", "parallel.distributed_optimizer=true"],
    "deepspeed_zero2": ["engine=deepspeed", "deepspeed.zero_stage=2"],
    "deepspeed_zero3": ["engine=deepspeed", "deepspeed.zero_stage=3"],
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_fp32_masters_start_from_exact_alpha0_and_sqrt_d(case, tmp_path, pydocs_manifest):
    engine = CASES[case][0].split("=")[1]
    out = run_python(f"""
import math, torch
from pathlib import Path
from deepspeed.utils import safe_get_full_fp32_param, safe_get_local_fp32_param
from pipeline.config import load_config
from pipeline.run_loader import start
cfg = load_config("tiny_dyt", {[*CASES[case], ALPHA, "train.precision=bf16", "model.num_layers=2",
                               f"data.manifest={pydocs_manifest}", f"output_dir={tmp_path}"]!r})
s = start(cfg)
master = {MASTERS[engine]}
m = s.engine.modules[0]
with s.engine.gathered(list(m.parameters())):
    for name, p in [("alpha_attn", m.decoder.layers[0].input_layernorm.alpha),
                    ("alpha_mlp", m.decoder.layers[1].pre_mlp_layernorm.alpha),
                    ("scale", m.embedding.scale)]:
        print(name, p.dtype, repr(float(p.float())), repr(float(master(p).reshape(-1)[0])), master(p).dtype)
if {engine == "megatron"}:  # weights loaded later (checkpoint.init_from) become the masters too
    from megatron.core import dist_checkpointing
    (Path({str(tmp_path)!r}) / "w").mkdir()
    dist_checkpointing.save({{"model": m.sharded_state_dict()}}, {str(tmp_path / "w")!r})  # weights only
    with torch.no_grad():
        for p in m.parameters():
            p.main_param.add_(1.0)
    s.engine.load_weights(Path({str(tmp_path)!r}) / "w")
    print("reloaded", all(torch.equal(p.main_param.view(-1), p.detach().float().view(-1)[:p.main_param.numel()])
                          for p in m.parameters()))
""")
    assert ("reloaded True" in out) == (engine == "megatron"), out
    rows = {r[0]: r[1:] for r in (line.split() for line in out.splitlines()) if len(r) == 5}
    f32 = lambda x: float(__import__("torch").tensor(x, dtype=__import__("torch").float32))  # noqa: E731
    for name, exact, rounded in (("alpha_attn", 0.8, 0.80078125), ("alpha_mlp", 0.2, 0.2001953125),
                                 ("scale", 128**0.5, 11.3125)):
        dtype, model_value, master_value, master_dtype = rows[name]
        assert dtype == "torch.bfloat16" and float(model_value) == rounded, rows
        assert master_dtype == "torch.float32" and float(master_value) == f32(exact), rows
