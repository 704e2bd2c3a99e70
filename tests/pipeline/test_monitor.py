"""Monitoring pieces on hand-built tensors: the saturation / residual-RMS sampler (values and what it reads),
the early-warning rule, the log-window numbers, the parameter-norm and loss-spread helpers, the TensorBoard
layout, and the fms-fsdp LR schedule against the paper code's formula."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pipeline.engine.base import StepResult, dp_loss_range, sum_of_squares, tp_unique
from pipeline.monitor import metrics, tags
from pipeline.monitor.sampler import NormSampler, SaturationWatch, sample_rows, site_stats, summarize
from pipeline.norms.dyt import Derf, DyT
from pipeline.norms.torch_norms import RMSNorm

CPU = torch.device("cpu")


def _cfg(dtype=torch.float32):
    return SimpleNamespace(params_dtype=dtype, sequence_parallel=False)


class ElementsRead(TorchDispatchMode):
    """Elements of every tensor argument of every non-view op dispatched inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.elements += sum(a.numel() for a in torch.utils._pytree.tree_leaves((args, kwargs or {}))
                                 if isinstance(a, torch.Tensor))
        return func(*args, **(kwargs or {}))


def test_site_stats_values_on_a_hand_built_input():
    dyt = DyT(config=_cfg(), hidden_size=4, alpha_init=2.0)
    # |α·x| per row = [1, 3, 5, 0]: > 2.5 for 2 of 4 elements, > 4 for 1 of 4, on every row.
    x = torch.tensor([0.5, -1.5, 2.5, 0.0]).repeat(64, 3, 1)  # [seq 64, batch 3, hidden 4]
    v = summarize({"final": site_stats(dyt, x, tokens=12, thresholds=[2.5, 4.0]).tolist()}, [2.5, 4.0])
    assert v["dyt_saturation_gt_2.5/final"] == 0.5 and v["dyt_saturation_gt_4/final"] == 0.25
    assert v["dyt_tanh_abs_mean/final"] == pytest.approx((math.tanh(1) + math.tanh(3) + math.tanh(5)) / 4)
    assert v["residual_rms/final"] == pytest.approx(math.sqrt((0.25 + 2.25 + 6.25) / 4))

    derf = Derf(config=_cfg(), hidden_size=4, alpha_init=2.0)
    with torch.no_grad():
        derf.shift.fill_(-3.0)  # z = 2x − 3 = [−2, −6, 2, −3]
    v = summarize({"s": site_stats(derf, x, 12, [2.5]).tolist()}, [2.5])
    assert v["dyt_saturation_gt_2.5/s"] == 0.5

    rms = RMSNorm(config=_cfg(), hidden_size=4)  # residual scale only, for every norm type
    v = summarize({"attention/layer_01": site_stats(rms, x, 12, [2.5]).tolist()}, [2.5])
    assert list(v) == ["residual_rms/attention/layer_01"]


def test_sampler_reads_a_slice_not_the_tensor():
    x = torch.randn(1024, 2, 64)  # [seq, micro-batch, hidden]: 131,072 elements
    rows = sample_rows(x, tokens=16)
    assert rows.shape == (16, 64)
    positions = {int(torch.nonzero((x == r).all(-1))[0, 0]) for r in rows}
    assert positions == {0, 128, 256, 384, 512, 640, 768, 896}  # spread over the sequence, 2 rows each
    dyt = DyT(config=_cfg(), hidden_size=64, alpha_init=0.5)
    with ElementsRead() as sampled:
        site_stats(dyt, x, tokens=16, thresholds=[2.5, 4.0])
    with ElementsRead() as full:  # the same statistics over the whole tensor, for scale
        (x * x).sum()
    assert full.elements >= x.numel()
    # a dozen ops over the 1,024-element sample: a tenth of one pass over x
    assert 0 < sampled.elements <= 16 * rows.numel() and sampled.elements < x.numel() / 8, sampled.elements


def test_hooks_sample_once_per_armed_step_and_stay_idle_otherwise():
    dyt = DyT(config=_cfg(), hidden_size=8, alpha_init=1.0)
    sampler = NormSampler({"final": dyt}, tokens=4, thresholds=[2.5])
    x = torch.full((16, 2, 8), 3.0)
    dyt(x)  # not armed
    assert sampler.take() == {}
    sampler.arm()
    dyt(x)  # first micro-batch: sampled (|α·x| = 3 > 2.5 everywhere)
    dyt(torch.zeros(16, 2, 8))  # second micro-batch / a recompute: not sampled again
    sums = sampler.take()
    assert summarize(sums, [2.5])["dyt_saturation_gt_2.5/final"] == 1.0 and sums["final"][0] == 4 * 8
    assert sampler.take() == {}
    sampler.remove()
    sampler.arm()
    dyt(x)
    assert sampler.take() == {}


