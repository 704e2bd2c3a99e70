"""The DeepSpeed engine on the same model: it reproduces the megatron engine's losses and grad norms at every
ZeRO stage (and with megatron TP), resumes bit-exactly, reshards DP2 → DP1 through DeepSpeed's universal
checkpoint, and applies the same weight-decay policy."""

import json

import pytest

from pipeline.config import ConfigError, load_config
from tests.faults import fault_env
from tests.helpers import assert_same_curves, crash_and_resume, launch, run_python, scalars

STEPS = 10
COMMON = [f"train.steps={STEPS}", "train.log_interval=1", "train.eval_interval=0", "schedule.warmup_steps=2",
          "model.num_layers=2", "train.micro_batch_size=4", "train.global_batch_size=16",
          "checkpoint.save_interval=5", "logging.norm_stats=false", "launch.nproc_per_node=2"]

VARIANTS = {
    "zero1": ["engine=deepspeed", "deepspeed.zero_stage=1"],
    "zero2": ["engine=deepspeed", "deepspeed.zero_stage=2"],
    "zero3": ["engine=deepspeed", "deepspeed.zero_stage=3"],
    "zero3_tp2": ["engine=deepspeed", "deepspeed.zero_stage=3", "parallel.tp=2"],
    "zero3_offload": ["engine=deepspeed", "deepspeed.zero_stage=3", "deepspeed.offload_optimizer=cpu",
                      "deepspeed.offload_param=cpu"],
}


class Runs:
    """Training runs of this module, made once each, in one temp output dir."""

    def __init__(self, root, manifest):
        self.root, self.manifest, self.done = root, manifest, set()

    def run(self, name: str, norm: str, extra: list[str], env: dict | None = None, check: bool = True):
        args = [*COMMON, f"output_dir={self.root}", f"name={name}", f"data.manifest={self.manifest}", *extra]
        return launch(f"tiny_{norm}", args, env=env, check=check)

    def curves(self, name: str, norm: str, extra: list[str]) -> tuple[dict, dict]:
        if name not in self.done:
            self.run(name, norm, extra)
            self.done.add(name)
        d = self.root / name
        return scalars(d, "train/loss"), scalars(d, "train/grad_norm")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, pydocs_manifest):
    return Runs(tmp_path_factory.mktemp("deepspeed"), pydocs_manifest)


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["dyt", "rmsnorm"])
@pytest.mark.parametrize("variant", ["zero1", "zero2", "zero3", "zero3_tp2"])
def test_deepspeed_matches_megatron(runs, norm, variant):
    # Both engines build the same GPTModel from the same seed (CPU init: identical weights at any TP size).
    loss, grad = runs.curves(f"{variant}_{norm}", norm, VARIANTS[variant])
    assert_same_curves((loss, grad), runs.curves(f"megatron_{norm}", norm, []), STEPS, loss_rel=1e-4, grad_rel=1e-3)
    # Monitoring agrees too: the weights' norm (ZeRO-3: summed over partitions, padding excluded; TP replicas
    # once) and, with DP 2, the spread of the data-parallel ranks' losses (a difference: absolute tolerance).
    for tag, tol in (("train/params_norm", {"rel": 1e-5}), ("train/loss_dp_spread", {"abs": 1e-5})):
        ref, got = (scalars(runs.root / name, tag) for name in (f"megatron_{norm}", f"{variant}_{norm}"))
        assert sorted(got) == (list(range(1, STEPS + 1)) if tag == "train/params_norm" or "tp2" not in variant
                               else []), (tag, got)
        assert all(got[s] == pytest.approx(ref[s], **tol) for s in got), (tag, got, ref)
    assert loss[STEPS] < loss[1] - 0.2  # and it learns
    assert json.loads((runs.root / f"{variant}_{norm}" / "deepspeed_config.json").read_text())[
        "zero_optimization"]["stage"] == int(VARIANTS[variant][1][-1])


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["zero3", "zero3_offload"])
def test_crash_and_resume_is_bit_exact(runs, variant):
    want, _ = runs.curves(f"{variant}_dyt", "dyt", VARIANTS[variant])
    got = crash_and_resume(runs, f"crash_{variant}", "dyt", VARIANTS[variant], crash_after=7, saved=5)
    assert [got[s] for s in range(6, STEPS + 1)] == [want[s] for s in range(6, STEPS + 1)]  # bit for bit


@pytest.mark.slow
def test_resume_dp2_into_dp1_through_universal_checkpoint(runs):
    dp1 = ["engine=deepspeed", "deepspeed.zero_stage=2", "launch.nproc_per_node=1"]
    want, _ = runs.curves("zero2_dp1", "dyt", dp1)
    name = "reshard"
    runs.run(name, "dyt", VARIANTS["zero2"], env=fault_env(crash_after_step=6), check=False)  # saved at step 5
    out = runs.run(name, "dyt", [*dp1, "checkpoint.allow_config_change=[launch.nproc_per_node]"])
    assert "universal checkpoint" in out.stderr and "resumed from" in out.stdout
    got = scalars(runs.root / name, "train/loss")
    for step in range(6, STEPS + 1):  # DP2 and DP1 sum gradients in another order: fp tolerance
        assert got[step] == pytest.approx(want[step], rel=1e-4), (step, got, want)


@pytest.mark.slow
@pytest.mark.parametrize("norm, decayed_1d", [("dyt", True), ("rmsnorm", False)])
def test_weight_decay_policy_in_deepspeed_param_groups(tmp_path, pydocs_manifest, norm, decayed_1d):
    """The paper decays every parameter for DyT (α included); RMSNorm runs keep megatron's exemption of 1-D
    parameters. Read off DeepSpeed's ZeRO optimizer after one step, by parameter name."""
    out = run_python(f"""
from pipeline.config import load_config
from pipeline.run_loader import start
cfg = load_config("tiny_{norm}", ["engine=deepspeed", "deepspeed.zero_stage=1", "data.manifest={pydocs_manifest}",
                                  "output_dir={tmp_path}"])
s = start(cfg)
names = {{id(p): n for n, p in s.engine.modules[0].named_parameters()}}
opt = s.engine.optimizer
for params, group in zip(opt.bit16_groups, opt.optimizer.param_groups):
    for p in params:
        print(names[id(p)], p.dim(), group["weight_decay"])
""")
    rows = [line.split() for line in out.splitlines() if line.count(" ") == 2]
    one_d = {name: float(wd) for name, dim, wd in rows if dim == "1"}
    two_d = {name: float(wd) for name, dim, wd in rows if dim == "2"}
    assert any(".alpha" in n for n in one_d) == (norm == "dyt") and "embedding.word_embeddings.weight" in two_d
    assert all(wd == 0.1 for wd in two_d.values())
    assert all((wd == 0.1) == decayed_1d for wd in one_d.values()), one_d


@pytest.mark.parametrize("override, key", [
    ("parallel.pp=2", "parallel.pp"),
    ("parallel.distributed_optimizer=true", "parallel.distributed_optimizer"),
    ("deepspeed.offload_param=cpu", "deepspeed.offload_param"),
    ("deepspeed.zero_stage=4", "deepspeed.zero_stage"),
])
def test_megatron_only_features_are_refused_by_name(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config("tiny_dyt_zero", [override])
