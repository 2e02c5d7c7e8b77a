"""`t2t-mtl mixture show NAME --sampler temperature --alpha 2 [--epochs E] [--plot rates.png] [--tasks-dir DIR]`,
`t2t-mtl mixture show --config CFG` and `t2t-mtl mixture overlap NAME (--eval TASKS | --held-out) [--n 13]`.

`show` prints every task's sampling probability (per epoch for schedules) next to the realised share of a
number of seeded draws, and optionally plots them; with `--config`, of the mixture and sampler a training config
trains with. `overlap` checks evaluation tasks for rows whose text also
occurs in the mixture's training rows (`task_registry.overlap`), saying on stderr, a line each, which split it
reads, indexes and compares (the report alone goes to stdout). NAME is a registered mixture, a task, or
comma-separated task names (as `data.tasks` lists them; with `--tasks-dir`, YAML tasks too).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Optional

from t2t_mtl.cli.common import (add_data_dir_option, add_task_module_option, add_tasks_dir_option,
                                data_dir_problem, fail, name_argument, path_argument)
from t2t_mtl.output_paths import prepare_output_file
from t2t_mtl.registration import register_tasks
from t2t_mtl.sampling import STRATEGIES, SamplingError, rates_over_epochs
from t2t_mtl.size_limits import MAX_SHOWN_DRAWS, MAX_SHOWN_EPOCHS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("mixture", help="inspect task mixtures")
    commands = parser.add_subparsers(dest="mixture_command", metavar="SUBCOMMAND")
    show = commands.add_parser("show", help="per-task sampling rates of a mixture (table and plot)")
    show.add_argument("name", nargs="?", help="a registered mixture (see `task_registry.list_mixtures()`), a task, or "
                                              "comma-separated task names")
    show.add_argument("--config", type=path_argument, metavar="CFG",
                      help="instead of NAME and the sampler options: the tasks, held-out rules, task registrations, "
                           "sizes (train rows capped at data.max_examples_per_task; with data.all_templates the "
                           "examples they render in each template, rendered as training renders them) and sampler "
                           "of this training config (a YAML file or packaged name, as `train` takes)")
    show.add_argument("--sampler", default=None, metavar="STRATEGY",
                      help=f"strategy: {', '.join(STRATEGIES)}, or one a --task-module registers (register_sampler); "
                           f"default explicit: the mixture's own, flattened, rates")
    show.add_argument("--alpha", type=float, help="temperature alpha (p ∝ n^(1/alpha))")
    show.add_argument("--cap", type=float, help="examples cap K (seqio `maximum`, applied after scale)")
    show.add_argument("--scale", type=float, help="multiply sizes before the cap (seqio `scale`)")
    show.add_argument("--template-cap", type=float, help="T0-style cap per template (sizes count templates)")
    show.add_argument("--dataset-cap", type=float, help="T0 dataset cap, split evenly over its templates")
    show.add_argument("--epochs", type=int, default=1,
                      help="epochs to tabulate (schedules change per epoch; default 1, at most 1000)")
    show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="any other sampler parameter (JSON value), e.g. --set warmup_epochs=3")
    show.add_argument("--split", type=name_argument, default="train",
                      help="split whose row counts are the task sizes (default train)")
    show.add_argument("--held-out-clusters", default=None, metavar="C1,C2",
                      help="drop the tasks of these clusters, as training drops data.held_out_clusters' (default: "
                           "none; the quickstart holds out comparison)")
    add_data_dir_option(show)
    add_tasks_dir_option(show)
    add_task_module_option(show)
    show.add_argument("--draws", type=int, default=100_000,
                      help="seeded draws per epoch for realised shares (default 100000; 0: none; at most 10**8)")
    show.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    show.add_argument("--plot", type=path_argument, help="write a PNG plot of the rates here")
    show.set_defaults(func=show_mixture)
    overlap = commands.add_parser("overlap", help="evaluation rows whose text also occurs in the mixture's training "
                                                  "data (n-gram contamination check)")
    overlap.add_argument("name", help="the training mixture: a registered mixture, a task, or comma-separated tasks")
    which = overlap.add_mutually_exclusive_group(required=True)
    which.add_argument("--eval", dest="eval_tasks", help="comma-separated tasks to check")
    which.add_argument("--held-out", action="store_true", help="every registered task flagged held_out")
    overlap.add_argument("--n", type=int, default=13, help="words per n-gram (default 13, as GPT-3's study)")
    overlap.add_argument("--min-words", type=int, default=8,
                         help="a field shorter than n words counts whole when it has at least this many (default 8)")
    overlap.add_argument("--train-split", type=name_argument, default="train",
                         help="the training tasks' split (default: train)")
    overlap.add_argument("--eval-split", type=name_argument,
                         help="the evaluated split (default: validation, else test, else the last)")
    overlap.add_argument("--max-rows", type=int, help="read at most this many rows per split (default: all)")
    overlap.add_argument("--json", type=path_argument, help="also write the report as JSON here")
    add_data_dir_option(overlap)
    add_tasks_dir_option(overlap)
    add_task_module_option(overlap)
    overlap.set_defaults(func=show_overlap)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def show_mixture(args: argparse.Namespace) -> int:
    import task_registry

    try:
        for flag, least in (("draws", 0), ("epochs", 1), ("seed", 0)):  # before the sampler names its own keys
            if getattr(args, flag) < least:
                raise ValueError(f"--{flag} must be >= {least}, got {getattr(args, flag)}")
        for flag, most, why in (("draws", MAX_SHOWN_DRAWS, "more draws cannot move a share printed to 4 decimals"),
                                ("epochs", MAX_SHOWN_EPOCHS, "the table has a column per epoch")):
            if getattr(args, flag) > most:
                raise ValueError(f"--{flag} must be at most {most} ({why}; t2t_mtl.size_limits), got "
                                 f"{getattr(args, flag)}")
        refused = config_conflict(args) or data_dir_problem(args.data_dir)
        if refused:
            raise ValueError(refused)
        if args.config is None and args.sampler is None:
            args.sampler = "explicit"  # (None: not given, which --config needs to tell)
        if args.data_dir:
            task_registry.set_data_dir(args.data_dir)
        if args.plot:
            prepare_output_file(args.plot, "--plot", "rates.png")
            check_plot_format(args.plot)
        task_registry.load_builtin_tasks()
        counted, warnings = "rows", []
        if args.config is not None:
            args.name, tasks, sizes, config, counted, dropped, warnings = config_mixture(args.config, args.data_dir)
        else:
            register_tasks(args.tasks_dir, args.task_modules)  # (a --task-module may register --sampler)
            unused = unused_parameter_option(args)
            if unused:
                raise ValueError(unused)
            rates = shown_rates(args.name, args.held_out_clusters)
            dropped = [name for name in shown_mixture(args.name).flatten() if name not in rates]
            tasks = {name: task_registry.get_task(name) for name in rates}
            sizes = {name: task.num_rows(args.split) for name, task in tasks.items()}
            config = sampler_config(args, rates, {name: len(task.templates) for name, task in tasks.items()})
        table = rates_over_epochs(config, sizes, args.epochs, seed=args.seed, draws=args.draws)
    except SamplingError as err:  # (keys of the config's sampling section stay as written with --config)
        print(f"error: {str(err) if args.config else as_typed(str(err), args)}", file=sys.stderr)
        return 2
    except (task_registry.TaskRegistryError, ValueError, KeyError) as err:
        return fail(err, args.tasks_dir)
    for warning in warnings:  # (as `train` warns of them)
        print(f"warning: {warning}", file=sys.stderr)
    print(format_table(args.name, config, sizes, table, counted))
    if dropped:
        print(held_out_cluster_note(dropped))
    flagged = [name for name, task in tasks.items() if task.held_out]
    if flagged:
        print(held_out_note(flagged, from_config=args.config is not None))
    if args.plot:
        plot_rates(table, f"{args.name}: {config['strategy']}", args.plot)
        print(f"plot written to {args.plot}")
    return 0


def held_out_cluster_note(dropped: list[str]) -> str:
    """The line under the table naming the mixture's tasks that a held-out cluster keeps out of it (not in the
    table: a run never draws them), with their clusters."""
    import task_registry

    clusters = sorted({task_registry.get_task(name).cluster for name in dropped})
    return f"held out with their cluster ({', '.join(clusters)}), never drawn: {', '.join(dropped)}"


def held_out_note(flagged: list[str], from_config: bool) -> str:
    """The line under the table naming the shown tasks flagged held_out: a config's run trains them (its
    data.train_held_out names them, or its checks would have refused them); a mixture's run would not unless told."""
    why = ("trained deliberately, as the config's data.train_held_out says" if from_config else
           "a run drops them with their cluster (data.held_out_clusters; --held-out-clusters here) or trains them only "
           "where data.train_held_out names them")
    return f"flagged held_out: {', '.join(flagged)} — {why}"