def test_early_warning_needs_consecutive_samples_and_fires_once_per_streak():
    watch = SaturationWatch(["final", "attention"], level=0.5, samples=3, threshold=2.5)
    tag = tags.saturation(2.5)
    fired = [watch.update({f"{tag}/final": f, f"{tag}/attention/layer_02": 0.9, f"{tag}/mlp/layer_01": 1.0})
             for f in (0.6, 0.7, 0.4, 0.6, 0.6, 0.6, 0.8)]
    assert [sorted(f) for f in fired] == [[], [], ["attention/layer_02"], [], [], ["final"], []]
    assert fired[5]["final"] == 0.6
    assert watch.update({}) == {}  # a log line without a sample changes nothing


def test_window_numbers():
    results = [StepResult(loss=2.0, grad_norm=1.0, lr=1e-3, tokens=1000, skipped=False, dp_loss_range=(1.9, 2.1)),
               StepResult(loss=float("nan"), grad_norm=float("nan"), lr=2e-3, tokens=1000, skipped=True),
               StepResult(loss=4.0, grad_norm=3.0, lr=3e-3, tokens=1000, skipped=False, dp_loss_range=(3.8, 4.4))]
    v = metrics.window(results, seconds=2.0, flops_per_token=1e9, world=4, peak_tflops=0.5)
    assert v["train/loss"] == 3.0 and v["train/grad_norm"] == 2.0 and v["train/lr"] == 3e-3
    assert v["throughput/tokens_per_s"] == 1500 and v["throughput/tokens_per_s_per_device"] == 375
    assert v["throughput/tflops_per_device"] == pytest.approx(0.375)
    assert v["throughput/mfu_pct"] == pytest.approx(75.0)  # percent, as on the console
    assert v["train/loss_dp_spread"] == pytest.approx(0.4)  # (0.2 + 0.6) / 2
    assert "throughput/mfu_pct" not in metrics.window(results, 2.0, 1e9, 4, None)
    assert "memory/rss_gb" in metrics.memory_gb(CPU) and "memory/max_allocated_gb" not in metrics.memory_gb(CPU)
    assert [metrics.duration(s) for s in (12, 185, 3720, 183600)] == ["12s", "3m05s", "1h02m", "2d03h"]
    assert [metrics.count(n) for n in (950, 245_760, 4.19e9, 2.0e11)] == ["950", "246K", "4.19B", "200B"]
    assert metrics.eta_seconds(30.0, 10, 90) == 270.0 and metrics.eta_seconds(0.0, 0, 5) is None


def test_params_norm_and_loss_spread_helpers():
    a, b = torch.full((3, 4), 2.0, dtype=torch.bfloat16), torch.tensor([3.0])
    assert float(sum_of_squares([a, b], CPU)) == 12 * 4 + 9
    big = torch.ones(5 << 20, dtype=torch.bfloat16)  # several chunks
    assert float(sum_of_squares([big], CPU)) == 5 << 20
    shard, replica = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(1))
    shard.tensor_model_parallel = True
    assert tp_unique([shard, replica], 0) == [shard, replica] and tp_unique([shard, replica], 1) == [shard]
    rows = torch.tensor([[10.0, 5.0], [9.0, 3.0], [2.0, 2.0]], dtype=torch.float64)  # (loss sum, tokens)
    assert dp_loss_range(rows) == (1.0, 3.0) and dp_loss_range(rows[:1]) is None


def test_custom_scalars_layout_groups_sites_by_kind():
    import re

    layout = tags.layout([2.5, 4.0])
    charts = {title: regexes for cat in layout.values() for title, (_, regexes) in cat.items()}
    attention = charts["α: attention"]
    assert all(any(re.fullmatch(r, f"norm_alpha/attention/layer_{i:02d}") for r in attention) for i in (1, 80))
    assert not any(re.fullmatch(r, "norm_alpha/mlp/layer_01") for r in attention)
    assert any(re.fullmatch(r, "norm_alpha/final") for r in charts["α: final"])
    assert any(re.fullmatch(r, "dyt_saturation_gt_4/mlp/layer_03") for r in charts["fraction |α·x| > 4: mlp"])
    assert any(re.fullmatch(r, "residual_rms/attention/layer_05") for r in charts["RMS of the norm input: attention"])


def test_fms_fsdp_schedule_matches_the_paper_code():
    from pipeline.config import load_config
    from pipeline.engine.optim import build_scheduler

    cfg = load_config("tiny_dyt", ["train.steps=400", "schedule.warmup_steps=20", "schedule.decay=fms_fsdp",
                                   "optimizer.lr=3e-4", "optimizer.min_lr=3e-5"])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, cfg)
    n, w = 400, min(2000, 400 // 20)  # main_training_llama.py: warmup_interval = min(2000, num_steps // 20)
    official = lambda x: min(1 - (1 - min(x, w) / w) ** 2,  # noqa: E731
                             0.1 + 0.5 * (1 - 0.1) * (1 + math.cos(min(x, n) / n * math.pi)))
    for x in range(n + 5):
        assert opt.param_groups[0]["lr"] == pytest.approx(3e-4 * official(x), rel=1e-12, abs=1e-15), x
        sched.step(increment=1)
