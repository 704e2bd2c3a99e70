"""Start a training run from a config: validate, write the resolved config, launch.

    python -m launch tiny_dyt train.steps=50 model.norm.type=rmsnorm
    python -m launch llama8b_dyt --launcher slurm --nodes 16 --dry-run

Sweeps (SLURM job arrays): each --sweep value, or each line of --sweep-file, is one run written as
`[CONFIG] key=value ...`. CONFIG defaults to the positional config; the positional overrides apply to every
run, the entry's own after them. Run k is named <name>-<k> unless its entry sets name=.

    python -m launch tiny_dyt --launcher slurm --sweep "train.seed=1" --sweep "train.seed=2"
    python -m launch tiny_dyt --launcher slurm --sweep-file sweeps/alpha.txt --max-parallel 4

Nothing here imports torch or megatron: a bad config fails in well under a second.
"""

import argparse
import sys
from pathlib import Path

from launch.cli import add_run_config_args, run_config_overrides
from pipeline.config import ConfigError, add_config_dirs, load_config, save_config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m launch", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_config_args(ap, "train.steps=50 parallel.tp=2")
    ap.add_argument("--nodes", type=int, help="override launch.nodes")
    ap.add_argument("--dry-run", action="store_true",
                    help="print what would run (the sbatch script for SLURM)")
    ap.add_argument("--sweep", action="append", default=[], metavar="ENTRY",
                    help='one run of a job array: "[CONFIG] key=value ..." (repeat for more runs)')
    ap.add_argument("--sweep-file", metavar="FILE", help="one sweep ENTRY per line (# comments allowed)")
    ap.add_argument("--max-parallel", type=int, metavar="N", help="run at most N array tasks at once")
    args = ap.parse_intermixed_args(argv)  # flags may come before or after the overrides
    overrides = run_config_overrides(args)
    if args.nodes:
        overrides.append(f"launch.nodes={args.nodes}")
    try:
        add_config_dirs(args.config_dir)
        return _launch(args, overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2


def _launch(args: argparse.Namespace, overrides: list[str]) -> int:
    cfg = load_config(args.config, overrides)
    if args.sweep or args.sweep_file:
        from launch.slurm import Run, submit_runs, validate
        from launch.sweep import read_entries, sweep_configs

        cfgs = sweep_configs(args.config, overrides, read_entries(args.sweep, args.sweep_file))
        if any(c.launch.launcher != "slurm" for c in cfgs):
            raise ConfigError("launch.launcher: sweeps run as SLURM job arrays; add --launcher slurm")
        runs = [Run(c, Path(c.output_dir) / c.name / "config.yaml") for c in cfgs]
        for r in runs:
            validate(r.cfg)  # before writing anything
        if not args.dry_run:
            for r in runs:
                save_config(r.cfg, r.config_path)
        return submit_runs(runs, dry_run=args.dry_run, max_parallel=args.max_parallel,
                           sweep_name=f"{cfg.name}-sweep")

    config_path = Path(cfg.output_dir) / cfg.name / "config.yaml"
    if cfg.launch.launcher == "slurm":
        from launch.slurm import submit, validate

        validate(cfg)  # before writing anything
        if not args.dry_run:
            check_run_dir(cfg, config_path.parent, take_lock=False)
            save_config(cfg, config_path)
        return submit(cfg, config_path, dry_run=args.dry_run)
    from launch.local import run_local

    if args.dry_run:
        return run_local(cfg, config_path, dry_run=True)
    lock = check_run_dir(cfg, config_path.parent, take_lock=True)
    save_config(cfg, config_path)
    return run_local(cfg, config_path, lock=lock)


def check_run_dir(cfg, run_dir: Path, take_lock: bool):
    """Before anything is written: nobody else is using the run dir, and a rerun does not change what defines
    it. Locally the lock is taken here and handed to the training job; a SLURM job takes it when it starts."""
    import yaml

    from pipeline.config import to_dict
    from pipeline.config.rerun import check_rerun
    from pipeline.run_lock import RunLock, RunLocked, describe, read_lock, stale_reason

    if take_lock:
        lock = RunLock(run_dir, what=f"python -m launch {cfg.name}")
        try:
            lock.acquire()
        except RunLocked as e:
            raise ConfigError(f"name: {e}") from None
    else:
        lock, info = None, read_lock(run_dir)
        if info is not None and stale_reason(info) is None:
            raise ConfigError(f"name: {run_dir} is in use by {describe(info)}")
    saved = run_dir / "config.yaml"
    if saved.is_file() and (run_dir / "checkpoints" / "latest").is_file():
        try:
            accepted = check_rerun(yaml.safe_load(saved.read_text()), yaml.safe_load(yaml.safe_dump(to_dict(cfg))),
                                   cfg.checkpoint.allow_config_change, cfg.checkpoint.resume != "auto")
        except ConfigError:
            if lock is not None:
                lock.release()
            raise
        if accepted:
            print(f"config changes since the last run of {run_dir}:\n  " + "\n  ".join(accepted), flush=True)
    return lock


if __name__ == "__main__":
    sys.exit(main())