def show_overlap(args: argparse.Namespace) -> int:
    """Print, per evaluated task, the rows sharing an n-gram with the mixture's training rows
    (`task_registry.overlap`)."""
    import task_registry
    from t2t_mtl.evaluation.selection import default_split
    from task_registry.overlap import find_overlap

    try:
        problem = data_dir_problem(args.data_dir)
        if problem:
            raise ValueError(problem)
        if args.data_dir:
            task_registry.set_data_dir(args.data_dir)
        if args.json:
            prepare_output_file(args.json, "--json", "overlap.json")
        for flag in ("n", "min_words", "max_rows"):
            if getattr(args, flag) is not None and getattr(args, flag) < 1:
                raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
        task_registry.load_builtin_tasks()
        register_tasks(args.tasks_dir, args.task_modules)
        training = [task_registry.get_task(name) for name in shown_mixture(args.name).flatten()]
        if args.held_out:
            evaluated = [task_registry.get_task(name) for name in task_registry.list_tasks()
                         if task_registry.get_task(name).held_out]
        else:
            names = task_registry.comma_separated(args.eval_tasks, "--eval", "task names")
            evaluated = [task_registry.get_task(name) for name in names]
        if not evaluated:
            raise ValueError("no task to check: name them with --eval, or register tasks flagged held_out")
        reports = find_overlap([(task, args.eval_split or default_split(task)) for task in evaluated], training,
                               n=args.n, min_words=args.min_words, train_split=args.train_split,
                               max_rows=args.max_rows, progress=_progress_line)
    except (task_registry.TaskRegistryError, ValueError, KeyError) as err:
        return fail(err, args.tasks_dir)
    print(f"rows sharing a {args.n}-word sequence (normalised; whole fields of {args.min_words}+ words when shorter) "
          f"with the {args.train_split} rows of {args.name!r}")
    width = max(4, *(len(r.task) for r in reports))
    print(f"{'task':<{width}}  {'split':<10}  {'rows':>7}  {'overlap':>7}  {'share':>6}  training tasks")
    for r in reports:
        tasks = ", ".join(f"{name} {count}" for name, count in sorted(r.training_tasks.items(), key=lambda kv: -kv[1]))
        print(f"{r.task:<{width}}  {r.split:<10}  {r.rows:>7}  {r.overlapping:>7}  {100 * r.share:>5.1f}%  "
              f"{tasks or '-'}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"mixture": args.name, "n": args.n, "min_words": args.min_words,
                       "train_split": args.train_split,
                       "tasks": [{**vars(r), "share": r.share} for r in reports]}, handle, indent=1)
    return 0


