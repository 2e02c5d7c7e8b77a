"""The `model.moe` section: `MoEConfig` (its keys, their validation) and the MoE errors.

`MoEConfig.from_dict` checks a `model.moe` mapping (unknown keys, types, ranges, what the routing mode needs)
and raises `MoEConfigError` naming the key; `MissingTaskIdsError` is what a task-routed layer raises when it runs
without usable task ids.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Union

from t2t_mtl.config_types import unknown_key_message
from t2t_mtl.config_values import MOE_FLOAT_KEYS, read_yaml_floats
from t2t_mtl.size_limits import MAX_EXPERTS
from t2t_mtl.wording import counted

__all__ = ["LAYER_CHOICES", "ROUTING_MODES", "UNSEEN_TASK_ROUTINGS", "MissingTaskIdsError", "MoEConfig",
           "MoEConfigError", "moe_mapping", "unread_moe_keys"]

ROUTING_MODES = ("token", "task", "hybrid")
LAYER_CHOICES = ("both", "encoder", "decoder")
#: `unseen_task_routing` keywords (any other value names a trained task)
UNSEEN_TASK_ROUTINGS = ("error", "mean")


class MoEConfigError(ValueError):
    """A `model.moe` key or value is invalid, or the model cannot do what was asked of its MoE layers."""


class MissingTaskIdsError(ValueError):
    """A task-routed MoE layer ran without usable `task_ids`: none, a wrong count, an id outside
    [-1, num_tasks), or `UNSEEN_TASK_ID` with `unseen_task_routing: error`."""


@dataclass
class MoEConfig:
    """The `model.moe` section.

    num_experts: experts per MoE layer; top_k: experts per token (task); every: an MoE FFN in every k-th
    layer (layers every-1, 2·every-1, ...); layers: "both" | "encoder" | "decoder"; capacity_factor /
    eval_capacity_factor: rows per expert = ceil(N·k/E·factor) (≥ min_capacity) in training / eval;
    dropless: never drop (capacity ignored); routing: "token" | "task" | "hybrid"; score: "softmax" |
    "sigmoid"; renormalize: gates renormalised over the top-k (None → k > 1); aux_loss_coef, z_loss_coef:
    weights of the load-balancing and z losses; task_names: the task of each task id (needed by task and
    hybrid routing); unseen_task_routing: how task and hybrid routing route a task the model was not
    trained on (task id `UNSEEN_TASK_ID`, e.g. a held-out task in zero-shot evaluation) — "mean" (the mean
    of the trained tasks' gate rows, used like a task's row), a trained task's name (route exactly like that
    task; the keywords win over a task of the same name) or "error" (refuse); upcycle: when converting a dense
    model, initialise every expert from its FFN; backend: "auto" | "triton" | "reference" for the routing
    kernels; expert_ids: which experts a layer holds ({"encoder.1": [3, 5]}, written by
    `extract_task_subnetwork`; absent = all).
    """

    num_experts: int = 8
    top_k: int = 2
    every: int = 2
    layers: str = "both"
    capacity_factor: float = 1.25
    eval_capacity_factor: float = 2.0
    min_capacity: int = 4
    dropless: bool = False
    routing: str = "token"
    score: str = "softmax"
    renormalize: Optional[bool] = None
    aux_loss_coef: float = 0.01
    z_loss_coef: float = 0.001
    task_names: Optional[List[str]] = None
    unseen_task_routing: str = "mean"
    upcycle: bool = True
    backend: str = "auto"
    expert_ids: Dict[str, List[int]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> "MoEConfig":
        """Validate `model.moe`; unknown keys and bad values raise `MoEConfigError` naming the key. A number that
        PyYAML reads as a string (`aux_loss_coef: 1e-2`, without a dot) is read as the number."""
        data = {} if data is None else moe_mapping(data)
        read_yaml_floats(data, MOE_FLOAT_KEYS)
        unknown = unknown_key_message("model.moe", data, [f.name for f in dataclasses.fields(cls)])
        if unknown:
            raise MoEConfigError(unknown)
        cfg = cls(**data)
        cfg.validate()
        return cfg

    def to_dict(self) -> Dict[str, Any]:
        """Every field as plain data (what `from_dict` reads back)."""
        return dataclasses.asdict(self)

    @property
    def num_tasks(self) -> int:
        """How many `task_names` there are (0 without them)."""
        return len(self.task_names or [])

    def validate(self) -> None:
        """Check each field's type and range, and what the routing mode needs; raises `MoEConfigError` naming
        the key."""
        def bad(key: str, why: str) -> None:
            raise MoEConfigError(f"model.moe.{key}={getattr(self, key)!r}: {why}")

        # types first (YAML gives strings for typos like `capacity_factor: 1,25`), so the range checks below
        # never compare a string with a number and a string never passes as a true flag
        for key in MOE_FLOAT_KEYS:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                bad(key, "must be a number")
        if isinstance(self.min_capacity, bool) or not isinstance(self.min_capacity, int):
            bad("min_capacity", "must be an integer >= 0")
        for key in ("dropless", "upcycle"):
            if not isinstance(getattr(self, key), bool):
                bad(key, "must be true or false")
        if self.renormalize is not None and not isinstance(self.renormalize, bool):
            bad("renormalize", "must be true, false or null (null: renormalise when top_k > 1)")
        if self.task_names is not None and (not isinstance(self.task_names, (list, tuple))
                                            or not all(isinstance(t, str) for t in self.task_names)):
            bad("task_names", "must be a list of task names")
        if not isinstance(self.expert_ids, dict):
            bad("expert_ids", "must be a mapping {layer: [expert ids]}")
        if not _is_int(self.num_experts) or self.num_experts < 1:
            bad("num_experts", "must be an integer >= 1")
        if self.num_experts > MAX_EXPERTS:
            bad("num_experts", f"must be at most {MAX_EXPERTS}, the most experts the Triton router routes (one tile "
                               f"holds a token's logit for every expert): use fewer experts")
        if not _is_int(self.top_k) or not 1 <= self.top_k <= self.num_experts:
            bad("top_k", f"must be an integer in [1, num_experts={self.num_experts}]")
        if not _is_int(self.every) or self.every < 1:
            bad("every", "must be an integer >= 1 (1 = every layer)")
        if self.layers not in LAYER_CHOICES:
            bad("layers", f"use one of {LAYER_CHOICES}")
        if self.routing not in ROUTING_MODES:
            bad("routing", f"use one of {ROUTING_MODES}")
        if self.score not in ("softmax", "sigmoid"):
            bad("score", "use 'softmax' or 'sigmoid'")
        if self.backend not in ("auto", "triton", "reference"):
            bad("backend", "use 'auto', 'triton' or 'reference'")
        for key in ("capacity_factor", "eval_capacity_factor"):
            if not 0 < getattr(self, key) < math.inf:
                bad(key, "must be a finite number > 0 (for no capacity limit set dropless: true)")
        for key in ("aux_loss_coef", "z_loss_coef"):
            if not 0 <= getattr(self, key) < math.inf:
                bad(key, "must be a finite number >= 0")
        if self.min_capacity < 0:
            bad("min_capacity", "must be an integer >= 0")
        if self.routing in ("task", "hybrid") and not self.task_names:
            bad("task_names", f"routing={self.routing!r} needs the list of training task names "
                              "(task_ids index it)")
        if self.task_names is not None and len(set(self.task_names)) != len(self.task_names):
            bad("task_names", "task names must be unique")
        self._validate_unseen_task_routing()
        if self.expert_ids and self.routing != "task":
            bad("expert_ids", f"a layer holds a subset of the experts only with routing='task' (with "
                              f"{self.routing!r} routing any token may pick any expert); remove expert_ids")
        for layer, ids in self.expert_ids.items():
            if (not isinstance(ids, (list, tuple)) or not all(_is_int(i) and 0 <= i < self.num_experts for i in ids)
                    or len(set(ids)) != len(ids) or len(ids) < self.top_k):
                raise MoEConfigError(f"model.moe.expert_ids[{layer!r}]={ids!r}: needs a list of >= top_k={self.top_k} "
                                     f"distinct integer ids in [0, {self.num_experts})")

    def _validate_unseen_task_routing(self) -> None:
        value, names = self.unseen_task_routing, self.task_names or []
        if value in UNSEEN_TASK_ROUTINGS or (isinstance(value, str) and value in names):
            return
        from task_registry.errors import close_matches

        close = (close_matches(value, [*UNSEEN_TASK_ROUTINGS, *names], n=1, cutoff=0.6, substrings=False)
                 if isinstance(value, str) else [])
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise MoEConfigError(f"model.moe.unseen_task_routing={value!r}: use 'mean', 'error' or the name of a "
                             f"trained task {names}{hint}")

    def task_index(self, task: Union[int, str]) -> int:
        """The id of a task given by name or id."""
        names = self.task_names or []
        if isinstance(task, str):
            if task not in names:
                from task_registry.errors import close_matches

                close = close_matches(task, names, n=1, cutoff=0.6, substrings=False)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise MoEConfigError(f"task {task!r} is not one of the MoE model's tasks {names}{hint}")
            return names.index(task)
        if not 0 <= int(task) < len(names):
            raise MoEConfigError(f"task id {task} out of range: the model knows {counted(len(names), 'task')} {names}")
        return int(task)


def moe_mapping(value: Any) -> Dict[str, Any]:
    """`value` as a dict of `model.moe` keys; anything but a mapping is a `MoEConfigError`."""
    if not isinstance(value, Mapping):
        raise MoEConfigError(f"model.moe must be a mapping such as {{num_experts: 8, top_k: 2}}, got {value!r}")
    return dict(value)


def unread_moe_keys(routing: str, dropless: bool) -> Dict[str, str]:
    """{key: the setting that leaves it unread} of the `model.moe` keys a layer with this `routing` and `dropless`
    never reads: the capacity keys, dropless and backend under routing task (no capacity, no routing kernel), the
    capacity keys under dropless, unseen_task_routing under routing token (task_names and expert_ids left out)."""
    capacity = ("capacity_factor", "eval_capacity_factor", "min_capacity")
    if routing == "task":
        return dict.fromkeys((*capacity, "dropless", "backend"), "routing task")
    unread = dict.fromkeys(capacity, "dropless") if dropless else {}
    if routing == "token":
        unread["unseen_task_routing"] = "routing token"
    return unread


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

