"""Model merging: one multitask model from fine-tuned models of a common base, through task vectors.

A fine-tuned model's task vector is τ_i = θ_i − θ_base (Ilharco et al. 2023). Methods, per parameter tensor:
- `task_arithmetic`: θ = θ_base + λ·Σ_i τ_i;
- `mean`: θ = θ_base + λ·(1/n)·Σ_i τ_i (λ = 1: the average of the models, a model soup);
- `ties` (TIES-merging, Yadav et al. 2023): trim each τ_i to its `density` fraction of largest magnitudes (ties
  at the threshold kept), elect each entry's sign as that of Σ_i τ̂_i, and average the trimmed entries that
  agree with it (disjoint mean: entries that are zero or of the other sign do not count);
  θ = θ_base + λ·τ_merged.
Trimming is per tensor (a tensor's own magnitudes set its threshold). Non-float tensors must be equal in every
model and are kept. `merge_state_dicts` works on state dicts; `merge_models` on model folders / runs.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Union

import torch

__all__ = ["MERGE_METHODS", "MergeError", "merge_models", "merge_state_dicts", "ties_merge"]

MERGE_METHODS = ("task_arithmetic", "mean", "ties")


class MergeError(ValueError):
    """The models cannot be merged (different architectures or keys) or a merge setting is invalid."""


def _trim(tau: torch.Tensor, density: float) -> torch.Tensor:
    """`tau` with all but its ceil(density·n) largest-magnitude entries zeroed (entries tied with the smallest
    kept magnitude are kept too)."""
    keep = math.ceil(density * tau.numel())
    if keep >= tau.numel():
        return tau
    if keep == 0:
        return torch.zeros_like(tau)
    threshold = tau.abs().flatten().kthvalue(tau.numel() - keep + 1).values
    return torch.where(tau.abs() >= threshold, tau, torch.zeros_like(tau))


def ties_merge(taus: Sequence[torch.Tensor], density: float) -> torch.Tensor:
    """The TIES-merged task vector of one tensor: trim, elect sign, disjoint mean (float64 arithmetic)."""
    trimmed = torch.stack([_trim(t.double(), density) for t in taus])
    sign = torch.sign(trimmed.sum(0))
    agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
    count = agree.sum(0)
    total = torch.where(agree, trimmed, torch.zeros_like(trimmed)).sum(0)
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))


def merge_state_dicts(base: Mapping[str, torch.Tensor], models: Sequence[Mapping[str, torch.Tensor]], *,
                      method: str = "task_arithmetic", scale: float = 1.0, density: float = 0.2
                      ) -> Dict[str, torch.Tensor]:
    """The merged state dict (base's dtypes). Raises MergeError for an unknown method, a density outside (0, 1],
    fewer than one model, or models whose keys, shapes or non-float tensors differ from the base's."""
    if method not in MERGE_METHODS:
        raise MergeError(f"unknown merge method {method!r}; use one of {', '.join(MERGE_METHODS)}")
    if not 0 < density <= 1:
        raise MergeError(f"density {density} must lie in (0, 1] (the fraction of each task vector TIES keeps)")
    if not models:
        raise MergeError("merging needs at least one fine-tuned model")
    merged = {}
    for key, value in base.items():
        for index, model in enumerate(models):
            if key not in model or model[key].shape != value.shape:
                found = "missing" if key not in model else f"of shape {tuple(model[key].shape)}"
                raise MergeError(f"model {index + 1}: {key} is {found}, the base's is {tuple(value.shape)}: merging "
                                 f"needs fine-tuned versions of the same base model")
        if not value.is_floating_point():
            if any(not torch.equal(model[key], value) for model in models):
                raise MergeError(f"{key} (a {value.dtype} tensor) differs between the models; it cannot be merged")
            merged[key] = value.clone()
            continue
        taus = [model[key].double() - value.double() for model in models]
        if method == "ties":
            tau = ties_merge(taus, density)
        else:
            tau = torch.stack(taus).sum(0) / (len(taus) if method == "mean" else 1)
        merged[key] = (value.double() + scale * tau).to(value.dtype)
    extra = sorted(set().union(*models) - set(base))
    if extra:
        raise MergeError(f"the fine-tuned models have weights the base lacks ({', '.join(extra[:5])}): merging needs "
                         f"fine-tuned versions of the same base model")
    return merged


def _architecture(config: Any) -> Dict[str, Any]:
    """The config entries that decide what a model computes (not paths, versions or dropout)."""
    ignored = {"_name_or_path", "transformers_version", "architectures", "dropout_rate", "dtype", "torch_dtype"}
    return {k: v for k, v in config.to_dict().items() if k not in ignored}


def merge_models(base: Union[str, Path], models: Sequence[Union[str, Path]], out_dir: Union[str, Path], *,
                 method: str = "task_arithmetic", scale: float = 1.0, density: float = 0.2) -> Path:
    """Merge fine-tuned models (exported folders, run dirs or checkpoints) of `base` into an HF folder `out_dir`
    (weights, the base's tokenizer, t2t_mtl_meta.json with the recipe). The base and the models must be plain
    T5 models of one architecture (export a per-task LoRA run's tasks with `export --task` first)."""
    from t2t_mtl.engine.export import META_FILE, load_trained_model
    from t2t_mtl.model.moe import TaskAwareT5
    from t2t_mtl.model.task_routing import TaskConditionedT5
    from t2t_mtl.output_paths import OutputPathError, prepare_output_dir

    loaded: List[Any] = []
    for path in (base, *models):
        model, tokenizer, _ = load_trained_model(path)
        if isinstance(model, (TaskAwareT5, TaskConditionedT5)):
            raise MergeError(f"{path}: a task-conditioned model (MoE or per-task LoRA) has no single set of weights "
                             f"per task to merge; export its tasks with `t2t-mtl export --task NAME` first")
        loaded.append((model, tokenizer))
    (base_model, tokenizer), others = loaded[0], loaded[1:]
    for path, (model, _) in zip(models, others):
        if _architecture(model.config) != _architecture(base_model.config):
            raise MergeError(f"{path}: its model config differs from the base's ({base}): merging needs fine-tuned "
                             f"versions of the same base model")
    state = merge_state_dicts(base_model.state_dict(), [m.state_dict() for m, _ in others], method=method,
                              scale=scale, density=density)
    try:
        out = prepare_output_dir(out_dir, "--out")
    except OutputPathError as error:
        raise MergeError(str(error)) from None
    base_model.load_state_dict(state)
    base_model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    recipe = {"merge": {"method": method, "scale": scale, "density": density if method == "ties" else None,
                        "base": str(base), "models": [str(m) for m in models]}}
    (out / META_FILE).write_text(json.dumps(recipe, indent=1))
    return out
