"""PCGrad (Yu et al. 2020, Algorithm 1) in Gram space.

g_i^PC = Σ_k C_ik g_k starts as g_i; for every j ≠ i in a fresh random order: d = g_i^PC · g_j (= C_i · G[:, j],
always against the ORIGINAL g_j); if d < 0, C_ij -= d / G_jj. The update is Σ_i g_i^PC, i.e. w = Σ_i C_i.
The T rows are independent, so step s of all rows runs at once (T−1 vector steps instead of T(T−1) scalar ones).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import GradientMethod, random_orders, register_method, seeded_generator, task_orders


def pcgrad_weights(gram: np.ndarray, orders: list[list[int]]) -> np.ndarray:
    """Weights w [T] of PCGrad's update Σ_i g_i^PC for Gram `gram` [T, T] and per-task orders of j ≠ i."""
    num_tasks = gram.shape[0]
    coeffs = np.eye(num_tasks)
    if num_tasks < 2:
        return coeffs.sum(0)
    order = np.asarray(orders, dtype=np.int64)  # [T, T-1]
    rows = np.arange(num_tasks)
    diag = np.diag(gram)
    for step in range(num_tasks - 1):
        j = order[:, step]
        dots = np.einsum("ik,ki->i", coeffs, gram[:, j])  # C_i · G[:, j_i]
        g_jj = diag[j]
        conflict = (dots < 0) & (g_jj > 0)
        coeffs[rows[conflict], j[conflict]] -= dots[conflict] / g_jj[conflict]
    return coeffs.sum(0)


@register_method
class PCGrad(GradientMethod):
    """Options: seed (int) — the orders come from one seeded generator advanced every step. `last_orders[t]`: the
    order in which task t (index among all T) was projected on the other tasks in the last step, as task indices
    (empty for a task absent from it)."""

    name = "pcgrad"
    defaults = {"seed": 0}

    def __init__(self, num_tasks: int, **options: Any) -> None:
        super().__init__(num_tasks, **options)
        self.rng = seeded_generator(self.name, int(self.options["seed"]))
        self.last_orders: list[list[int]] = []

    def _weights(self, gram: np.ndarray, tasks: np.ndarray) -> np.ndarray:
        orders = random_orders(self.rng, len(tasks))
        self.last_orders = task_orders(orders, tasks, self.num_tasks)
        return pcgrad_weights(gram, orders)

    def state_dict(self) -> dict[str, Any]:
        """The order generator's state."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()`."""
        self.rng.bit_generator.state = state["rng"]
