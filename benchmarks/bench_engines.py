"""Training-step wall-clock of the same model on each engine: megatron vs DeepSpeed ZeRO 1/2/3, one process.

    python benchmarks/bench_engines.py [--config tiny_dyt] [--reps 15] [key=value ...]

All engines are built in one process from the same config and seed (identical weights) and timed on the same
random global batch with the interleaved method of `make bench-model` (pipeline/evaluation/bench.py: rotated
order per repetition, median and quartiles, ratio of medians). One process means DP1: this measures each
engine's per-step overhead around the same model math, not ZeRO's communication savings (which need several
GPUs). Results: benchmarks/results/engines/<device>.{json,md}.
"""

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from results_io import machine_facts, write_results  # noqa: E402

from pipeline import runtime  # noqa: E402  (first: it quiets megatron's import-time notices)
from pipeline.config import load_config  # noqa: E402
from pipeline.engine import build_engine  # noqa: E402
from pipeline.evaluation.bench import Case, device_description, measure, random_batches, summarize_cases  # noqa: E402
from pipeline.run_loader import SINGLE_PROCESS  # noqa: E402

VARIANTS = {"megatron": ["engine=megatron"], "deepspeed zero1": ["engine=deepspeed", "deepspeed.zero_stage=1"],
            "deepspeed zero2": ["engine=deepspeed", "deepspeed.zero_stage=2"],
            "deepspeed zero3": ["engine=deepspeed", "deepspeed.zero_stage=3"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny_dyt")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "engines")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    common = [*args.overrides, *SINGLE_PROCESS, "train.device=cpu"]
    base = load_config(args.config, common)
    rt = runtime.init(base)
    vocab = 4096
    batches = random_batches(base, vocab)
    tokens = base.train.global_batch_size * base.model.seq_length
    cases = []
    for label, extra in VARIANTS.items():
        engine = build_engine(load_config(args.config, [*common, *extra]), rt, vocab)
        cases.append(Case(label, base.model.norm.type, label, " ".join(extra),
                          lambda e=engine: e.train_step(batches), tokens=tokens))
    load_start = os.getloadavg()[0]
    measure(cases, rt.device, args.reps, min_rep_s=0.2, warmup=2)
    rows = summarize_cases(cases, "megatron")
    result = {"command": " ".join(["python", "benchmarks/bench_engines.py", *(argv or sys.argv[1:])]),
              "config": args.config, "overrides": args.overrides, "device": device_description(rt.device),
              "machine": machine_facts(load_start),
              "rows": rows}
    lines = [f"# Training step per engine: {args.config} ({base.model.norm.type}, {base.model.num_layers} layers, "
             f"width {base.model.hidden_size}, {tokens} tokens/step), one process",
             "", f"Command: `{result['command']}`  ", f"Device: {result['device']}; 1-min load "
             f"{load_start:.1f} → {result['machine']['load_average_end']:.1f} on {os.cpu_count()} CPUs", "",
             "| engine | median ms/step | p25–p75 ms | tokens/s | time vs megatron |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['median_ms']:.1f} | {r['p25_ms']:.1f}–{r['p75_ms']:.1f} | "
                     f"{r['tokens_per_s']:,.0f} | {r['ratio_to_baseline']:.3f} |")
    table = "\n".join(lines) + "\n"
    write_results(args.out, "cpu" if rt.device.type == "cpu" else "gpu", result, table)
    print(table)
    runtime.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
