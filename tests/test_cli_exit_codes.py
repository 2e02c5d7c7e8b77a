"""One exit-code rule for every `t2t-mtl` command: bad user input (options, config, files, task names) exits 2
with a one-line message on stderr naming the bad thing, never a traceback (README, "Exit codes"), and one prefix,
`error: `, whichever command wrote it."""
from __future__ import annotations

import dataclasses
import errno
import os
import signal
import sys

import pytest

from t2t_mtl.cli import main

MISSING = "/no/such/t2t-input"


@pytest.mark.parametrize("argv, named", [
    (["train", f"{MISSING}.yaml"], f"{MISSING}.yaml"),
    (["eval", "--checkpoint", MISSING, "--tasks", "parity"], MISSING),
    (["predict", "--checkpoint", MISSING, "some text"], MISSING),
    (["export", MISSING, "--out", "{tmp}/out"], MISSING),
    (["merge", MISSING, f"{MISSING}-ft", "--out", "{tmp}/out"], MISSING),
    (["compare", MISSING, f"{MISSING}-2"], MISSING),
    (["mixture", "show", "no_such_mixture"], "no_such_mixture"),
    (["mixture", "overlap", "procedural", "--eval", "no_such_task"], "no_such_task"),
    (["tasks", "show", "no_such_task"], "no_such_task"),
    (["tasks", "preview", "parity", "-n", "0"], "-n"),
    (["tasks", "validate", f"{MISSING}.yaml"], f"{MISSING}.yaml"),
    (["tokenizer", "train", "--mixture", "no_such_mixture", "--out", "{tmp}/tok"], "no_such_mixture"),
    (["affinity", "transfer", "--tasks", "parity,no_such_task", "--steps", "1", "--out", "{tmp}/study"],
     "no_such_task"),
    # (mutation testing: refusing --k 0, the rule's least factor, passed every test)
    (["affinity", "transfer", "--tasks", "parity,no_such_task", "--steps", "1", "--k", "0", "--out", "{tmp}/study"],
     "no_such_task"),
    (["affinity", "gradients", MISSING], MISSING),
    (["affinity", "embeddings", MISSING], MISSING),
    # (mutation testing: naming --tasks-dir for a --task-module given with --bigbench passed every test)
    (["eval", "--checkpoint", MISSING, "--bigbench", "{tmp}", "--task-module", "m"],
     "--task-module registers Python tasks for --tasks, --mixture or --held-out"),
])
def test_bad_input_exits_2_with_one_line_naming_it(argv, named, tmp_path, capsys):
    code = main([part.replace("{tmp}", str(tmp_path)) for part in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith("error: ") and named in err and "Traceback" not in err


@pytest.mark.parametrize("argv, meant", [
    (["eval", "--checkpoint", "{tmp}/runs/quikstart/checkpoints/step-00000002", "--held-out"],
     "{tmp}/runs/quickstart/checkpoints/step-00000002"),
    (["predict", "--checkpoint", "{tmp}/runs/quickstart/chekpoints/step-0000002", "some text"],
     "{tmp}/runs/quickstart/checkpoints/step-00000002"),
    (["export", "{tmp}/rnus/quickstart", "--out", "{tmp}/out"], "{tmp}/runs/quickstart"),
    (["tasks", "list", "--tasks-dir", "{tmp}/taks"], "{tmp}/tasks"),
    (["train", "{tmp}/my.yaml", "--set", "data.tasks_dir={tmp}/tsks", "--print-config"], "{tmp}/tasks"),
])
def test_a_misspelt_path_gets_the_existing_path_it_is_close_to(argv, meant, tmp_path, capsys):
    # was: "checkpoint '.../quikstart/...' does not exist" (config files alone got a "did you mean")
    (tmp_path / "runs" / "quickstart" / "checkpoints" / "step-00000002").mkdir(parents=True)
    (tmp_path / "tasks").mkdir()
    (tmp_path / "my.yaml").write_text("base: quickstart\n")
    assert main([part.replace("{tmp}", str(tmp_path)) for part in argv]) == 2
    err = capsys.readouterr().err
    assert f"does not exist (did you mean {meant.replace('{tmp}', str(tmp_path))!r}?)" in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("argv, named", [
    (["eval", "--checkpoint", "{tmp}", "--tasks", "parity,,sort_words"], "--tasks 'parity,,sort_words': item 2 of 3"),
    (["eval", "--checkpoint", "{tmp}", "--held-out", "--held-out-clusters", "comparison,"],
     "--held-out-clusters 'comparison,': item 2 of 2"),
    (["mixture", "show", "parity,,sort_words", "--draws", "0"], "NAME 'parity,,sort_words': item 2 of 3"),
    (["mixture", "show", "procedural", "--draws", "0", "--held-out-clusters", " ,comparison"],
     "--held-out-clusters ' ,comparison': item 1 of 2"),
    (["mixture", "overlap", "parity,sort_words,", "--eval", "parity"], "NAME 'parity,sort_words,': item 3 of 3"),
    (["mixture", "overlap", "procedural", "--eval", "parity, ,sort_words"],
     "--eval 'parity, ,sort_words': item 2 of 3"),
    (["tokenizer", "train", "--mixture", ",parity", "--out", "{tmp}/tok"], "--mixture ',parity': item 1 of 2"),
])
def test_an_empty_item_of_a_comma_list_is_refused_naming_the_option_and_its_position(argv, named, tmp_path, capsys,
                                                                                      monkeypatch):
    # was: dropped silently (`eval --tasks a,,b` scored a and b, as if the empty name were not there)
    stub = type("Model", (), {"to": lambda self, device: self})()  # eval reads the tasks once the meta is read
    monkeypatch.setattr("t2t_mtl.evaluation.checkpoint_meta", lambda path: {})
    monkeypatch.setattr("t2t_mtl.evaluation.load_checkpoint", lambda path: (stub, None, {}))
    code = main([part.replace("{tmp}", str(tmp_path)) for part in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and named in err and "is empty" in err, err


def test_an_empty_task_name_of_affinity_transfer_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["affinity", "transfer", "--tasks", "parity,,sort_words", "--steps", "1", "--out",
              str(tmp_path / "study")])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "--tasks 'parity,,sort_words': item 2 of 3 is empty" in err, err


@pytest.mark.parametrize("argv, named", [
    (["tasks", "preview", "parity", "-n", "abc"], "argument -n: invalid int value: 'abc'"),
    (["eval", "--checkpoint", "x"], "one of the arguments --tasks --held-out --mixture --bigbench is required"),
    (["eval", "--checkpoint", "x", "--tasks", "parity", "--held-out"], "not allowed with argument --tasks"),
    (["merge", "b", "m", "--out", "o", "--method", "average"], "argument --method: invalid choice: 'average'"),
    (["affinity", "nope"], "argument ANALYSIS: invalid choice: 'nope'"),
    (["predict", "--checkpoint", "x", "--no-such-option", "a text"], "unrecognized arguments: --no-such-option"),
    # (mutation testing: --shard reading the first two of three numbers passed every test)
    (["affinity", "transfer", "--tasks", "parity", "--steps", "1", "--shard", "0/2/5"],
     "argument --shard: --shard '0/2/5': expected I/N, e.g. 0/2"),
])
def test_usage_errors_are_one_line_in_the_same_form(argv, named, capsys):
    # was: argparse's usage block, then "t2t-mtl tasks preview: error: ..." (another prefix than the commands')
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and named in err and "--help`" in err, err


EMPTY_PATHS = [
    # were read as the working directory, or as no path: eval --out '' wrote no report and exited 0, merge and
    # export --out '' wrote into the working directory, --checkpoint '' evaluated the run there, if any
    (["eval", "--checkpoint", "x", "--tasks", "parity", "--out", ""], "argument --out"),
    (["eval", "--checkpoint", "", "--tasks", "parity"], "argument --checkpoint"),
    (["merge", "b", "m", "--out", ""], "argument --out"),
    (["export", "", "--out", "o"], "argument RUN_OR_CKPT"),
    (["predict", "--checkpoint", "x", "--input", " "], "argument --input"),
    (["tasks", "validate", ""], "argument path"),
    (["tasks", "list", "--data-dir", ""], "argument --data-dir"),
    (["train", "--resume", ""], "argument --resume"),
    (["mixture", "show", "procedural", "--plot", ""], "argument --plot"),
    (["affinity", "gradients", ""], "argument run_dir"),
    # was read as no --tokenizer: the preview showed no token lengths, exit 0
    (["tasks", "preview", "parity", "--tokenizer", ""], "argument --tokenizer"),
]
EMPTY_NAMES = [
    # each was read as the option not given, exit 0: the task's first split, the default evaluated split, every
    # cluster or type
    (["tasks", "preview", "parity", "--split", ""], "argument --split"),
    (["mixture", "overlap", "procedural", "--eval", "parity", "--eval-split", " "], "argument --eval-split"),
    (["mixture", "overlap", "procedural", "--eval", "parity", "--train-split", ""], "argument --train-split"),
    (["tasks", "list", "--cluster", ""], "argument --cluster"),
    (["tasks", "list", "--type", ""], "argument --type"),
    # missed by those: tokenizer train's --split '' read as not given (train, else each task's first split), mixture
    # show's and eval's failing as a task without split '' (or evaluating nothing) without naming the option
    (["tokenizer", "train", "--mixture", "no_such_mixture", "--out", "tok", "--split", ""], "argument --split"),
    (["mixture", "show", "no_such_mixture", "--split", ""], "argument --split"),
    (["eval", "--checkpoint", "no_such_run", "--tasks", "parity", "--split", " "], "argument --split"),
]



@pytest.mark.parametrize("argv, usage", [([], "usage: t2t-mtl "), (["tasks"], "usage: t2t-mtl tasks "),
                                         (["mixture"], "usage: t2t-mtl mixture "), (["list"], "usage: t2t-mtl list ")])
def test_a_command_line_without_its_command_prints_the_help_and_exits_2(argv, usage, capsys):
    # mutation testing: main returning 0 for a command line without a command passed every test (the command
    # groups' own 2 was tested through their subcommands only); a missing command is a usage error, as argparse's
    code = main(argv)
    out = capsys.readouterr().out
    assert code == 2 and out.startswith(usage), out

@pytest.mark.parametrize("argv, argument, says",
                         [(*row, "is an empty path; name the file or folder") for row in EMPTY_PATHS]
                         + [(*row, "is empty; give a name") for row in EMPTY_NAMES])
def test_an_empty_path_or_name_is_a_usage_error_naming_the_argument(argv, argument, says, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: {argument}: ") and says in err, err


#: a command line of every command taking --data-dir whose selection reads no data (so nothing else would refuse a
#: --data-dir that points nowhere), by the command's prog; {data} is the bad --data-dir
DATA_DIR_COMMANDS = {
    "t2t-mtl train": ["train", "--print-config", "--data-dir", "{data}"],
    "t2t-mtl affinity transfer": ["affinity", "transfer", "--tasks", "parity,count_word", "--steps", "1",
                                  "--data-dir", "{data}", "--out", "{tmp}/study"],
    "t2t-mtl eval": ["eval", "--checkpoint", MISSING, "--tasks", "parity", "--data-dir", "{data}"],
    "t2t-mtl mixture show": ["mixture", "show", "procedural", "--draws", "0", "--data-dir", "{data}"],
    "t2t-mtl mixture overlap": ["mixture", "overlap", "parity", "--eval", "parity", "--data-dir", "{data}"],
    "t2t-mtl tasks": ["tasks", "--data-dir", "{data}", "show", "parity"],
    "t2t-mtl tasks list": ["tasks", "list", "--cluster", "arithmetic", "--data-dir", "{data}"],
    "t2t-mtl tasks show": ["tasks", "show", "parity", "--data-dir", "{data}"],
    "t2t-mtl tasks preview": ["tasks", "preview", "parity", "-n", "1", "--data-dir", "{data}"],
    "t2t-mtl tasks validate": ["tasks", "validate", f"{MISSING}.yaml", "--data-dir", "{data}"],
    "t2t-mtl tokenizer train": ["tokenizer", "train", "--mixture", "procedural", "--max-examples", "1",
                                "--out", "{tmp}/tok", "--data-dir", "{data}"],
}


def test_every_command_taking_a_data_dir_is_checked_below():
    from t2t_mtl.cli import build_parser

    progs = {parser.prog for parser in _parsers(build_parser()) for action in parser._actions
             if "--data-dir" in action.option_strings}
    assert progs == set(DATA_DIR_COMMANDS)


@pytest.mark.parametrize("prog", sorted(DATA_DIR_COMMANDS))
@pytest.mark.parametrize("state", ["does not exist", "is a file"])
def test_a_data_dir_that_is_no_folder_is_refused_up_front_naming_the_option(prog, state, tmp_path, capsys):
    # was: eval, mixture, tasks and tokenizer train set it as the data dir and went on (exit 0 where the selected tasks
    # read no data: `tasks list --data-dir /typo` listed the tasks), as train and affinity transfer did not
    data = tmp_path / "data"
    if state == "is a file":
        data.write_text("", encoding="utf-8")
    argv = [part.replace("{data}", str(data)).replace("{tmp}", str(tmp_path)) for part in DATA_DIR_COMMANDS[prog]]
    assert main(argv) == 2
    assert capsys.readouterr().err == (f"error: --data-dir {data} {state}: name the folder holding "
                                       f"<hub path>/<config or default>/<split>.jsonl\n")
    assert not (tmp_path / "study").exists() and not (tmp_path / "tok").exists()


@pytest.mark.parametrize("argv, pointer", [
    (["tasks", "preview", "parity", "--nn", "3"], "t2t-mtl tasks preview --help"),
    (["tasks", "--bogus", "list"], "t2t-mtl tasks --help"),
    (["train", "my.yaml", "--set", "training.steps", "20"], "t2t-mtl train --help"),
    (["--bogus"], "t2t-mtl --help"),
])
def test_an_unrecognized_argument_points_at_the_help_of_the_command_it_was_given_to(argv, pointer, capsys):
    # was: always "(see `t2t-mtl --help`)", the top-level help, which lists commands but none of their options
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert capsys.readouterr().err.endswith(f"(see `{pointer}`)\n")


@pytest.mark.parametrize("argv, option", [
    (["mixture", "show", "parity", "--draws", "0", "--plot", "{out}/rates.png"], "--plot"),
    (["mixture", "overlap", "parity", "--eval", "sort_words", "--max-rows", "4", "--json", "{out}/o.json"], "--json"),
])
def test_an_output_folder_that_cannot_be_created_exits_2_with_one_line(argv, option, tmp_path, capsys,
                                                                       locked_folder):
    # was: the PermissionError of creating the folder ended in a traceback and exit 1
    out = tmp_path / locked_folder
    code = main([part.replace("{out}", str(out)) for part in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"error: {option} {out}") and err.count("\n") == 1 and "could not be created" in err, err


def test_ctrl_c_in_any_command_exits_130_with_one_line(monkeypatch, capsys):
    # was: a Ctrl-C in eval, tasks, mixture overlap ... printed the interpreter's KeyboardInterrupt traceback
    import task_registry

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(task_registry, "list_tasks", interrupted)
    assert main(["tasks", "list"]) == 130
    err = capsys.readouterr().err
    assert err == "error: aborted (Ctrl-C) during t2t-mtl tasks\n"


def test_ctrl_c_while_train_loads_the_engine_exits_130_with_one_line(monkeypatch, capsys):
    # was: a Ctrl-C during the seconds train imports torch and DeepSpeed (its trainer module) reached handlers naming
    # the names that import binds: an UnboundLocalError traceback and exit 1
    import types

    class Interrupted(types.ModuleType):  # (a module whose names arrive as the Ctrl-C does)
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "t2t_mtl.engine.trainer", Interrupted("t2t_mtl.engine.trainer"))
    assert main(["train", "--set", "training.steps=1"]) == 130
    assert capsys.readouterr().err == "error: aborted (Ctrl-C) during t2t-mtl train\n"


@pytest.mark.parametrize("code,exit_code,remedy", [
    (errno.ENOSPC, 1, "free disk space"), (errno.EROFS, 2, "choose a folder on a writable disk")])
def test_a_storage_failure_while_writing_is_one_line(tmp_path, monkeypatch, capsys, code, exit_code, remedy):
    # was: a full disk (or a read-only one) while a plot, report or model was written ended in a traceback
    from t2t_mtl.cli import mixture

    out = tmp_path / "rates.png"

    def full_disk(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(out))

    monkeypatch.setattr(mixture, "plot_rates", full_disk)
    assert main(["mixture", "show", "procedural", "--plot", str(out)]) == exit_code
    err = capsys.readouterr().err
    assert err == f"error: t2t-mtl mixture: {os.strerror(code)}: {out} ({remedy}, then run it again)\n"



@pytest.mark.parametrize("code", [errno.EIO, None])
def test_an_os_error_other_than_a_storage_failure_reaches_the_caller_as_raised(code, tmp_path, monkeypatch):
    # mutation testing: main turning every OSError into a storage error line passed every test, which raised storage
    # failures only; a read error (EIO) or an OSError without an errno is no full disk or forbidden place to name
    from t2t_mtl.cli import mixture

    error = OSError(code, "it failed") if code else OSError("it failed")

    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(mixture, "plot_rates", failing)
    with pytest.raises(OSError) as raised:
        main(["mixture", "show", "procedural", "--draws", "0", "--plot", str(tmp_path / "rates.png")])
    assert raised.value is error

def _parsers(parser):
    """`parser` and every subcommand parser under it."""
    import argparse

    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_argument_is_explained_and_every_option_states_its_default():
    # was: merge --method, mixture show --seed and the tasks' NAME had no help; --batch-size, --scale, --draws and
    # the affinity study's options did not say their default
    import argparse

    from t2t_mtl.cli import build_parser

    unexplained, undefaulted = [], []
    for parser in _parsers(build_parser()):
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, (argparse._HelpAction,
                                                                       argparse._SubParsersAction)):
                continue
            name = f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
            if not action.help:
                unexplained.append(name)
            elif (action.option_strings and not action.required and "default" not in action.help
                  and not isinstance(action, (argparse._StoreTrueAction, argparse._AppendAction))
                  and action.default is not None):
                undefaulted.append(name)
    assert (unexplained, undefaulted) == ([], [])


def test_every_data_dir_option_is_explained_alike():
    # was: five wordings ("local dataset folder", "local data folder (task_registry.set_data_dir)", ...), some
    # without the layout or the default
    from t2t_mtl.cli import build_parser
    from t2t_mtl.cli.common import DATA_DIR_HELP

    helps = {parser.prog: action.help for parser in _parsers(build_parser()) for action in parser._actions
             if "--data-dir" in action.option_strings}
    assert len(helps) >= 8 and all(help.startswith(DATA_DIR_HELP + " (default: ") for help in helps.values()), helps


def test_eval_tasks_dir_help_states_its_default():
    # was: the help of every other command ("... (repeatable)"), silent on eval registering the run's data.tasks_dir
    # without it (README: "default there: the run's data.tasks_dir")
    from t2t_mtl.cli import build_parser

    helps = [action.help for parser in _parsers(build_parser()) if parser.prog == "t2t-mtl eval"
             for action in parser._actions if "--tasks-dir" in action.option_strings]
    assert len(helps) == 1 and helps[0].endswith("(repeatable; default: the run's data.tasks_dir)")


def test_export_of_a_task_refuses_a_non_empty_out_folder_before_loading_the_model(tmp_path, capsys):
    # was: `export --task` wrote into a folder holding an earlier export, overwriting its files
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")  # an exported folder (never loaded: the refusal comes first)
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_text("an earlier export")
    assert main(["export", str(model), "--task", "parity", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --out {out} is not empty (it holds model.safetensors); writing into it would overwrite "
                   f"what is there: choose another folder, or pass --overwrite to write into it anyway\n")
    assert (out / "model.safetensors").read_text() == "an earlier export"
    # was: from Python, export_task_subnetwork(..., overwrite=False) (export_model's too) was told the command's
    # words, "--out ... pass --overwrite", options a Python caller has not got
    from t2t_mtl.engine.export import export_task_subnetwork
    from t2t_mtl.engine.model_meta import ExportError

    with pytest.raises(ExportError) as refused:
        export_task_subnetwork(model, "parity", out, overwrite=False)
    assert str(refused.value) == (f"out_dir {out} is not empty (it holds model.safetensors); writing into it would "
                                  f"overwrite what is there: choose another folder, or pass overwrite=True to write "
                                  f"into it anyway")
    assert (out / "model.safetensors").read_text() == "an earlier export"


def test_counts_in_messages_take_the_singular_for_one():
    # was: "over 1 tasks", "1 examples", "1 run(s)" across the package's messages
    from t2t_mtl.wording import counted

    assert [counted(n, "task") for n in (0, 1, 2)] == ["0 tasks", "1 task", "2 tasks"]
    assert [counted(n, "entry", "entries") for n in (1, 3)] == ["1 entry", "3 entries"]


def test_names_given_more_than_once_are_named_once_in_order_by_both_packages():
    from t2t_mtl.wording import repeated_items
    from task_registry.errors import repeated_items as registry_repeated_items

    for helper in (repeated_items, registry_repeated_items):
        assert helper(["b", "a", "b", "c", "a", "b"]) == ["a", "b"] and helper(("x", "y")) == []
        assert helper({"parity": 3.0, "count_word": 1.0}) == []  # a {task: rate} mapping: its names, not its rates


@pytest.mark.parametrize("key", ["tokenizer.path", "model.name_or_path"])
def test_a_hub_name_that_cannot_be_loaded_is_one_error_line(key, tmp_path, capsys):
    # was: transformers' two-line message ("... couldn't find them in the cached files.\nCheck your internet
    # connection ..."), so the error took two lines. (The tests run offline: no hub name is cached.)
    extra = ["--set", "model.dims=null"] if key == "model.name_or_path" else []
    code = main(["train", "--set", f"{key}=google/t5-v1_1-small", *extra, "--set",
                 f"training.output_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "'google/t5-v1_1-small'" in err and "couldn't find them in the cached files. Check your internet" in err


@pytest.mark.parametrize("command", [["export", "{model}", "--task", "parity", "--out", "{tmp}/out"],
                                     ["affinity", "embeddings", "{model}"]])
def test_a_model_folder_without_its_weights_is_one_error_line_naming_it(command, tmp_path, capsys):
    # was: transformers' OSError ("no file named model.safetensors ...") as a traceback, exit 1
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "t5"}')
    code = main([part.replace("{model}", str(model)).replace("{tmp}", str(tmp_path)) for part in command])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: model folder {model} could not be loaded: ") and "model.safetensors" in err, err


def test_a_reader_that_stops_early_ends_the_command_quietly_with_sigpipes_code():
    # was: `t2t-mtl tasks preview ... --jsonl | head -1` ended in a BrokenPipeError traceback, exit 1
    import signal
    import subprocess
    import sys

    command = [sys.executable, "-m", "t2t_mtl", "tasks", "preview", "parity", "-n", "3000", "--jsonl"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        first = process.stdout.readline()
        process.stdout.close()  # as `head -1` does once it has its line
        err = process.stderr.read()
        code = process.wait(timeout=300)
    assert first.startswith('{"inputs": ') and code == 128 + signal.SIGPIPE
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_a_reader_that_left_before_the_output_was_flushed_ends_the_command_with_sigpipes_code(monkeypatch):
    # mutation testing: main without its flush of stdout passed every test, whose reader left while the command
    # still printed; an output short enough to stay in the buffer met the closed pipe only at the interpreter's
    # last flush ("Exception ignored ... BrokenPipeError", exit 120)
    import io

    from t2t_mtl.cli import SIGPIPE_EXIT

    class LeftPipe(io.StringIO):
        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", LeftPipe())
    assert main(["list", "weightings"]) == SIGPIPE_EXIT


@pytest.mark.parametrize("command, writer", [
    (["tokenizer", "train", "--mixture", "parity", "--max-examples", "5", "--vocab-size", "100", "--out", "{out}"],
     "t2t_mtl.tokenizer.train_tokenizer"),
    (["eval", "--checkpoint", "{model}", "--tasks", "parity", "--max-examples", "2", "--no-progress", "--out", "{out}"],
     "t2t_mtl.evaluation.write_report"),
    (["merge", "{model}", "{model2}", "--out", "{out}"], "t2t_mtl.model.merging._write_folder"),
    (["affinity", "gradients", "{run}", "--out", "{out}"],
     "t2t_mtl.analysis.gradient_affinity.write_gradient_affinity"),
])
def test_a_full_disk_while_writing_the_output_exits_1_as_every_command(command, writer, tmp_path, monkeypatch, capsys,
                                                                     t5_tokenizer_dir):
    # was: exit 2, the full disk reported as a bad --out (README: a full disk is the work failing, exit 1, as export,
    # mixture and the other commands report it)
    import json

    from transformers import T5Config, T5ForConditionalGeneration

    from t2t_mtl.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(t5_tokenizer_dir)
    for name in ("model", "model2"):
        T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer), d_model=8, d_ff=8, d_kv=4, num_heads=2,
                                            num_layers=1, decoder_start_token_id=0)).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    (tmp_path / "run" / "logs").mkdir(parents=True)
    (tmp_path / "run" / "logs" / "metrics.jsonl").write_text(json.dumps(
        {"step": 1, "gradient_surgery": {"tasks": ["a", "b"], "grad_cosine": [[1.0, 0.5], [0.5, 1.0]]}}) + "\n")
    out = tmp_path / "out"

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out / "written"))

    monkeypatch.setattr(writer, full_disk)
    capsys.readouterr()
    paths = {"{out}": out, "{model}": tmp_path / "model", "{model2}": tmp_path / "model2", "{run}": tmp_path / "run"}
    assert main([str(paths.get(part, part)) for part in command]) == 1
    err = capsys.readouterr().err  # (after the progress bars of loading models)
    line = f"error: t2t-mtl {command[0]}: {os.strerror(errno.ENOSPC)}: {out / 'written'} (free disk space, then " \
           f"run it again)\n"
    assert ("\n" + err).endswith("\n" + line) and err.count("error:") == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("command", [
    ["tasks", "list"], ["mixture", "show", "parity", "--draws", "0"],
    ["mixture", "overlap", "parity", "--eval", "count_word"],
    ["tokenizer", "train", "--mixture", "parity", "--out", "{tmp}/tok"],
    ["affinity", "transfer", "--tasks", "parity,count_word", "--steps", "1", "--out", "{tmp}/study"],
])
def test_each_problem_of_a_tasks_dir_is_an_error_line(command, tmp_path, capsys):
    # was (mixture, tokenizer, affinity): "error: DIR: 2 problem(s):" then "  - ..." lines, not the `error: ...`
    # line per problem that tasks and eval print (README: every error line starts with `error: `)
    folder = tmp_path / "tasks"
    folder.mkdir()
    for name in ("a_broken", "b_broken"):
        (folder / f"{name}.yaml").write_text(f"name: {name}\ntemplates: []\n")
    argv = [part.replace("{tmp}", str(tmp_path)) for part in command]
    assert main([*argv, "--tasks-dir", str(folder)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 2 and all(line.startswith(f"error: {folder}") for line in lines), lines
    assert [any(f"{name}.yaml:" in line for line in lines) for name in ("a_broken", "b_broken")] == [True, True]


def test_an_interrupted_training_says_how_to_continue_it(monkeypatch, capsys, tmp_path):
    # was: "interrupted (checkpoint saved) at step 1; run dir runs/c1; ..." alone, and the README's "--resume auto
    # continues it": a bare `t2t-mtl train --resume auto` after `train my.yaml --set training.output_dir=runs/c1`
    # started the quickstart afresh in runs/quickstart; `--resume RUN` reads the run's config.yaml
    from t2t_mtl.engine import distributed, trainer

    run_dir = tmp_path / "my run"

    def interrupted_train(*args, **kwargs):
        return trainer.TrainResult(run_dir=run_dir, step=1, final_loss=1.0, task_losses={}, examples_seen={},
                                   skipped_steps=0, tokens_per_second=1.0, wall_time_s=1.0,
                                   checkpoint=run_dir / "checkpoints" / "step-00000001", interrupted=True)

    monkeypatch.setattr(trainer, "train", interrupted_train)
    monkeypatch.setattr(distributed, "shut_down_process_group", lambda: None)
    assert main(["train", "--set", "training.steps=9"]) == 75
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"continue it with: t2t-mtl train --resume '{run_dir}' (its config.yaml, --set values included)")
    monkeypatch.setattr(trainer, "train", lambda *a, **k: dataclasses.replace(interrupted_train(), interrupted=False))
    assert main(["train", "--set", "training.steps=9"]) == 0
    assert "continue it with" not in capsys.readouterr().out



@pytest.mark.parametrize("ended, state", [({}, "finished"), ({"stopped_early": True}, "stopped early "
                                                                                        "(training.early_stopping)"),
                                          ({"interrupted": True}, "interrupted (checkpoint saved)")])
def test_train_passes_its_data_dir_and_says_how_the_run_ended_on_rank_0_only(ended, state, monkeypatch, capsys,
                                                                            tmp_path):
    # mutation testing: the summary line printed on every rank, naming an early-stopped run interrupted, and
    # --data-dir not passed to train() passed every test, whose stand-in train ran on rank 0, was interrupted or
    # finished, and read no --data-dir
    from t2t_mtl.engine import distributed, trainer

    run_dir, given = tmp_path / "run", []

    def ended_train(cfg, resume=None, data_dir=None):
        given.append(data_dir)
        return trainer.TrainResult(run_dir=run_dir, step=3, final_loss=1.0, task_losses={}, examples_seen={},
                                   skipped_steps=0, tokens_per_second=1.0, wall_time_s=1.0,
                                   checkpoint=run_dir / "checkpoints" / "step-00000003", **ended)

    monkeypatch.setattr(trainer, "train", ended_train)
    monkeypatch.setattr(distributed, "shut_down_process_group", lambda: None)
    argv = ["train", "--set", f"training.output_dir={run_dir}", "--data-dir", str(tmp_path)]
    code = 75 if ended.get("interrupted") else 0  # (every rank's)
    assert main(argv) == code and given == [str(tmp_path)]
    assert capsys.readouterr().out.splitlines()[0] == (
        f"{state} at step 3; run dir {run_dir}; last checkpoint {run_dir / 'checkpoints' / 'step-00000003'}")
    monkeypatch.setenv("RANK", "1")
    assert main(argv) == code and capsys.readouterr().out == ""


@pytest.mark.parametrize("world_size", ["1", "2"])
def test_the_ranks_of_an_interrupted_job_ignore_sigterm_once_saved(world_size, monkeypatch, tmp_path):
    # was: the first rank to exit with 75 made srun --kill-on-bad-exit (slurm.sbatch's) send SIGTERM to the others,
    # and one terminated while exiting reported 143, which srun gave as the job's code (seen on the tests' private
    # SLURM: a task exiting 75 and one 0.2 s later, srun 143); one process (an in-process caller) keeps its handlers
    from t2t_mtl.engine import distributed, trainer

    run_dir, seen = tmp_path / "run", []
    monkeypatch.setattr(trainer, "train", lambda *args, **kwargs: trainer.TrainResult(
        run_dir=run_dir, step=3, final_loss=1.0, task_losses={}, examples_seen={}, skipped_steps=0,
        tokens_per_second=1.0, wall_time_s=1.0, checkpoint=run_dir / "checkpoints" / "step-00000003",
        interrupted=True))
    monkeypatch.setattr(distributed, "shut_down_process_group",
                        lambda: seen.append((signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1))))
    monkeypatch.setenv("WORLD_SIZE", world_size)
    monkeypatch.setenv("RANK", "1" if world_size == "2" else "0")
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1)
    try:
        assert main(["train", "--set", f"training.output_dir={run_dir}"]) == 75
        after = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1)
    finally:
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGUSR1, before[1])
    ignored = (signal.SIG_IGN, signal.SIG_IGN)
    assert seen == [after] and after == (ignored if world_size == "2" else before)

