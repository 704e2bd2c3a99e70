"""Run configuration: typed schema, YAML composition with overrides, validation."""

from .loader import ConfigError, find_config, load_config, save_config, to_dict
from .schema import RunConfig

__all__ = ["ConfigError", "RunConfig", "find_config", "load_config", "save_config", "to_dict"]
