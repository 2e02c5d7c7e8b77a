"""Gradient Vaccine (Wang et al. 2021) in Gram space, whole model or per segment (layer).

For i, for j ≠ i in a fresh random order, with g_i' = Σ_k C_ik g_k the current (modified) g_i:
φ_ij = cos(g_i', g_j); if φ_ij < φ̂_ij (the EMA target):
    C_ij += ‖g_i'‖ (φ̂_ij √(1−φ_ij²) − φ_ij √(1−φ̂_ij²)) / (‖g_j‖ √(1−φ̂_ij²));
then φ̂_ij ← (1−β) φ̂_ij + β φ_ij (updated after every visit, as the paper's algorithm does). Where g_i' and g_j
are antiparallel (φ_ij = −1 to rounding, e.g. g_i = −g_j), √(1−φ_ij²) = 0 makes the vaccinated g_i' + ‖g_i'‖/‖g_j‖ g_j
the zero vector: C_i is set to 0 (the floored sine below would leave a rounding-level residual, whose cosines with
the later g_j, pure rounding in Gram space, moved their targets). Pairs with a zero gradient (as such a g_i') are
skipped, their targets unchanged. The update is Σ_i g_i'. Targets start at 0 and live in `state_dict`.
Per segment (`per_layer: true` or "layer": one segment per transformer layer; "tensor": one per parameter
tensor), each segment k has its own targets and weights; the orders are shared. The segments themselves are
the caller's (`segment_offsets`); `layer_key` names the layer a parameter belongs to.
"""
from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from .base import (GradientMethod, GradientMethodError, random_orders, register_method, seeded_generator,
                   task_orders)

PER_LAYER_CHOICES = (False, True, "layer", "tensor")
_LAYER = re.compile(r"^(.*?\.(?:block|blocks|layer|layers|h)\.\d+)\.")
# floor for the sines √(1−φ²) and √(1−φ̂²): near φ = ±1 a sine taken from a float64 cosine is rounding (one ulp of
# φ gives ~2e-8, a few ulps of a Gram-space cosine more), so both sines share one floor above that noise and a
# target of ±1 cannot divide by zero
SINE_FLOOR = 1e-6
# A Gram summed in float32 (the gradients of an fp32/bf16/fp16 run) holds its cosines to ~1e-6 (P = 1e5) … 1e-5
# (P = 1e7), so a sine near ±1 is uncertain by √(2 · that): the floor follows the Gram's precision, as
# √(2 · COSINE_NOISE_ULPS · eps) — 5.5e-3 for float32 (angles within 0.3° of 0 or 180° count as rounding).
COSINE_NOISE_ULPS = 128


def sine_floor(gram_eps: float) -> float:
    """The sine floor for cosines read from a Gram of machine epsilon `gram_eps`: `SINE_FLOOR`, or
    √(2 · COSINE_NOISE_ULPS · eps) when larger (float32: 5.5e-3; float64: 1e-6)."""
    return max(SINE_FLOOR, math.sqrt(2.0 * COSINE_NOISE_ULPS * gram_eps))


def _sine(cosine, floor: float = SINE_FLOOR):
    return np.maximum(np.sqrt(np.maximum(1.0 - cosine ** 2, 0.0)), floor)


def gradvac_coefficient(norm_i: float | np.ndarray, phi: float | np.ndarray, target: float | np.ndarray,
                        norm_j: float | np.ndarray, floor: float = SINE_FLOOR) -> float | np.ndarray:
    """The GradVac increment of C_ij (works elementwise on arrays). Sines below `floor` (cosines within
    rounding of ±1) count as that floor, so φ one ulp below a target of 1 adds ~‖g_i‖(φ̂ − φ)/‖g_j‖, not
    O(‖g_i‖/‖g_j‖)."""
    phi = np.clip(phi, -1.0, 1.0)
    sin_target = _sine(target, floor)
    return norm_i * (target * _sine(phi, floor) - phi * sin_target) / (norm_j * sin_target)


def _antiparallel(phi: np.ndarray, floor: float = SINE_FLOOR) -> np.ndarray:
    """Whether the cosines `phi` are −1 to rounding (their sine below `floor`)."""
    return (phi < 0) & (1.0 - phi * phi < floor ** 2)


