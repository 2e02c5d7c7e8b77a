"""What `train` checks before it reads data or builds a model (`check_run_config`), each part in a module of its own:
the mixture and its held-out rules (`engine.run_mixture`), the model section (`engine.model_checks`), the component
sections (`engine.component_checks`), the signals adaptive strategies need (`engine.signal_checks`), the files of the
tasks' splits (`engine.task_split_files`), their metrics (`engine.task_metric_checks`) and the DeepSpeed config,
built once (`engine.checked_deepspeed`); the settings a run accepts but leaves idle are `engine.idle_settings`'
warnings. Errors are ConfigErrors naming the key."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, NamedTuple, Optional

from t2t_mtl.config import Config, check_model_source, tokenizer_source
from t2t_mtl.engine.checked_deepspeed import CheckedDeepSpeed, check_deepspeed
from t2t_mtl.engine.component_checks import check_component_configs
from t2t_mtl.engine.model_checks import check_model_size, is_local_model, pretrained_config_dict
from t2t_mtl.engine.run_mixture import training_rates
from t2t_mtl.engine.run_sampling import run_sampling_config
from t2t_mtl.engine.run_tokenizer import tokenizer_train_options
from t2t_mtl.engine.signal_checks import check_signal_config
from t2t_mtl.engine.task_metric_checks import check_task_metrics
from t2t_mtl.engine.task_split_files import check_task_splits

if TYPE_CHECKING:
    from t2t_mtl.sampling import MixtureSampler

__all__ = ["CheckedRun", "check_run_config"]


class CheckedRun(NamedTuple):
    """What a run's checks give it (`check_run_config`): its training `rates`, its `sampling` config, its
    `deepspeed` config as the checks built and parsed it, and the `sampler` they built (on placeholder sizes)."""

    rates: Dict[str, float]
    sampling: Dict[str, Any]
    deepspeed: CheckedDeepSpeed
    sampler: MixtureSampler


def check_run_config(cfg: Config, *, rank: int = 0, world_size: int = 1, saved: Optional[Dict[str, Any]] = None
                     ) -> CheckedRun:
    """The training rates, sampling config, DeepSpeed config and sampler (on placeholder sizes) of `cfg`
    (`CheckedRun`), after every check `train` makes before it reads data or builds a model: the mixture and its
    held-out rules, the sampler, weighting, MoE, gradient-surgery, batching, signal, evaluation and DeepSpeed
    sections. Raises ConfigError (or the builders' errors) naming the key. `saved`: a local pretrained model's config
    dict, as `check_t5_checkpoint` returned it (None: read it where needed)."""
    check_model_source(cfg.model)
    rates = training_rates(cfg)
    if saved is None and is_local_model(cfg.model.name_or_path):  # (read once, for the size and the MoE checks)
        saved = pretrained_config_dict(cfg.model.name_or_path)
    check_model_size(cfg, list(rates), saved)
    sampling_cfg = run_sampling_config(cfg, rates)
    sampler = check_component_configs(cfg, sampling_cfg, list(rates), rank=rank, world_size=world_size, saved=saved)
    check_signal_config(cfg, sampler)
    from t2t_mtl.engine.validation import evaluation_plan

    run_tasks = [*rates, *evaluation_plan(cfg)[0]]
    check_task_splits(run_tasks)
    check_task_metrics(run_tasks)
    if tokenizer_source(cfg) is None:
        tokenizer_train_options(cfg)
    return CheckedRun(rates, sampling_cfg, check_deepspeed(cfg, world_size), sampler)
