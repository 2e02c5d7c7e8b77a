"""What an evaluation scores of each task: the split (`default_split`), the templates its settings select
(`evaluated_templates`), and those rank classification cannot score, named before a model is loaded or trained
(`unrankable_message`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Optional, Sequence

from t2t_mtl.evaluation.errors import EvaluationError
from t2t_mtl.evaluation.eval_settings import EvalSettings

if TYPE_CHECKING:  # task_registry (and datasets) load only when a task is resolved
    from task_registry.task import Task
    from task_registry.template import Template


def _task_templates(task) -> list:
    templates = task.templates
    return list(templates.values()) if isinstance(templates, Mapping) else list(templates)


def preferred_split(splits: Sequence[str]) -> str:
    """validation if among `splits` (at least one), else test, else the last of them."""
    for split in ("validation", "test"):
        if split in splits:
            return split
    return splits[-1]


def default_split(task: Task) -> str:
    """validation if the task has it, else test, else its last split (`preferred_split`)."""
    return preferred_split(list(getattr(task, "splits", ()) or ("validation",)))


def evaluated_templates(task: Task, settings: EvalSettings) -> list[Template]:
    """The templates of `task` that `settings` score: `settings.templates[task]` (else all), and of those, with
    `original_task_only`, the ones whose metadata marks `original_task`. An `EvaluationError` names the task when a
    named template is missing or none is left."""
    templates = _task_templates(task)
    wanted = (settings.templates or {}).get(task.name)
    if wanted:
        by_name = {t.name: t for t in templates}
        missing = [w for w in wanted if w not in by_name]
        if missing:
            raise EvaluationError(f"task {task.name!r} has no template(s) {missing}; it has {sorted(by_name)}")
        templates = [by_name[w] for w in wanted]
    if settings.original_task_only:
        original = [t for t in templates if getattr(getattr(t, "metadata", None), "original_task", None) is True]
        if templates and not original:
            raise EvaluationError(f"task {task.name!r}: none of its templates {[t.name for t in templates]} is marked "
                                  f"original_task in its metadata, so original_task_only leaves nothing to score; "
                                  f"mark the ones that ask for the task's own answer (metadata: "
                                  f"{{original_task: true}}), or score every template (`eval --no-original-task`; "
                                  f"in a config, evaluation.original_task_only: false)")
        templates = original
    if not templates:
        raise EvaluationError(f"task {task.name!r} has no templates to evaluate")
    return templates


def unrankable_message(names: Sequence[str], settings: EvalSettings, scoring: str, instead: str) -> Optional[str]:
    """Why rank scoring (`scoring`: where it was asked for) cannot score the tasks `names` (registered), naming each
    template without `answer_choices` and ending with `instead` (the settings to use); None when each can be
    ranked. The message of both eval's and a training config's refusals."""
    import task_registry

    problems = unrankable_templates([task_registry.get_task(name) for name in names], settings)
    if not problems:
        return None
    return (f"{scoring} ranks each example's answer choices, and {'; '.join(problems)} have no answer_choices, so "
            f"rank classification cannot score them; {instead}")


def unrankable_templates(tasks: Sequence[Task], settings: EvalSettings) -> list[str]:
    """'task NAME template(s) 'A', 'B'' for each of `tasks` whose templates, as `settings` select them, include one
    without `answer_choices`, which `scoring: rank` cannot score (the runner refuses it only once it renders the
    task's examples, after the model is loaded or trained)."""
    problems = []
    for task in tasks:
        names = [t.name for t in evaluated_templates(task, settings) if t.answer_choices is None]
        if names:
            problems.append(f"task {task.name!r} template(s) {', '.join(map(repr, names))}")
    return problems
