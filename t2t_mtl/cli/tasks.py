"""`t2t-mtl tasks ...`: list, show, preview and validate tasks of the registry.

    t2t-mtl tasks list [--cluster C] [--type T]
    t2t-mtl tasks show NAME
    t2t-mtl tasks preview NAME [--template T] [-n 5] [--split S] [--every-template] [--tokenizer PATH] [--jsonl]
    t2t-mtl tasks validate PATH            (a YAML task file, or a folder of them)

Every subcommand takes `--data-dir DIR` (default `$T2T_MTL_DATA_DIR`: hub ids resolve to
`DIR/<path>/<config or default>/<split>.jsonl`), `--tasks-dir DIR` (YAML task files to register on
top of the built-in tasks) and `--task-module MODULE` (a Python module registering tasks when imported); `validate`,
which checks PATH alone, refuses `--tasks-dir` and imports the modules first, for the metrics they register
(`register_metric`) that PATH's `metrics:` name. Errors print one line per problem and exit with status 2
(`validate`: 1 when the files it checked have problems).
"""
# (this docstring is the group's --help; task_registry, and the datasets, pandas and pyarrow it imports, is imported
# when a subcommand runs: every command's parser imports this module, `predict` too, which reads no task)
from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
from itertools import zip_longest
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import yaml

from t2t_mtl.cli.common import (TASK_MODULE_HELP, TASKS_DIR_HELP, add_data_dir_option, add_task_module_option,
                                add_tasks_dir_option, data_dir_problem, fail, name_argument, path_argument)
from t2t_mtl.registration import register_tasks
from t2t_mtl.wording import counted, repeated_items


#: validate checks PATH alone: a --tasks-dir there is refused (a folder to check is given as PATH)
VALIDATE_TASKS_DIR_HELP = "refused here: validate checks PATH alone (give a folder of YAML task files as PATH)"
#: validate imports task modules for the metrics they register, which PATH's `metrics:` may name
VALIDATE_TASK_MODULE_HELP = ("a Python module to import before checking PATH, for the metrics it registers "
                             "(register_metric) that PATH's metrics: name: a module name (on sys.path, PYTHONPATH, or "
                             "in the working directory) or a .py file's path (repeatable)")


