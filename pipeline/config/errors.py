"""The one error type of the config layer (its own module so every config module can raise it)."""


class ConfigError(ValueError):
    """A config that cannot run; the message names the key."""
