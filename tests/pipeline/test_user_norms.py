"""Adding a norm is one module plus a registration (docs/norms.md): the user norms in
tests/pipeline/user_norms.py validate through `custom_imports`, get their registered recipe, train, and
come out of `make compare` with α telemetry and α curves (a norm with α) or a report that says what was
not analysed (a norm without)."""

import json
import os
import subprocess
import sys

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.evaluation.events import read_scalars
from pipeline.norms import get_spec, paper_alpha_init, site_params
from tests.helpers import REPO

USER = ["custom_imports=[tests.pipeline.user_norms]"]


def test_custom_imports_register_before_validation():
    cfg = load_config("tiny_dyt", [*USER, "model.norm.type=scaled_tanh"])
    assert cfg.model.norm.type == "scaled_tanh" and get_spec("scaled_tanh").has_alpha
    width = cfg.model.hidden_size
    assert site_params(cfg.model.norm, width, "mlp") == {"alpha_init": paper_alpha_init(width).mlp}
    assert site_params(load_config("tiny_dyt", [*USER, "model.norm.type=softsign"]).model.norm, width, "mlp") == {}
    # The import path of a registered class is the same norm, traits included.
    assert get_spec("tests.pipeline.user_norms:ScaledTanh") is get_spec("scaled_tanh")


@pytest.mark.parametrize("overrides, key, match", [
    (["model.norm.type=not_a_norm"], "model.norm.type", "custom_imports"),
    (["custom_imports=[no_such_module_xyz]"], r"custom_imports\[0\]", "no_such_module_xyz"),
    ([*USER, "model.norm.type=scaled_tanh", "model.norm.fuse_residual_add=true"],
     "model.norm.fuse_residual_add", "norms with one: dyt"),
    ([*USER, "model.norm.type=softsign", "model.norm.alpha_init={attention: 1, mlp: 1, final: 1}"],
     "model.norm.alpha_init", "has no α"),
])
def test_registry_traits_are_validated(overrides, key, match):
    with pytest.raises(ConfigError, match=f"^{key}: .*{match}"):
        load_config("tiny_dyt", overrides)


@pytest.mark.slow
def test_user_norms_train_and_compare(tmp_path, pydocs_manifest):
    """The public route: a run config of the user's own (by path), then `make compare` on it."""
    run_config = tmp_path / "my_run.yaml"
    run_config.write_text("defaults: [tiny_dyt]\ncustom_imports: [tests.pipeline.user_norms]\n"
                          "model: {norm: {type: scaled_tanh}}\n")
    compare = tmp_path / "mine.yaml"
    compare.write_text(json.dumps({
        "name": "mine", "baseline": "scaled_tanh", "seeds": [1], "output_dir": str(tmp_path / "reports"),
        "variants": [{"label": "scaled_tanh", "config": str(run_config)},
                     {"label": "softsign", "config": str(run_config), "overrides": ["model.norm.type=softsign"]}],
        "overrides": ["train.steps=20", "train.log_interval=5", "train.eval_interval=10", "train.eval_iters=1",
                      "schedule.warmup_steps=2", "model.num_layers=2", "checkpoint.save_interval=0",
                      f"data.manifest={pydocs_manifest}"]}))
    proc = subprocess.run([sys.executable, "-m", "pipeline.evaluation", "compare", str(compare), "--quiet"],
                          cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    out = tmp_path / "reports" / "mine"
    res = json.loads((out / "results.json").read_text())
    runs = {r["label"]: r for r in res["runs"]}
    assert runs.keys() == {"scaled_tanh", "softsign"}

    # A norm with α: telemetry per site (and the embedding scalar its recipe asks for), α curves from α₀.
    tb = read_scalars(REPO / runs["scaled_tanh"]["run_dir"] / "tensorboard")
    sites = {"attention/layer_01", "mlp/layer_01", "attention/layer_02", "mlp/layer_02", "final"}
    assert {t.removeprefix("norm_alpha/") for t in tb if t.startswith("norm_alpha/")} == sites
    assert "norm/embedding_scale" in tb and tb["train/loss"][0][-1] == 20
    al = res["norms"]["scaled_tanh"]
    assert al["kind"] == "alpha" and {r["site"] for r in al["sites"]} == sites
    for r in al["sites"]:
        assert r["alpha_init"] == paper_alpha_init(128).at(r["site"].split("/")[0])
        assert al["curves"][r["site"]][0] == [0, 5, 10, 15, 20]
        assert r["alpha_final"] != r["alpha_init"]  # α is a trained parameter of the user's module
    assert (out / "norms" / "mine-scaled_tanh-s1" / "alpha.png").stat().st_size > 10_000

    # A norm without α: no α telemetry, and the report says what it could not analyse.
    tb = read_scalars(REPO / runs["softsign"]["run_dir"] / "tensorboard")
    assert not any(t.startswith("norm/") for t in tb) and tb["train/loss"][0][-1] == 20
    none = res["norms"]["softsign"]
    assert none["kind"] == "none" and "neither an α" in none["reason"] and none["figures"] == []
    md = (out / "report.md").read_text()
    assert "### softsign" in md and "**not analysed**" in md and "](norms/mine-scaled_tanh-s1/alpha.png)" in md
