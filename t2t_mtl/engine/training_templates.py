"""The templates each task of a run trains with (`data.templates`, else all of the task's), and what checkpoints
save of them: their names, to resume with the same selection, and their render digests, to tell a changed one."""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Mapping, Sequence

from t2t_mtl.config import Config

if TYPE_CHECKING:  # task_registry (and datasets) loads when a selection is made
    from task_registry import Template

__all__ = ["template_digests_of", "template_names_of", "training_template_names", "training_template_selection",
           "training_templates"]


def training_templates(cfg: Config, task_names: Sequence[str]) -> Dict[str, int]:
    """How many templates each of `task_names` trains with (`data.templates`, else all of the task's)."""
    return {name: len(names) for name, names in training_template_names(cfg, task_names).items()}


def training_template_names(cfg: Config, task_names: Sequence[str]) -> Dict[str, List[str]]:
    """The names of the templates each of `task_names` trains with (`training_template_selection`)."""
    return template_names_of(training_template_selection(cfg, task_names))


def training_template_selection(cfg: Config, task_names: Sequence[str]) -> Dict[str, List[Template]]:
    """{task: the `Template`s it trains with, in the order it renders them} for each of `task_names`
    (`data.templates`, else all of the task's); the tasks must be registered (`training_rates`)."""
    import task_registry

    return {name: task_registry.get_task(name).select_templates(cfg.data.templates) for name in task_names}


def template_names_of(selection: Mapping[str, Sequence[Template]]) -> Dict[str, List[str]]:
    """{task: template names, in order} of a `training_template_selection`, as checkpoints save them."""
    return {task: [t.name for t in templates] for task, templates in selection.items()}


def template_digests_of(selection: Mapping[str, Sequence[Template]]) -> Dict[str, Dict[str, str]]:
    """{task: {template name: `Template.render_digest()`}} of a `training_template_selection`, as checkpoints save
    them."""
    return {task: {t.name: t.render_digest() for t in templates} for task, templates in selection.items()}