def gradvac_weights(gram: np.ndarray, orders: list[list[int]], targets: np.ndarray, beta: float,
                    floor: float = SINE_FLOOR) -> np.ndarray:
    """Weights w [T] for Gram `gram` [T, T]; `targets` [T, T] (φ̂) is updated in place; `floor`: the sine floor
    for the Gram's precision (`sine_floor`)."""
    num_tasks = gram.shape[0]
    coeffs = np.eye(num_tasks)
    if num_tasks < 2:
        return coeffs.sum(0)
    order = np.asarray(orders, dtype=np.int64)
    rows = np.arange(num_tasks)
    norms_j = np.sqrt(np.maximum(np.diag(gram), 0.0))
    for step in range(num_tasks - 1):
        j = order[:, step]
        dots = np.einsum("ik,ki->i", coeffs, gram[:, j])
        norm_i = np.sqrt(np.maximum(np.einsum("ik,kl,il->i", coeffs, gram, coeffs), 0.0))
        norm_j = norms_j[j]
        valid = (norm_i > 0) & (norm_j > 0)
        phi = np.where(valid, dots / np.where(valid, norm_i * norm_j, 1.0), 0.0)
        target = targets[rows, j]
        vaccinate = valid & (phi < target)
        coef = gradvac_coefficient(norm_i, phi, target, np.where(valid, norm_j, 1.0), floor)
        coeffs[rows[vaccinate], j[vaccinate]] += coef[vaccinate]
        coeffs[rows[vaccinate & _antiparallel(phi, floor)]] = 0.0  # g_i' + ‖g_i'‖/‖g_j‖ g_j: the zero vector
        targets[rows[valid], j[valid]] = (1.0 - beta) * target[valid] + beta * phi[valid]
    return coeffs.sum(0)


def layer_key(name: str) -> str:
    """The transformer layer of a parameter name: `encoder.block.3.layer.0.SelfAttention.q.weight` →
    `encoder.block.3`; a parameter outside the numbered blocks is its own module (`shared.weight` → `shared`,
    `encoder.final_layer_norm.weight` → `encoder.final_layer_norm`)."""
    match = _LAYER.match(name)
    return match.group(1) if match else name.rsplit(".", 1)[0]


@register_method
class GradVac(GradientMethod):
    """Options: beta (EMA rate, paper 1e-2), per_layer (false: whole model; true / "layer": one Gram, target set
    and weight vector per transformer layer; "tensor": per parameter tensor), seed. `last_orders` as PCGrad's."""

    name = "gradvac"
    defaults = {"beta": 0.01, "per_layer": False, "seed": 0}

    def __init__(self, num_tasks: int, **options: Any) -> None:
        super().__init__(num_tasks, **options)
        beta = float(self.options["beta"])
        if not 0.0 < beta <= 1.0:
            raise GradientMethodError(f"gradient_surgery.beta must be in (0, 1] for gradvac, got {beta}")
        per_layer = self.options["per_layer"]
        if not any(per_layer is choice if isinstance(choice, bool) else per_layer == choice
                   for choice in PER_LAYER_CHOICES):  # (0 == False and 1 == True: a number is no switch)
            raise GradientMethodError(f"gradient_surgery.per_layer must be one of {list(PER_LAYER_CHOICES)} for "
                                      f"gradvac, got {self.options['per_layer']!r}")
        self.beta = beta
        self.rng = seeded_generator(self.name, int(self.options["seed"]))
        self.targets: np.ndarray | None = None  # [K, T, T], created on the first Gram (K known then)
        self.last_orders: list[list[int]] = []

    @property
    def segmented(self) -> bool:
        """True unless `per_layer` is false."""
        return bool(self.options["per_layer"])

    def _weights(self, gram: np.ndarray, tasks: np.ndarray) -> np.ndarray:
        grams = gram if self.segmented else gram[None]
        if self.targets is None:
            self.targets = np.zeros((grams.shape[0], self.num_tasks, self.num_tasks))
        elif self.targets.shape[0] != grams.shape[0]:
            raise GradientMethodError(f"gradvac keeps EMA targets for {self.targets.shape[0]} segments but got a "
                                      f"Gram with {grams.shape[0]}; the parameter segmentation changed")
        orders = random_orders(self.rng, len(tasks))
        self.last_orders = task_orders(orders, tasks, self.num_tasks)
        block = np.ix_(tasks, tasks)
        weights = []
        for k, g in enumerate(grams):
            targets = self.targets[k][block]  # the present tasks' targets (a copy), written back below
            weights.append(gradvac_weights(g, orders, targets, self.beta, sine_floor(self.gram_eps)))
            self.targets[k][block] = targets
        weights = np.stack(weights)
        return weights if self.segmented else weights[0]

    def state_dict(self) -> dict[str, Any]:
        """The order generator's state and a copy of the EMA targets [K, T, T] (None before the first Gram)."""
        return {"rng": self.rng.bit_generator.state,
                "targets": None if self.targets is None else self.targets.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()`."""
        self.rng.bit_generator.state = state["rng"]
        self.targets = None if state["targets"] is None else np.array(state["targets"], dtype=np.float64)
