"""YAML composition, `key.sub=value` overrides, and typed construction of a `RunConfig`.

A YAML file may start with `defaults: [a, b/c]`: those files (`.yaml` optional) are merged first, in
order, then the file's own keys on top. Overrides come last. A config name is looked up as a path, then
in each config dir: the `--config-dir` dirs (kept in $DYT_CONFIG_PATH so child processes see them too),
then the shipped `configs/`; a `defaults` entry is looked up next to its file first.
Every error is a `ConfigError` whose message starts with the offending key.
"""

import dataclasses
import importlib
import os
import re
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError
from .schema import RunConfig
from .validate import validate

_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_YAML_BOOL_WORDS = {True: ("on", "yes", "true", "y"), False: ("off", "no", "false", "n")}
CONFIG_PATH_ENV = "DYT_CONFIG_PATH"



class ConfigYamlLoader(yaml.SafeLoader):
    """YAML 1.1 minus base-60 numbers: `time: 12:00:00` stays the string SLURM expects, not 43200."""


def _without_base60(tag: str, rx: re.Pattern) -> re.Pattern:
    if not tag.endswith((":int", ":float")):
        return rx
    # PyYAML's int/float patterns put one alternative per line; drop the sexagesimal one (with a colon).
    body = rx.pattern.removeprefix("^(?:").removesuffix(")$")
    keep = [b for b in re.split(r"\n\s*\|", body) if "(?::" not in b]
    return re.compile("^(?:" + "|".join(keep) + ")$", rx.flags)


ConfigYamlLoader.yaml_implicit_resolvers = {
    ch: [(tag, _without_base60(tag, rx)) for tag, rx in resolvers]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

def _shipped_configs() -> Path:
    """`configs/` as installed package data (pipeline/configs in a wheel) or in the source tree."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "configs"
    return installed if installed.is_dir() else package.parent / "configs"


SHIPPED_CONFIGS = _shipped_configs()


def config_dirs() -> list[Path]:
    """Where config names are looked up, in order: $DYT_CONFIG_PATH, then the shipped configs."""
    extra = [Path(p) for p in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep) if p]
    return [*extra, SHIPPED_CONFIGS]


def add_config_dirs(dirs: Sequence[str]) -> None:
    """`--config-dir`: search these first, in this process and the ones it starts."""
    for d in dirs:
        if not Path(d).is_dir():
            raise ConfigError(f"--config-dir {d}: not a directory")
    current = [p for p in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep) if p]
    os.environ[CONFIG_PATH_ENV] = os.pathsep.join([str(Path(d).resolve()) for d in dirs] + current)


def find_config(name: str, dirs: Sequence[Path] | None = None) -> Path:
    """A path as given, else `<dir>/<name>` or `<dir>/<name>.yaml` in the first config dir that has it."""
    dirs = config_dirs() if dirs is None else dirs
    for cand in (Path(name), *(c for d in dirs for c in (d / name, d / f"{name}.yaml"))):
        if cand.is_file():
            return cand
    known = sorted({p.stem for d in dirs for p in d.glob("*.yaml")})
    raise ConfigError(f"config '{name}': no such file in {', '.join(map(str, dirs))} "
                      f"(run configs: {', '.join(known)})")


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.load(path.read_text(), Loader=ConfigYamlLoader) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def merge(base: dict, top: dict) -> dict:
    """Deep merge: mappings merge key by key, anything else in `top` replaces."""
    out = dict(base)
    for k, v in top.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def compose(path: Path, dirs: Sequence[Path] | None = None, _seen: tuple = ()) -> dict:
    """The file's `defaults` merged in order, then its own keys."""
    dirs = config_dirs() if dirs is None else list(dirs)
    path = path.resolve()
    if path in _seen:
        raise ConfigError(f"{path}: circular 'defaults'")
    data = _read_yaml(path)
    defaults = data.pop("defaults", [])
    if not isinstance(defaults, list):
        raise ConfigError(f"{path}: 'defaults' must be a list of config names")
    out: dict = {}
    for name in defaults:
        found = find_config(str(name), [path.parent, *(d for d in dirs if d.resolve() != path.parent)])
        out = merge(out, compose(found, dirs, _seen + (path,)))
    return merge(out, data)


def apply_override(data: dict, item: str) -> dict:
    """`a.b.c=value`; value parsed as YAML (so 3, 1e-4, true, null, [1,2] have their types)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{item}': expected key.sub=value")
    parts = key.strip().split(".")
    try:
        value = yaml.load(raw, Loader=ConfigYamlLoader) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node = data
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = value
    return data


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def build(tp: Any, value: Any, key: str) -> Any:
    """Check `value` against the type hint `tp` and construct dataclasses; raise naming `key`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for alt in args:
            try:
                return build(alt, value, key)
            except ConfigError as e:
                errors.append(e)
        # A mapping was meant for the dataclass alternative: its error is the useful one.
        for alt, err in zip(args, errors, strict=True):
            if dataclasses.is_dataclass(alt) and isinstance(value, dict):
                raise err
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if isinstance(value, bool):  # YAML 1.1 reads off/on/yes/no as booleans
            spelled = [a for a in args if isinstance(a, str) and a in _YAML_BOOL_WORDS[value]]
            value = spelled[0] if len(spelled) == 1 else value
        if value in args:
            return value
        raise ConfigError(f"{key}: expected one of {', '.join(repr(a) for a in args)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        fields = {f.name: f for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            prefix = f"{key}." if key else ""
            raise ConfigError(f"{prefix}{unknown[0]}: unknown key (known: {', '.join(fields)})")
        hints = typing.get_type_hints(tp)
        kwargs = {}
        for name, v in value.items():
            kwargs[name] = build(hints[name], v, f"{key}.{name}" if key else name)
        try:
            return tp(**kwargs)
        except TypeError as e:  # a required field is missing
            raise ConfigError(f"{key or 'config'}: {e}") from None
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [build(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is Any:  # free-form values passed through to a framework (e.g. deepspeed.extra)
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {build(args[0], k, key): build(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)  # PyYAML (YAML 1.1) reads "1e-4" as a string
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if tp in (int, float, str, bool) and (type(value) is tp):
        return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def import_custom(modules: list[str]) -> None:
    """`custom_imports`: import each module (from the working directory or PYTHONPATH), so the norms it
    registers are known before validation."""
    if modules and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # console scripts do not put the working directory on sys.path
    for i, name in enumerate(modules):
        try:
            importlib.import_module(name)
        except (ImportError, ValueError) as e:  # ValueError: e.g. a norm name registered twice
            raise ConfigError(f"custom_imports[{i}]: cannot import {name!r}: {e}") from None


def load_config(name: str, overrides: Sequence[str] = (), dirs: Sequence[Path] | None = None) -> RunConfig:
    """Compose, override, type-check and validate a run config. Cheap: imports no torch (unless a
    module in `custom_imports` does)."""
    data = compose(find_config(name, dirs), dirs)
    for item in overrides:
        data = apply_override(data, item)
    cfg = build(RunConfig, data, "")
    import_custom(cfg.custom_imports)
    validate(cfg)
    return cfg


def save_config(cfg: RunConfig, path: Path) -> None:
    """Write the fully resolved config (atomic: temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    tmp.replace(path)
