"""`t2t-mtl eval`: score a checkpoint zero-shot on tasks, held-out clusters, a mixture or BIG-bench tasks.

Runs on one process, or under `torchrun --nproc_per_node N -m t2t_mtl eval ...` with the examples
sharded over the ranks (gloo on CPU); rank 0 writes the report.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from t2t_mtl.cli.common import (add_data_dir_option, add_decoding_options, add_task_module_option, add_tasks_dir_option,
                                below_one, data_dir_problem, fail, ignored_scoring_option, name_argument,
                                path_argument, resolve_device)
from t2t_mtl.cli.eval_defaults import ALL_EXAMPLES, eval_settings, max_examples_option, settings_from_run
from t2t_mtl.model_folder import is_model_folder
from t2t_mtl.output_paths import prepare_output_dir, refuse_non_empty_dir, unwritten_output
from t2t_mtl.registration import register_tasks
from t2t_mtl.transformers_progress_bars import hidden_transformers_progress_bars
from t2t_mtl.wording import counted, repeated_items


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `eval` command."""
    parser = subparsers.add_parser(
        "eval", help="evaluate a checkpoint on tasks (every template), write JSON/Markdown/PNG reports",
        description="Score a checkpoint on every template of the chosen tasks by rank classification "
                    "(log-likelihood of each answer choice) or generation, then the tasks' metrics; report "
                    "per template, the median and mean per task, decaScore and macro average.")
    parser.add_argument("--checkpoint", type=path_argument, required=True,
                        help="run dir, checkpoint dir (t2t-mtl train) or Hugging Face model folder")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--tasks", help="comma-separated registered task names")
    which.add_argument("--held-out", action="store_true",
                       help="every task of the held-out clusters (--held-out-clusters, else the checkpoint's "
                            "training config, else every task flagged held_out); without --held-out-clusters, also "
                            "the BIG-bench tasks of the run's evaluation.bigbench, as the run's own evaluation did")
    which.add_argument("--mixture", help="every task of a registered mixture")
    which.add_argument("--bigbench", type=path_argument, metavar="DIR",
                       help="import and score the BIG-bench task.json tasks under DIR")
    parser.add_argument("--held-out-clusters", default=None, help="comma-separated clusters for --held-out")
    parser.add_argument("--max-examples", type=max_examples_option, default=None, metavar="N|all",
                        help="first N rows of each task's split; of a BIG-bench task, the N examples BIG-bench "
                             "draws; all: every row (default: the run's evaluation.max_examples, else all)")
    parser.add_argument("--split", type=name_argument, default=None,
                        help="split to score (default: the run's evaluation.split, else validation, else test, else "
                             "the task's last)")
    parser.add_argument("--scoring", choices=("auto", "rank", "generate"), default=None,
                        help="rank: answer-choice log-likelihood; generate: decode + metric; auto: rank where every "
                             "example has answer choices (default: the run's evaluation.scoring, else auto)")
    parser.add_argument("--template", action="append", default=None, metavar="NAME",
                        help="score only this template of each chosen task (repeatable; default: every template); a "
                             "task without it is an error (the run's BIG-bench tasks that --held-out adds keep their "
                             "one template)")
    parser.add_argument("--original-task", action=argparse.BooleanOptionalAction, default=None,
                        help="score only the templates whose promptsource metadata marks original_task, as T0's "
                             "evaluation did (default: the run's evaluation.original_task_only, else every template)")
    add_decoding_options(parser, "examples")
    parser.add_argument("--shots", type=int, default=None, metavar="K",
                        help="k-shot: K solved demonstrations of the same template before each input, drawn with the "
                             "run's seed (a BIG-bench task's: its own k-shot prompt, drawn as BIG-bench draws it) "
                             "(default: the run's evaluation.num_shots, else 0: zero-shot)")
    parser.add_argument("--shots-split", default=None,
                        help="split the demonstrations come from (default: the run's evaluation.shots_split, else "
                             "train, else another split, else the evaluated split without the example's own row or "
                             "group)")
    add_data_dir_option(parser, fallback="the run's data.data_dir, else $T2T_MTL_DATA_DIR")
    add_tasks_dir_option(parser, help_text="a folder of YAML task files to register on top of the built-in tasks "
                                           "(repeatable; default: the run's data.tasks_dir)")
    add_task_module_option(parser, help_text="a Python module that registers tasks when imported: a module name (on "
                                             "sys.path, PYTHONPATH, or in the working directory) or a .py file's "
                                             "path (repeatable; imported before the --tasks-dir folders; default: "
                                             "the run's data.task_modules)")
    parser.add_argument("--out", type=path_argument, default=None,
                        help="folder for report.json, report.md and plots/<task>.png (created); a folder that holds "
                             "files (an earlier report) is refused unless --overwrite")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty --out folder, replacing its files of the same names")
    parser.add_argument("--name", default=None, help="model name in the report (default: the checkpoint path)")
    parser.add_argument("--compare", type=path_argument, nargs="+", default=None, metavar="REPORT",
                        help="earlier report.json files/folders to put beside this one in comparison.md")
    parser.add_argument("--keep-predictions", action="store_true",
                        help="store every prediction in report.json (with --out)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_eval)


def _find_key(data: Any, key: str) -> Optional[Any]:
    if isinstance(data, Mapping):
        if key in data:
            return data[key]
        for value in data.values():
            found = _find_key(value, key)
            if found is not None:
                return found
    return None


def _run_tasks_dirs(meta: Mapping[str, Any]) -> list[str]:
    """The run's `data.tasks_dir` folders (none for a model without a run config). A folder that is not there is a
    ValueError naming it as the run's and saying what to do: a relative one is read from the current directory, which
    need not be the one the run was trained from."""
    found = _find_key(meta, "tasks_dir")
    folders = [found] if isinstance(found, str) else list(found or [])
    remedy = "pass --tasks-dir DIR, the folder of its YAML task files"
    for folder in folders:
        if Path(folder).is_dir():
            continue
        if Path(folder).is_absolute():
            raise ValueError(f"the run's data.tasks_dir {folder!r} is not a folder: {remedy}")
        raise ValueError(f"the run's data.tasks_dir {folder!r} is not a folder here (a relative path, read from the "
                         f"current directory {Path.cwd()}): run eval from where the run was trained, or {remedy}")
    return folders


def _run_data_dir(meta: Mapping[str, Any]) -> Optional[str]:
    """The run's `data.data_dir` (None for a model without a run config, or a run that read the hub). A folder that
    is not there is a ValueError naming it as the run's and saying what to do, as for `_run_tasks_dirs`."""
    found = _find_key(meta, "data_dir")
    if found is None or Path(found).is_dir():
        return found
    remedy = "pass --data-dir DIR, the folder holding <hub path>/<config or default>/<split>.jsonl"
    if Path(found).is_absolute():
        raise ValueError(f"the run's data.data_dir {found!r} is not a folder: {remedy}")
    raise ValueError(f"the run's data.data_dir {found!r} is not a folder here (a relative path, read from the current "
                     f"directory {Path.cwd()}): run eval from where the run was trained, or {remedy}")


def run_bigbench_tasks(args: argparse.Namespace, meta: Mapping[str, Any]) -> list[str]:
    """The BIG-bench tasks of the run's `evaluation.bigbench`, imported (`import_bigbench_tasks`), for `--held-out`
    without `--held-out-clusters`: the run's evaluation scored them beside its held-out clusters' tasks, so a re-score
    of its held-out set does too (none for another selection, or a run without them). A folder that is not there, or
    that cannot be imported, is a ValueError naming it as the run's and saying what to do, as for
    `_run_tasks_dirs`."""
    from t2t_mtl.engine.bigbench_evaluation import BigbenchFolderError, import_bigbench_tasks
    from t2t_mtl.evaluation.run_settings import run_config_value

    if not args.held_out or args.held_out_clusters is not None:
        return []
    remedy = ("run eval from where the run was trained, or pass --held-out-clusters to score the held-out clusters "
              "alone (--bigbench DIR scores BIG-bench tasks)")
    try:
        return import_bigbench_tasks(run_config_value(meta, "evaluation.bigbench"))
    except BigbenchFolderError as error:
        folder = error.folder
        if Path(folder).exists():  # (emptied, or a task.json changed, since the run)
            raise ValueError(f"the run's evaluation.bigbench: {error.reason}: {remedy}") from None
        where = "" if Path(folder).is_absolute() else (f" here (a relative path, read from the current directory "
                                                       f"{Path.cwd()})")
        raise ValueError(f"the run's evaluation.bigbench folder {folder!r}, whose BIG-bench tasks --held-out scores "
                         f"as the run's evaluation did, is not there{where}: {remedy}") from None


def register_run_tasks(args: argparse.Namespace, meta: Mapping[str, Any]) -> list[str]:
    """Import `--task-module`s, else the run's `data.task_modules`, then register `--tasks-dir`, else the run's
    `data.tasks_dir`. The run's module failing to import is a ValueError saying it was the run's. A model folder's
    (exported or Hugging Face, `meta["path"]` holding a config.json) recorded modules are not imported: the folder may
    come from someone else, and an import runs the module's code (a warning names them and `--task-module`); they
    are returned (empty where none were left out)."""
    import task_registry

    modules, skipped = args.task_modules, []
    if modules is None:
        found = _find_key(meta, "task_modules")
        if found and meta.get("path") and is_model_folder(meta["path"]):
            skipped = [found] if isinstance(found, str) else list(found)
            print(f"warning: not importing data.task_modules {found!r}, which model folder {meta['path']}'s "
                  f"t2t_mtl_meta.json names: importing a module runs its code, and a model folder may come from "
                  f"someone else; pass --task-module MODULE to import one you trust (for the tasks it registers)",
                  file=sys.stderr)
            found = None
        try:  # ("": a run trained before data.task_modules '' was refused, which then imported none)
            task_registry.import_task_modules(found or None)
        except task_registry.TaskModuleError as error:
            raise ValueError(f"the run's data.task_modules: {error} (or pass --task-module MODULE)") from None
    register_tasks(args.tasks_dir or _run_tasks_dirs(meta), modules)
    return skipped


def check_trained_task_registered(name: str, meta: Mapping[str, Any], skipped: list[str]) -> None:
    """Refuse `--tasks` `name`, a task the model folder of `meta` was trained on (its "tasks"), where it is not
    registered and the folder's data.task_modules `skipped` were not imported (`register_run_tasks`): the task is
    theirs, so a close built-in name would be a poor guess; the error says to pass --task-module."""
    import task_registry

    if skipped and name in (meta.get("tasks") or ()) and name not in task_registry.list_tasks():
        raise ValueError(f"--tasks: task {name!r}, which model folder {meta['path']} was trained on, is not "
                         f"registered: its data.task_modules {skipped!r} were not imported (a model folder may come "
                         f"from someone else); pass --task-module MODULE to import the one you trust that registers "
                         f"it")


def select_tasks(args: argparse.Namespace, meta: Mapping[str, Any]) -> list[str]:
    """The task names the arguments ask for (registering BIG-bench imports / built-ins as needed)."""
    import task_registry

    if args.bigbench:
        from task_registry.bigbench import import_bigbench

        return import_bigbench(args.bigbench)
    task_registry.load_builtin_tasks()
    skipped = register_run_tasks(args, meta)
    if args.tasks is not None:
        names = task_registry.comma_separated(args.tasks, "--tasks", "task names")
        repeated = repeated_items(names)
        if repeated:
            raise ValueError(f"--tasks names {', '.join(repeated)} more than once; each task is evaluated once")
        for name in names:
            check_trained_task_registered(name, meta, skipped)
            task_registry.get_task(name)
        return names
    if args.mixture:
        return list(task_registry.get_mixture(args.mixture).flatten())
    clusters = (task_registry.comma_separated(args.held_out_clusters, "--held-out-clusters", "clusters")
                if args.held_out_clusters is not None else _find_key(meta, "held_out_clusters"))
    tasks = [task_registry.get_task(n) for n in task_registry.list_tasks()]
    known = sorted({t.cluster for t in tasks})
    unknown = [c for c in clusters or () if c not in known]
    if unknown:  # a typo would silently leave its tasks out of the report and its aggregates
        source = "--held-out-clusters" if args.held_out_clusters else "the checkpoint's data.held_out_clusters"
        from task_registry.errors import close_matches

        close = [m for c in unknown for m in close_matches(c, known, n=1, cutoff=0.6, substrings=False)]
        hint = f"did you mean {', '.join(map(repr, close))}? " if close and not skipped else ""
        where = (f"model folder {meta['path']}'s data.task_modules {skipped!r}, not imported, may register them: pass "
                 f"--task-module MODULE to import the one you trust; " if skipped else "")
        raise ValueError(f"{source}: no registered task is in cluster(s) {unknown}; {hint}registered clusters: "
                         f"{', '.join(known)} ({where}a YAML task's cluster needs its --tasks-dir)")
    chosen = [t.name for t in tasks if t.cluster in clusters] if clusters else [t.name for t in tasks if t.held_out]
    if not chosen:
        raise ValueError(f"no registered task is held out (clusters {clusters or 'from held_out flags'}); "
                         f"pass --held-out-clusters (registered clusters: {', '.join(known)}) or --tasks")
    return chosen


def check_splits(names: Sequence[str], split: Optional[str], shots_split: Optional[str],
                 runs_shots_split: bool = False, runs_split: bool = False) -> None:
    """ValueError naming `--split` / `--shots-split` (the run's `evaluation.split` / `shots_split` when `runs_split` /
    `runs_shots_split`) for a task that lacks the split it asks for, before any task is scored (as a training config's
    evaluation section is checked)."""
    import task_registry

    for name in names:
        splits = list(task_registry.get_task(name).splits)
        for option, value, from_run in (("split", split, runs_split), ("shots-split", shots_split, runs_shots_split)):
            if value is not None and value not in splits:
                source = f"the run's evaluation.{option.replace('-', '_')}" if from_run else f"--{option}"
                hint = f" (pass --{option} SPLIT)" if from_run else ""
                raise ValueError(f"{source} {value!r}: task {name!r} has no such split; its splits are {splits}{hint}")


def check_rankable(names: Sequence[str], settings: Any, from_run: bool) -> None:
    """ValueError naming each task and template without answer_choices when `settings.scoring` is rank (the run's
    evaluation.scoring when `from_run`, else --scoring), before the model is loaded (as a training config's
    evaluation section is checked): rank classification cannot score such a template."""
    if settings.scoring != "rank":
        return
    from t2t_mtl.evaluation.selection import unrankable_message

    problem = unrankable_message(names, settings, "the run's evaluation.scoring rank" if from_run else "--scoring rank",
                                 "pass --scoring auto (rank where a template has choices, generation elsewhere) or "
                                 "--scoring generate")
    if problem:
        raise ValueError(problem)


def run_eval(args: argparse.Namespace) -> int:
    """Load, evaluate, write the report; print the Markdown summary. Returns the exit code.

    Under torchrun, a rank refused before the evaluation begins (exit 2, its error printed) first tells the other ranks
    (`report_failed_start`), which stop at once naming it (`refuse_failed_start`); a group joined here is left on
    exit."""
    import torch

    from t2t_mtl.engine.distributed import join_gloo_group, leave_process_group, report_failed_start

    joined_here = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    try:
        code = _run_eval(args)
        if code == 2:  # (a rank that joined already, the others past this check, only leaves the group)
            report_failed_start(join_gloo_group)
        return code
    finally:
        if joined_here:
            leave_process_group()


def _run_eval(args: argparse.Namespace) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    import task_registry
    from t2t_mtl.engine.distributed import join_gloo_group, refuse_failed_start
    from t2t_mtl.engine.rank_phases import CollectiveBrokenError, RanksAtDifferentPhasesError
    from t2t_mtl.evaluation import checkpoint_meta, load_checkpoint, read_report, to_markdown
    from t2t_mtl.evaluation.checkpoint import check_routing_device
    from t2t_mtl.evaluation.report import comparison_markdown, distinct_columns
    from t2t_mtl.launched_ranks import launched_rank
    from task_registry.bigbench import TEMPLATE_NAME as BIGBENCH_TEMPLATE

    invalid = below_one(args, ("num_beams", "max_new_tokens", "batch_size", "max_input_length",
                               *(("max_examples",) if args.max_examples != ALL_EXAMPLES else ()))) \
        or data_dir_problem(args.data_dir)
    if invalid:
        print(f"error: {invalid}", file=sys.stderr)
        return 2
    if args.shots is not None and args.shots < 0:
        print(f"error: --shots must be at least 0, got {args.shots}", file=sys.stderr)
        return 2
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    ignored = ignored_scoring_option(args)
    if args.shots_split is not None and args.shots == 0:
        ignored = "--shots-split names the split of k-shot demonstrations; with --shots 0 it is ignored"
    if args.held_out_clusters is not None and not args.held_out:
        ignored = "--held-out-clusters chooses the clusters of --held-out; with another task selection it is ignored"
    repeated = repeated_items(args.template or ())
    if repeated:
        ignored = f"--template names {', '.join(map(repr, repeated))} more than once; each template is scored once"
    if args.overwrite and not args.out:
        ignored = "--overwrite lets --out write into a non-empty folder; without --out DIR it is ignored"
    if args.keep_predictions and not args.out:
        ignored = "--keep-predictions stores every prediction in report.json, which only --out writes: give --out DIR"
    if (args.tasks_dir or args.task_modules) and args.bigbench:
        option = "--tasks-dir registers YAML" if args.tasks_dir else "--task-module registers Python"
        ignored = (f"{option} tasks for --tasks, --mixture or --held-out; --bigbench scores only the task.json tasks "
                   f"under its folder, so it would be ignored")
    if args.data_dir and args.bigbench:
        ignored = ("--data-dir locates hub datasets for --tasks, --mixture or --held-out; --bigbench tasks read their "
                   "own task.json files, so it would be ignored")
    if ignored:
        print(f"error: {ignored}", file=sys.stderr)
        return 2
    if args.data_dir:
        task_registry.set_data_dir(args.data_dir)
    meta: Mapping[str, Any] = {}
    try:
        if args.out:
            prepare_output_dir(args.out, "--out", create=False)  # before the evaluation; created by write_report
            if not args.overwrite:
                refuse_non_empty_dir(args.out, "--out")
        name = args.name or str(args.checkpoint)
        earlier = [read_report(path) for path in args.compare or []]
        try:
            others = distinct_columns(earlier, args.compare or [], [name])
        except ValueError as error:
            raise ValueError(f"--compare: {error}; give each report once (and another --name)") from None
        meta = checkpoint_meta(args.checkpoint)  # (the run's settings and tasks, checked before the model loads)
        run_data_dir = None if args.data_dir or args.bigbench else _run_data_dir(meta)
        if run_data_dir:  # (where the run read its hub datasets)
            task_registry.set_data_dir(run_data_dir)
        settings = eval_settings(args, meta)
        ignored = None if args.scoring else ignored_scoring_option(args, run_scoring=settings.scoring)
        if ignored:  # (an option against the run's own scoring; against --scoring given: refused above)
            raise ValueError(ignored)
        tasks = select_tasks(args, meta)
        run_bigbench = [name for name in run_bigbench_tasks(args, meta) if name not in tasks]
        tasks += run_bigbench
        if launched_rank() == 0:  # (a trained task reading a held-out task's data; two tasks reading the same data)
            from t2t_mtl.evaluation.shared_data import repeated_data_warnings, shared_data_warnings

            trained = shared_data_warnings(tasks, meta.get("tasks") or (), "choose the held-out tasks with "
                                           "--held-out-clusters or --tasks") if args.held_out else []
            repeated = [] if args.tasks else repeated_data_warnings(tasks, "choose the tasks with --tasks")
            for warning in trained + repeated:  # (tasks --tasks names together are the user's choice)
                print(f"warning: {warning}", file=sys.stderr)
        if args.template:  # (the run's BIG-bench tasks, which --held-out adds, keep their one template)
            settings = dataclasses.replace(settings, templates={name: list(args.template) for name in tasks
                                                                if name not in run_bigbench})
        check_splits(tasks, settings.split, settings.shots_split, args.shots_split is None, args.split is None)
        check_rankable(tasks, settings, args.scoring is None)
        with hidden_transformers_progress_bars(args.no_progress or launched_rank() != 0):  # as eval's own bar
            model, tokenizer, _ = load_checkpoint(args.checkpoint)
        model.to(device)
        check_routing_device(model, device, args.checkpoint)
        env = join_gloo_group()  # every rank ready, or told which one is not
        refuse_failed_start(env, "the evaluation", "an option, checkpoint, task or path", "checkpoint, tasks and paths")
        rank, world_size = env.rank, env.world_size
        taken = settings_from_run(args, meta, settings)
        if run_bigbench:
            own = (f", each scored with its one template {BIGBENCH_TEMPLATE}: --template chooses the other tasks' "
                   f"templates" if args.template else "")
            taken.append(f"--held-out's BIG-bench tasks {', '.join(run_bigbench)} (the run's evaluation.bigbench{own})")
        if taken and rank == 0:
            print(f"eval: from the run's config (an option given wins): {'; '.join(taken)}", file=sys.stderr)
        from t2t_mtl.evaluation import evaluate_tasks  # (imports transformers: not before the checks above)

        with logging_redirect_tqdm():  # (a warning while a task's bar is drawn: on a line of its own)
            report = evaluate_tasks(model, tokenizer, tasks, settings, name=name,
                                    rank=rank, world_size=world_size, progress=not args.no_progress)
        _note_tasks_a_task_folder_was_not_exported_for(report, model, meta)
    except (task_registry.TaskFileError, KeyError, ValueError, FileNotFoundError) as error:
        return fail(error, args.tasks_dir or _find_key(meta, "tasks_dir"))  # (the run's: registered, nothing to add)
    except (RanksAtDifferentPhasesError, CollectiveBrokenError) as error:  # (as train: ranks apart, or one gone)
        print(f"error: {error}", file=sys.stderr)
        return 1
    if rank != 0:
        return 0
    print(to_markdown(report))
    table = comparison_markdown(others + [report]) if others else None
    if table:
        print(table)
    if args.out:
        try:
            _write_out(report, table, args.out)
        except OSError as error:  # found only now: the folder is created once there is something to write
            print(f"error: {unwritten_output(error, '--out', args.out, 'the report')}; the scores are printed above",
                  file=sys.stderr)
            return 2
    return 0


def _note_tasks_a_task_folder_was_not_exported_for(report: Any, model: Any, meta: Mapping[str, Any]) -> None:
    """Add to `report`'s `unseen_tasks` each evaluated task other than the one an `export --task` folder's plain T5
    serves (its `meta`'s task: `implied_task`), which its sub-network answers, as the report names for the folder's
    MoE form (`--keep-moe`, whose layers route a task it does not know by its one task's gate row)."""
    from t2t_mtl.evaluation.predict import implied_task
    from t2t_mtl.model.task_routing import routing_task_id

    own = implied_task(model, meta)
    if own is None or routing_task_id(model, own) is not None:  # (a model of task ids: the report names those)
        return
    for task in report.tasks():
        if task != own:
            report.unseen_tasks[task] = f"the sub-network of task {own!r}, which this export --task folder serves"


def _write_out(report: Any, table: Optional[str], out: str) -> None:
    """Write the report (and the comparison table, if any) under `out`; say what was written."""
    from pathlib import Path

    from t2t_mtl.evaluation import write_report

    paths = write_report(report, out)
    print(f"wrote {paths['json']}, {paths['markdown']} and {counted(len(paths['plots']), 'plot')}")
    if table:
        (Path(out) / "comparison.md").write_text(table, encoding="utf-8")