@pytest.mark.parametrize("raised, exit_code", [("aborted", 1), ("ctrl_c", 130), ("apart", 1), ("lost", 1)])
def test_a_training_that_stops_on_an_error_leaves_its_process_group_first(monkeypatch, capsys, raised, exit_code):
    # was: the ranks exited with their gloo group alive, whose teardown could abort them (exit -6); ranks met at
    # different collectives ("apart") or waiting for a rank gone ("lost") ended in a traceback, without leaving it
    from t2t_mtl.engine import distributed, trainer
    from t2t_mtl.engine.rank_phases import CollectiveBrokenError, RanksAtDifferentPhasesError, mismatch_message

    def failing_train(*args, **kwargs):
        if raised == "apart":
            raise RanksAtDifferentPhasesError(mismatch_message(["the run's tokenizer trained", "training data read"]))
        if raised == "lost":
            raise CollectiveBrokenError("rank 1 of 2 was at 'training data read' when the other ranks were lost")
        raise trainer.TrainingAbortedError("3 consecutive steps had a non-finite loss") if raised == "aborted" \
            else KeyboardInterrupt()

    left = []
    monkeypatch.setattr(trainer, "train", failing_train)
    monkeypatch.setattr(distributed, "leave_process_group", lambda: left.append(True))
    assert main(["train", "--set", "training.steps=1"]) == exit_code
    err = capsys.readouterr().err
    assert left == [True] and err.startswith("error: ")
    assert raised != "apart" or err.startswith("error: the ranks met in a collective from different places (rank 0 "
                                               "at 'the run's tokenizer trained', rank 1 at 'training data read')")


