"""The contract of a Gram-space gradient method, its registry and `build_method`.

A method sees the per-task gradients only through their Gram matrix G (float64 numpy, [T, T], or [K, T, T]
for a segmented method) and returns weights w ([T], or [K, T]) so that the update is Σ_k w_k g_k (per
segment). Tasks whose gradient is exactly zero (absent from the step's micro-batches) get weight 0 and the
method runs on the others' sub-Gram, so a missing task cannot drag MGDA or Nash-MTL to a zero update.
State (EMA targets, RNG) round-trips through `state_dict`/`load_state_dict`.
"""
from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np

from t2t_mtl.class_registry import ClassRegistry, register_class


class GradientMethodError(ValueError):
    """Gradient surgery cannot run as asked: an unknown method, option or option value, a malformed Gram, unusable
    tasks, parameters or segments, ranks or a saved state that do not match this run, or a solve without a
    solution (nashmtl without ridge)."""


class GradientMethod:
    """Base class: subclasses set `name`, `defaults` (every accepted option with its default) and implement
    `_weights(gram, tasks)` for the sub-Gram of the present tasks (`tasks`: their indices among all T)."""

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    # machine epsilon of the Gram the weights come from: float64's unless `GradientSurgery` says its Gram was summed
    # in float32 (fp32/bf16/fp16 gradients); a method whose weights read cosines near ±1 sizes its tolerances by it
    gram_eps: float = float(np.finfo(np.float64).eps)

    def __init__(self, num_tasks: int, **options: Any) -> None:
        if not isinstance(num_tasks, numbers.Integral) or isinstance(num_tasks, bool) or num_tasks < 1:
            raise GradientMethodError(f"gradient method {self.name!r} needs num_tasks, an integer >= 1, got "
                                      f"{num_tasks!r}")
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise GradientMethodError(
                f"gradient_surgery.{unknown[0]}: unknown option for method {self.name!r}; "
                f"accepted options: {sorted(self.defaults) or 'none'}")
        self.num_tasks = num_tasks
        self.options = {key: self._coerced(key, value) for key, value in {**self.defaults, **options}.items()}

    def __repr__(self) -> str:
        options = "".join(f", {key}={value!r}" for key, value in self.options.items())
        return f"{type(self).__name__}(num_tasks={self.num_tasks}{options})"

    def warn_once(self, message: str, *args: Any) -> None:
        """Log `message % args` as a warning of the method's module logger (`t2t_mtl.gradients.<method>`, shown in the
        train output) the first time this method calls it; later calls are not reported."""
        if not self._warned:
            self._warned = True
            logging.getLogger(type(self).__module__).warning(message, *args)

    def warn_max_iter(self, steps: str, measure: str, value: float) -> None:
        """`warn_once` that the `max_iter` option's `steps` (e.g. "Newton steps") left the solve's `measure` at
        `value`, above the `tol` option: the step used that last iterate."""
        self.warn_once("%s: %d %s (gradient_surgery.max_iter) left %s at %.3g, above gradient_surgery.tol = %.3g; the "
                       "step used that last iterate (later such steps are not reported): raise max_iter", self.name,
                       int(self.options["max_iter"]), steps, measure, value, float(self.options["tol"]))

    _warned = False

    def _coerced(self, key: str, value: Any) -> Any:
        """`value` as the type of a numeric default (YAML reads `1e3` as a string; NaN, ±inf and true/false are
        refused); other options as given."""
        default = self.defaults[key]
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            return value
        if isinstance(default, int) and isinstance(value, int) and not isinstance(value, bool):
            return int(value)  # exact, however large (a seed)
        try:
            if isinstance(value, bool):
                raise TypeError
            number = float(value)
        except (TypeError, ValueError):
            raise GradientMethodError(f"gradient_surgery.{key} must be a number for method {self.name!r}, "
                                      f"got {value!r}") from None
        if not math.isfinite(number):
            raise GradientMethodError(f"gradient_surgery.{key} must be a finite number for method {self.name!r}, "
                                      f"got {value!r}")
        if isinstance(default, int):
            if not number.is_integer():
                raise GradientMethodError(f"gradient_surgery.{key} must be an integer for method {self.name!r}, "
                                          f"got {value!r}")
            return int(number)
        return number

    @property
    def segmented(self) -> bool:
        """True when the method wants one Gram per parameter segment ([K, T, T]) and returns [K, T] weights."""
        return False

    def weights(self, gram: np.ndarray) -> np.ndarray:
        """Weights [T] (or [K, T] when segmented) for the float64 Gram `gram` [T, T] (or [K, T, T])."""
        gram = self._checked(gram)
        whole = gram.sum(0) if self.segmented else gram
        present = np.flatnonzero(np.diag(whole) > 0)
        if len(present) == self.num_tasks:
            return self._returned(self._weights(gram, present), gram.shape[:-1])
        out = np.zeros(gram.shape[:-1])
        if len(present):
            sub = gram[..., present[:, None], present]
            out[..., present] = self._returned(self._weights(sub, present), sub.shape[:-1])
        return out

    def _returned(self, weights: Any, shape: tuple[int, ...]) -> np.ndarray:
        """`_weights`' `weights` as float64, refused naming the method unless finite and of `shape` ([k] or [K, k]
        for the k present tasks)."""
        try:
            array = np.asarray(weights, dtype=np.float64)
        except (TypeError, ValueError):
            array = None
        if array is None or array.shape != shape or not np.all(np.isfinite(array)):
            if array is not None and array.shape != shape:
                shown = f"shape {list(array.shape)}"
            else:
                shown = repr(weights.tolist() if isinstance(weights, np.ndarray) else weights)
            raise GradientMethodError(f"gradient method {self.name!r}: _weights returned {shown} for the "
                                      f"{shape[-1]} tasks present in the step; it must return one finite weight per "
                                      f"present task, shape {list(shape)}")
        return array

    def _weights(self, gram: np.ndarray, tasks: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """What the method carries from step to step (saved in checkpoints); `{}` for a stateless method."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()`; a stateless method raises `GradientMethodError` for a non-empty `state`."""
        if state:
            raise GradientMethodError(f"gradient method {self.name!r} keeps no state, got keys {sorted(state)}")

    def _checked(self, gram: np.ndarray) -> np.ndarray:
        gram = np.asarray(gram, dtype=np.float64)
        t = self.num_tasks
        expected_dims = 3 if self.segmented else 2
        if gram.ndim != expected_dims or gram.shape[-2:] != (t, t):
            raise GradientMethodError(
                f"gradient method {self.name!r} expects a Gram of shape {'[K, ' if self.segmented else '['}{t}, {t}],"
                f" got {list(gram.shape)}")
        if not np.all(np.isfinite(gram)):
            raise GradientMethodError(f"gradient method {self.name!r}: the Gram matrix has NaN/inf entries "
                                      f"(a task gradient overflowed); check the loss of each task")
        return gram


METHODS: dict[str, type[GradientMethod]] = {}

#: the methods t2t-mtl ships (added as their modules register them), which a user's registration does not replace
SHIPPED_METHODS: set[str] = set()

_REGISTRY = ClassRegistry(METHODS, SHIPPED_METHODS, GradientMethod, "name", "_weights", build_args=(1,), common={},
                          register="register_method", error=GradientMethodError, params_attr="defaults")

Method = TypeVar("Method", bound=type[GradientMethod])


def register_method(cls: Method, *, overwrite: bool = False) -> Method:
    """Make the `GradientMethod` subclass `cls` the method a config's `gradient_surgery.method: <cls.name>` builds,
    with the section's other keys as options (`cls(num_tasks, **options)`, each a key of `cls.defaults`). Returns
    `cls` (a class decorator). The class implements `_weights(gram, tasks)`; what it carries from step to step is
    its `state_dict()` / `load_state_dict(state)`, saved in checkpoints (plain, picklable values).

    Raises `GradientMethodError` for a class that is no `GradientMethod`, has no `name` of its own or a shipped one,
    lacks `_weights`, or whose `defaults` is not a dict of option names; and for a name registered to another class,
    unless `overwrite`."""
    if cls.__module__.startswith(f"{__package__}.") and isinstance(getattr(cls, "name", None), str):
        METHODS[cls.name] = cls  # (a shipped method, as its module is imported)
        SHIPPED_METHODS.add(cls.name)
        return cls
    return register_class(_REGISTRY, cls, overwrite=overwrite)


def build_method(config: Mapping[str, Any] | str, num_tasks: int) -> GradientMethod:
    """Build a method from `{"method": name, **options}` (or a bare name), e.g. `{"method": "pcgrad", "seed": 0}`."""
    if isinstance(config, str):
        config = {"method": config}
    if not isinstance(config, Mapping):
        raise GradientMethodError(f"gradient_surgery must be a mapping such as {{'method': 'pcgrad'}} or a method "
                                  f"name, got {config!r}")
    config = dict(config)
    name = config.pop("method", None)
    if name is None:
        from task_registry.errors import close_matches

        misspelt = close_matches("method", [str(key) for key in config], n=1, cutoff=0.6, substrings=False)
        hint = f"; is gradient_surgery.{misspelt[0]} meant to be it?" if misspelt else ""
        raise GradientMethodError(f"gradient_surgery needs a `method` key (one of {sorted(METHODS)}){hint}")
    if not isinstance(name, str) or name not in METHODS:  # (a list or mapping would not even hash)
        from task_registry.errors import close_matches

        close = close_matches(str(name), METHODS, n=1, cutoff=0.6, substrings=False)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise GradientMethodError(f"gradient_surgery.method: unknown method {name!r}{hint} "
                                  f"(available: {sorted(METHODS)}); a GradientMethod class of your own becomes one "
                                  f"through t2t_mtl.gradients.register_method, in a module a training config imports "
                                  f"(data.task_modules)")
    return METHODS[name](num_tasks, **config)


def seeded_generator(method: str, seed: int) -> np.random.Generator:
    """The generator of option `seed` (numpy takes only seeds >= 0: others are refused by name)."""
    if seed < 0:
        raise GradientMethodError(f"gradient_surgery.seed must be an integer >= 0 for method {method!r}, got {seed}")
    return np.random.default_rng(seed)


def random_orders(rng: np.random.Generator, num_tasks: int) -> list[list[int]]:
    """For every task i a fresh random order of the other tasks j ≠ i (PCGrad/GradVac inner loops)."""
    orders = []
    for i in range(num_tasks):
        others = np.array([j for j in range(num_tasks) if j != i], dtype=np.int64)
        orders.append(rng.permutation(others).tolist())
    return orders


def task_orders(orders: list[list[int]], tasks: np.ndarray, num_tasks: int) -> list[list[int]]:
    """`orders` over the positions of the present `tasks` as task indices among all `num_tasks`: entry t is task
    t's order of the other present tasks (empty when task t is absent from the step)."""
    by_task: list[list[int]] = [[] for _ in range(num_tasks)]
    for i, order in zip(tasks, orders):
        by_task[int(i)] = [int(tasks[j]) for j in order]
    return by_task
