"""Command line for the evaluation jobs (the Makefile's `compare`, `bench-model` and `scurve` targets).

    python -m pipeline.evaluation compare compare/tiny [--launcher slurm] [--no-train]
    python -m pipeline.evaluation bench tiny_dyt [key=value ...] [--norms rmsnorm,dyt] [--skip-model]
    python -m pipeline.evaluation scurve reports/tiny/runs/tiny-tiny_rmsnorm-s1 [--out DIR]
"""

import argparse
import logging
import sys
from pathlib import Path

from pipeline.config import ConfigError, add_config_dirs


def _compare(args: argparse.Namespace) -> int:
    from pipeline.evaluation.compare import CompareError, run_compare

    command = f"python -m pipeline.evaluation compare {args.config}" + (
        f" --launcher {args.launcher}" if args.launcher else "") + (" --no-train" if not args.train else "")
    make = None
    if args.train and not args.quiet:  # the same command as a Makefile target
        make = f"make compare CONFIG={args.config}" + (f" LAUNCHER={args.launcher}" if args.launcher else "")
    try:
        out = run_compare(args.config, launcher=args.launcher, train=args.train, quiet=args.quiet,
                          command=command, make_command=make)
    except CompareError as e:
        print(f"compare: {e}", file=sys.stderr)
        return 1
    print(f"report: {out / 'report.md'}  (numbers: {out / 'results.json'})")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.norms import registered_norms

    load_config(args.config, args.overrides)  # a bad config fails before torch is imported (custom_imports run)
    known = registered_norms()
    norms = args.norms.split(",") if args.norms else known
    unknown = sorted(set(norms) - set(known))
    if unknown:
        raise ConfigError(f"--norms: unknown {', '.join(unknown)} (registered: {', '.join(known)})")
    import torch

    from pipeline.evaluation import report
    from pipeline.evaluation.bench import run_bench

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device: cuda requested but no GPU is visible")
    out = Path(args.out or f"reports/bench-{Path(args.config).stem}-{device}")
    data = run_bench(args.config, args.overrides, out, norms=norms, device=device, reps=args.reps,
                     skip_model=args.skip_model)
    data["command"] = " ".join(["python -m pipeline.evaluation bench", *sys.argv[2:]])
    data["make_command"] = None
    if sys.argv[2:] == [args.config, *args.overrides]:  # no flags: the same command as the Makefile target
        overrides = f' OVERRIDES="{" ".join(args.overrides)}"' if args.overrides else ""
        data["make_command"] = f"make bench-model CONFIG={args.config}{overrides}"
    data["environment"] = report.environment()
    report.write(out, report.render_bench(data), data)
    print(f"report: {out / 'report.md'}")
    return 0


def _scurve(args: argparse.Namespace) -> int:
    from pipeline.evaluation import report
    from pipeline.evaluation.scurve import analyze_run

    run_dir = Path(args.run)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.yaml)")
    out = Path(args.out or f"reports/scurve-{run_dir.name}")
    data = analyze_run(run_dir, out)
    data["command"] = f"python -m pipeline.evaluation scurve {args.run} --out {out}"
    report.write(out, report.render_norms(data), data)
    print(f"{data['kind']} report: {out / 'report.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.evaluation", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-dir", action="append", default=[], metavar="DIR",
                    help="look config names up here before the shipped configs (repeatable)")
    sub = ap.add_subparsers(dest="job", required=True)
    c = sub.add_parser("compare", help="train variants × seeds (reusing complete runs), report the losses")
    c.add_argument("config", help="compare config: configs/compare/<name>.yaml, 'compare/<name>', or a path")
    c.add_argument("--launcher", choices=["local", "slurm"], help="default: the run config's")
    c.add_argument("--no-train", dest="train", action="store_false", help="report on existing complete runs")
    c.add_argument("--quiet", action="store_true", help="training output only in each run's launch.log")
    c.set_defaults(fn=_compare)
    b = sub.add_parser("bench", help="wall-clock of the norm layers and the whole model per norm type")
    b.add_argument("config", help="run config whose shapes to use (configs/<name>.yaml or a path)")
    b.add_argument("overrides", nargs="*", help="key.sub=value overrides of that config")
    b.add_argument("--norms", help="comma-separated registered norms, e.g. rmsnorm,dyt (default: all registered)")
    b.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    b.add_argument("--reps", type=int, default=15, help="interleaved repetitions per case (layer level)")
    b.add_argument("--skip-model", action="store_true", help="norm layers only")
    b.add_argument("--out", help="report directory (default reports/bench-<config>-<device>)")
    b.set_defaults(fn=_bench)
    s = sub.add_parser("scurve", help="S-curves of a LayerNorm/RMSNorm run, or α over training of a DyT run")
    s.add_argument("run", help="run directory (with config.yaml, checkpoints/, tensorboard/)")
    s.add_argument("--out", help="report directory (default reports/scurve-<run name>)")
    s.set_defaults(fn=_scurve)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        add_config_dirs(args.config_dir)
        return args.fn(args)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # dist_checkpointing may re-import __main__ in worker processes: keep this guard
    sys.exit(main())
