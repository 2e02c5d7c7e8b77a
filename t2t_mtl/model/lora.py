"""Low-rank adaptation (LoRA, Hu et al. 2021) of T5's linear layers: parameter-efficient multitask training.

`model.lora: {r: 8, alpha: 16, dropout: 0.0, targets: [q, v], trainable: []}` (the defaults) wraps each targeted
linear layer of every encoder/decoder block (attention `q`, `k`, `v`, `o`; feed-forward `wi`, `wi_0`, `wi_1`,
`wo`) as `y = x Wᵀ + (alpha / r) · dropout(x) Aᵀ Bᵀ` with A [r, in] (Kaiming-uniform) and B [out, r]
(zeros, so training starts from the unadapted model) and freezes every weight of the model except:
- the LoRA factors A and B;
- mixture-of-experts layers (routers, task gates, experts: new modules t2t-mtl adds, trained in full);
- the token embedding matrix when `model.task_embeddings` adds task tokens (their rows must be learned);
- parameters whose name contains one of `trainable` (e.g. `layer_norm`).
`merge_lora` folds B·A into W for inference and export (a plain T5 again).

With `per_task: true` every adapted layer holds one (A, B) pair per training task (task-specific adapters over a
frozen shared model): a batch row of task t is adapted by task t's pair only, so the model takes `task_ids`
(`t2t_mtl.model.task_routing`), and a task it was not trained on (`UNSEEN_TASK_ID`) gets the mean update
(1/T)·Σ_t B_t A_t. `select_task_adapter` folds one task's update into W (a single-task model to export).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F
from transformers import T5ForConditionalGeneration

from t2t_mtl.config_types import unknown_key_message
from t2t_mtl.config_values import LORA_FLOAT_KEYS, read_yaml_floats
from t2t_mtl.model.task_routing import UNSEEN_TASK_ID, TaskConditioned, TaskConditionedT5
from t2t_mtl.wording import counted

__all__ = ["LORA_TARGETS", "LoRAConfig", "LoRAConfigError", "LoRALinear", "apply_lora", "check_targets",
           "has_lora", "has_task_adapters", "lora_settings", "lora_signature", "merge_lora", "select_task_adapter",
           "trainable_parameter_count"]

#: the linear layers of T5's blocks that LoRA may adapt (attention, then the dense and gated feed-forwards)
LORA_TARGETS = ("q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo")


class LoRAConfigError(ValueError):
    """A `model.lora` key or value is invalid, or its targets select no layer of the model."""


@dataclass
class LoRAConfig:
    """The `model.lora` section: rank `r`, scale `alpha` (the update is scaled by alpha / r), `dropout` on
    the adapter's input, `targets` (names from `LORA_TARGETS`) and `trainable` (name fragments of further
    parameters to train in full); `per_task`: one adapter per training task instead of one shared by all."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: List[str] = field(default_factory=lambda: ["q", "v"])
    trainable: List[str] = field(default_factory=list)
    per_task: bool = False

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> "LoRAConfig":
        """Validate a `model.lora` mapping (`true`, `{}` and None give the defaults — `lora_settings` is what
        reads None as "off"); errors name the key. A number PyYAML reads as a string (`dropout: 1e-1`) is read as
        the number."""
        data = {} if data is True or data is None else data
        if not isinstance(data, Mapping):
            raise LoRAConfigError(f"model.lora must be a mapping such as {{r: 8, alpha: 16, targets: [q, v]}} "
                                  f"(or true for those defaults), not {data!r}")
        data = dict(data)
        read_yaml_floats(data, LORA_FLOAT_KEYS)
        unknown = unknown_key_message("model.lora", data, [f.name for f in dataclasses.fields(cls)])
        if unknown:
            raise LoRAConfigError(unknown)
        cfg = cls(**data)
        cfg.validate()
        return cfg

    def to_dict(self) -> Dict[str, Any]:
        """The settings as a plain mapping (what checkpoints record)."""
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raise LoRAConfigError naming the first key with a bad type or value."""
        def bad(key: str, why: str) -> None:
            raise LoRAConfigError(f"model.lora.{key}={getattr(self, key)!r}: {why}")

        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            bad("r", "must be an integer >= 1 (the adapters' rank)")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 < self.alpha < math.inf:
            bad("alpha", "must be a number > 0 and finite (the update is scaled by alpha / r)")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            bad("dropout", "must be a number in [0, 1)")
        if not isinstance(self.targets, (list, tuple)) or not self.targets:
            bad("targets", f"must be a non-empty list of layer names from {list(LORA_TARGETS)}")
        unknown = [t for t in self.targets if t not in LORA_TARGETS]
        if unknown:
            bad("targets", f"{unknown} are not T5 block layers; use names from {list(LORA_TARGETS)} (attention "
                           f"q, k, v, o; feed-forward wi, wo, or wi_0, wi_1 for gated ones)")
        if not isinstance(self.trainable, (list, tuple)) or not all(isinstance(t, str) and t for t in self.trainable):
            bad("trainable", "must be a list of parameter-name fragments (e.g. [layer_norm])")
        if not isinstance(self.per_task, bool):
            bad("per_task", "must be true (one adapter per training task) or false (one shared adapter)")


def lora_settings(section: Any) -> Optional[LoRAConfig]:
    """The validated `model.lora` section, or None when LoRA is off (unset or false; true and {} = defaults)."""
    if section is None or section is False:
        return None
    return LoRAConfig.from_dict(section)


def check_targets(lora: LoRAConfig, config: Any) -> None:
    """Refuse targets a T5 of `config` (a `T5Config`) lacks — a gated feed-forward has wi_0/wi_1, a plain one wi —
    before any model is built. (`apply_lora` checks the built model too, where MoE layers may replace FFNs.)"""
    feed_forward = ("wi_0", "wi_1", "wo") if config.is_gated_act else ("wi", "wo")
    missing = [t for t in lora.targets if t not in ("q", "k", "v", "o", *feed_forward)]
    if missing:
        raise LoRAConfigError(f"model.lora.targets: {missing} name no layer of this model (its feed-forward is "
                              f"{config.feed_forward_proj}: {', '.join(feed_forward)}; attention: q, k, v, o)")


def lora_signature(section: Optional[Mapping[str, Any]]) -> Optional[Tuple[Any, ...]]:
    """What of a recorded `model.lora` mapping decides the model's weights and function (rank, scale, targets,
    trained fragments, per-task) — not dropout, not the order of the lists; None without LoRA. Two runs with
    the same signature can resume each other's checkpoints."""
    if section is None:
        return None
    return (section["r"], float(section["alpha"]), tuple(sorted(section["targets"])),
            tuple(sorted(section["trainable"])), bool(section.get("per_task", False)))


