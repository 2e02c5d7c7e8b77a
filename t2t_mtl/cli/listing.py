"""`t2t-mtl list samplers` / `list weightings`: the strategies `sampling.strategy` and the methods `weighting.method`
can name (shipped, and those a `--task-module` registers), each with its config keys' types, defaults and meanings
(`parameter_docs`: from the classes' signatures and docstrings)."""
from __future__ import annotations

import argparse
from typing import List, Sequence

from t2t_mtl.cli.common import add_task_module_option, fail

TASK_MODULE_HELP = ("a module to import first (a module name or a .py file's path; repeatable): the strategies or "
                    "methods it registers are listed too")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("list", help="the sampling strategies and loss weightings a config can name, with "
                                                "their parameters")
    commands = parser.add_subparsers(dest="list_command", metavar="SUBCOMMAND")
    samplers = commands.add_parser("samplers", help="sampling.strategy values and their parameters (type, default, "
                                                    "meaning)")
    add_task_module_option(samplers, help_text=TASK_MODULE_HELP)
    samplers.set_defaults(func=list_samplers)
    weightings = commands.add_parser("weightings", help="weighting.method values and their parameters (type, "
                                                        "default, meaning)")
    add_task_module_option(weightings, help_text=TASK_MODULE_HELP)
    weightings.set_defaults(func=list_weightings)
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