def _progress_line(line: str) -> None:
    """A progress line of `overlap` on stderr, flushed at once (stdout carries the report alone)."""
    print(line, file=sys.stderr, flush=True)


def shown_mixture(name: str) -> Any:
    """The registered mixture `name`, else a mixture of one task or of comma-separated names (rate 1 each);
    an unknown name raises the registry's error with close matches."""
    import task_registry

    target = task_registry.resolve_selection(name, "NAME")
    return target if isinstance(target, task_registry.Mixture) else task_registry.Mixture(name, [target.name])


def shown_rates(name: str, held_out_clusters: Optional[str]) -> dict[str, float]:
    """The flattened rates of `shown_mixture(name)` without the tasks of the comma-separated `held_out_clusters`
    (`task_registry.training_rates`, as a run drops `data.held_out_clusters`); a cluster no task is in is an error
    (`refuse_unknown_held_out_clusters`, as a run's)."""
    import task_registry
    from t2t_mtl.engine.held_out import refuse_unknown_held_out_clusters

    clusters = ([] if held_out_clusters is None
                else task_registry.comma_separated(held_out_clusters, "--held-out-clusters", "clusters"))
    refuse_unknown_held_out_clusters(clusters, where="--held-out-clusters")  # a typo would hold nothing out
    mixture = shown_mixture(name)
    if not clusters:
        return mixture.flatten()
    return task_registry.training_rates(mixture, held_out_clusters=clusters, force=True)


