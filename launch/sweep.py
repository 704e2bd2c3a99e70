"""Sweeps: several runs from one command, each `[CONFIG] key=value ...`, submitted as one SLURM job array."""

import dataclasses
import shlex
from pathlib import Path

from pipeline.config import ConfigError, RunConfig, load_config


def read_entries(sweeps: list[str], sweep_file: str | None) -> list[list[str]]:
    """`--sweep` values, then the lines of `--sweep-file` (blank lines and # comments skipped), tokenized."""
    lines = list(sweeps)
    if sweep_file:
        try:
            lines += Path(sweep_file).read_text().splitlines()
        except OSError as e:
            raise ConfigError(f"--sweep-file: {e}") from None
    entries = []
    for line in lines:
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as e:
            raise ConfigError(f"sweep entry {line!r}: {e}") from None
        if tokens:
            entries.append(tokens)
    return entries


def sweep_configs(config: str, overrides: list[str], entries: list[list[str]]) -> list[RunConfig]:
    """One config per entry: the entry's config (default `config`) with `overrides`, then the entry's own.
    Run k is named `<name>-<k>` unless its entry sets `name=`."""
    cfgs = []
    for k, tokens in enumerate(entries):
        name, entry_overrides = (tokens[0], tokens[1:]) if "=" not in tokens[0] else (config, tokens)
        try:
            cfg = load_config(name, [*overrides, *entry_overrides])
        except ConfigError as e:
            raise ConfigError(f"sweep entry {k} ({shlex.join(tokens)}): {e}") from None
        if not any(t.startswith("name=") for t in entry_overrides):
            cfg = dataclasses.replace(cfg, name=f"{cfg.name}-{k}")
        cfgs.append(cfg)
    seen: dict[str, int] = {}
    for k, cfg in enumerate(cfgs):
        run_dir = str(Path(cfg.output_dir) / cfg.name)
        if run_dir in seen:
            raise ConfigError(f"sweep entries {seen[run_dir]} and {k}: both write to {run_dir}; give them "
                              "different name= values")
        seen[run_dir] = k
    return cfgs
