"""Errors raised by evaluation: each names what was wrong and what to do instead."""
from __future__ import annotations


class EvaluationError(ValueError):
    """Base class of evaluation errors."""


class CheckpointError(EvaluationError):
    """A checkpoint folder is missing, incomplete, or holds a model that is not a T5 seq2seq model."""


class NoAnswerChoicesError(EvaluationError):
    """Rank classification was asked for on examples without answer choices."""


class UnknownMetricError(EvaluationError, KeyError):
    """A metric name that has no shipped metric module."""

    def __str__(self) -> str:  # KeyError would otherwise print the repr of the message
        return str(self.args[0]) if self.args else ""


class MetricRegistrationError(EvaluationError):
    """A metric that `register_metric` cannot register (a taken name, an unknown kind, no function)."""


class RanksStoppedError(EvaluationError):
    """The ranks of a sharded evaluation cannot go on together; raised on every rank at the same gather (so it is never
    told at a further one)."""


class RankFailedError(RanksStoppedError):
    """Other ranks of a sharded evaluation failed; raised on every rank that did not (their own errors say why)."""
