"""The `make pretrain` path end to end on a tiny config: loss falls, TensorBoard and checkpoints are
written, bad numbers and signals are handled as documented."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline.data import load_manifest
from pipeline.evaluation.unigram import unigram_reference
from tests.faults import fault_env
from tests.helpers import REPO, launch, scalars

SHORT = ["train.log_interval=5", "train.eval_interval=20", "train.eval_iters=2", "schedule.warmup_steps=5"]
TB_TAGS = ["train/loss", "train/lr", "train/grad_norm", "train/params_norm", "train/skipped_steps",
           "throughput/tokens_per_s", "throughput/tokens_per_s_per_device", "throughput/step_time_s",
           "throughput/tflops_per_device", "memory/rss_gb", "progress/consumed_tokens", "val/loss", "val/ppl",
           "norm_alpha/attention/layer_01", "norm_alpha/mlp/layer_04", "norm_alpha/final", "norm_gamma_mean/final",
           "norm/embedding_scale", "residual_rms/attention/layer_01", "residual_rms/final",
           "dyt_saturation_gt_2.5/final", "dyt_saturation_gt_4/mlp/layer_02", "dyt_tanh_abs_mean/attention/layer_03"]
# The early warning, made to fire in this healthy run (final-norm saturation passes 5% early on).
WARN = ["logging.diagnostics.warn_fraction=0.05", "logging.diagnostics.warn_samples=2",
        "logging.diagnostics.warn_sites=[final]"]


def test_pretrain_tiny_dyt_learns_and_writes_outputs(tmp_path, pydocs_manifest):
    out = launch("tiny_dyt", [*SHORT, *WARN, "train.steps=40", f"output_dir={tmp_path}",
                              f"data.manifest={pydocs_manifest}", "logging.wandb={mode: offline}"],
                 env={"WANDB_API_KEY": "", "WANDB_BASE_URL": "http://127.0.0.1:9"})  # no network, no account
    run = tmp_path / "tiny_dyt"
    loss = scalars(run, "train/loss")
    assert sorted(loss) == [5, 10, 15, 20, 25, 30, 35, 40]
    assert all(v == v and v < 20 for v in loss.values())  # finite
    assert loss[40] < loss[5] - 0.5, loss  # clearly learning, not noise
    # ...and from context: below what token frequencies alone give (DyT at this width stalled exactly
    # there with a 0.02 LM-head init; see model.output_init_std).
    unigram = unigram_reference(load_manifest(pydocs_manifest))["valid_cross_entropy"]
    assert scalars(run, "val/loss")[40] < unigram - 0.15, (scalars(run, "val/loss"), unigram)
    for tag in TB_TAGS:
        assert sorted(scalars(run, tag)) == ([20, 40] if tag.startswith("val/") else sorted(loss)), tag
    tokens_per_step = 16 * 128
    assert scalars(run, "progress/consumed_tokens")[40] == 40 * tokens_per_step
    assert scalars(run, "vs_tokens/train_loss") == {s * tokens_per_step: v for s, v in loss.items()}
    assert 0 < scalars(run, "dyt_saturation_gt_4/final")[40] <= scalars(run, "dyt_saturation_gt_2.5/final")[40] < 1
    lines = [line for line in out.stdout.splitlines() if line.startswith("step     40/40 |")]
    assert "(mean of 5)" in lines[0] and "elapsed" in lines[0] and "81.9K tokens (640 samples)" in lines[0]
    assert "step     35/40" in out.stdout and " ETA " in out.stdout.split("step     35/40")[1].splitlines()[0]
    assert "DyT saturation early warning" in out.stdout and "at final (" in out.stdout  # ...and training went on
    _check_tensorboard_extras(run)
    _check_wandb_offline(run, loss)
    assert json.loads((run / "status.json").read_text())["state"] == "complete"
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_0000040"
    assert (run / "config.yaml").is_file()
    assert "complete at step 40" in out.stdout

    # The checkpoint loads: a longer run of the same name resumes from it.
    again = launch("tiny_dyt", [*SHORT, "train.steps=45", f"output_dir={tmp_path}", f"data.manifest={pydocs_manifest}"])
    assert "resumed from" in again.stdout and "step_0000040" in again.stdout
    assert sorted(scalars(run, "train/loss"))[-1] == 45


def _check_tensorboard_extras(run):
    """The resolved config as text, the HParams of the run, the Custom Scalars layout, α histograms."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"tensors": 0, "histograms": 0})
    acc.Reload()
    text = acc.Tensors("config/resolved/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "type: dyt" in text and "hidden_size: 128" in text
    assert sorted(e.step for e in acc.Histograms("norm_alpha_by_layer/attention")) == [5, 10, 15, 20, 25, 30, 35, 40]
    assert any(e.step == 40 for e in acc.Histograms("residual_rms_by_layer/mlp"))
    start = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info.hparams
    assert start["norm"].string_value == "dyt" and start["width"].number_value == 128
    assert start["alpha_init_attention"].number_value == 1.0 and start["engine"].string_value == "megatron"
    assert start["weight_decay_on"].string_value == "every parameter"
    assert start["tokens"].number_value == 40 * 16 * 128
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} >= {"train/loss", "val/loss"}
    assert "_hparams_/session_end_info" in acc.PluginTagToContent("hparams")
    assert "custom_scalars__config__" in acc.PluginTagToContent("custom_scalars")


