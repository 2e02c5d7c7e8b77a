"""`sum` and `mean`: the plain multitask update, for comparison runs and as a no-surgery baseline."""
from __future__ import annotations

import numpy as np

from .base import GradientMethod, register_method


@register_method
class SumMethod(GradientMethod):
    """w = 1: the update is the sum of the task gradients."""

    name = "sum"

    def _weights(self, gram: np.ndarray, tasks: np.ndarray) -> np.ndarray:
        return np.ones(len(tasks))


@register_method
class MeanMethod(GradientMethod):
    """w = 1/T: the update is the mean of the task gradients (of the tasks present in the step)."""

    name = "mean"

    def _weights(self, gram: np.ndarray, tasks: np.ndarray) -> np.ndarray:
        return np.full(len(tasks), 1.0 / len(tasks))
