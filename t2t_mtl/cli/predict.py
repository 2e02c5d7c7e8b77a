"""`t2t-mtl predict`: a trained model's answers to instructed inputs (generation, or ranking given choices)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Mapping, Optional

from t2t_mtl.cli.common import (add_decoding_options, add_task_module_option, add_tasks_dir_option, below_one,
                                decoding_settings, fail, ignored_scoring_option, path_argument, resolve_device)
from t2t_mtl.cli.progress_bars import READS_NO_DATASETS
from t2t_mtl.transformers_progress_bars import hidden_transformers_progress_bars
from t2t_mtl.wording import counted


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="answer free-form instructed inputs with a checkpoint (generate, or rank choices)",
        description="Answer each input with a checkpoint: decode a text, or, given answer choices, pick the "
                    "choice of highest log-likelihood (rank classification, as zero-shot evaluation does). "
                    "Inputs come from the command line, or from a file / stdin: one text per line, or JSON "
                    "lines with \"inputs\" and optional \"answer_choices\" and \"task\" (what `t2t-mtl tasks "
                    "preview --jsonl` prints). A generated answer of a registered task that has a postprocess "
                    "(the input's \"task\", else --task) is printed postprocessed, as `t2t-mtl eval` scores it "
                    "(--raw: as decoded); a ranked answer is the choice as written.")
    parser.add_argument("--checkpoint", type=path_argument, required=True,
                        help="run dir, checkpoint dir (t2t-mtl train) or Hugging Face model folder")
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="input texts (or use --input)")
    parser.add_argument("--input", type=path_argument, default=None, metavar="FILE",
                        help="read inputs from FILE (- = stdin): one per line, JSON lines with --jsonl or a "
                             ".jsonl file")
    parser.add_argument("--jsonl", action="store_true",
                        help="inputs are JSON lines (implied by a .jsonl file), and so is the output: each input's "
                             "object, its keys in their order, followed by \"prediction\" (and \"scores\" when "
                             "ranked); without it, one line per input (a newline inside a prediction printed as \\n)")
    parser.add_argument("--choices", default=None, metavar="'A ||| B'",
                        help="answer choices of inputs that give none (a JSON line's own \"answer_choices\" "
                             "win), separated by '|||' (rank classification)")
    parser.add_argument("--task", default=None,
                        help="task of inputs that name none: picks the experts of a task-routed MoE model, "
                             "the adapters of per-task LoRA and the task token of task embeddings (a name the model "
                             "was not trained on: the unseen route, no task token, with a warning naming it) and, for "
                             "a registered task with a postprocess, the postprocess of generated answers (default: "
                             "the one task an `export --task` folder routes)")
    parser.add_argument("--scoring", choices=("auto", "rank", "generate"), default="auto",
                        help="auto (default): rank where an input has choices, else generate")
    parser.add_argument("--raw", action="store_true",
                        help="print generated answers as decoded, without their task's postprocess (default: "
                             "postprocessed, as `t2t-mtl eval` scores them)")
    add_decoding_options(parser, "inputs")
    add_tasks_dir_option(parser, help_text="a folder of YAML task files to register on top of the built-in tasks, "
                                           "for the postprocess of the inputs' task (repeatable; default: the run's "
                                           "data.tasks_dir)")
    add_task_module_option(parser, help_text="a Python module that registers tasks when imported, for the "
                                             "postprocess of the inputs' task and its tie rule between ranked "
                                             "choices (kept under --raw): a module name on sys.path or a .py file's "
                                             "path (repeatable; default: the run's data.task_modules)")
    parser.set_defaults(func=run_predict, **{READS_NO_DATASETS: True})


def _jsonl(args: argparse.Namespace) -> bool:
    """Whether inputs and output are JSON lines: --jsonl, or an --input file named *.jsonl."""
    return args.jsonl or (args.input not in (None, "-") and Path(args.input).suffix == ".jsonl")


def _requests(args: argparse.Namespace) -> list:
    from t2t_mtl.evaluation.predict_requests import PredictInputError, PredictRequest, read_requests

    if bool(args.texts) == bool(args.input):
        raise PredictInputError("give input texts or --input FILE (one of the two)")
    if args.texts:
        requests = [PredictRequest(text) for text in args.texts]
    elif args.input == "-":
        requests = read_requests(sys.stdin, jsonl=args.jsonl, source="stdin")
    else:
        path = Path(args.input)
        if path.is_dir():
            raise PredictInputError(f"--input {args.input} is a folder; give a file of inputs (or - for stdin)")
        if not path.is_file():
            raise PredictInputError(f"--input {args.input}: no such file")
        with open(path, encoding="utf-8") as handle:
            requests = read_requests(handle, jsonl=_jsonl(args), source=str(path))
    if args.choices is not None:
        choices = [c.strip() for c in args.choices.split("|||")]
        if len(choices) < 2 or not all(choices):
            raise PredictInputError(f"--choices {args.choices!r}: give at least two non-empty choices "
                                    f"separated by '|||', e.g. 'yes ||| no'")
        for request in requests:
            request.answer_choices = request.answer_choices or choices
    return requests


def ignored_for_inputs(args: argparse.Namespace, requests: list) -> Optional[str]:
    """Why a decoding option would have no effect on these inputs under `--scoring auto` (None: none would)."""
    if args.scoring != "auto":  # (the decoding options' idle cases under rank / generate: ignored_scoring_option)
        return None
    ranked = sum(1 for request in requests if request.answer_choices)
    if args.length_norm and ranked == 0:
        return ("--length-norm changes how answer choices are ranked, but no input has any: give --choices, or "
                "JSON lines with answer_choices")
    for option, given in (("--num-beams", (args.num_beams or 1) > 1), ("--max-new-tokens", args.max_new_tokens)):
        if given and requests and ranked == len(requests):
            return (f"{option} applies to generation, but every input has answer choices and is ranked: drop it, or "
                    f"use --scoring generate")
    return None


#: what the tasks each option registers serve predict by: a YAML task's postprocess; a Python one's postprocess and
#: its tie rule (EvalProtocol.pick), which --raw keeps
TASK_SOURCE_USES = {"--tasks-dir": "registers YAML tasks for the postprocess of generated answers (a YAML task has no "
                                   "tie rule for ranked ones)",
                    "--task-module": "registers tasks for the postprocess of generated answers and the tie rule of "
                                     "ranked ones"}


def idle_task_sources(args: argparse.Namespace, requests: list, default_task: Optional[str]) -> Optional[str]:
    """Why --tasks-dir or --task-module would have no effect on these inputs (None: they may have one): a task they
    register serves an input that names it, or that `default_task` (--task, else the model's implied task) names
    (`TASK_SOURCE_USES`), generated unless --raw, ranked if it has a tie rule. An input is ranked where it has
    answer choices, unless --scoring generate."""
    if not (args.tasks_dir or args.task_modules):
        return None
    named = [request for request in requests if request.task or default_task]
    if not named:
        option = "--tasks-dir" if args.tasks_dir else "--task-module"
        return (f"{option} {TASK_SOURCE_USES[option]}, but no input names a task (--task, or a \"task\" field): "
                f"drop {option}")
    ranks = [bool(request.answer_choices) and args.scoring != "generate" for request in named]
    ranked = [request for request, rank in zip(named, ranks) if rank]
    postprocessed = [] if args.raw else [request for request, rank in zip(named, ranks) if not rank]
    if args.tasks_dir and not postprocessed:
        why = "--raw prints generated answers without it" if args.raw else "every input that names a task is ranked"
        return f"--tasks-dir {TASK_SOURCE_USES['--tasks-dir']}, but {why}: drop --tasks-dir"
    if not postprocessed and not ranked:
        return (f"--task-module {TASK_SOURCE_USES['--task-module']}, but --raw prints generated answers without "
                f"their postprocess and no input that names a task is ranked: drop --task-module")
    return None


def input_tasks(args: argparse.Namespace, requests: list, meta: Mapping[str, Any],
                default_task: Optional[str]) -> dict[str, Any]:
    """The inputs' tasks (a JSON line's "task", else `default_task`: --task, else the model's implied task) that are
    registered, by name: built-in tasks, then --task-module / --tasks-dir (default: the run's data.task_modules /
    data.tasks_dir); none when no input names a task (the task registry is not imported then)."""
    names = {request.task or default_task for request in requests} - {None}
    if not names:
        return {}
    import task_registry

    from t2t_mtl.cli.eval import register_run_tasks

    task_registry.load_builtin_tasks()
    skipped = register_run_tasks(args, meta)
    registered = set(task_registry.list_tasks())
    if skipped:
        _warn_of_unimported_tasks(args, requests, meta, default_task, skipped, registered)
    return {name: task_registry.get_task(name) for name in sorted(names & registered)}


def _warn_of_unimported_tasks(args: argparse.Namespace, requests: list, meta: Mapping[str, Any],
                              default_task: Optional[str], skipped: list[str], registered: set[str]) -> None:
    """Warn, once per task, of the inputs' tasks left unregistered where a model folder's data.task_modules `skipped`
    were not imported (`register_run_tasks`: a model folder may come from someone else), that their answers lack
    what those modules may give them: a generated one's postprocess (unless --raw), a ranked one's tie rule."""
    ranked = [bool(request.answer_choices) and args.scoring != "generate" for request in requests]
    served = [request.task or default_task for request, rank in zip(requests, ranked) if rank or not args.raw]
    for name in dict.fromkeys(task for task in served if task is not None and task not in registered):
        trained = f", which model folder {meta['path']} was trained on," if name in (meta.get("tasks") or ()) else ""
        count = served.count(name)
        print(f"warning: task {name!r}{trained} is not registered here: {counted(count, 'input')} naming it "
              f"{'is' if count == 1 else 'are'} answered without the postprocess or tie rule it may have, unlike in "
              f"`t2t-mtl eval` (the folder's data.task_modules {skipped!r}, which may register it, were not "
              f"imported: see above); pass --task-module MODULE to import the one you trust", file=sys.stderr)


def _check_beams_before_loading(args: argparse.Namespace, requests: list) -> None:
    """EvaluationError (`check_generation_sizes`) for a beam width past the vocabulary of a model folder's config.json
    (`folder_vocab_size`) where an input is generated, before the model is loaded (predict checks it again on the
    loaded model, whose size a run or checkpoint folder gives only then)."""
    from t2t_mtl.evaluation.checkpoint import checkpoint_meta, folder_vocab_size
    from t2t_mtl.evaluation.generation_sizes import check_generation_sizes

    vocab_size = folder_vocab_size(args.checkpoint)
    ranked = [request for request in requests if request.answer_choices and args.scoring != "generate"]
    if vocab_size is None or args.scoring == "rank" or len(ranked) == len(requests):
        return
    settings = decoding_settings(args, checkpoint_meta(args.checkpoint))
    check_generation_sizes(settings["num_beams"], settings["max_new_tokens"], vocab_size=vocab_size)


def run_predict(args: argparse.Namespace) -> int:
    from t2t_mtl.evaluation import EvaluationError, load_checkpoint
    from t2t_mtl.evaluation.checkpoint import check_routing_device, checked_checkpoint

    invalid = below_one(args, ("num_beams", "max_new_tokens", "batch_size", "max_input_length"))
    if invalid:
        print(f"error: {invalid}", file=sys.stderr)
        return 2
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    ignored = ignored_scoring_option(args)
    if ignored:
        print(f"error: {ignored}", file=sys.stderr)
        return 2
    try:
        requests = _requests(args)
        # an input naming no task (no --task) takes the model's implied task, known once the model is loaded
        unnamed = not args.task and not all(request.task for request in requests)
        ignored = ignored_for_inputs(args, requests) or (None if unnamed else idle_task_sources(args, requests,
                                                                                                args.task))
        if ignored:
            print(f"error: {ignored}", file=sys.stderr)
            return 2
        checked_checkpoint(args.checkpoint)  # (before hiding transformers' bars, which imports transformers)
        _check_beams_before_loading(args, requests)
        from t2t_mtl.evaluation.predict import implied_task, predict  # (imports transformers: after the checks above)

        with hidden_transformers_progress_bars():  # ('Loading weights': predict draws no bar of its own)
            model, tokenizer, meta = load_checkpoint(args.checkpoint)
        task = args.task or implied_task(model, meta)
        ignored = idle_task_sources(args, requests, task) if unnamed else None
        if ignored:
            print(f"error: {ignored}", file=sys.stderr)
            return 2
        model.to(device)
        check_routing_device(model, device, args.checkpoint)
        tasks = input_tasks(args, requests, meta, task)
        predictions = predict(model, tokenizer, requests, scoring=args.scoring, default_task=args.task, meta=meta,
                              postprocessing={name: t for name, t in tasks.items() if t.postprocess is not None},
                              pick_protocols={name: t.eval_protocol for name, t in tasks.items()},
                              **decoding_settings(args, meta))
    except EvaluationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:  # the tasks: a task file or module, or a postprocess failing on an answer
        return fail(error, args.tasks_dir)
    for prediction in predictions:
        if args.raw and prediction.output is not None:
            prediction = dataclasses.replace(prediction, prediction=prediction.output)
        print(json.dumps(prediction.to_dict(), ensure_ascii=False) if _jsonl(args)
              else prediction.prediction.replace("\n", "\\n"))
    return 0