class LoRALinear(nn.Linear, TaskConditioned):
    """A frozen `nn.Linear` plus a trainable low-rank update: `x Wᵀ + b + scaling · dropout(x) Aᵀ Bᵀ`.

    It is an `nn.Linear` (T5 reads `wo.weight.dtype`) whose state dict adds `lora_A` [r, in] and
    `lora_B` [out, r] — with `num_tasks` T > 0, [T, r, in] and [T, out, r]: row b of the input batch [B, L, in]
    is adapted by the pair of its task `task_ids[b]`, an unseen task by the mean update. `merged()` returns
    the plain `nn.Linear` with `W + scaling · B A` (a shared adapter; `merged(task)` for a per-task one)."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0, num_tasks: int = 0) -> None:
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
        self.weight = base.weight
        self.bias = base.bias
        self.r, self.scaling, self.num_tasks = r, alpha / r, num_tasks
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        tasks = (num_tasks,) if num_tasks else ()
        self.lora_A = nn.Parameter(torch.empty(*tasks, r, base.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(*tasks, base.out_features, r, **factory))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        for a in self.lora_A.data.reshape(-1, r, base.in_features):  # what nn.Linear does for its own weight
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x W + b + scaling · dropout(x) Aᵀ Bᵀ, per batch row with its task's A, B for per-task adapters."""
        h = self.lora_dropout(x)
        update = self._task_update(h) if self.num_tasks else F.linear(F.linear(h, self.lora_A), self.lora_B)
        return F.linear(x, self.weight, self.bias) + self.scaling * update

    def _task_update(self, h: torch.Tensor) -> torch.Tensor:
        """dropout(x) A_tᵀ B_tᵀ per batch row (h: [B, L, in]); the mean update for unseen tasks."""
        if h.dim() != 3:
            raise LoRAConfigError(f"per-task LoRA layers take [batch, length, features] inputs, got {tuple(h.shape)}")
        ids, any_unseen = self.row_task_ids(
            h.shape[0], self.lora_A.device, self.num_tasks, LoRAConfigError, owner="the adapters' tasks",
            missing=f"per-task LoRA adapters ({counted(self.num_tasks, 'task')}) need the task of every batch row: "
                    f"call the model with task_ids=LongTensor[batch] (UNSEEN_TASK_ID={UNSEEN_TASK_ID} for a task it "
                    f"was not trained on)")
        known = ids.clamp(min=0)
        update = h @ self.lora_A[known].transpose(1, 2) @ self.lora_B[known].transpose(1, 2)
        if not any_unseen:
            return update
        tasks, out_features = self.num_tasks, self.out_features
        # (1/T)·Σ_t B_t A_t = [B_1 … B_T] [A_1; …; A_T] / T: one adapter of rank T·r
        a_all = self.lora_A.reshape(tasks * self.r, self.in_features)
        b_all = self.lora_B.permute(1, 0, 2).reshape(out_features, tasks * self.r) / tasks
        mean = F.linear(F.linear(h, a_all), b_all)
        return torch.where(ids.eq(UNSEEN_TASK_ID)[:, None, None], mean, update)

    def delta_weight(self, task: Optional[int] = None) -> torch.Tensor:
        """scaling · B A, the [out, in] update this adapter adds to the weight (computed in fp32, or in fp64 for an
        fp64 adapter): per-task adapters need `task` (a task id, or `UNSEEN_TASK_ID` for the mean update)."""
        dtype = _fold_dtype(self.lora_A.dtype)
        a, b = self.lora_A.to(dtype), self.lora_B.to(dtype)
        if not self.num_tasks:
            return self.scaling * (b @ a)
        if task is None:
            raise LoRAConfigError("a per-task adapter has one update per task: pass the task id")
        if not UNSEEN_TASK_ID <= task < self.num_tasks:
            raise LoRAConfigError(f"task id {task} is not one of the adapters' {counted(self.num_tasks, 'task')} [0, "
                                  f"{self.num_tasks}) nor UNSEEN_TASK_ID={UNSEEN_TASK_ID} (the mean update)")
        if task == UNSEEN_TASK_ID:
            return self.scaling * (b @ a).mean(0)
        return self.scaling * (b[task] @ a[task])

    def merged(self, task: Optional[int] = None) -> nn.Linear:
        """A plain `nn.Linear` computing the same function (dropout aside) with the update folded in — for a
        per-task adapter, the update of `task` (see `delta_weight`)."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            delta = self.delta_weight(task)
            linear.weight.copy_((self.weight.to(delta.dtype) + delta).to(self.weight.dtype))
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        linear.weight.requires_grad_(self.weight.requires_grad)
        return linear


def _fold_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a fold is summed in: fp32 for half-precision weights, the weight's own when wider (fp64)."""
    return torch.promote_types(dtype, torch.float32)


