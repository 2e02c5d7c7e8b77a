"""Errors raised for bad sampler configurations, rates and task sizes."""
from __future__ import annotations

from typing import Iterable

from t2t_mtl.wording import counted, did_you_mean


class SamplingError(ValueError):
    """Base class of every error raised by `t2t_mtl.sampling`."""


class UnknownStrategyError(SamplingError):
    """The config names a strategy that does not exist."""


class SamplerRegistrationError(SamplingError):
    """`register_sampler` was given a class that cannot be a strategy, or a strategy name that is taken."""


class UnknownParameterError(SamplingError):
    """The config has a key that the chosen strategy does not take; `key` is that key, so a front end can name its
    own path to it (`sampling.<key>` in a training config)."""

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


class InvalidRateError(SamplingError):
    """A task's rate, size or entropy is unusable (negative, NaN, infinite, a size not an integer, a rate that
    overflows), every rate is zero, or a rate setting (alpha, cap, scale, templates, their caps) is invalid."""


class EmptyTaskError(SamplingError):
    """A task has no training examples (size 0), or fewer than the ranks that share its rows (`TaskStreams`)."""


#: seqio's names (`mixing_rate_num_examples`' keywords) for parameters the strategies take under another name, with
#: what they mean there
SEQIO_NAMES = {"temperature": ("alpha", "seqio's temperature: p ∝ n^(1/alpha)"),
               "maximum": ("cap", "seqio's maximum: a task's size capped at it")}


def check_keys(config: dict, valid: Iterable[str], what: str) -> None:
    """Raise `UnknownParameterError` for the first key of `config` not in `valid`, listing the valid keys and
    suggesting close ones (for seqio's name of a parameter, the strategy's own: `temperature` is `alpha`)."""
    valid = sorted(valid)
    for key in config:
        if key not in valid:
            ours, meaning = SEQIO_NAMES.get(key, (None, None))
            hint = f" Did you mean {ours!r} ({meaning})?" if ours in valid else did_you_mean(key, valid)
            raise UnknownParameterError(
                f"unknown parameter {key!r} for {what}.{hint} Valid parameters: {', '.join(valid)}.", key=key
            )


def check_floor(floor: float, tasks: int, default: float) -> float:
    """`floor`, every task's least probability, as a float where floor × `tasks` is in [0, 1) (the floors leave room
    for the rest); else a `SamplingError` giving the largest floor the tasks allow, and saying where the strategy's
    `default` floor is too large for them (a mixture of many tasks that sets no floor is refused by it)."""
    if not 0.0 <= floor * tasks < 1.0:
        too_large = f"; the default, {default}, is too large for {tasks}" if default * tasks >= 1 else ""
        raise SamplingError(f"sampling.floor {floor} times {counted(tasks, 'task')} must be in [0, 1): give a floor "
                            f">= 0 below 1/{tasks} = {1 / tasks:.4g}{too_large}")
    return float(floor)
