"""The errors of configuration: every one names the key, file or `--set` item at fault."""
from __future__ import annotations

__all__ = ["ConfigError", "ConfigFileError", "ConfigTypeError", "UnknownConfigKeyError"]


class ConfigError(ValueError):
    """A configuration is invalid; the message names the key and what to do."""


class UnknownConfigKeyError(ConfigError):
    """One or more keys are not part of the schema."""


class ConfigTypeError(ConfigError):
    """A value has the wrong type."""


class ConfigFileError(ConfigError):
    """A config file (or a `base:` file) is missing or not valid YAML."""
