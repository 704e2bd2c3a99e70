"""Run configuration: typed schema, YAML composition with overrides, validation. Imports no torch."""

from .errors import ConfigError
from .loader import add_config_dirs, config_dirs, find_config, load_config, save_config, to_dict
from .schema import RunConfig

__all__ = ["ConfigError", "RunConfig", "add_config_dirs", "config_dirs", "find_config", "load_config",
           "save_config", "to_dict"]
