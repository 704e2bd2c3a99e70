"""benchmarks/gpu_e2e.py, the one-command GPU evidence, exercised on CPU so it cannot rot between GPU
windows: every variant and section in a dry run, speed refused for wrong kernels or fusions, and a
result marked partial (but written) when the time budget runs out."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO, run_python

VARIANTS = ["rmsnorm[torch]", "rmsnorm[compile]", "dyt[eager]", "dyt[triton]", "dyt[triton+add]", "derf[triton]"]
CHECKED = ["rmsnorm[compile]", "dyt[triton]", "dyt[triton+add]", "derf[triton]"]  # the others are references
TAG = "gpu_e2e_dry-run-cpu"


def _outputs(out) -> tuple[dict, str]:
    return json.loads((out / f"{TAG}.json").read_text()), (out / f"{TAG}.md").read_text()


@pytest.mark.slow
def test_dry_run_times_every_variant_and_writes_every_section(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/gpu_e2e.py", "--dry-run", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result, md = _outputs(tmp_path)
    assert not result["partial"] and result["gate"]["ok"] is True
    assert sorted(result["gate"]["kernels"]) == ["add_dyt", "derf", "dyt"]
    assert result["gemm"]["tflops"] > 0 and result["peak_tflops"] is None  # no datasheet peak for a CPU
    for shape in ("8b", "70b"):
        rows = result["shapes"][shape]["variants"]
        assert list(rows) == VARIANTS
        assert rows["rmsnorm[torch]"]["vs_baseline"]["ratio"] == 1.0
        for label, row in rows.items():
            s = row["summary"]
            assert row["status"] == "timed" and len(row["rounds"]) == 2 and s["steps"] == 4, label
            assert s["tokens_per_s"] > 0 and s["mfu_gemm"] > 0 and s["mfu_peak"] is None
            assert row["vs_baseline"]["round_min"] <= row["vs_baseline"]["round_max"]
            assert row["vs_best_baseline"]["baseline"] in ("rmsnorm[torch]", "rmsnorm[compile]")
            ms = row["profile"]["ms_per_step"]
            # every variant's own norm code is found by the classifier: ATen rms_norm, the compiled region,
            # tanh / erf ops, our Triton autograd Functions
            assert ms["norm"] > 0 and ms["gemm"] > 0 and ms["attention"] > 0 and ms["optimizer"] > 0, (label, ms)
        for label in CHECKED:
            assert result["gate"]["model"][f"{shape} {label}"]["ok"], label
        assert result["gate"]["model"][f"{shape} dyt[triton+add]"]["against"] == "dyt[eager]"
    for section in ("## Correctness gate", "## Method", "× rmsnorm[torch] (rounds min–max)", "| norm share |",
                    "### 70b: LLaMA-3 70B layer shapes"):
        assert section in md
    assert proc.stdout.rstrip().splitlines()[-1] == "result: complete; correctness gate: PASS"


PLANTED = """
import sys
sys.argv = ["gpu_e2e.py", "--dry-run", "--out", {out!r},
            "--variants", "rmsnorm[torch],rmsnorm[compile],dyt[eager],dyt[triton+add],derf[triton]"]
sys.path.insert(0, "benchmarks")
import gpu_e2e  # first: it switches the Triton interpreter on before anything imports triton
import e2e_model
import pipeline.kernels
from pipeline.kernels import add_dyt, dyt_triton, reference

def wrong_fusion(x, residual, alpha, weight, bias=None, *, kernel="auto"):
    # right kernel, wrong use: DyT of the attention output instead of the residual sum it returns
    return add_dyt(x, residual * 0, alpha, weight, bias, kernel=kernel)[0], x + residual

pipeline.kernels.add_dyt = wrong_fusion  # the op the registry names for DyT's fused residual add
dyt_triton.derf = lambda x, a, s, w, b=None: reference.derf_eager(x, a, s + 0.25, w, b)  # wrong shift

def broken(self, x):
    raise RuntimeError("planted compile failure")

