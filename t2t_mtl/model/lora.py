"""Low-rank adaptation (LoRA, Hu et al. 2021) of T5's linear layers: parameter-efficient multitask training.

`model.lora: {r: 8, alpha: 16, dropout: 0.05, targets: [q, v], trainable: []}` wraps each targeted linear
layer of every encoder/decoder block (attention `q`, `k`, `v`, `o`; feed-forward `wi`, `wi_0`, `wi_1`,
`wo`) as `y = x Wᵀ + (alpha / r) · dropout(x) Aᵀ Bᵀ` with A [r, in] (Kaiming-uniform) and B [out, r]
(zeros, so training starts from the unadapted model) and freezes every weight of the model except:
- the LoRA factors A and B;
- mixture-of-experts layers (routers, task gates, experts: new modules t2t-mtl adds, trained in full);
- the token embedding matrix when `model.task_embeddings` adds task tokens (their rows must be learned);
- parameters whose name contains one of `trainable` (e.g. `layer_norm`).
`merge_lora` folds B·A into W for inference and export (a plain T5 again).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
from torch import nn
from torch.nn import functional as F

from t2t_mtl.config import unknown_key_message

__all__ = ["LORA_TARGETS", "LoRAConfig", "LoRAConfigError", "LoRALinear", "apply_lora", "has_lora", "lora_settings",
           "merge_lora", "trainable_parameter_count"]

#: the linear layers of T5's blocks that LoRA may adapt (attention, then the dense and gated feed-forwards)
LORA_TARGETS = ("q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo")


class LoRAConfigError(ValueError):
    """A `model.lora` key or value is invalid, or its targets select no layer of the model."""


@dataclass
class LoRAConfig:
    """The `model.lora` section: rank `r`, scale `alpha` (the update is scaled by alpha / r), `dropout` on
    the adapter's input, `targets` (names from `LORA_TARGETS`) and `trainable` (name fragments of further
    parameters to train in full)."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: List[str] = field(default_factory=lambda: ["q", "v"])
    trainable: List[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> "LoRAConfig":
        """Validate `model.lora` (`true` or `{}` = the defaults); errors name the key."""
        data = {} if data is True or data is None else data
        if not isinstance(data, Mapping):
            raise LoRAConfigError(f"model.lora must be a mapping such as {{r: 8, alpha: 16, targets: [q, v]}} "
                                  f"(or true for those defaults), not {data!r}")
        unknown = unknown_key_message("model.lora", data, [f.name for f in dataclasses.fields(cls)])
        if unknown:
            raise LoRAConfigError(unknown)
        cfg = cls(**data)
        cfg.validate()
        return cfg

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        def bad(key: str, why: str) -> None:
            raise LoRAConfigError(f"model.lora.{key}={getattr(self, key)!r}: {why}")

        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            bad("r", "must be an integer >= 1 (the adapters' rank)")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not self.alpha > 0:
            bad("alpha", "must be a number > 0 (the update is scaled by alpha / r)")
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


def lora_settings(section: Any) -> Optional[LoRAConfig]:
    """The validated `model.lora` section, or None when LoRA is off (unset or false; true and {} = defaults)."""
    if section is None or section is False:
        return None
    return LoRAConfig.from_dict(section)


class LoRALinear(nn.Linear):
    """A frozen `nn.Linear` plus a trainable low-rank update: `x Wᵀ + b + scaling · dropout(x) Aᵀ Bᵀ`.

    It is an `nn.Linear` (T5 reads `wo.weight.dtype`) whose state dict adds `lora_A` [r, in] and
    `lora_B` [out, r]; `merged()` returns the plain `nn.Linear` with `W + scaling · B A`."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
        self.weight = base.weight
        self.bias = base.bias
        self.r, self.scaling = r, alpha / r
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **factory))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # what nn.Linear does for its own weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)
        return F.linear(x, self.weight, self.bias) + self.scaling * update

    def delta_weight(self) -> torch.Tensor:
        """scaling · B A, the [out, in] update this adapter adds to the weight (computed in fp32)."""
        return self.scaling * (self.lora_B.float() @ self.lora_A.float())

    def merged(self) -> nn.Linear:
        """A plain `nn.Linear` computing the same function (dropout aside) with the update folded in."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_((self.weight.float() + self.delta_weight()).to(self.weight.dtype))
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        linear.weight.requires_grad_(self.weight.requires_grad)
        return linear


def _target_linears(model: nn.Module, targets: List[str]) -> Dict[str, nn.Linear]:
    """{qualified name: linear} of the targeted layers in the encoder/decoder blocks, MoE experts excluded."""
    from t2t_mtl.model.moe import MoEFeedForward

    inside_moe = {f"{name}." for name, module in model.named_modules() if isinstance(module, MoEFeedForward)}
    found = {}
    for name, module in model.named_modules():
        if (type(module) is nn.Linear and name.rsplit(".", 1)[-1] in targets and ".block." in name
                and not any(name.startswith(prefix) for prefix in inside_moe)):
            found[name] = module
    return found


def apply_lora(model: nn.Module, lora: Union[LoRAConfig, Mapping[str, Any], bool],
               train_embeddings: bool = False) -> nn.Module:
    """Wrap the targeted linear layers of `model` (in place) in `LoRALinear` and freeze everything else but
    the MoE layers, the parameters matching `trainable`, and — with `train_embeddings` — the input embedding
    matrix. Returns `model`. Raises LoRAConfigError when the targets select no layer."""
    from t2t_mtl.model.moe import MoEFeedForward

    cfg = lora if isinstance(lora, LoRAConfig) else LoRAConfig.from_dict(lora)
    layers = _target_linears(model, cfg.targets)
    if not layers:
        present = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m) is nn.Linear
                          and ".block." in n})
        raise LoRAConfigError(f"model.lora.targets={cfg.targets} selects no layer of this model (its block layers "
                              f"outside MoE experts: {present})")
    for name, linear in layers.items():
        parent_name, attr = name.rsplit(".", 1)
        setattr(model.get_submodule(parent_name), attr, LoRALinear(linear, cfg.r, cfg.alpha, cfg.dropout))
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
    return model


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every `LoRALinear` of `model` (in place) by its merged `nn.Linear`; returns `model`."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            parent_name, attr = name.rsplit(".", 1)
            setattr(model.get_submodule(parent_name), attr, module.merged())
    return model


def trainable_parameter_count(model: nn.Module) -> int:
    """Number of parameters that train (ZeRO-3 partitioned ones counted by their full size)."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)
