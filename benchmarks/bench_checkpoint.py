"""Training stall per checkpoint save, synchronous vs asynchronous (megatron engine), in one invocation.

    python benchmarks/bench_checkpoint.py                        # CPU: tiny_dyt widened to ~58M parameters
    python benchmarks/bench_checkpoint.py --config llama1b_dyt --nproc 8 --steps 40 --save-interval 10 \\
        --no-cpu-model --tag h100x8                              # a GPU row

Both modes train the same run (same seed, data and steps) with saves every --save-interval steps, through
`python -m launch` as users do. Every save's integrity record says how long the training loop was blocked by
it (`stall_seconds`: for a synchronous save the whole write; for an asynchronous one, capturing the state and
starting the writer, plus completing the save once every rank is done, hashing included) and how long the
save took end to end (`write_seconds`). The final save of a run (end of training) is synchronous in both
modes and left out of the per-save columns. "train_step" is the mean time of the step itself (TensorBoard
train/step_time_s): where cores are few, the background writer competes with training for CPU, and that
shows there, not in the stall; "steps + all stalls" adds every step and every stall (the final save's too)
of a run: the time the training loop took, what the trade-off comes to.
Modes alternate for --repeat rounds. Results: benchmarks/results/checkpoint/bench_checkpoint[-TAG].{json,md}.
"""

import argparse
import datetime
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from results_io import machine_facts, write_results  # noqa: E402

from pipeline.checkpoint.integrity import read_record  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "checkpoint"
# ~58M parameters: a 0.7 GB checkpoint (fp32 weights + Adam moments), steps of a few seconds on one core.
CPU_MODEL = ["model.hidden_size=768", "model.ffn_hidden_size=2048", "model.num_layers=8",
             "train.micro_batch_size=2", "train.global_batch_size=4"]


def step_times(run: Path) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[int, float] = {}
    for f in sorted((run / "tensorboard").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        out.update({e.step: e.value for e in acc.Scalars("train/step_time_s")})
    return [out[s] for s in sorted(out)]


def train(args, work: Path, name: str, mode: str) -> dict:
    overrides = [f"output_dir={work}", f"name={name}", f"train.steps={args.steps}", "train.log_interval=1",
                 "train.eval_interval=0", "schedule.warmup_steps=1", f"checkpoint.save_interval={args.save_interval}",
                 "checkpoint.keep_last=1000", f"checkpoint.async_save={'true' if mode == 'async' else 'false'}",
                 f"launch.nproc_per_node={args.nproc}", "logging.norm_stats=false",
                 *([] if args.no_cpu_model else CPU_MODEL), *args.override]
    cmd = [sys.executable, "-m", "launch", args.config, *overrides]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    run = work / name
    saves = [read_record(run / "checkpoints" / f"step_{s:07d}")
             for s in range(args.save_interval, args.steps, args.save_interval)]
    final = read_record(run / "checkpoints" / f"step_{args.steps:07d}")
    times = step_times(run)
    return {"mode": mode, "stall_s": [r["stall_seconds"] for r in saves],
            "write_s": [r["write_seconds"] for r in saves], "async": [r["async"] for r in saves],
            "checkpoint_bytes": sum(f["size"] for f in saves[0]["files"].values()),
            "step_s_mean": sum(times[1:]) / len(times[1:]),  # the first step includes one-off setup
            "loop_s": sum(times) + sum(r["stall_seconds"] for r in saves) + final["stall_seconds"]}


def table(rows: list[dict]) -> str:
    lines = ["| mode | saves | checkpoint | stall per save, mean (max) | stall vs sync | save end to end, mean |"
             " train_step mean | steps + all stalls, per run |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    sync = [s for r in rows if r["mode"] == "sync" for s in r["stall_s"]]
    sync_mean = sum(sync) / len(sync)
    for mode in ("sync", "async"):
        rs = [r for r in rows if r["mode"] == mode]
        stall = [s for r in rs for s in r["stall_s"]]
        write = [s for r in rs for s in r["write_s"]]
        step = sum(r["step_s_mean"] for r in rs) / len(rs)
        loop = sum(r["loop_s"] for r in rs) / len(rs)
        mean = sum(stall) / len(stall)
        lines.append(f"| {mode} | {len(stall)} | {rs[0]['checkpoint_bytes'] / 2**20:.0f} MiB | {mean:.3f} s "
                     f"({max(stall):.3f} s) | {mean / sync_mean:.2f}x | {sum(write) / len(write):.3f} s | "
                     f"{step * 1000:.0f} ms | {loop:.1f} s |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny_dyt", help="run config (default tiny_dyt)")
    ap.add_argument("--nproc", type=int, default=2, help="processes (GPUs) per run (default 2)")
    ap.add_argument("--steps", type=int, default=12, help="training steps per run (default 12)")
    ap.add_argument("--save-interval", type=int, default=3, help="steps between saves (default 3)")
    ap.add_argument("--repeat", type=int, default=2, help="rounds of (sync, async) runs (default 2)")
    ap.add_argument("--no-cpu-model", action="store_true", help="keep the config's model and batch sizes")
    ap.add_argument("--override", action="append", default=[], help="extra key=value for both modes")
    ap.add_argument("--tag", default="", help="suffix of the result files")
    ap.add_argument("--note", default="", help="a remark stored with the results")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_checkpoint_"))
    load_start = os.getloadavg()[0]
    try:
        rows = []
        for r in range(args.repeat):
            for mode in ("sync", "async"):
                rows.append(train(args, work, f"{mode}{r}", mode))
                print(f"round {r + 1}/{args.repeat} {mode}: stall {rows[-1]['stall_s']} s, "
                      f"async {rows[-1]['async']}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    md = table(rows)
    print(md)

    command = shlex.join(["python", "benchmarks/bench_checkpoint.py", *sys.argv[1:]])
    machine = machine_facts(load_start)
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    result = {"date": date, "command": command, "note": args.note, "machine": machine, "rows": rows,
              "settings": {k: getattr(args, k) for k in ("config", "nproc", "steps", "save_interval", "repeat",
                                                         "no_cpu_model", "override")}}
    stem = "bench_checkpoint" + (f"-{args.tag}" if args.tag else "")
    header = (f"`{command}` ({date}; {machine['cpus']} CPUs, {machine['platform']}, Python {machine['python']}; "
              f"{args.config}{'' if args.no_cpu_model else ' with ' + ' '.join(CPU_MODEL)}, {args.nproc} processes, "
              f"{args.steps} steps, a save every {args.save_interval}, {args.repeat} rounds)")
    footer = (f"Load average at the start and end: {load_start:.2f}, {machine['load_average_end']:.2f}. The final "
              "save of each run (synchronous in both modes) is not counted.")
    note = f"\n\n{args.note}" if args.note else ""
    write_results(RESULTS, stem, result, f"# Checkpoint save stall, sync vs async\n\n{header}\n\n{md}\n\n"
                                         f"{footer}{note}\n")
    print(f"wrote {RESULTS / stem}.json and .md")


if __name__ == "__main__":
    main()