def _common_options(defaults_suppressed: bool, tasks_dir_help: str = TASKS_DIR_HELP,
                    task_module_help: str = TASK_MODULE_HELP) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    default = argparse.SUPPRESS if defaults_suppressed else None
    add_data_dir_option(parent, default)
    # the group's and the subcommand's --tasks-dir (and --task-module) go to two lists (a subcommand's namespace
    # would replace the group's list), merged by _tasks_dirs and _task_modules
    add_tasks_dir_option(parent, default, dest="subcommand_tasks_dir" if defaults_suppressed else "tasks_dir",
                         help_text=tasks_dir_help)
    add_task_module_option(parent, default, dest="subcommand_task_modules" if defaults_suppressed else "task_modules",
                           help_text=task_module_help)
    return parent


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `tasks` command group."""
    group = subparsers.add_parser("tasks", help="list, show, preview and validate tasks",
                                  parents=[_common_options(False)], description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    group.set_defaults(func=lambda args: (group.print_help(), 2)[1])
    commands = group.add_subparsers(dest="tasks_command", metavar="SUBCOMMAND")
    common = _common_options(True)

    listing = commands.add_parser("list", parents=[common], help="registered tasks (and mixtures)")
    listing.add_argument("--cluster", type=name_argument, help="only tasks of this cluster")
    listing.add_argument("--type", dest="task_type", type=name_argument, help="only tasks of this task type")
    listing.set_defaults(func=_list)

    show = commands.add_parser("show", parents=[common], help="a task's source, metadata and templates")
    show.add_argument("name", help="a registered task")
    show.set_defaults(func=_show)

    preview = commands.add_parser("preview", parents=[common], help="rendered inputs/targets side by side")
    preview.add_argument("name", help="a registered task")
    preview.add_argument("--template", action="append", help="template name (repeatable, each once; default: all)")
    preview.add_argument("-n", type=int, default=5, help="number of rows (default 5)")
    preview.add_argument("--split", type=name_argument, help="split (default: the task's first split)")
    preview.add_argument("--seed", type=int, default=0,
                         help="seed of the per-row template choice and of the templates' choice/random filters "
                              "(default 0)")
    preview.add_argument("--every-template", action="store_true",
                         help="render each row in every template (those of --template when given), as training "
                              "with data.all_templates does, each labelled with its template; a template that "
                              "renders nothing for a row is shown as skipped")
    preview.add_argument("--tokenizer", type=path_argument, metavar="PATH",
                         help="also show each input's and target's length in tokens of this tokenizer (a folder, hub "
                              "name or SentencePiece .model file; a run's RUN/tokenizer), end-of-sequence token "
                              "included, as training counts them against data.max_input_length / max_target_length, "
                              "and an example holding text the tokenizer has no token for (T5's vocabulary lacks '<', "
                              "'{', ...) decoded from its tokens, as the model reads and learns to write it (not with "
                              "--jsonl)")
    preview.add_argument("--jsonl", action="store_true",
                         help="print the rendered rows as JSON lines (inputs, targets, answer_choices, references, "
                              "task, template, and the source row's fields by which the task's evaluation breaks a "
                              "tie between answer choices, a BIG-bench task's choice_file_positions): the input of "
                              "`t2t-mtl predict --jsonl`")
    preview.set_defaults(func=_preview)

    validate = commands.add_parser("validate", parents=[_common_options(True, VALIDATE_TASKS_DIR_HELP,
                                                                      VALIDATE_TASK_MODULE_HELP)],
                                   help="check YAML task file(s) before registering")
    validate.add_argument("path", type=path_argument, help="a YAML task file or a folder of them")
    validate.add_argument("--rows", type=int, default=3,
                          help="render this many rows per split when the data is reachable (default 3; 0: skip)")
    validate.set_defaults(func=_validate)


def _tasks_dirs(args: argparse.Namespace) -> list[str]:
    """The `--tasks-dir` folders, given before the subcommand or after it."""
    return [*(args.tasks_dir or []), *getattr(args, "subcommand_tasks_dir", [])]


def _task_modules(args: argparse.Namespace) -> list[str]:
    """The `--task-module` modules, given before the subcommand or after it."""
    return [*(args.task_modules or []), *getattr(args, "subcommand_task_modules", [])]


def _prepare(args: argparse.Namespace) -> None:
    import task_registry

    if args.data_dir:
        task_registry.set_data_dir(args.data_dir)
    task_registry.load_builtin_tasks()
    register_tasks(_tasks_dirs(args), _task_modules(args))


def _guarded(command):
    def run(args: argparse.Namespace) -> int:
        from task_registry import TaskRegistryError

        problem = data_dir_problem(args.data_dir)
        if problem:
            return fail(problem)
        try:
            _prepare(args)
            return command(args)
        except TaskRegistryError as error:
            return fail(error, _tasks_dirs(args))
    run.__name__ = command.__name__
    return run


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _filter_hint(args: argparse.Namespace, clusters: Sequence[str], types: Sequence[str]) -> str:
    """For a `--cluster` / `--type` that names none registered: `; did you mean ...?` with its close matches."""
    from task_registry.errors import close_matches

    for given, known in ((args.cluster, clusters), (args.task_type, types)):
        matches = close_matches(given, known) if given is not None and given not in known else []
        if matches:
            return f"; did you mean {', '.join(map(repr, matches))}?"
    return ""


@_guarded
def _list(args: argparse.Namespace) -> int:
    import task_registry

    names = task_registry.list_tasks(cluster=args.cluster, task_type=args.task_type)
    rows = []
    for name in names:
        task = task_registry.get_task(name)
        flags = ",".join(f for f, on in (("held_out", task.held_out), ("eval_only", task.eval_only)) if on)
        rows.append((name, task.task_type, task.cluster, str(len(task.templates)), flags, task.source.summary()))
    if not rows:
        everything = [task_registry.get_task(n) for n in task_registry.list_tasks()]
        clusters, types = sorted({t.cluster for t in everything}), sorted({t.task_type for t in everything})
        print(f"(no tasks{_filter_hint(args, clusters, types)}) — clusters: {', '.join(clusters)}; task types: "
              f"{', '.join(types)}" if everything else "(no tasks registered)")
        return 0
    print(_table(rows, ("task", "type", "cluster", "templates", "flags", "source")))
    if args.cluster is None and args.task_type is None and task_registry.list_mixtures():
        print("\nmixtures: " + ", ".join(task_registry.list_mixtures()))
    return 0


@_guarded
def _show(args: argparse.Namespace) -> int:
    import task_registry

    print(yaml.safe_dump(task_registry.get_task(args.name).describe(), sort_keys=False, allow_unicode=True,
                         width=100).rstrip())
    return 0


def _side_by_side(left: str, right: str, width: int) -> list[str]:
    column = max(20, (width - 3) // 2)
    lines_left = [line for para in left.splitlines() or [""] for line in textwrap.wrap(para, column) or [""]]
    lines_right = [line for para in right.splitlines() or [""] for line in textwrap.wrap(para, column) or [""]]
    return [f"{a.ljust(column)} | {b}".rstrip() for a, b in zip_longest(lines_left, lines_right, fillvalue="")]


def _json_lines(task: Any, split: str, n: int, dataset: Any) -> Iterator[dict[str, Any]]:
    """`tasks preview --jsonl`'s objects for the rendered examples `dataset` (with its ROW_COLUMN, the index of each
    example's row among the split's first `n`): the rendered fields, then the source row's fields by which the task's
    evaluation picks a ranked answer (its `eval_protocol.pick_fields`), so that `predict` breaks a tie as evaluation
    does."""
    from task_registry.row_renderer import ROW_COLUMN

    fields = task.eval_protocol.pick_fields
    rows = task.load_rows(split, max_rows=n) if fields else None
    columns = {field: list(rows[field]) for field in fields}
    for example in dataset:
        line = {key: value for key, value in example.items() if key != ROW_COLUMN}
        yield {**line, **{field: values[example[ROW_COLUMN]] for field, values in columns.items()}}


@_guarded
def _preview(args: argparse.Namespace) -> int:
    import task_registry
    from task_registry.row_renderer import ROW_COLUMN

    if args.n <= 0:
        print("error: -n must be positive", file=sys.stderr)
        return 2
    if args.tokenizer and args.jsonl:  # (the JSON lines are predict's input: they hold the rendered fields alone)
        print("error: --tokenizer shows token lengths beside the side-by-side rows, which --jsonl does not print: "
              "drop one of them", file=sys.stderr)
        return 2
    repeated = repeated_items(args.template or ())
    if repeated:  # (training refuses a data.templates that repeats a name, too)
        effect = ("--every-template renders each row once in each template named" if args.every_template else
                  "each row's template is drawn from the names given, so a repeated one would be drawn more often "
                  "than training draws it")
        print(f"error: --template {', '.join(map(repr, repeated))} given more than once: {effect}; name each "
              f"template once", file=sys.stderr)
        return 2
    task = task_registry.get_task(args.name)
    tokenizer = None
    if args.tokenizer:  # before the rows are rendered
        from t2t_mtl.tokenizer import TokenizerLoadError, load_tokenizer

        try:
            tokenizer = load_tokenizer(args.tokenizer)
        except TokenizerLoadError as error:
            print(f"error: --tokenizer: {error}", file=sys.stderr)
            return 2
    split = args.split or task.splits[0]
    dataset = task.to_dataset(split, templates=args.template, max_examples=args.n, seed=args.seed,
                              every_template=args.every_template, with_row_index=True)
    if args.jsonl:
        for line in _json_lines(task, split, args.n, dataset):
            print(json.dumps(line, ensure_ascii=False))
        return 0
    width = shutil.get_terminal_size((120, 20)).columns
    views = _tokenized(tokenizer, dataset) if tokenizer is not None else None
    shown = {(example[ROW_COLUMN], example["template"]): index for index, example in enumerate(dataset)}
    stats = task.render_stats[split]
    if args.every_template:  # each row in every template, in the order training renders them
        names = [template.name for template in task.select_templates(args.template)]
        order = [(row, name) for row in range(stats.rows // stats.per_row) for name in names]
    else:
        order = list(shown)
    for row, name in order:
        where = f"── {task.name} / {split} / row {row} / template {name!r}"
        if (row, name) not in shown:
            print(f"{where}: skipped (it renders an empty target or input for this row)")
            continue
        index = shown[row, name]
        example = dataset[index]
        choices = f"  choices: {example['answer_choices']}" if example["answer_choices"] else ""
        view = views[index] if views else None
        tokens = f"  tokens: {view.input_length} in, {view.target_length} out" if view else ""
        if view and view.unknown:
            tokens += f"; {counted(view.unknown, 'unknown token')} (shown as {tokenizer.unk_token} below)"
        print(f"{where}{choices}{tokens}")
        print("\n".join(_side_by_side("INPUTS", "TARGETS", width)))
        print("\n".join(_side_by_side(example["inputs"], example["targets"], width)))
        scored = example["targets"] if example["answer_choices"] else task.postprocessed([example["targets"]])[0]
        if scored != example["targets"]:  # (seqio's postprocess_fn on a generated target; ranked choices: none)
            print("\n".join(_side_by_side("", f"scored as (postprocess): {scored}", width)))
        references = example["references"]
        if references != [example["targets"]]:  # (a template's `references`: every answer the text metrics accept)
            accepted = references if example["answer_choices"] else task.postprocessed(references)
            print("\n".join(_side_by_side("", f"scored against (references): {' ||| '.join(accepted)}", width)))
        if view and view.unknown:  # (what the model reads and learns to write: the text its tokens spell)
            print("\n".join(_side_by_side("INPUTS AS TOKENIZED", "TARGETS AS TOKENIZED", width)))
            print("\n".join(_side_by_side(view.inputs_seen, view.targets_seen, width)))
    if stats.skipped:
        print(f"({stats.skipped} of {stats.renderings()} skipped: {stats.skipped - stats.empty_inputs} empty target, "
              f"{stats.empty_inputs} empty input, by template {stats.skipped_by_template})")
    return 0


class TokenView(NamedTuple):
    """A rendered example as a tokenizer reads it: its lengths in tokens with the end-of-sequence token training
    appends, how many of its tokens are the unknown token, and its input and target decoded from their tokens."""

    input_length: int
    target_length: int
    unknown: int
    inputs_seen: str
    targets_seen: str


def _tokenized(tokenizer: Any, dataset: Any) -> list[TokenView]:
    """The `TokenView` of each rendered example of `dataset`."""
    inputs = tokenizer(list(dataset["inputs"]), add_special_tokens=False, verbose=False)["input_ids"]
    targets = tokenizer(list(dataset["targets"]), add_special_tokens=False, verbose=False)["input_ids"]
    unk = tokenizer.unk_token_id
    return [TokenView(len(i) + 1, len(t) + 1, (i + t).count(unk) if unk is not None else 0,
                      tokenizer.decode(i), tokenizer.decode(t)) for i, t in zip(inputs, targets)]


def _validate(args: argparse.Namespace) -> int:
    import task_registry
    from task_registry.yaml_tasks import HUB_FILES, NO_DATA_DIR

    if args.rows < 0:
        print(f"error: --rows must be at least 0 (0: skip rendering rows), got {args.rows}", file=sys.stderr)
        return 2
    problem = data_dir_problem(args.data_dir)
    if problem:
        return fail(problem)
    if _tasks_dirs(args):
        print("error: --tasks-dir registers tasks for list, show and preview; validate checks only PATH (YAML task "
              "files) and would ignore it: give the folder as PATH", file=sys.stderr)
        return 2
    try:  # (the metrics they register are names PATH's `metrics:` may use, as loading after them accepts)
        task_registry.import_task_modules(_task_modules(args))
    except task_registry.TaskModuleError as error:
        return fail(error)
    if args.data_dir:
        task_registry.set_data_dir(args.data_dir)
    path = Path(args.path)
    files = task_registry.task_files(path) if path.is_dir() else [path]
    if not files or not all(f.exists() for f in files):
        print(f"error: {path}: no such YAML task file (or a folder without *.yaml / *.yml)", file=sys.stderr)
        return 2
    from t2t_mtl.evaluation.metrics import task_metric_problems

    # the parse and checks that --tasks-dir loading makes (registration.register_tasks), then the rows
    problems, unrendered = task_registry.check_task_files(files, check_rows=args.rows, check=task_metric_problems)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 1  # (the check ran and found problems: 1, as linters do; input it cannot check: 2)
    print(f"ok: {counted(len(files), 'task file')} valid")
    # (was only "ok": a template reading a field its rows lack passed unseen)
    for why, line in ((NO_DATA_DIR, "their hub datasets are read only from a data dir here; pass --data-dir DIR (or "
                                    "set $T2T_MTL_DATA_DIR) to check their templates against rows"),
                      (HUB_FILES, "their data_files are files of a hub dataset's repository, read from the hub alone "
                                  "(a data dir does not apply to them); `t2t-mtl tasks preview TASK` renders them "
                                  "where the hub is reachable")):
        names = [name for name, reason in unrendered.items() if reason == why]
        if names:
            print(f"rows not rendered for {', '.join(names)}: {line}")
    return 0
