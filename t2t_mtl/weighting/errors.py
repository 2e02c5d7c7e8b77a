"""Errors raised for bad loss-weighting configurations and inputs."""
from __future__ import annotations


class WeightingError(ValueError):
    """Base class of every error raised by `t2t_mtl.weighting`."""


class UnknownWeightingError(WeightingError):
    """The config names a weighting method that does not exist."""