def _wandb_records(path):
    """Records of a W&B offline run file (its LevelDB-style log: 7-byte header, 32 KiB blocks, 7-byte record
    headers: crc, length, type 1 full / 2 first / 3 middle / 4 last)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, pos, part = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(part + chunk)
            yield record
            part = b""
        elif kind in (2, 3):
            part += chunk


def _check_wandb_offline(run, loss):
    """An offline W&B run in <run>/wandb/ with the resolved config and the same scalars as TensorBoard."""
    files = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    records = list(_wandb_records(files[0]))
    config = {u.key: json.loads(u.value_json) for r in records if r.WhichOneof("record_type") == "run"
              for u in r.run.config.update}
    assert config["model"]["norm"]["type"] == "dyt" and config["run"]["norm"] == "dyt"
    history = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            row = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
            history[row["_step"]] = row
    assert {s: history[s]["train/loss"] for s in loss} == pytest.approx(loss, rel=1e-6)
    assert "dyt_saturation_gt_2.5/final" in history[40] and "val/loss" in history[40]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["megatron", "deepspeed"])
def test_nan_loss_is_skipped_or_stops_per_policy(tmp_path, pydocs_manifest, engine):
    common = ["train.steps=6", "train.log_interval=1", "train.eval_interval=0", "schedule.warmup_steps=1",
              f"output_dir={tmp_path}", f"data.manifest={pydocs_manifest}", "model.num_layers=2", f"engine={engine}"]
    env = fault_env(nan_loss_at_step=3)
    launch("tiny_rmsnorm", [*common, "name=skip", "train.nan_policy=skip"], env=env)
    skipped = scalars(tmp_path / "skip", "train/skipped_steps")
    assert skipped[2] == 0 and skipped[3] == 1 and skipped[6] == 1
    loss = scalars(tmp_path / "skip", "train/loss")
    assert all(loss[s] == loss[s] for s in (4, 5, 6))  # training went on with finite losses

    stop = launch("tiny_rmsnorm", [*common, "name=stop", "train.nan_policy=stop", "checkpoint.save_interval=1"],
                  env=env, check=False)
    assert stop.returncode != 0
    assert "step 3: loss is nan; stopping (train.nan_policy: stop)" in stop.stderr
    assert (tmp_path / "stop" / "checkpoints" / "latest").read_text().strip() == "step_0000002"  # no NaN save
    assert json.loads((tmp_path / "stop" / "status.json").read_text())["state"] == "failed"


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["megatron", "deepspeed"])
def test_sigterm_saves_marks_preempted_and_resumes(tmp_path, pydocs_manifest, engine):
    args = ["train.steps=500", "train.log_interval=1", "train.eval_interval=0", f"output_dir={tmp_path}",
            f"data.manifest={pydocs_manifest}", "model.num_layers=2", "launch.nproc_per_node=2", f"engine={engine}"]
    proc = subprocess.Popen([sys.executable, "-m", "launch", "tiny_dyt", *args], cwd=REPO, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    run = tmp_path / "tiny_dyt"
    deadline = time.time() + 180
    while len(scalars(run, "train/loss")) < 3 if (run / "tensorboard").exists() else True:
        assert time.time() < deadline and proc.poll() is None, "training did not start"
        time.sleep(1)
    os.killpg(proc.pid, signal.SIGTERM)  # as SLURM does: every process of the job gets it
    proc.communicate(timeout=180)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "preempted" and 3 <= status["step"] < 500
    step = status["step"]
    assert (run / "checkpoints" / "latest").read_text().strip() == f"step_{step:07d}"

    resumed = launch("tiny_dyt", [*args, f"train.steps={step + 2}", "schedule.warmup_steps=1"])
    assert f"resumed from {run / 'checkpoints' / f'step_{step:07d}'}" in resumed.stdout
    assert json.loads((run / "status.json").read_text())["state"] == "complete"


@pytest.mark.slow
@pytest.mark.parametrize("extra", [
    ["model.norm.type=tests.pipeline.test_norms:ScaledTanh"],  # a user norm from the user's own module
    ["train.precision=bf16", "launch.nproc_per_node=2", "parallel.distributed_optimizer=true"],
    ["schedule.decay=wsd", "schedule.wsd_decay_fraction=0.5", "model.norm.type=derf"],
], ids=["user_norm", "bf16_distopt", "wsd_derf"])
def test_variants_train(tmp_path, pydocs_manifest, extra):
    launch("tiny_dyt", ["train.steps=20", "train.log_interval=5", "train.eval_interval=0", "schedule.warmup_steps=2",
                        "model.num_layers=2", f"output_dir={tmp_path}", f"data.manifest={pydocs_manifest}", *extra])
    loss = scalars(tmp_path / "tiny_dyt", "train/loss")
    assert sorted(loss) == [5, 10, 15, 20] and loss[20] < loss[5], loss
    lr = scalars(tmp_path / "tiny_dyt", "train/lr")
    assert lr[20] < lr[5]  # decaying (cosine, or WSD's decay phase)
    spread = scalars(tmp_path / "tiny_dyt", "train/loss_dp_spread")  # DP ranks' losses, when DP > 1
    assert (sorted(spread) == [5, 10, 15, 20] and all(v > 0 for v in spread.values())) == ("bf16" in extra[0])