#: the sampler parameters `show` takes as options of their own (option dest = parameter name)
PARAMETER_OPTIONS = ("alpha", "cap", "scale", "template_cap", "dataset_cap")


def unused_parameter_option(args: argparse.Namespace) -> Optional[str]:
    """Why a parameter option given (`--alpha`, `--cap`, ...) is not one `--sampler` takes, naming the samplers that
    take it (None: every one given is taken, or `--sampler` names no strategy, which building it reports)."""
    for key in PARAMETER_OPTIONS:
        if getattr(args, key) is not None and args.sampler in STRATEGIES and key not in STRATEGIES[args.sampler].PARAMS:
            takers = ", ".join(name for name, cls in sorted(STRATEGIES.items()) if key in cls.PARAMS)
            default = " (the default: the mixture's own rates)" if args.sampler == "explicit" else ""
            return (f"--{key.replace('_', '-')} is a parameter of --sampler {takers}; --sampler {args.sampler}"
                    f"{default} has none: choose one of those samplers, or drop the option")
    return None


def as_typed(message: str, args: argparse.Namespace) -> str:
    """A sampler's error `message` with each config key it names (`sampling.alpha`) written as the option that sets
    it here: `--set alpha` where a `--set` gave it, else its own option (`--alpha`, `--epochs` for the annealed
    schedule's epochs), else `--set KEY` (the only way to set a key without an option of its own). A dotted name
    ending in `sampling.NAME` (the module path `t2t_mtl.sampling.register_sampler`) is no config key and stays."""
    set_keys = {item.partition("=")[0] for item in args.set}

    def typed(match: re.Match) -> str:
        key = match.group(1)
        if key not in set_keys and key in (*PARAMETER_OPTIONS, "epochs"):
            return f"--{key.replace('_', '-')}"
        return f"--set {key}"

    return re.sub(r"(?<![\w.])sampling\.(\w+)", typed, message)  # (not a module path: t2t_mtl.sampling.NAME)


def config_conflict(args: argparse.Namespace) -> Optional[str]:
    """Why NAME and the options that describe a mixture or sampler cannot be given with `--config` (which takes them
    from the config), or why NAME is missing without it; None when neither."""
    if args.config is None:
        return None if args.name else "give a mixture NAME (or --config CFG: a training config's mixture)"
    options = {**{key: f"--{key.replace('_', '-')}" for key in ("sampler", *PARAMETER_OPTIONS, "held_out_clusters",
                                                                "tasks_dir")}, "task_modules": "--task-module"}
    given = [option for key, option in options.items() if getattr(args, key) is not None]
    given += ["--set"] * bool(args.set) + ["--split"] * (args.split != "train") + ["NAME"] * bool(args.name)
    if not given:
        return None
    return (f"--config takes the mixture, sampler, held-out clusters and task registrations from the training config; "
            f"drop {', '.join(given)} (or drop --config)")