e2e_model.CompiledRMSNorm.forward = broken  # one variant's crash must not cost the others their numbers
checks = iter(range(10**6))
gpu_e2e.Guard.soft_expired = lambda self: next(checks) >= 3  # the time runs out as the 8b shape's 2nd round starts
print("RC", gpu_e2e.main(sys.argv[1:]))
"""


def test_wrong_kernel_and_wrong_fusion_get_no_speed_and_a_late_run_is_written_partial(tmp_path):
    out = run_python(PLANTED.format(out=str(tmp_path)))
    assert "RC 1" in out
    result, md = _outputs(tmp_path)
    rows = result["shapes"]["8b"]["variants"]
    assert not result["gate"]["kernels"]["derf"]["ok"] and result["gate"]["kernels"]["add_dyt"]["ok"]
    assert rows["derf[triton]"]["status"] == "refused: kernel check failed (derf)"
    fusion = result["gate"]["model"]["8b dyt[triton+add]"]
    assert not fusion["ok"] and "mlp.linear_fc1" in fusion["where"]
    assert rows["dyt[triton+add]"]["status"].startswith("refused: gradient of")
    assert rows["rmsnorm[compile]"]["status"].startswith("error (8b rmsnorm[compile] gradient check): RuntimeError")
    assert len(result["errors"]) == 1 and "planted compile failure" in result["errors"][0]
    for refused in ("derf[triton]", "dyt[triton+add]", "rmsnorm[compile]"):
        assert rows[refused]["rounds"] == [] and rows[refused]["summary"] is None
    # what finished is kept: round 1 of both remaining variants, 2 steps each
    assert [len(rows[v]["rounds"]) for v in ("rmsnorm[torch]", "dyt[eager]")] == [1, 1]
    assert rows["dyt[eager]"]["summary"]["steps"] == 2 and rows["dyt[eager]"]["vs_baseline"]["ratio"] > 0
    assert result["partial"] and result["partial_reason"] == "time budget: 8b stopped in round 2 of 2"
    assert result["skipped_shapes"] == {"70b": "time budget: not started"}
    assert "**PARTIAL: time budget: 8b stopped in round 2 of 2**" in md and "FAIL: no speed reported" in md
    assert "## Errors" in md and out.rstrip().splitlines()[-2].startswith("result: PARTIAL")


def test_hard_deadline_still_writes_a_partial_result(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/gpu_e2e.py", "--dry-run", "--budget-s", "1", "--out",
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1, proc.stderr[-3000:]
    result, md = _outputs(tmp_path)
    assert result["partial"] and result["partial_reason"].startswith("time budget reached (hard stop) after")
    assert result["skipped_shapes"] == dict.fromkeys(("8b", "70b"), "time budget reached (hard stop)")
    assert result["gate"]["ok"] is None and "correctness gate: not run" in proc.stdout


def test_sigterm_from_an_outer_timeout_keeps_what_finished(tmp_path):
    proc = subprocess.Popen([sys.executable, "benchmarks/gpu_e2e.py", "--dry-run", "--shapes", "8b", "--variants",
                             "rmsnorm[torch],dyt[eager]", "--rounds", "50", "--out", str(tmp_path)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        for line in proc.stdout:
            if "8b round 2/50" in line:
                proc.terminate()  # what `timeout` sends
                break
        rest = proc.communicate(timeout=120)[0]
    finally:
        proc.kill()
    assert proc.returncode == 1
    result, md = _outputs(tmp_path)
    assert result["partial"] and result["partial_reason"].startswith("stopped by SIGTERM")
    rows = result["shapes"]["8b"]["variants"]
    assert all(len(rows[v]["rounds"]) >= 2 and rows[v]["summary"]["steps"] >= 4 for v in rows)
    assert "**PARTIAL: stopped by SIGTERM" in md and "result: PARTIAL (stopped by SIGTERM" in rest


@pytest.mark.parametrize("name, category", [
    ("_fwd_kernel", "norm"),  # ours (exact name) ...
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4>, true>(Flash_fwd_params)",
     "attention"),  # ... while flash attention's forward kernel is attention
    ("nvjet_tst_192x192_64x4_2x1_v_bz_coopA_TNN", "gemm"),
    ("void cutlass::Kernel2<cutlass_80_wmma_tensorop_bf16_s161616gemm_bf16_32x32_128x2_tn_align8>(Params)", "gemm"),
    ("triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_0", "norm"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::tanh_kernel_cuda(at::TensorIteratorBase&)"
     "::{lambda()#2}>", "norm"),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedAdamMathFunctor<float, 4>>",
     "optimizer"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::NormTwoOps<float>>>", "other"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::BFloat16>>", "other"),
    ("aten::mm", "gemm"), ("aten::_scaled_dot_product_flash_attention_for_cpu_backward", "attention"),
    ("_NormFnBackward", "norm"), ("aten::_foreach_norm", "optimizer"),
])
def test_profile_classifies_kernels_by_name(name, category):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import e2e_profile  # here, not at collection: it imports the Triton kernels

    assert e2e_profile.classify(name) == category
