"""`t2t-mtl list samplers` / `list weightings` / `list metrics`: the strategies `sampling.strategy`, the methods
`weighting.method` and the metrics a task's `metrics` can name (shipped, and those a `--task-module` registers), the
first two with their config keys' types, defaults and meanings (`parameter_docs`: from the classes' signatures and
docstrings), the metrics with what they score and their aliases."""
from __future__ import annotations

import argparse
from typing import List, Sequence

from t2t_mtl.cli.common import add_task_module_option, fail

TASK_MODULE_HELP = ("a module to import first (a module name or a .py file's path; repeatable): the strategies, "
                    "methods or metrics it registers are listed too")
# what a metric of each kind (MetricSpec.kind) compares, as `evaluation.scoring` turns predictions into it
KIND_MEANINGS = {
    "label": "the predicted answer choice against the gold one (rank classification or generation)",
    "group_label": "answer choices as label metrics read them, per group of rows (a task's group_by)",
    "number": "the prediction read as a number against the numeric target",
    "text": "the predicted text against every gold answer (a template's references)",
    "target": "the predicted text against the target",
    "tags": "whitespace-separated tags against the target's",
    "choice_scores": "the chosen answer choice against per-choice target scores (BIG-bench)",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("list", help="the sampling strategies and loss weightings a config can name, with "
                                                "their parameters, and the metrics a task can name")
    commands = parser.add_subparsers(dest="list_command", metavar="SUBCOMMAND")
    samplers = commands.add_parser("samplers", help="sampling.strategy values and their parameters (type, default, "
                                                    "meaning)")
    add_task_module_option(samplers, help_text=TASK_MODULE_HELP)
    samplers.set_defaults(func=list_samplers)
    weightings = commands.add_parser("weightings", help="weighting.method values and their parameters (type, "
                                                        "default, meaning)")
    add_task_module_option(weightings, help_text=TASK_MODULE_HELP)
    weightings.set_defaults(func=list_weightings)
    metrics = commands.add_parser("metrics", help="the metrics a task's `metrics` can name: what each scores, its "
                                                  "aliases")
    add_task_module_option(metrics, help_text=TASK_MODULE_HELP)
    metrics.set_defaults(func=list_metrics)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def list_samplers(args: argparse.Namespace) -> int:
    """Print every sampling strategy with its parameters, after the keys every strategy takes."""
    if not _imported(args.task_modules):
        return 2
    from t2t_mtl.sampling import MixtureSampler
    from t2t_mtl.sampling.registry import COMMON_PARAMS, SHIPPED_STRATEGIES, STRATEGIES

    common = [key for key in COMMON_PARAMS if key != "strategy"]
    print(f"sampling.strategy: one of these, with its parameters as the section's other keys; every strategy also "
          f"takes {' and '.join(common)}:")
    print("\n".join(_parameter_lines(MixtureSampler, common)))
    print("\n".join(_component_lines(name, cls, cls.PARAMS, name in SHIPPED_STRATEGIES)
                      for name, cls in STRATEGIES.items()))
    return 0


def list_weightings(args: argparse.Namespace) -> int:
    """Print every loss weighting with its parameters."""
    if not _imported(args.task_modules):
        return 2
    from t2t_mtl.weighting.registry import METHODS, SHIPPED_METHODS

    print("weighting.method: one of these, with its parameters as the section's other keys:")
    print("\n".join(_component_lines(name, cls, cls.PARAMS, name in SHIPPED_METHODS)
                      for name, cls in METHODS.items()))
    return 0


def list_metrics(args: argparse.Namespace) -> int:
    """Print every metric a task's `metrics` can name: its kind's meaning, its primary figure, options and aliases."""
    if not _imported(args.task_modules):
        return 2
    from t2t_mtl.evaluation.metrics import ALIASES, METRICS, SHIPPED

    print("a task's `metrics` (YAML too): the first is the one its reports rank by; each compares")
    for name, spec in METRICS.items():
        aliases = sorted(alias for alias, target in ALIASES.items() if target == name)
        options = ", ".join(f"{key}={value}" for key, value in spec.kwargs.items())
        function = spec.function
        origin = "" if name in SHIPPED else f" (registered: {function.__module__}.{function.__qualname__})"
        print(f"  {name}{origin}: {KIND_MEANINGS.get(spec.kind, spec.kind)}; reports {spec.primary}"
              + (f" ({options})" if options else "") + (f"; aliases: {', '.join(aliases)}" if aliases else ""))
    print("binary f1 counts the second of a template's two answer choices as the positive class.")
    return 0


def _imported(task_modules: Sequence[str]) -> bool:
    """Import the `--task-module` modules; False (with the error printed) where one fails."""
    import task_registry

    try:
        task_registry.import_task_modules(task_modules)
    except task_registry.TaskModuleError as error:
        fail(error)
        return False
    return True


def _component_lines(name: str, cls: type, params: Sequence[str], shipped: bool) -> str:
    """A strategy or method: its name (a registered one's class), its docstring's first line, its parameters."""
    from t2t_mtl.class_registry import class_name
    from t2t_mtl.parameter_docs import summary

    origin = "" if shipped else f" (registered: {class_name(cls)})"
    head = f"\n{name}{origin}" + (f": {summary(cls)}" if summary(cls) else "")
    return "\n".join([head, *(_parameter_lines(cls, params) or ["  (no parameters)"])])


def _parameter_lines(cls: type, params: Sequence[str]) -> List[str]:
    """One line per parameter: `name (type, default ...): meaning`."""
    from t2t_mtl.parameter_docs import parameter_docs

    lines = []
    for doc in parameter_docs(cls, params):
        default = doc.default if doc.default == "required" else f"default {doc.default}"
        described = f"{doc.type}, {default}" if doc.type else default
        lines.append(f"  {doc.name} ({described}): {doc.meaning or '(undocumented)'}")
    return lines
