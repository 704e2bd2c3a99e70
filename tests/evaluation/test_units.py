"""Fast checks of the pieces around the statistics: compare-config validation, the TensorBoard reader,
the tanh fit, and the benchmark's interleaving."""

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import ConfigError
from pipeline.evaluation.bench import Case, measure
from pipeline.evaluation.compare import plan
from pipeline.evaluation.events import read_scalars
from pipeline.evaluation.schema import load_compare_config
from pipeline.evaluation.scurve import fit_tanh


def _compare_yaml(tmp_path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_committed_tiny_compare_config_loads():
    cc = load_compare_config("compare/tiny")
    assert cc.baseline in [v.label for v in cc.variants]
    assert len(plan(cc)) == len(cc.variants) * len(cc.seeds)


def test_compare_config_variants_and_labels(tmp_path):
    cc = load_compare_config(_compare_yaml(tmp_path, """
name: x
baseline: rms
variants: [{config: tiny_rmsnorm, label: rms}, tiny_dyt,
           {config: tiny_dyt, label: dyt_a05,
            overrides: ["model.norm.alpha_init={attention: 0.5, mlp: 0.5, final: 0.5}"]}]
seeds: [3, 4]
overrides: [train.steps=40]
"""))
    assert [v.label for v in cc.variants] == ["rms", "tiny_dyt", "dyt_a05"]
    plans = plan(cc)
    assert [p.name for p in plans[:2]] == ["x-rms-s3", "x-rms-s4"]
    assert plans[0].cfg.train.steps == 40 and plans[0].cfg.train.seed == 3
    assert plans[-1].cfg.model.norm.alpha_init.attention == 0.5
    assert plans[0].run_dir == Path("reports") / "x" / "runs" / "x-rms-s3"  # output_dir default
    assert plans[0].command[1:4] == ["-m", "launch", "tiny_rmsnorm"]


@pytest.mark.parametrize("body, message", [
    ("name: x\nbaseline: nope\nvariants: [tiny_dyt]\n", "baseline: 'nope' is not one of the variants"),
    ("name: x\nbaseline: tiny_dyt\nvariants: [tiny_dyt, tiny_dyt]\n", "label 'tiny_dyt' appears twice"),
    ("name: x\nbaseline: tiny_dyt\nvariants: [tiny_dyt]\nseeds: []\n", "seeds: need at least one seed"),
    ("name: x\nbaseline: tiny_dyt\nvariants: [tiny_dyt]\nseeds: [1, 1]\n", "seeds: [1, 1] has repeats"),
    ("name: x\nbaseline: tiny_dyt\nvariants: [tiny_dyt]\nsteps: 3\n", "steps: unknown key"),
    ("name: x\nbaseline: tiny_dyt\nvariants: [{label: a}]\n", "config"),
    ("name: a/b\nbaseline: tiny_dyt\nvariants: [tiny_dyt]\n", "name: must be a plain directory name"),
])
def test_compare_config_errors_name_the_key(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_compare_config(_compare_yaml(tmp_path, body))


def test_plan_refuses_variants_with_different_token_budgets(tmp_path):
    cc = load_compare_config(_compare_yaml(tmp_path, """
name: x
baseline: tiny_rmsnorm
variants: [tiny_rmsnorm, {config: tiny_dyt, overrides: [train.steps=50]}]
"""))
    with pytest.raises(ConfigError, match=r"train.steps: variants differ \(tiny_rmsnorm: 300, tiny_dyt: 50"):
        plan(cc)


def test_plan_reports_a_bad_variant_config(tmp_path):
    cc = load_compare_config(_compare_yaml(tmp_path, """
name: x
baseline: tiny_rmsnorm
variants: [tiny_rmsnorm, {config: tiny_dyt, overrides: [model.hidden_size=130]}]
"""))
    with pytest.raises(ConfigError, match="variant tiny_dyt .*seed 1.*model.hidden_size"):
        plan(cc)


def test_read_scalars_keeps_the_latest_value_per_step(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    first = SummaryWriter(log_dir=str(tmp_path))
    for step in range(1, 11):
        first.add_scalar("train/loss", 10.0 - step, step)
    first.close()
    second = SummaryWriter(log_dir=str(tmp_path))  # a resume from step 6: steps 7.. are written again
    for step in range(7, 13):
        second.add_scalar("train/loss", 100.0 + step, step)
    second.add_scalar("val/loss", 3.5, 12)
    second.add_text("config/resolved", "name: x", 0)  # not scalars: skipped
    second.add_histogram("norm_alpha_by_layer/attention", np.array([0.5, 0.6]), 12)
    second.close()
    curves = read_scalars(tmp_path)
    steps, values = curves["train/loss"]
    assert steps == list(range(1, 13))
    assert values[:6] == [9.0, 8.0, 7.0, 6.0, 5.0, 4.0] and values[6:] == [107.0 + i for i in range(6)]
    assert curves["val/loss"] == ([12], [3.5]) and sorted(curves) == ["train/loss", "val/loss"]
    assert list(read_scalars(tmp_path, tags=["val/loss"])) == ["val/loss"]
    with pytest.raises(FileNotFoundError):
        read_scalars(tmp_path / "nothing")


def test_tanh_fit_recovers_known_parameters():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50_000, generator=gen).numpy() * 2.0
    noise = 0.01 * torch.randn(50_000, generator=gen).numpy()
    y = 2.5 * torch.tanh(torch.from_numpy(1.7 * x)).numpy() + noise
    fit = fit_tanh(x, y)
    assert fit["alpha"] == pytest.approx(1.7, rel=0.01) and fit["scale"] == pytest.approx(2.5, rel=0.01)
    assert fit["r2_tanh"] > 0.999 and fit["r2_linear"] < 0.9  # clearly an S, clearly not a line

    lin = fit_tanh(x, -3.0 * x)  # a line is the small-α limit: both fits are exact, slope −3
    assert lin["r2_tanh"] > 0.9999 and lin["r2_linear"] == pytest.approx(1.0)
    assert lin["slope"] == pytest.approx(-3.0)
    assert lin["alpha"] * lin["scale"] == pytest.approx(-3.0, rel=1e-3)


def test_measure_interleaves_and_rotates():
    order: list[str] = []
    cases = [Case(n, "rmsnorm", "x", "", lambda n=n: order.append(n)) for n in "abc"]
    measure(cases, torch.device("cpu"), reps=3, min_rep_s=0.0, warmup=1)
    timed = order[2 * len(cases):]  # after each case's warm-up call and calibration call
    assert timed == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(len(c.samples) == 3 and all(s > 0 for s in c.samples) for c in cases)


def test_a_run_config_is_not_a_compare_config():
    with pytest.raises(ConfigError, match="tiny_dyt.yaml is a run config; a compare config lists `variants`"):
        load_compare_config("tiny_dyt")


def _shard(root: Path, prefix: str, tokens: list[int]) -> dict:
    (root / prefix).parent.mkdir(parents=True, exist_ok=True)
    np.asarray(tokens, dtype=np.uint16).tofile(root / f"{prefix}.bin")
    return {"prefix": prefix, "tokens": len(tokens)}


def test_unigram_reference_known_answers(tmp_path):
    from pipeline.data import Manifest
    from pipeline.evaluation.unigram import unigram_reference

    # Source a (weight 3) is all token 0, source b (weight 1) all token 1: the blend is 0.75 / 0.25.
    train = [{**_shard(tmp_path, "train/a", [0] * 10), "source": "a"},
             {**_shard(tmp_path, "train/b", [1] * 30), "source": "b"}]
    valid = [{**_shard(tmp_path, "valid/a", [0, 1, 2, 0]), "source": "a"}]
    raw = {"dtype": "uint16", "tokenizer": {"vocab_size": 4},
           "sources": [{"name": "a", "weight": 3.0}, {"name": "b", "weight": 1.0}],
           "splits": {"train": train, "valid": valid}}
    ref = unigram_reference(Manifest(tmp_path / "manifest.json", raw))
    p = np.array([0.75, 0.25, 0.0, 0.0])
    assert ref["train_entropy"] == pytest.approx(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))
    q = (p * 40 + 0.5) / (40 + 0.5 * 4)  # add-½ smoothing over the 4-token vocabulary, 40 training tokens
    assert ref["valid_cross_entropy"] == pytest.approx(-(2 * np.log(q[0]) + np.log(q[1]) + np.log(q[2])) / 4)
    assert unigram_reference(Manifest(tmp_path / "m.json", {**raw, "splits": {"train": train}})) is None


def test_paper_7b_arms_differ_only_in_the_norm_recipe():
    """The paper-reproduction comparison: same data, batch, schedule, optimizer and decay policy in both arms."""
    from pipeline.config import to_dict
    from pipeline.evaluation.compare import arms

    cc = load_compare_config("compare/paper_7b")
    plans = plan(cc)
    a = arms(cc, {p.label: to_dict(p.cfg) for p in plans if p.seed == cc.seeds[0]})
    assert {d["key"] for d in a["llama2_7b_dyt"]["recipe_differences"]} == {"model.norm.type"}
    assert a["llama2_7b_dyt"]["other_differences"] == []
    assert {x["recipe"]["weight_decay_on"] for x in a.values()} == {"every parameter"}
    assert a["llama2_7b_dyt"]["recipe"]["alpha_init"] == {"attention": 0.8, "mlp": 0.2, "final": 0.2}
    assert a["llama2_7b_dyt"]["recipe"]["embedding_scale_init"] == 64.0
    cfg = plans[0].cfg  # the official command's batch, length and schedule
    assert (cfg.train.global_batch_size, cfg.model.seq_length, cfg.optimizer.lr) == (1024, 4096, 3e-4)
    assert cfg.schedule.decay == "fms_fsdp" and cfg.schedule.warmup_steps == min(2000, cfg.train.steps // 20)
    assert cfg.train.steps * 1024 * 4096 == pytest.approx(200e9, rel=1e-4) and cc.seeds == [1, 2]
