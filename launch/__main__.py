"""Start a training run from a config: validate, write the resolved config, launch.

    python -m launch tiny_dyt train.steps=50 model.norm.type=rmsnorm
    python -m launch llama8b_dyt --launcher slurm --nodes 16 --dry-run

Nothing here imports torch or megatron: a bad config fails in well under a second.
"""

import argparse
import sys
from pathlib import Path

from pipeline.config import ConfigError, load_config, save_config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m launch", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="run config: a name under configs/ (tiny_dyt) or a YAML path")
    ap.add_argument("overrides", nargs="*", help="key.sub=value, e.g. train.steps=50 parallel.tp=2")
    ap.add_argument("--launcher", choices=["local", "slurm"], help="default: launch.launcher from the config")
    ap.add_argument("--nodes", type=int, help="override launch.nodes")
    ap.add_argument("--dry-run", action="store_true", help="print what would run (the sbatch script for SLURM)")
    args = ap.parse_args(argv)
    overrides = list(args.overrides)
    if args.launcher:
        overrides.append(f"launch.launcher={args.launcher}")
    if args.nodes:
        overrides.append(f"launch.nodes={args.nodes}")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    run_dir = Path(cfg.output_dir) / cfg.name
    config_path = run_dir / "config.yaml"
    if not args.dry_run:
        save_config(cfg, config_path)
    if cfg.launch.launcher == "slurm":
        from launch.slurm import submit

        return submit(cfg, config_path, dry_run=args.dry_run)
    from launch.local import run_local

    return run_local(cfg, config_path, dry_run=args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
