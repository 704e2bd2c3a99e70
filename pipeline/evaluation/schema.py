"""Compare configs (`configs/compare/*.yaml`): which run configs to train against each other, on which seeds.

    name: tiny                      # report in <output_dir>/tiny/, runs in <output_dir>/tiny/runs/
    baseline: rmsnorm               # a variant label
    variants:                       # a run config name (label = the name) or {label, config, overrides}
      - tiny_rmsnorm
      - {label: dyt_a1, config: tiny_dyt, overrides: [model.norm.alpha_init={attention: 1, mlp: 1, final: 1}]}
    seeds: [1, 2, 3]
    overrides: [train.steps=200]    # applied to every variant, before the variant's own overrides

Every variant must resolve to the same data, token budget and schedule length (checked in `compare.plan`),
so that, with the same seed, all variants see the same batches in the same order.
"""

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import ConfigError, config_dirs
from pipeline.config.loader import build, compose


@dataclass
class Variant:
    config: str  # run config name under configs/ or a YAML path
    label: str = ""  # "" = the config name
    overrides: list[str] = field(default_factory=list)


@dataclass
class CompareConfig:
    name: str
    baseline: str  # label of the variant the others are compared with
    variants: list[str | Variant]  # after construction: always Variant, with its label filled in
    seeds: list[int] = field(default_factory=lambda: [1])
    overrides: list[str] = field(default_factory=list)
    output_dir: str = "reports"

    def __post_init__(self) -> None:
        self.variants = [Variant(config=v) if isinstance(v, str) else v for v in self.variants]
        for v in self.variants:
            v.label = v.label or Path(v.config).stem
        validate_compare(self)

    def variant(self, label: str) -> Variant:
        return next(v for v in self.variants if v.label == label)

    @property
    def report_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    @property
    def runs_dir(self) -> Path:
        return self.report_dir / "runs"


def find_compare_config(name: str) -> Path:
    """A path as given, else `<name>.yaml` or `compare/<name>.yaml` in the first config dir that has it."""
    dirs = config_dirs()
    in_dirs = (c for d in dirs for c in (d / name, d / f"{name}.yaml", d / "compare" / f"{name}.yaml"))
    for cand in (Path(name), *in_dirs):
        if cand.is_file():
            return cand
    known = sorted({f"compare/{p.stem}" for d in dirs for p in (d / "compare").glob("*.yaml")})
    raise ConfigError(f"compare config '{name}': no such file (known: {', '.join(known) or 'none'})")


def load_compare_config(name: str) -> CompareConfig:
    """Read, type-check (errors name the key) and validate a compare config."""
    path = find_compare_config(name)
    data = compose(path)
    if "variants" not in data and "model" in data:
        raise ConfigError(f"{path} is a run config; a compare config lists `variants` (see configs/compare/)")
    return build(CompareConfig, data, "")


def validate_compare(cfg: CompareConfig) -> None:
    if not cfg.name.strip() or "/" in cfg.name:
        raise ConfigError(f"name: must be a plain directory name, got {cfg.name!r}")
    if not cfg.variants:
        raise ConfigError("variants: need at least one run config")
    labels = [v.label for v in cfg.variants]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ConfigError(f"variants: label {dupes[0]!r} appears twice (give one of them a `label`)")
    for i, label in enumerate(labels):
        if not label.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise ConfigError(f"variants[{i}].label: {label!r} must be letters, digits, '_', '-' or '.'")
    if cfg.baseline not in labels:
        raise ConfigError(f"baseline: {cfg.baseline!r} is not one of the variants ({', '.join(labels)})")
    if not cfg.seeds:
        raise ConfigError("seeds: need at least one seed")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"seeds: {cfg.seeds} has repeats; each seed is one paired replicate")
