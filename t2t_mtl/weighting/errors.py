"""Errors raised for bad loss-weighting configurations and inputs."""
from __future__ import annotations


class WeightingError(ValueError):
    """Base class of every error raised by `t2t_mtl.weighting`."""


class UnknownWeightingError(WeightingError):
    """The config names a weighting method that does not exist."""


class WeightingRegistrationError(WeightingError):
    """`register_weighting` was given a class that cannot be a loss weighting, or a method name that is taken."""


class UnknownWeightingParameterError(WeightingError):
    """The config has a key that the chosen method does not take; `key` is that key, so a front end can name its
    own path to it (`weighting.<key>` in a training config)."""

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key
