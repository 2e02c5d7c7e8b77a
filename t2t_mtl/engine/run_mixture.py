"""The tasks a run trains and their rates (`training_rates`): `data.mixture` or `data.tasks`, the run's own tasks
registered first, held-out clusters dropped, every named task, cluster and template checked and a task without a train
split refused (`refuse_untrainable`); errors are ConfigErrors naming the key."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

from t2t_mtl.config import Config, ConfigError, DataConfig
from t2t_mtl.engine.held_out import (refuse_held_out_cluster, refuse_unapproved_held_out,
                                     refuse_unknown_held_out_clusters, refuse_untrained_held_out)
from t2t_mtl.registration import register_tasks
from t2t_mtl.wording import repeated_items

__all__ = ["refuse_untrainable", "training_rates"]


def training_rates(cfg: Config) -> Dict[str, float]:
    """Task → rate of the training mixture (via task_registry.training_rates); run on every rank.

    Registers the built-in tasks, `data.task_modules`' tasks and `data.tasks_dir`'s YAML tasks first. Tasks of
    `data.held_out_clusters` are dropped from `data.mixture`; a task that `data.tasks` names in one of them is a
    ConfigError, as is a task flagged `held_out` that `data.train_held_out` does not name, a `data.train_held_out`
    task the run does not train, and a `data.templates` name that a task lacks. Every error names the config key.
    """
    d = cfg.data
    _register_run_tasks(d)
    # what an unknown task or cluster may be: one of a YAML task file or a Python module, which only data.tasks_dir
    # and data.task_modules register
    yaml_note = "" if d.tasks_dir or d.task_modules else (
        "; a YAML task file's task is registered by data.tasks_dir: name its folder (a Python module's by "
        "data.task_modules)")
    _check_named_tasks(d, yaml_note)
    rates = _configured_rates(d)
    source = "data.tasks" if d.tasks else f"data.mixture {d.mixture!r}"
    refuse_unapproved_held_out(list(rates), d.train_held_out, source)
    refuse_untrained_held_out(d.train_held_out, rates, source, d.held_out_clusters)
    refuse_untrainable(rates, source)
    _check_template_names(d.templates, rates)
    return rates


def _register_run_tasks(d: DataConfig) -> None:
    """Register the built-in tasks, then `data.task_modules`' and `data.tasks_dir`'s (as --task-module and
    --tasks-dir do), with `data.data_dir` set; a module's or a task file's error is a ConfigError naming the key."""
    import task_registry

    task_registry.load_builtin_tasks()
    if d.data_dir:
        task_registry.set_data_dir(d.data_dir)
    try:
        register_tasks(d.tasks_dir, d.task_modules)  # as --tasks-dir and --task-module register them
    except task_registry.TaskModuleError as err:
        raise ConfigError(f"data.task_modules: {err}") from None
    except task_registry.TaskRegistryError as err:
        raise ConfigError(f"data.tasks_dir: {err}") from None


def _check_named_tasks(d: DataConfig, yaml_note: str) -> None:
    """The tasks and clusters the data section names must be registered (`yaml_note` ends the error of one that is
    not), `data.tasks` must name each once and none in a held-out cluster."""
    import task_registry

    def registered(name: str, key: str) -> Any:
        try:
            return task_registry.get_task(name)
        except task_registry.UnknownTaskError as err:
            raise ConfigError(f"{key}: {err}{yaml_note}") from None

    for name in d.train_held_out:
        registered(name, "data.train_held_out")
    refuse_unknown_held_out_clusters(d.held_out_clusters, yaml_note)
    repeated = repeated_items(d.tasks or ())
    if repeated:  # (the list collapses to one rate per task)
        raise ConfigError(f"data.tasks names {', '.join(repeated)} more than once; each task is trained once: to "
                          f"draw one more often give rates, e.g. data.tasks: {{{repeated[0]}: 2.0, ...}}")
    for name in d.tasks or ():
        if d.mixture is None and name in task_registry.list_mixtures():
            continue  # without data.mixture, data.tasks may name mixtures (their held-out clusters are dropped)
        registered(name, "data.tasks")
        refuse_held_out_cluster(name, d.held_out_clusters)


def _configured_rates(d: DataConfig) -> Dict[str, float]:
    """Task → rate of what the data section trains: `data.mixture` (its tasks `data.tasks` picks, at the rates it
    gives), else `data.tasks`; `data.held_out_clusters` dropped."""
    import task_registry

    if d.mixture is not None:
        if d.mixture not in task_registry.list_mixtures() and d.mixture not in task_registry.list_tasks():
            err = task_registry.UnknownMixtureError(d.mixture, task_registry.list_mixtures())
            raise ConfigError(f"data.mixture: {err.args[0]}: {', '.join(task_registry.list_mixtures())} (or one "
                              f"task name; `t2t-mtl mixture show NAME` shows a mixture's rates)")
        rates = task_registry.training_rates(d.mixture, held_out_clusters=d.held_out_clusters, force=True)
        if d.tasks:
            wanted = list(d.tasks)
            missing = [t for t in wanted if t not in rates]
            if missing:
                raise ConfigError(f"data.tasks {missing} are not in mixture {d.mixture!r}: with data.mixture set (a "
                                  f"base config's too, as quickstart's), data.tasks picks tasks of it; to train "
                                  f"exactly the tasks data.tasks names, set data.mixture: null")
            rates = {t: rates[t] for t in wanted}
            if isinstance(d.tasks, dict):  # the rates given replace the mixture's (were silently ignored)
                rates = task_registry.training_rates(task_registry.Mixture("data.tasks", dict(d.tasks)),
                                                     held_out_clusters=d.held_out_clusters, force=True)
    else:
        explicit = dict(d.tasks) if isinstance(d.tasks, dict) else {t: 1.0 for t in d.tasks}
        # named after the config key: the registry's messages quote the mixture's name
        rates = task_registry.training_rates(task_registry.Mixture("data.tasks", explicit),
                                             held_out_clusters=d.held_out_clusters, force=True)
    return rates


def _check_template_names(templates: Optional[Sequence[str]], rates: Mapping[str, float]) -> None:
    """Each of `data.templates` must be a template of every training task of `rates`."""
    import task_registry

    for name in templates or ():
        for task_name in rates:
            try:
                task_registry.get_task(task_name).get_template(name)
            except task_registry.UnknownTemplateError as err:
                raise ConfigError(f"data.templates: {err} (data.templates applies to every training task)") from None


def refuse_untrainable(rates: Mapping[str, float], source: str) -> None:
    """ConfigError naming the tasks of `rates` without a train split (evaluation sets, as BoolQ's validation
    only): training reads each task's train split, and failed on the first such task after preparing the others."""
    import task_registry

    splits = {name: list(task_registry.get_task(name).splits) for name in rates}
    untrainable = {name: found for name, found in splits.items() if "train" not in found}
    if untrainable:
        listed = ", ".join(f"{name} {found}" for name, found in untrainable.items())
        raise ConfigError(f"{source} would train on task(s) without a train split (their splits: {listed}): "
                          f"training reads each task's train split; train a mixture of tasks that have one (e.g. "
                          f"real_train, not real), leave these out with data.tasks, or give a task of your own a "
                          f"train split (a YAML task: train in its splits: and, for local files, a train file in its "
                          f"source, e.g. source: {{files: {{train: dialogues.jsonl, test: test.jsonl}}}})")
