"""Options shared by several commands (no command of its own)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from t2t_mtl.wording import counted

TASKS_DIR_HELP = "a folder of YAML task files to register on top of the built-in tasks (repeatable)"
TASK_MODULE_HELP = ("a Python module that registers tasks or mixtures when imported: a module name (on sys.path, "
                    "PYTHONPATH, or in the working directory) or a .py file's path (repeatable; imported before the "
                    "--tasks-dir folders)")


DATA_DIR_HELP = "local copies of the hub datasets: <hub path>/<config or default>/<split>.jsonl under DIR"


def path_argument(value: str) -> str:
    """The argparse `type` of an argument naming a file or folder: `value` as given; an empty or blank one is refused
    (as a path it would be read as the working directory, or as no path at all)."""
    if not value.strip():
        raise argparse.ArgumentTypeError(f"{value!r} is an empty path; name the file or folder (`.` for the working "
                                         f"directory)")
    return value


def name_argument(value: str) -> str:
    """The argparse `type` of an argument naming a split, cluster or type: `value` as given; an empty or blank one is
    refused (it would be read as the argument not given)."""
    if not value.strip():
        raise argparse.ArgumentTypeError(f"{value!r} is empty; give a name, or leave the option out for its default")
    return value


def comma_list_argument(option: str, what: str, item: Callable[[str], Any] = str) -> Callable[[str], list[Any]]:
    """The argparse `type` of `option`, a comma-separated list of `what`: its items as `task_registry.comma_separated`
    reads them (no item empty), each converted by `item`; an empty item, or one that `item` refuses with a
    ValueError, is an error naming `option` and the value. task_registry is imported on the first conversion."""
    def parse(text: str) -> list[Any]:
        import task_registry

        try:
            items = task_registry.comma_separated(text, option, what)
        except task_registry.TaskDefinitionError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        try:
            return [item(value) for value in items]
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{option} {text!r}: {error}; give comma-separated {what}") from None

    return parse


def add_data_dir_option(parser: argparse.ArgumentParser, default: Any = None,
                        fallback: str = "$T2T_MTL_DATA_DIR") -> None:
    """Add `--data-dir DIR`, explained alike by every command; `fallback` says what is read without it."""
    parser.add_argument("--data-dir", type=path_argument, default=default, metavar="DIR",
                        help=f"{DATA_DIR_HELP} (default: {fallback})")


def add_tasks_dir_option(parser: argparse.ArgumentParser, default: Any = None, dest: str = "tasks_dir",
                         help_text: str = TASKS_DIR_HELP) -> None:
    """Add `--tasks-dir DIR`, repeatable (a list of folders in `dest`, registered by `registration.register_tasks`)."""
    parser.add_argument("--tasks-dir", type=path_argument, action="append", default=default, dest=dest, metavar="DIR",
                        help=help_text)


def add_task_module_option(parser: argparse.ArgumentParser, default: Any = None, dest: str = "task_modules",
                           help_text: str = TASK_MODULE_HELP) -> None:
    """Add `--task-module MODULE`, repeatable (a list in `dest`, imported by `registration.register_tasks`)."""
    parser.add_argument("--task-module", action="append", default=default, dest=dest, metavar="MODULE",
                        help=help_text)


def data_dir_problem(data_dir: Optional[str]) -> Optional[str]:
    """Why `--data-dir` cannot be read (None: it can, or it was not given), naming the option: every command that
    takes it refuses a path that is no folder before anything else, even where the tasks it selects read no data (a
    typo would otherwise pass unseen until a task reads the hub's copy, or not at all); for the runs `train` and
    `affinity transfer` start, the config's check would name the key `data.data_dir` once a run starts."""
    if data_dir is None or Path(data_dir).is_dir():
        return None
    state = "is a file" if Path(data_dir).exists() else "does not exist"
    return f"--data-dir {data_dir} {state}: name the folder holding <hub path>/<config or default>/<split>.jsonl"


def below_one(args: argparse.Namespace, keys: Sequence[str]) -> Optional[str]:
    """The error for the first option of `keys` (argparse dests; None: not given) set below 1, or None."""
    for key in keys:
        value = getattr(args, key)
        if value is not None and value < 1:
            return f"--{key.replace('_', '-')} must be at least 1, got {value}"
    return None


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """Add `--device` (resolved by `resolve_device`)."""
    parser.add_argument("--device", default="auto",
                        help="where the model runs: auto (default: this rank's GPU, cuda:$LOCAL_RANK, where CUDA is "
                             "available, else the CPU), cpu, cuda (this rank's GPU) or cuda:N")


def add_decoding_options(parser: argparse.ArgumentParser, batch_unit: str) -> None:
    """Add the options of how a model scores and decodes — `--length-norm`, `--num-beams`, `--max-new-tokens`,
    `--batch-size` (`batch_unit` per forward pass), `--max-input-length` — and `--device`. All but `--device` default
    to None: `decoding_settings` fills them in from the run's own evaluation settings."""
    parser.add_argument("--length-norm", action=argparse.BooleanOptionalAction, default=None,
                        help="rank by the mean (not the sum) of a choice's token log-probabilities (default: the "
                             "run's evaluation.length_normalize, else the sum)")
    parser.add_argument("--num-beams", type=int, default=None,
                        help="beam width for generation, 1 = greedy (default: the run's evaluation.num_beams, else 1)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="generation length limit (default: the run's own, evaluation.max_new_tokens else "
                             "data.max_target_length; 64 for a model folder)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"{batch_unit} per forward pass (default: the run's evaluation.batch_size, else 16; a "
                             f"token-routed MoE model with a capacity answers by its batches)")
    parser.add_argument("--max-input-length", type=int, default=None,
                        help="inputs are truncated to this many tokens (default: the run's own evaluation limit, "
                             "evaluation.max_input_length else data.max_input_length; 512 for a model folder)")
    add_device_option(parser)


def decoding_settings(args: argparse.Namespace, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The options of `add_decoding_options` (but `--device`) as `EvalSettings` / `predict` keywords: each one
    given, else what the checkpoint's run (`meta`) evaluated with (`t2t_mtl.evaluation.run_settings.run_setting`)."""
    from t2t_mtl.evaluation.run_settings import run_setting

    given = {"length_normalize": args.length_norm, "num_beams": args.num_beams, "max_new_tokens": args.max_new_tokens,
             "batch_size": args.batch_size, "max_input_length": args.max_input_length}
    return {field: run_setting(meta, field) if value is None else value for field, value in given.items()}


def resolve_device(name: str) -> Any:
    """The `torch.device` of a `--device` value (auto and a bare cuda: this rank's GPU, cuda:$LOCAL_RANK wrapped over
    the GPUs); ValueError naming `--device` for one this machine lacks."""
    import os

    import torch

    if name == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if name in ("auto", "cuda") and torch.cuda.is_available():  # (cuda bare: this rank's GPU, not every rank's cuda:0)
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r}: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name!r}: CUDA is not available on this machine; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name!r}: this machine has {counted(torch.cuda.device_count(), 'CUDA device')}")
    return device


def ignored_scoring_option(args: argparse.Namespace, run_scoring: Optional[str] = None) -> Optional[str]:
    """Why an option of `eval` / `predict` would have no effect with the chosen `--scoring`, else (none given) with
    `run_scoring`, the run's `evaluation.scoring` that `eval` scores with then (None: none would)."""
    scoring = args.scoring or run_scoring
    chosen = (f"--scoring {scoring}" if args.scoring
              else f"the run's evaluation.scoring: {scoring} (--scoring overrides it)")
    if args.length_norm and scoring == "generate":
        return f"--length-norm changes how answer choices are ranked; it has no effect with {chosen}"
    if (args.num_beams or 1) > 1 and scoring == "rank":
        return f"--num-beams sets the beam width of generation; it has no effect with {chosen}"
    if args.max_new_tokens is not None and scoring == "rank":
        return f"--max-new-tokens limits generation; it has no effect with {chosen}"
    if getattr(args, "choices", None) is not None and args.scoring == "generate":
        return "--choices are ranked by log-likelihood; with --scoring generate they would be ignored"
    return None


def error_text(error: Exception, tasks_dir: Union[None, str, Sequence[str]]) -> str:
    """`str(error)`; for an unknown task (or mixture) while no `--tasks-dir` was given, with the note that a YAML
    task file's task is registered by `--tasks-dir`."""
    import task_registry

    unknown = isinstance(error, (task_registry.UnknownTaskError, task_registry.UnknownMixtureError))
    note = ("; a YAML task file's task is registered by --tasks-dir FOLDER (a Python module's by --task-module "
            "MODULE)") if unknown and not tasks_dir else ""
    return f"{error}{note}"


def error_lines(error: Union[Exception, str], tasks_dir: Union[None, str, Sequence[str]] = None) -> list[str]:
    """What follows `error: ` on each stderr line of a command that failed on `error`: one line per problem of YAML
    task files (`TaskFileError.errors`; its own text lists them under a header, indented), else
    `error_text(error, tasks_dir)`."""
    import task_registry

    if isinstance(error, task_registry.TaskFileError):
        return list(error.errors)
    return [error_text(error, tasks_dir)]


def fail(error: Union[Exception, str], tasks_dir: Union[None, str, Sequence[str]] = None) -> int:
    """Print `error` to stderr as `error: ` lines (`error_lines`) and return 2, the exit code of bad input."""
    print("\n".join(f"error: {line}" for line in error_lines(error, tasks_dir)), file=sys.stderr)
    return 2
