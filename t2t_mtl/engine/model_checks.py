"""The checks of a run's model section before any tokenizing: the size of the model it would build
(`check_model_size`), its LoRA (`checked_lora`) and mixture-of-experts settings (`check_moe`), a local folder that is
an MoE model already (`check_loaded_moe_tasks`), built on the meta device where a check needs the model's shapes,
and the MoE routing kernels' backend on the run's device (`check_moe_backend`); whether the model is read from a
local folder (`is_local_model`) and that folder's config (`pretrained_config_dict`). Errors are ConfigErrors naming
the key."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch

from t2t_mtl.config import Config, ConfigError
from t2t_mtl.model import build_model, model_config
from t2t_mtl.model.lora import LoRAConfig, check_targets, lora_settings
from t2t_mtl.model.t5 import check_t5_checkpoint, saves_own_head
from t2t_mtl.size_limits import MAX_MODEL_PARAMETERS

__all__ = ["check_loaded_moe_tasks", "check_model_size", "check_moe", "check_moe_backend", "checked_lora",
           "is_local_model", "pretrained_config_dict"]


def check_model_size(cfg: Config, task_names: Sequence[str], saved: Optional[Dict[str, Any]]) -> None:
    """ConfigError when the model a run would build, from model.dims or a local model.name_or_path folder's
    config.json (`saved`: as `check_t5_checkpoint` returned it), with model.moe's experts (or those the folder
    holds: an export --task --keep-moe folder's layers, its task's) and the folder's own LM head, has more than
    `MAX_MODEL_PARAMETERS` parameters (`t5_parameter_count`, from the sizes alone), naming the count: before it is
    built (on the meta device by the checks, or after tokenizing by the run), which for sizes such as 10**12 fails
    in an allocator or loops for hours. A hub model's sizes are not checked here: its config is read only where the
    hub is reached, when the model is built."""
    name = cfg.model.name_or_path
    if not is_local_model(name):
        return
    from t2t_mtl.model.moe_config import MoEConfig
    from t2t_mtl.model.parameter_count import t5_parameter_count

    own = (saved or {}).get("moe")  # (a folder that is an MoE model already)
    moe = MoEConfig.from_dict({**cfg.model.moe, "task_names": list(task_names)}) if cfg.model.moe else (
        MoEConfig.from_dict(dict(own)) if own else None)
    own_head = name is not None and saves_own_head(name, saved or {})
    count = t5_parameter_count(model_config(cfg.model, saved), moe, own_head=own_head)
    if count <= MAX_MODEL_PARAMETERS:
        return
    fits = f"the {MAX_MODEL_PARAMETERS:.0e} a run builds at most (ten times the largest T5-family model published)"
    size = f"a model of {count:.3g} parameters ({4 * count:.3g} bytes in fp32), more than {fits}"
    if name is not None:
        raise ConfigError(f"model.name_or_path {name!r}: its config.json{' with model.moe' if cfg.model.moe else ''} "
                          f"sizes {size}: train a smaller model")
    keys = "model.dims and model.moe" if moe else "model.dims"
    raise ConfigError(f"{keys} size {size}: reduce d_model, d_ff, d_kv, num_heads, num_layers, num_decoder_layers "
                      f"or vocab_size{' (or model.moe.num_experts)' if moe else ''}")


def is_local_model(name_or_path: Optional[str]) -> bool:
    """Whether the model is built from model.dims (None) or read from a local folder, not the hub."""
    return name_or_path is None or Path(name_or_path).is_dir()


def pretrained_config_dict(name_or_path: Optional[str]) -> Optional[Dict[str, Any]]:
    """The config dict of a pretrained model (`check_t5_checkpoint`: read once, for every check and the build), or
    None for a model built from model.dims."""
    return None if name_or_path is None else check_t5_checkpoint(name_or_path)


def checked_lora(cfg: Config, task_names: Sequence[str], saved: Optional[Dict[str, Any]]) -> Optional[LoRAConfig]:
    """The run's `model.lora` settings (None: off), checked before any tokenizing: for a local model, its targets
    against the model's config and, with trainable base parameters, the model built on the meta device."""
    lora = lora_settings(cfg.model.lora)  # model.lora errors before any tokenizing
    if lora is not None and is_local_model(cfg.model.name_or_path):  # (a hub model: when built)
        check_targets(lora, model_config(cfg.model, saved))
    if lora is not None and lora.trainable and is_local_model(cfg.model.name_or_path):  # on weightless params
        with torch.device("meta"):  # (a local pretrained model: built from its config.json, no weights read)
            build_model(cfg.model, task_names=list(task_names), saved=saved, weights=False)
    return lora


