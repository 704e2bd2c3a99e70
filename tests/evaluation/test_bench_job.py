"""`make bench-model` on CPU: both levels run, interleaved, and the report says what it measured."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.mark.slow
def test_bench_cli_on_cpu(tmp_path, pydocs_manifest):
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "pipeline.evaluation", "bench", "tiny_rmsnorm",
           f"data.manifest={pydocs_manifest}", "model.num_layers=1", "--norms", "rmsnorm,dyt", "--reps", "3",
           "--device", "cpu", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads((out / "results.json").read_text())
    layer = {k: {r["label"]: r for r in res["layer"][k]} for k in ("forward", "forward_backward")}
    expected = {"rmsnorm[eager]", "rmsnorm[torch]", "rmsnorm[compile]", "dyt[eager]", "dyt[compile]"}
    assert set(layer["forward"]) == set(layer["forward_backward"]) == expected
    assert {s["label"] for s in res["layer"]["skipped"]} == {"rmsnorm[te]", "rmsnorm[liger]", "dyt[triton]",
                                                             "dyt[liger]"}
    assert res["layer"]["shape"] == [128, 8, 128]
    for rows in layer.values():
        assert rows["rmsnorm[torch]"]["ratio_to_baseline"] == 1.0
        for r in rows.values():
            assert len(r["samples_ms"]) == 3 and r["p25_ms"] <= r["median_ms"] <= r["p75_ms"]
            base = rows["rmsnorm[torch]"]["median_ms"]
            assert r["ratio_to_baseline"] == pytest.approx(r["median_ms"] / base)
            assert r["peak_mem_mb"] is None  # not measurable on CPU, and not faked
    model = {k: {r["label"]: r for r in res["model"][k]} for k in ("forward", "train_step")}
    assert set(model["train_step"]) == {"rmsnorm", "dyt[eager]", "dyt[compile]"}
    for rows in model.values():
        for r in rows.values():
            assert r["tokens_per_s"] == pytest.approx(16 * 128 / (r["median_ms"] / 1e3))
    # A training step does strictly more work than the forward pass of the same model.
    for k in model["forward"]:
        assert model["train_step"][k]["median_ms"] > model["forward"][k]["median_ms"]

    md = (out / "report.md").read_text()
    assert md.startswith("# Wall-clock: tiny_rmsnorm on CPU")
    assert "**This is a CPU measurement:**" in md and "**Not shown:**" in md
    for heading in ("### Forward (no grad)", "### Forward + backward (grads of x and all parameters)",
                    "### Inference forward (loss, no grad)",
                    "### Training step (forward + backward + clip + optimizer)"):
        assert heading in md
    assert "| `dyt[compile]` |" in md and "![bench](bench.png)" in md
    assert (out / "bench.png").stat().st_size > 10_000
