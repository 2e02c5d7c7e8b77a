"""The `t2t-mtl` command line.

Each module in this package that defines `register(subparsers)` adds one command group; the module is
discovered here, so a new command is a new file. A command's parser sets `func(args) -> int`.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import sys
from typing import NoReturn, Optional, Sequence

from t2t_mtl.cli.data_dir_scope import data_dir_for_command
from t2t_mtl.cli.progress_bars import datasets_bars_for_command
from t2t_mtl.config_errors import LaunchEnvironmentError
from t2t_mtl.dependency_floors import unmet_requirements
from t2t_mtl.timeout_variables import deepspeed_timeout_minutes


class CommandLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors (a missing, unknown or mistyped option) are one line in the form of
    every command's own errors, `error: ...`, pointing at `--help`; its subcommand parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")

    def parse_known_args(self, args: Optional[Sequence[str]] = None, namespace: Optional[argparse.Namespace] = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        """argparse's, noting on the namespace the innermost (sub)command parser that left arguments unparsed."""
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and not hasattr(namespace, _EXTRAS_PARSER):
            setattr(namespace, _EXTRAS_PARSER, self)
        return namespace, extras

    def parse_args(self, args: Optional[Sequence[str]] = None,
                   namespace: Optional[argparse.Namespace] = None) -> argparse.Namespace:
        """argparse's, with unrecognized arguments reported by the subcommand they were given to, so the error
        points at that subcommand's --help (which lists its options), not the top-level one."""
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            getattr(namespace, _EXTRAS_PARSER).error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace


#: namespace attribute naming the parser whose arguments were left unrecognized (set only on the way to an error)
_EXTRAS_PARSER = "_t2t_mtl_extras_parser"


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every discovered command group."""
    parser = CommandLineParser(prog="t2t-mtl", description="Text-to-text unified multitask learning.")
    # The `deepspeed` launcher passes `--local_rank=N` before the command (`-m t2t_mtl --local_rank=0 train
    # ...`); the rank is read from the LOCAL_RANK variable it also sets, so the flag is accepted and ignored.
    parser.add_argument("--local_rank", "--local-rank", dest="launcher_local_rank", type=int, default=None,
                        help=argparse.SUPPRESS)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


#: exit code of a command whose output's reader left before the end (`t2t-mtl tasks list | head`): 128 + SIGPIPE,
#: what a command killed by that signal returns
SIGPIPE_EXIT = 128 + 13


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the console script (`argv` None: the process's own arguments); runs the command with datasets'
    progress bars hidden unless it decides itself (`datasets_bars_for_command`: for the process, or with `argv` for
    the command only) and with its data dir (`--data-dir`) set for the command alone (`data_dir_for_command`), and
    returns the process exit code (130, with one line on stderr, for a Ctrl-C that a command does not handle itself
    or that comes while the command line is read;
    1 or 2, with one line, for a storage failure while writing: a full disk, a read-only or forbidden place;
    `SIGPIPE_EXIT`, silently, when the reader of the output left)."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except ModuleNotFoundError as err:
        return _refuse_missing_module(err)
    except KeyboardInterrupt:  # (the command modules' imports and an option's conversion take a second)
        print("error: aborted (Ctrl-C) while t2t-mtl read its command line", file=sys.stderr)
        return 130
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    unmet = unmet_requirements()
    if unmet:  # an environment that held older versions, t2t-mtl installed into it without pip resolving them
        print("\n".join(f"error: {problem}" for problem in unmet), file=sys.stderr)
        return 2
    try:
        deepspeed_timeout_minutes()  # (DeepSpeed reads it, with int(), as a command first imports it)
    except LaunchEnvironmentError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        with datasets_bars_for_command(args, whole_process=argv is None), data_dir_for_command():
            code = int(args.func(args) or 0)  # (datasets' bar per split loaded or mapped is noise)
        sys.stdout.flush()  # (a reader that left is found here, not in the interpreter's last flush)
        return code
    except ModuleNotFoundError as err:  # one the command imports when it runs (torch, datasets, ...)
        return _refuse_missing_module(err)
    except KeyboardInterrupt:  # `train` handles its own (a first Ctrl-C in training saves a checkpoint)
        print(f"error: aborted (Ctrl-C) during t2t-mtl {args.command}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of the output left (`| head`): stop quietly, as SIGPIPE would have
        _discard_stdout()
        return SIGPIPE_EXIT
    except OSError as err:
        if err.errno not in _STORAGE_ERRNOS:
            raise
        print(storage_error_line(args.command, err), file=sys.stderr)
        return _STORAGE_ERRNOS[err.errno][0]


#: the packages of this project: a module of theirs missing is a fault of the installation, not of the environment
_OWN_PACKAGES = ("t2t_mtl", "task_registry")


def _refuse_missing_module(err: ModuleNotFoundError) -> int:
    """Exit code 2 after the `error:` lines for a package a command imports that this Python cannot import: the
    unmet requirements where the installed distribution's metadata names them, else `missing_module_line`. A module
    of t2t-mtl's own missing, or one without a name, is raised again."""
    if not err.name or err.name.split(".")[0] in _OWN_PACKAGES:
        raise err
    lines = [f"error: {problem}" for problem in unmet_requirements()] or [missing_module_line(err)]
    print("\n".join(lines), file=sys.stderr)
    return 2


def missing_module_line(err: ModuleNotFoundError) -> str:
    """One `error:` line for a package the command's modules import that this Python cannot import (`err.name`
    set): which one and which Python, as a rank started on a node without the job's environment meets it."""
    package = err.name.split(".")[0]
    return (f"error: t2t-mtl cannot import {package} ({err}) in the Python it was started with, {sys.executable}: "
            f"start it with the Python of the environment t2t-mtl is installed in (on a cluster, the same environment "
            f"on every node), or install {package} there")


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that the output still buffered for a reader that left is dropped at exit
    instead of raising again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # a stdout without a file descriptor (captured): nothing is flushed to a pipe
        pass


#: storage failures a command meets while it writes: errno → (exit code, what to do). A full disk or quota is the
#: work failing (1); a read-only or forbidden place is a bad output option (2)
_STORAGE_ERRNOS = {errno.ENOSPC: (1, "free disk space"), errno.EDQUOT: (1, "free space within your disk quota"),
                   errno.EROFS: (2, "choose a folder on a writable disk"),
                   errno.EACCES: (2, "fix its permissions or choose another path"),
                   errno.EPERM: (2, "fix its permissions or choose another path")}


def storage_error_line(command: str, err: OSError) -> str:
    """One `error:` line for a storage failure `err` of `t2t-mtl command`: what, where, and what to do."""
    where = f": {err.filename}" if err.filename else ""
    remedy = _STORAGE_ERRNOS[err.errno][1]
    return f"error: t2t-mtl {command}: {err.strerror or err}{where} ({remedy}, then run it again)"