def config_mixture(path: str, data_dir: Optional[str]
                   ) -> tuple[str, dict[str, Any], dict[str, int], dict[str, Any], str, list[str], list[str]]:
    """(name, tasks, sizes, sampler config, what the sizes count, held out, warnings) of the training config at `path`:
    the tasks and rates `train` trains (`training_rates`: registrations, held-out rules and their checks), each task's
    train rows capped at `data.max_examples_per_task` ("rows"; with `data.all_templates` the examples each row renders
    in each of its templates, "examples": the rows are rendered as training renders them, so a template that skips
    rows counts and is rated at its own examples, `with_template_sizes`), the sampler config `train` builds
    (`run_sampling_config`), the registered tasks of `data.held_out_clusters` (the selection's first), which a run
    never draws, and `train`'s warnings of its sampling (`sampling_warnings`: rates the sampler does not draw by) and
    of the data its evaluation section scores (`evaluated_data_warnings`: a held-out task's data trained on, two
    held-out tasks over one dataset). `data_dir` (--data-dir) replaces the config's data.data_dir."""
    import task_registry
    from t2t_mtl.config import load_config
    from t2t_mtl.engine.evaluated_data import evaluated_data_warnings
    from t2t_mtl.engine.idle_settings import sampling_warnings
    from t2t_mtl.engine.run_mixture import training_rates
    from t2t_mtl.engine.run_sampling import run_sampling_config, with_template_sizes
    from t2t_mtl.engine.validation import evaluation_plan

    cfg = load_config(path)
    if data_dir is not None:
        cfg.data.data_dir = data_dir
    rates = training_rates(cfg)
    tasks = {name: task_registry.get_task(name) for name in rates}
    sampling_cfg = run_sampling_config(cfg, rates)
    title = f"{cfg.data.mixture or 'data.tasks'} of {path}"
    cap = cfg.data.max_examples_per_task
    selected = [cfg.data.mixture] if cfg.data.mixture else list(cfg.data.tasks or ())  # (data.tasks may name mixtures)
    named = dict.fromkeys([*(task for name in selected for task in shown_mixture(name).flatten()),
                           *task_registry.list_tasks()])  # (the held-out evaluation scores every registered one)
    dropped = [name for name in named
               if name not in rates and task_registry.get_task(name).cluster in cfg.data.held_out_clusters]
    warnings = sampling_warnings(cfg) + evaluated_data_warnings(cfg, evaluation_plan(cfg)[0], list(rates))
    if not cfg.data.all_templates:
        sizes = {name: task.num_rows("train") if cap is None else min(task.num_rows("train"), cap)
                 for name, task in tasks.items()}
        return title, tasks, sizes, sampling_cfg, "rows", dropped, warnings
    per_template = rendered_template_sizes(cfg, list(tasks))
    sizes = {name: sum(counts.values()) for name, counts in per_template.items()}
    return (title, tasks, sizes, with_template_sizes(cfg, sampling_cfg, per_template), "examples", dropped, warnings)


def rendered_template_sizes(cfg: Any, task_names: list[str]) -> dict[str, dict[str, int]]:
    """{task: {template: examples}} of each of `task_names`' train rows (`data.max_examples_per_task` of them)
    rendered in every template it trains with, as a `data.all_templates` run of `cfg` renders them."""
    import task_registry
    from t2t_mtl.engine.training_templates import training_template_names

    names, sizes = training_template_names(cfg, task_names), {}
    for name in task_names:
        task = task_registry.get_task(name)
        task.to_dataset("train", templates=cfg.data.templates, every_template=True,
                        max_examples=cfg.data.max_examples_per_task, seed=cfg.training.seed)
        sizes[name] = task.render_stats["train"].kept_of(names[name])
    return sizes


