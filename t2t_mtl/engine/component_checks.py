"""The checks of a run's component sections before any tokenizing (`check_component_configs`): the sampler and the
weighting, built once on placeholder sizes (`placeholder_sampler`), a class a user registered held to the resume
contract (`check_registered_components`), data.few_shot, model.lora, training.wandb, model.moe, CA-MTL's selection and
gradient_surgery. Errors are ConfigErrors naming the key."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional, Sequence

from t2t_mtl.config import Config, ConfigError
from t2t_mtl.data.few_shot import FewShotMix
from t2t_mtl.engine.model_checks import check_loaded_moe_tasks, check_moe, checked_lora, is_local_model
from t2t_mtl.engine.run_sampling import size_based
from t2t_mtl.model.lora import LoRAConfig

if TYPE_CHECKING:
    from t2t_mtl.sampling import MixtureSampler

__all__ = ["check_component_configs", "check_registered_components", "placeholder_sampler", "placeholder_sizes"]


def check_component_configs(cfg: Config, sampling_cfg: Mapping[str, Any], task_names: Sequence[str], *,
                            rank: int = 0, world_size: int = 1, saved: Optional[Dict[str, Any]] = None
                            ) -> MixtureSampler:
    """Check every component section before any tokenizing or training, in this order: the sampler and the
    weighting, built once on placeholder sizes (their builders validate every key), data.few_shot, model.lora,
    training.wandb, model.moe, CA-MTL's selection and gradient_surgery; `saved` as for `check_run_config`. Returns
    the sampler (what it learns from is checked on it)."""
    sampler = _checked_sampler_and_weighting(cfg, sampling_cfg, task_names, rank=rank, world_size=world_size)
    FewShotMix.from_config(cfg.data.few_shot)  # data.few_shot errors too
    lora = checked_lora(cfg, task_names, saved)
    from t2t_mtl.engine.wandb_logging import check_wandb_section

    check_wandb_section(cfg.training.wandb)
    if cfg.model.moe:  # model.moe errors (unknown key, bad routing, ...) before any tokenizing
        check_moe(cfg, task_names, saved)
    elif cfg.model.name_or_path is not None and is_local_model(cfg.model.name_or_path):
        check_loaded_moe_tasks(cfg, task_names, saved)
    _check_uncertainty_selection(cfg, sampling_cfg, task_names)
    if cfg.gradient_surgery:
        _check_gradient_surgery(cfg, sampling_cfg, task_names, lora)
    return sampler


def _checked_sampler_and_weighting(cfg: Config, sampling_cfg: Mapping[str, Any], task_names: Sequence[str], *,
                                   rank: int, world_size: int) -> MixtureSampler:
    """The run's sampler, built (as its weighting is) on placeholder sizes, an unknown key named by its path in the
    config; a registered class's sampler or weighting is held to the resume contract."""
    from t2t_mtl.weighting import UnknownWeightingParameterError, build_weighting

    sizes = placeholder_sizes(task_names, world_size)
    sampler = placeholder_sampler(cfg, sampling_cfg, task_names, rank=rank, world_size=world_size)
    try:
        weighting = build_weighting(cfg.weighting, task_names, sizes)
    except UnknownWeightingParameterError as err:
        raise ConfigError(f"weighting.{err.key}: {err}") from None
    check_registered_components(sampler, weighting, lambda: placeholder_sampler(
        cfg, sampling_cfg, task_names, rank=rank, world_size=world_size), lambda: build_weighting(
        cfg.weighting, task_names, sizes))
    return sampler


def _check_uncertainty_selection(cfg: Config, sampling_cfg: Mapping[str, Any], task_names: Sequence[str]) -> None:
    """CA-MTL's `uncertainty` strategy selects exactly micro_batch_size examples from a larger pool: refused with
    packed batches or a pool no larger than a micro-batch."""
    if cfg.data.batching == "pack" and sampling_cfg.get("strategy") == "uncertainty":
        raise ConfigError("data.batching: pack fills micro_batch_size rows with as many examples as fit, but "
                          "sampling strategy 'uncertainty' (CA-MTL) selects exactly micro_batch_size examples per "
                          "micro-batch: use data.batching: bucket with it, or another sampling strategy")
    pool = int(sampling_cfg.get("pool_per_task", 1)) * len(task_names)
    if sampling_cfg.get("strategy") == "uncertainty" and pool <= cfg.training.micro_batch_size:
        raise ConfigError(f"sampling strategy 'uncertainty' keeps training.micro_batch_size "
                          f"({cfg.training.micro_batch_size}) of a pool of sampling.pool_per_task x tasks = {pool} "
                          f"candidates, so it selects " + ("nothing" if pool == cfg.training.micro_batch_size else
                                                           "from too few") +
                          f": raise sampling.pool_per_task above {cfg.training.micro_batch_size // len(task_names)} "
                          f"(CA-MTL draws micro_batch_size = {cfg.training.micro_batch_size} per task, the default)")


