"""The config system: composition, overrides, typed validation with errors that name the key."""

import subprocess
import sys

import pytest
import yaml

from pipeline.config import ConfigError, load_config, save_config
from pipeline.config.loader import compose, find_config
from tests.helpers import REPO


def test_tiny_configs_compose_from_parts():
    cfg = load_config("tiny_dyt")
    assert cfg.name == "tiny_dyt"
    assert cfg.model.norm.type == "dyt" and cfg.model.hidden_size == 128  # from norm/dyt and model/tiny
    assert cfg.data.prepare.sources[0].paths == ["data/corpus/pydocs.jsonl.gz"]  # from data/pydocs
    assert load_config("tiny_rmsnorm").model.norm.type == "rmsnorm"


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "configs").glob("*.yaml") if p.stem != "base"))
def test_every_shipped_run_config_is_valid(name):
    load_config(name)


def test_overrides_are_typed_and_nested():
    cfg = load_config("tiny_dyt", ["train.steps=7", "schedule.warmup_steps=2", "optimizer.lr=1e-4",
                                   "optimizer.min_lr=0", "model.norm.alpha_init={attention: 0.3, mlp: 0.2, final: 0.1}",
                                   "parallel.vpp=null"])
    assert cfg.train.steps == 7 and cfg.optimizer.lr == 1e-4
    assert cfg.model.norm.alpha_init.attention == 0.3
    assert cfg.parallel.vpp is None
    assert load_config("tiny_dyt", ["model.embedding_scale=off"]).model.embedding_scale == "off"  # not False


@pytest.mark.parametrize("override, key", [
    ("model.num_layers=abc", "model.num_layers"),
    ("model.num_layerz=4", "model.num_layerz"),
    ("parallel.tp=3", "parallel.tp"),
    ("model.num_query_groups=3", "model.num_query_groups"),
    ("train.global_batch_size=12", "train.global_batch_size"),
    ("train.precision=fp64", "train.precision"),
    ("model.norm.type=batchnorm", "model.norm.type"),
    ("parallel.sp=true", "parallel.sp"),
    ("model.num_layers=3 parallel.pp=2 launch.nproc_per_node=2", "model.num_layers"),
    ("launch.nproc_per_node=3 parallel.tp=2", "parallel"),
    ("schedule.warmup_steps=1000", "schedule.warmup_steps"),
    ("model.norm.fuse_residual_add=true model.norm.type=rmsnorm", "model.norm.fuse_residual_add"),
    ("optimizer", "override 'optimizer'"),
    ("train.max_consecutive_skips=-1", "train.max_consecutive_skips"),
    ("checkpoint.on_save_error=ignore", "checkpoint.on_save_error"),
    ("checkpoint.async_save=true engine=deepspeed", "checkpoint.async_save"),
    ("logging.diagnostics.warn_sites=[final,qk]", "logging.diagnostics.warn_sites"),
    ("logging.diagnostics.thresholds=[]", "logging.diagnostics.thresholds"),
    ("logging.diagnostics.warn_fraction=1.5", "logging.diagnostics.warn_fraction"),
    ("logging.wandb.mode=cloud", "logging.wandb.mode"),
    ("model.norm.weight_decay=some", "model.norm.weight_decay"),
])
def test_bad_config_names_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config("tiny_dyt", override.split())
    assert str(e.value).startswith(key), str(e.value)


def test_unknown_config_lists_the_known_ones():
    with pytest.raises(ConfigError, match="tiny_dyt"):
        find_config("no_such_run")


def test_defaults_cycle_is_reported(tmp_path):
    (tmp_path / "a.yaml").write_text("defaults: [b]\n")
    (tmp_path / "b.yaml").write_text("defaults: [a]\n")
    with pytest.raises(ConfigError, match="circular"):
        compose(tmp_path / "a.yaml")  # defaults are looked up next to their file first


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config("tiny_dyt", ["train.steps=11", "schedule.warmup_steps=1",
                                   "model.norm.alpha_init={attention: 1, mlp: 2, final: 3}"])
    save_config(cfg, tmp_path / "config.yaml")
    assert "defaults" not in yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert load_config(str(tmp_path / "config.yaml")) == cfg


def test_launcher_rejects_bad_override_without_importing_torch():
    """A typo must fail at once, before torch/megatron (seconds) are imported or processes start."""
    code = ("import sys; from launch.__main__ import main; rc = main(['tiny_dyt', 'parallel.tp=3']); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "parallel.tp: tp=3 does not divide model.num_attention_heads=4" in proc.stderr


def test_weight_decay_paper_policy_decays_every_parameter_for_any_norm():
    from megatron.core.optimizer import OptimizerConfig

    from pipeline.engine.optim import weight_decay_overrides

    def overrides(name, policy):
        return weight_decay_overrides(load_config(name, [f"model.norm.weight_decay={policy}"]), OptimizerConfig())

    assert overrides("tiny_rmsnorm", "paper") == {} == overrides("tiny_dyt", "paper")  # {}: no exemption
    assert overrides("tiny_rmsnorm", "auto") != {} and overrides("tiny_dyt", "auto") == {}


def test_wandb_is_optional_and_refused_clearly_when_missing():
    """Off unless configured; asked for without the package, every rank stops with the pip command."""
    code = ("import sys; sys.modules['wandb'] = None; from pipeline.config import load_config; "
            "from pipeline.monitor.sinks import check_wandb; "
            "assert check_wandb(load_config('tiny_dyt').logging.wandb) is False; "
            "assert check_wandb(load_config('tiny_dyt', ['logging.wandb={mode: disabled}']).logging.wandb) is False; "
            "check_wandb(load_config('tiny_dyt', ['logging.wandb={}']).logging.wandb)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "logging.wandb is set but the `wandb` package is not installed" in proc.stderr


def test_colon_times_stay_strings():
    """YAML 1.1 reads 12:00:00 as the base-60 integer 43200 (SLURM would get --time=43200 minutes)."""
    cfg = load_config("tiny_dyt", ["launch.slurm.time=12:00:00"])
    assert cfg.launch.slurm.time == "12:00:00"