@pytest.mark.parametrize("command", [["eval", "--tasks", "parity"], ["predict"]])
@pytest.mark.parametrize("options, refused", [
    (["--scoring", "generate", "--length-norm"], "--length-norm changes how answer choices are ranked"),
    (["--scoring", "generate", "--no-length-norm"], None),  # (the sum: what ranking does without the option)
    (["--scoring", "rank", "--num-beams", "2"], "--num-beams sets the beam width"),
    (["--scoring", "rank", "--num-beams", "1"], None),  # (greedy: what generation does without the option)
    (["--scoring", "rank", "--max-new-tokens", "1"], "--max-new-tokens limits generation"),
    (["--scoring", "auto", "--length-norm", "--num-beams", "2", "--max-new-tokens", "1"], None),
])
def test_a_scoring_option_is_refused_only_where_the_scoring_would_ignore_what_it_changes(command, options, refused):
    # mutation testing: refusing --no-length-norm with generate passed every test, which gave --length-norm only
    from t2t_mtl.cli import build_parser
    from t2t_mtl.cli.common import ignored_scoring_option

    args = build_parser().parse_args([command[0], "--checkpoint", "x", *command[1:], *options])
    problem = ignored_scoring_option(args)
    assert (problem is None) if refused is None else problem.startswith(refused), problem