def _check_gradient_surgery(cfg: Config, sampling_cfg: Mapping[str, Any], task_names: Sequence[str],
                            lora: Optional[LoRAConfig]) -> None:
    """The `gradient_surgery` section (its method and options), and that the run gives it per-task gradients to
    combine: homogeneous micro-batches, grad_accum >= 2, shared parameters trained beside per-task adapters."""
    from t2t_mtl.gradients import build_method

    build_method(dict(cfg.gradient_surgery), len(task_names))  # unknown method / option errors first
    if sampling_cfg.get("mode", "homogeneous") != "homogeneous":
        raise ConfigError("gradient_surgery needs per-task micro-batches: set sampling.mode: homogeneous")
    if cfg.training.grad_accum < 2:
        raise ConfigError("gradient_surgery combines the per-task gradients of one optimizer step, whose "
                          "training.grad_accum micro-batches hold one task each (the same task on every "
                          "rank): with grad_accum 1 every step sees a single task and surgery changes "
                          "nothing. Set training.grad_accum >= 2 (e.g. the number of tasks, "
                          f"{len(task_names)}) or drop gradient_surgery")
    if lora is not None and lora.per_task and not (cfg.model.moe or cfg.model.task_embeddings or lora.trainable):
        raise ConfigError("gradient_surgery projects conflicting task gradients, but with model.lora.per_task "
                          "and nothing else trained each task's gradient lives on its own adapters only (every "
                          "cosine is 0, nothing to project): drop gradient_surgery, use shared adapters, or "
                          "train shared parameters too (model.lora.trainable, model.moe)")


def placeholder_sizes(task_names: Sequence[str], world_size: int) -> Dict[str, int]:
    """The task sizes a run's checks build its sampler and weighting on, before any data is read."""
    return {name: max(world_size, 1000) for name in task_names}


def placeholder_sampler(cfg: Config, sampling_cfg: Mapping[str, Any], task_names: Sequence[str], *, rank: int = 0,
                        world_size: int = 1) -> MixtureSampler:
    """The sampler of `sampling_cfg` (`run_sampling_config`'s) on `placeholder_sizes`, its rates not logged (they are
    the placeholders', not the run's); an unknown key is a ConfigError naming its path in the config, as the user
    wrote it."""
    from t2t_mtl.sampling import UnknownParameterError, build_sampler

    if size_based(sampling_cfg.get("strategy")):  # (given template sizes add up to the real sizes: checked on them)
        sampling_cfg = {key: value for key, value in sampling_cfg.items() if key != "template_sizes"}
    try:
        return build_sampler(sampling_cfg, placeholder_sizes(task_names, world_size), seed=cfg.training.seed,
                             rank=rank, world_size=world_size, log=False)
    except UnknownParameterError as err:
        raise ConfigError(f"sampling.{err.key}: {err}") from None


def check_registered_components(sampler: Any, weighting: Any, build_sampler: Callable[[], Any],
                                build_weighting: Callable[[], Any]) -> None:
    """The resume contract (`engine.resume_contract`) of a sampler or weighting of a class a user registered
    (`register_sampler`, `register_weighting`): `build_*` make another like the one given."""
    from t2t_mtl.class_registry import class_name
    from t2t_mtl.engine.resume_contract import check_sampler_resumes, check_weighting_resumes
    from t2t_mtl.sampling.registry import SHIPPED_STRATEGIES
    from t2t_mtl.weighting.registry import SHIPPED_METHODS

    if sampler.strategy not in SHIPPED_STRATEGIES:
        check_sampler_resumes(build_sampler, f"sampling.strategy {sampler.strategy!r} ({class_name(type(sampler))})")
    if weighting.method not in SHIPPED_METHODS:
        check_weighting_resumes(build_weighting,
                                f"weighting.method {weighting.method!r} ({class_name(type(weighting))})")
