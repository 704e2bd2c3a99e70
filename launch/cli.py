"""Command-line pieces every launcher entry point shares: which run config, its overrides, the launcher."""

import argparse


def add_run_config_args(ap: argparse.ArgumentParser, overrides_example: str) -> None:
    ap.add_argument("config", help="run config: a YAML path, or a name under --config-dir or the shipped "
                    "configs/ (tiny_dyt)")
    ap.add_argument("overrides", nargs="*", help=f"key.sub=value, e.g. {overrides_example}")
    ap.add_argument("--launcher", choices=["local", "slurm"], help="default: launch.launcher from the config")
    ap.add_argument("--config-dir", action="append", default=[], metavar="DIR",
                    help="look config names (and `defaults`) up here before the shipped configs (repeatable)")


def run_config_overrides(args: argparse.Namespace) -> list[str]:
    """The positional overrides, then what the flags set."""
    return [*args.overrides, *([f"launch.launcher={args.launcher}"] if args.launcher else [])]