def _target_linears(model: nn.Module, targets: Optional[List[str]] = None) -> Dict[str, nn.Linear]:
    """{qualified name: linear} of the targeted layers (None: every one LoRA may target) in the encoder/decoder
    blocks, MoE layers (routers, experts) excluded."""
    from t2t_mtl.model.moe import MoEFeedForward

    inside_moe = {f"{name}." for name, module in model.named_modules() if isinstance(module, MoEFeedForward)}
    found = {}
    for name, module in model.named_modules():
        if (type(module) is nn.Linear and (targets is None or name.rsplit(".", 1)[-1] in targets)
                and ".block." in name and not any(name.startswith(prefix) for prefix in inside_moe)):
            found[name] = module
    return found


def apply_lora(model: nn.Module, lora: Union[LoRAConfig, Mapping[str, Any], bool],
               train_embeddings: bool = False, task_names: Optional[List[str]] = None) -> nn.Module:
    """Wrap the targeted linear layers of `model` (in place) in `LoRALinear` and freeze everything else but
    the MoE layers, the parameters matching `trainable`, and — with `train_embeddings` — the input embedding
    matrix. Per-task adapters need `task_names` (the training tasks in task-id order) and make the model a
    `TaskConditionedT5` routed by them. Returns `model`. Raises LoRAConfigError when a target selects no layer
    (naming it), a `trainable` fragment matches no parameter name, per-task adapters get no task names, or the
    model has adapters already."""
    from t2t_mtl.model.moe import MoEFeedForward

    cfg = lora if isinstance(lora, LoRAConfig) else LoRAConfig.from_dict(lora)
    adapted = [name for name, module in model.named_modules() if isinstance(module, LoRALinear)]
    if adapted:
        raise LoRAConfigError(f"the model has LoRA adapters already ({adapted[0]}, ...): fold them first "
                              f"(merge_lora) to adapt it again, or train those adapters")
    if cfg.per_task and not task_names:
        raise LoRAConfigError("model.lora.per_task needs the training task names (one adapter per task)")
    layers = _target_linears(model, cfg.targets)
    missing = [t for t in cfg.targets if not any(name.rsplit(".", 1)[-1] == t for name in layers)]
    if missing:
        present = sorted({n.rsplit(".", 1)[-1] for n in _target_linears(model)})
        # (a dense feed-forward always has wo: without one, MoE layers replaced them all)
        moe = ("; model.moe's experts replace the feed-forward of every layer, and train in full: target attention "
               "layers (q, k, v, o), or set model.moe.every / layers so that some layers keep a dense feed-forward"
               if "wo" not in present and set(missing) - {"q", "k", "v", "o"} else "")
        raise LoRAConfigError(f"model.lora.targets: {missing} name no layer of this model (its block layers outside "
                              f"MoE experts: {present}; a gated feed-forward has wi_0/wi_1, a plain one wi{moe})")
    unmatched = [f for f in cfg.trainable if not any(f in name for name, _ in model.named_parameters())]
    if unmatched:
        raise LoRAConfigError(f"model.lora.trainable: {unmatched} match no parameter name of this model (names "
                              f"look like encoder.block.0.layer.0.layer_norm.weight)")
    for name, linear in layers.items():
        parent_name, attr = name.rsplit(".", 1)
        setattr(model.get_submodule(parent_name), attr,
                LoRALinear(linear, cfg.r, cfg.alpha, cfg.dropout, len(task_names) if cfg.per_task else 0))
    for p in model.parameters():
        p.requires_grad_(False)
    for name, module in model.named_modules():
        if isinstance(module, (LoRALinear, MoEFeedForward)):
            for pname, p in module.named_parameters():
                if isinstance(module, MoEFeedForward) or pname.startswith("lora_"):
                    p.requires_grad_(True)
    for name, p in model.named_parameters():
        if any(fragment in name for fragment in cfg.trainable):
            p.requires_grad_(True)
    if train_embeddings:
        model.get_input_embeddings().weight.requires_grad_(True)
    if cfg.per_task:
        if not isinstance(model, TaskConditionedT5):
            model.__class__ = TaskConditionedT5  # a T5 whose forward/generate take task_ids (no new state)
        model.routing_task_names = list(task_names)
    return model