def test_a_task_registry_error_raised_in_training_is_one_error_line(monkeypatch, capsys):
    # mutation testing: train printing only t2t_mtl's own KeyError / ValueError subclasses as error lines passed every
    # test; a task_registry one (a task definition refused while the run builds its data) was then a traceback
    import task_registry
    from t2t_mtl.engine import trainer

    def refused(*args, **kwargs):
        raise task_registry.TaskDefinitionError("task 'demo': its template 't' renders no target")

    monkeypatch.setattr(trainer, "train", refused)
    monkeypatch.setattr("t2t_mtl.engine.distributed.report_failed_start", lambda: None)
    assert main(["train", "--set", "training.steps=1"]) == 2
    assert capsys.readouterr().err == "error: task 'demo': its template 't' renders no target\n"


def test_the_ranks_of_a_finished_job_keep_their_stop_signal_handlers(monkeypatch, tmp_path):
    # a run that finished saved no interrupted state for a SIGTERM to spare: a rank of several exits 0 with the
    # handlers it had
    from t2t_mtl.engine import distributed, trainer

    run_dir = tmp_path / "run"
    monkeypatch.setattr(trainer, "train", lambda *args, **kwargs: trainer.TrainResult(
        run_dir=run_dir, step=3, final_loss=1.0, task_losses={}, examples_seen={}, skipped_steps=0,
        tokens_per_second=1.0, wall_time_s=1.0, checkpoint=run_dir / "checkpoints" / "step-00000003"))
    monkeypatch.setattr(distributed, "shut_down_process_group", lambda: None)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        assert main(["train", "--set", f"training.output_dir={run_dir}"]) == 0
        assert {signum: signal.getsignal(signum) for signum in handlers} == handlers
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


@pytest.mark.parametrize("interrupted_at", ["build_parser", "parse_args"])
def test_ctrl_c_while_the_command_line_is_read_exits_130_with_one_line(interrupted_at, monkeypatch, capsys):
    # was: a Ctrl-C in the first second of a command, while its parser imported the command modules (numpy) or read
    # an option's value (task_registry imported for --tasks), printed the interpreter's KeyboardInterrupt traceback
    import task_registry

    from t2t_mtl import cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    if interrupted_at == "build_parser":
        monkeypatch.setattr(cli, "build_parser", interrupted)
    else:
        monkeypatch.setattr(task_registry, "comma_separated", interrupted)
    assert main(["affinity", "transfer", "--tasks", "parity,count_word", "--steps", "1"]) == 130
    assert capsys.readouterr().err == "error: aborted (Ctrl-C) while t2t-mtl read its command line\n"