def check_moe(cfg: Config, task_names: Sequence[str], saved: Optional[Dict[str, Any]]) -> None:
    """The `model.moe` section of a run training `task_names`: no exported sub-network's expert_ids, no task list but
    the run's, unseen evaluation tasks routable, and for a local model its MoE layers built on the meta device."""
    from t2t_mtl.engine.validation import evaluation_plan
    from t2t_mtl.model.moe import MoEConfig

    if cfg.model.moe.get("expert_ids"):  # (the first route to an expert a layer lacks would stop the run)
        raise ConfigError("model.moe.expert_ids lists the experts each layer of an exported task sub-network holds "
                          "(`t2t-mtl export --task` writes it); a run's routes may pick any expert, so it trains "
                          "them all: remove model.moe.expert_ids")
    given = cfg.model.moe.get("task_names")
    if given is not None and given != list(task_names):  # the run's own list replaces it
        raise ConfigError(f"model.moe.task_names {given!r} is not this run's task list {list(task_names)}: the "
                          f"run fills it in itself (task ids index the training tasks in data.tasks' or the "
                          f"mixture's order), so remove model.moe.task_names")
    moe = MoEConfig.from_dict({**cfg.model.moe, "task_names": list(task_names)})
    unseen = [name for name in evaluation_plan(cfg)[0] if name not in task_names]
    if moe.routing != "token" and moe.unseen_task_routing == "error" and unseen:
        raise ConfigError(f"evaluation scores tasks the model is not trained on ({', '.join(unseen)}), and "
                          f"model.moe.unseen_task_routing: error refuses to route them: set it to 'mean' or to a "
                          f"trained task's name, or evaluate trained tasks only")
    if is_local_model(cfg.model.name_or_path):  # (a hub model: when built, as the hub is read after the checks)
        with torch.device("meta"):  # the layers every / layers select, a model.name_or_path that is an MoE already
            build_model(cfg.model, task_names=list(task_names), saved=saved, weights=False)


def check_moe_backend(cfg: Config, saved: Optional[Dict[str, Any]], device: torch.device) -> None:
    """ConfigError naming model.moe.backend, before any data is read (it was the first training forward's
    traceback), when the routing kernels that the run's MoE settings (model.moe, else those of the local MoE folder
    it loads, whose config dict is `saved`) choose cannot run on its `device` or take fewer experts than it has.
    Task routing runs no routing kernel."""
    moe = cfg.model.moe or (saved or {}).get("moe")
    if not moe or moe.get("routing", "token") == "task":
        return
    from t2t_kernels.moe import MoEKernelError, check_backend
    from t2t_mtl.model.moe_config import MoEConfig

    backend = moe.get("backend", "auto")
    try:
        check_backend(backend, device, moe.get("num_experts", MoEConfig.num_experts))
    except MoEKernelError as err:
        raise ConfigError(f"model.moe.backend={backend!r}: {err}") from None


def check_loaded_moe_tasks(cfg: Config, task_names: Sequence[str], saved: Optional[Dict[str, Any]]) -> None:
    """A local `model.name_or_path` that is a mixture-of-experts model already (an exported MoE run) routes by the
    task ids it was trained with: a task/hybrid-routed one on another task list is refused, as its build refuses
    it, before any tokenizing (built on the meta device; a dense folder is not built); so is a task sub-network
    (`_refuse_task_subnetwork`)."""
    config = saved if saved is not None else pretrained_config_dict(cfg.model.name_or_path)
    if config and config.get("moe"):
        with torch.device("meta"):
            model = build_model(cfg.model, task_names=list(task_names), saved=config, weights=False)
        _refuse_task_subnetwork(cfg.model.name_or_path, model.moe_config)


def _refuse_task_subnetwork(name_or_path: str, moe: Any) -> None:
    """ConfigError for a model folder whose MoE config `moe` (a `MoEConfig`) has a layer holding only some of its
    experts (`moe.expert_ids`: an `export --task NAME --keep-moe` folder): training moves the gate rows that pick
    them, and the first route to an expert a layer lacks would stop the run mid-training."""
    partial = sorted((layer, ids) for layer, ids in moe.expert_ids.items() if len(ids) < moe.num_experts)
    if partial:
        layer, ids = partial[0]
        raise ConfigError(
            f"model.name_or_path {name_or_path!r} is a task sub-network (`t2t-mtl export --task NAME --keep-moe`): "
            f"its MoE layers hold some of the {moe.num_experts} experts only (layer {layer}: {ids}), and training "
            f"moves the gate rows that pick them, so the first route to an expert a layer lacks would stop the run: "
            f"fine-tune the full model (its run, or its `t2t-mtl export` without --task) and export the task again")
