"""The errors of configuration: every one names the key, file or `--set` item at fault."""
from __future__ import annotations

__all__ = ["ConfigError", "ConfigFileError", "ConfigTypeError", "LaunchEnvironmentError", "RankStoppedError",
           "UnknownConfigKeyError"]


class ConfigError(ValueError):
    """A configuration is invalid; the message names the key and what to do."""


class UnknownConfigKeyError(ConfigError):
    """One or more keys are not part of the schema."""


class ConfigTypeError(ConfigError):
    """A value has the wrong type."""


class ConfigFileError(ConfigError):
    """A config file (or a `base:` file) is missing or not valid YAML."""


class RankStoppedError(ConfigError):
    """Another rank of the job stopped before training began; its own error says what it could not use (not this
    rank's config, which a message about a refused value would point to)."""


class LaunchEnvironmentError(ConfigError):
    """The environment the process was started in (a launcher's or the user's variable, the GPUs it sees) is refused,
    not a value of the config; the message names the variable and what to change."""
