"""The sampler config a run builds from its `sampling` section (`run_sampling_config`): the mixture's rates, the
CA-MTL pool and the templates each task trains with filled in where the section leaves them out, and once training
has rendered its data, each template's size (`with_template_sizes`)."""
from __future__ import annotations

from typing import Any, Dict, Mapping

from t2t_mtl.config import Config
from t2t_mtl.engine.training_templates import training_templates

__all__ = ["run_sampling_config", "size_based", "with_template_sizes"]


def run_sampling_config(cfg: Config, rates: Mapping[str, float]) -> Dict[str, Any]:
    """The sampler config a run of `cfg` training `rates` builds: its `sampling` section, with the mixture's rates
    for `explicit`, the micro-batch size as `uncertainty`'s pool and each task's template count where the section
    leaves them out: for T0's caps, and with `data.all_templates` for every size-based strategy (a task is then one
    seqio task per template, T0's mixture; its size counts each row once per template)."""
    sampling_cfg = dict(cfg.sampling)
    if sampling_cfg.get("strategy") == "explicit" and "rates" not in sampling_cfg:
        sampling_cfg["rates"] = dict(rates)
    if sampling_cfg.get("strategy") == "uncertainty" and "pool_per_task" not in sampling_cfg:
        sampling_cfg["pool_per_task"] = cfg.training.micro_batch_size  # CA-MTL: b candidates per task, b kept
    caps = any(sampling_cfg.get(key) is not None for key in ("template_cap", "dataset_cap"))
    per_template = caps or (cfg.data.all_templates and size_based(sampling_cfg.get("strategy")))
    if per_template and sampling_cfg.get("templates") is None:  # the templates each task trains with
        sampling_cfg["templates"] = training_templates(cfg, list(rates))
    if cfg.data.all_templates and sampling_cfg.get("templates") and "sizes_count_templates" not in sampling_cfg:
        sampling_cfg["sizes_count_templates"] = True  # (a task's size counts each row once per template)
    return sampling_cfg


def with_template_sizes(cfg: Config, sampling_cfg: Mapping[str, Any],
                        template_sizes: Mapping[str, Mapping[str, int]]) -> Dict[str, Any]:
    """The sampler config `sampling_cfg` (`run_sampling_config`) with each task's examples per template as training
    rendered them (`template_sizes`: {task: {template: examples}}) where it rates a task's templates on sizes that
    count a row once per template (data.all_templates) and gives none itself: each template is then rated at its own
    count, as T0's seqio task per template was, not at the task's mean (a template that skips rows holds fewer)."""
    per_template = sampling_cfg.get("templates")
    if not (cfg.data.all_templates and sampling_cfg.get("sizes_count_templates") and per_template) \
            or "template_sizes" in sampling_cfg:
        return dict(sampling_cfg)
    return {**sampling_cfg, "template_sizes": {task: dict(template_sizes[task]) for task in per_template
                                               if task in template_sizes}}


def size_based(strategy: Any) -> bool:
    """Whether the sampling strategy named `strategy` rates tasks by their sizes (takes `templates`)."""
    from t2t_mtl.sampling.registry import STRATEGIES

    return isinstance(strategy, str) and strategy in STRATEGIES and "templates" in STRATEGIES[strategy].PARAMS