def has_lora(model: nn.Module) -> bool:
    """Whether `model` has LoRA adapters (shared or per-task)."""
    return any(isinstance(m, LoRALinear) for m in model.modules())


def has_task_adapters(model: nn.Module) -> bool:
    """Whether `model` has per-task LoRA adapters (it then needs task ids)."""
    return any(isinstance(m, LoRALinear) and m.num_tasks for m in model.modules())


def _fold(model: nn.Module, task: Optional[int]) -> None:
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear) and (task is not None or not module.num_tasks):
            parent_name, attr = name.rsplit(".", 1)
            setattr(model.get_submodule(parent_name), attr, module.merged(task))


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every shared `LoRALinear` of `model` (in place) by its merged `nn.Linear` (per-task adapters
    stay: they need the task of each row); returns `model`."""
    _fold(model, None)
    return model


def select_task_adapter(model: nn.Module, task: int) -> nn.Module:
    """Fold task `task`'s update (`UNSEEN_TASK_ID`: the mean update) of every per-task adapter — and every
    shared adapter — into its weight, in place: the adapters no longer need task ids (a task-routed MoE model
    still routes by them). Returns `model`."""
    _fold(model, task)
    from t2t_mtl.model.moe import TaskAwareT5

    if not isinstance(model, TaskAwareT5):
        model.__class__ = T5ForConditionalGeneration
        model.__dict__.pop("routing_task_names", None)
    elif model.moe_config.routing == "token":
        model.routing_task_names = None
    return model


def trainable_parameter_count(model: nn.Module) -> int:
    """Number of parameters that train (ZeRO-3 partitioned ones counted by their full size)."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)