def sampler_config(args: argparse.Namespace, rates: dict[str, float], templates: dict[str, int]) -> dict[str, Any]:
    """The sampler config dict that the flags describe."""
    config: dict[str, Any] = {"strategy": args.sampler}
    if args.sampler == "explicit":
        config["rates"] = rates
    for key in PARAMETER_OPTIONS:
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    if args.template_cap is not None or args.dataset_cap is not None:
        config["templates"] = templates
    if args.sampler == "annealed":
        config["epochs"] = args.epochs
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
    return config


def format_table(name: str, config: dict[str, Any], sizes: dict[str, int], table: dict[str, Any],
                 counted: str = "rows") -> str:
    """The rates table: each task's size (`counted`: what it counts, the column's heading) and probabilities."""
    shown = {k: v for k, v in config.items() if k not in ("rates", "templates", "template_sizes")}
    epochs = table["epochs"]
    width = max(4, *(len(t) for t in table["tasks"]))
    header = f"{'task':<{width}}  {counted:>10}  " + "  ".join(f"{'p e=' + str(e + 1):>8}" for e in epochs)
    if any(table["realised"].values()):
        header += "  " + "  ".join(f"{'real e=' + str(e + 1):>10}" for e in epochs)
    lines = [f"mixture {name!r}, sampler {json.dumps(shown)}", "probabilities are normalised (sum 1); "
             "'real' is the share of seeded draws", header]
    for task in table["tasks"]:
        row = f"{task:<{width}}  {sizes[task]:>10}  " + "  ".join(f"{p:>8.4f}" for p in table["probabilities"][task])
        if table["realised"][task]:
            row += "  " + "  ".join(f"{r:>10.4f}" for r in table["realised"][task])
        lines.append(row)
    return "\n".join(lines)


def check_plot_format(path: str) -> None:
    """ValueError naming `--plot` when matplotlib cannot write a file of `path`'s extension (no extension: PNG)."""
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = Path(path).suffix.lower().lstrip(".")
    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix and suffix not in formats:  # (was matplotlib's ValueError traceback, once the rates were computed)
        raise ValueError(f"--plot {path}: a .{suffix} file cannot hold a plot; end the name with .png (or one of "
                         f"{', '.join('.' + name for name in sorted(formats))})")


def plot_rates(table: dict[str, Any], title: str, path: str) -> None:
    """Bar chart of the probabilities (one epoch) or one line per task over epochs, saved at `path` in the format of
    its extension, as PNG without one (folders created)."""
    from t2t_mtl.figures import figure_and_axes

    tasks, epochs = table["tasks"], [e + 1 for e in table["epochs"]]
    fig, ax = figure_and_axes((max(6.0, 0.4 * len(tasks)) if len(epochs) == 1 else 7.0, 4.5))
    if len(epochs) == 1:
        ax.bar(range(len(tasks)), [table["probabilities"][t][0] for t in tasks])
        ax.set_xticks(range(len(tasks)), tasks, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("sampling probability")
    else:
        for task in tasks:
            ax.plot(epochs, table["probabilities"][task], marker="o", label=task)
        ax.set_xticks(epochs)
        ax.set_xlabel("epoch")
        ax.set_ylabel("sampling probability")
        if len(tasks) <= 20:
            ax.legend(fontsize=7, ncol=2)
    ax.set_title(title)
    fig.tight_layout()
    # (a name without an extension is a PNG written under that name: matplotlib alone would append .png to it)
    fig.savefig(prepare_output_file(path, "--plot", "rates.png"), dpi=100, format=None if Path(path).suffix else "png")
