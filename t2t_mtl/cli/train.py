"""`t2t-mtl train [CONFIG] [--set k=v ...] [--resume auto|PATH] [--data-dir D]`."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from t2t_mtl.cli.common import add_data_dir_option, data_dir_problem, path_argument
from t2t_mtl.cli.progress_bars import DATASETS_BARS_BY_COMMAND
from t2t_mtl.datasets_progress_bars import hidden_datasets_progress_bars

if TYPE_CHECKING:
    from t2t_mtl.config import Config

#: the exit code of a run stopped before its last step with its checkpoint saved (SIGTERM, SIGUSR1, a first Ctrl-C),
#: on every rank: sysexits.h's EX_TEMPFAIL, "try again later", on which a job script requeues it (`--resume auto`)
INTERRUPTED_EXIT = 75


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a multitask T5 (no CONFIG: the packaged quickstart)",
        description="Train per a layered YAML config (default: the packaged quickstart.yaml). Runs as one "
                    "process, or under torchrun / the deepspeed launcher / srun for several.")
    parser.add_argument("config", type=path_argument, nargs="?", default=None,
                        help="YAML config path or packaged name (quickstart, t0_lora, t5_recipe, default); "
                             "default: quickstart, or with --resume PATH that run's config.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one key, e.g. --set training.steps=200 (repeatable; values are YAML; a "
                             "key part with dots in quotes: --set 'data.tasks.\"my.task\"=2')")
    parser.add_argument("--resume", type=path_argument, default=None, metavar="auto|PATH",
                        help="'auto' (the run's latest checkpoint, if any), a run dir or a checkpoint dir")
    add_data_dir_option(parser, fallback="the config's data.data_dir, else $T2T_MTL_DATA_DIR")
    parser.add_argument("--print-config", action="store_true",
                        help="check the resolved config as a run would (the tasks' data is read to size the "
                             "mixture; nothing is trained or written to the run folder), print it, exit")
    parser.set_defaults(func=run, **{DATASETS_BARS_BY_COMMAND: True})  # (train() and --print-config hide them)


def resumed_run_config(resume: Optional[str]) -> Optional[str]:
    """The config.yaml of the run that `--resume PATH` names (a run dir or one of its checkpoints), the config of a
    resume without CONFIG; None for `auto`, no --resume or a path without one (then: quickstart)."""
    if not resume or resume == "auto":
        return None
    path = Path(resume)
    for run_dir in (path, path.parent.parent):  # RUN or RUN/checkpoints/step-N
        if (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints").is_dir():
            return str(run_dir / "config.yaml")
    return None


def saved_config_note(saved: Optional[str]) -> str:
    """What the error of a config refused on a resume that reads the run's saved config (`saved`, its config.yaml)
    adds: where the values come from and how to correct one (nothing where the command line names the config)."""
    if saved is None:
        return ""
    return (f" (this resume reads the run's saved config, {saved}, where a run started with an earlier t2t-mtl may "
            f"hold a value this version refuses: correct it with --set KEY=VALUE, which the resumed run saves there, "
            f"or edit the file)")


def print_checked_config(cfg, args: argparse.Namespace) -> int:
    """Print `cfg` if a run would accept it: the same checks as `train` before it builds anything (the
    mixture's data is read to size it), then the DeepSpeed config the run would initialise DeepSpeed with, as YAML
    comments (the output still loads as the config); warnings about idle settings and, on a resume, templates edited
    since the checkpoint go to stderr."""
    import torch

    from t2t_mtl.config import check_paths
    from t2t_mtl.engine.checkpoint import resolve_checkpoint
    from t2t_mtl.engine.host_precision import check_precision
    from t2t_mtl.engine.distributed import select_cpu_accelerator, trains_on_gpu
    from t2t_mtl.engine.idle_settings import config_warnings
    from t2t_mtl.engine.model_checks import check_moe_backend, is_local_model, pretrained_config_dict
    from t2t_mtl.engine.run_checks import check_run_config
    from t2t_mtl.engine.training_templates import template_digests_of, template_names_of, training_template_selection
    from t2t_mtl.engine.resume_checks import check_resume_config, template_change_warnings

    select_cpu_accelerator()  # (as a run does before its checks load DeepSpeed, which would warn on stdout)
    if args.data_dir is not None:
        cfg.data.data_dir = str(args.data_dir)
    check_paths(cfg)
    check_precision(cfg.training.precision, on_gpu=trains_on_gpu())
    ckpt = resolve_checkpoint(args.resume, Path(cfg.training.output_dir)) if args.resume else None
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    checked = check_run_config(cfg, world_size=world_size)
    name = cfg.model.name_or_path
    check_moe_backend(cfg, pretrained_config_dict(name) if is_local_model(name) else None,
                      torch.device("cuda" if trains_on_gpu() else "cpu"))
    rates = checked.rates
    warnings = config_warnings(cfg, world_size, checked.deepspeed, checked.sampler, resuming=ckpt is not None)
    if ckpt is not None:  # what the resumed run would refuse (other tasks, LoRA, seed, ...) or warn of (templates)
        templates = training_template_selection(cfg, list(rates))
        meta = check_resume_config(cfg, ckpt, list(rates), template_names_of(templates))
        warnings += template_change_warnings(ckpt, meta, template_digests_of(templates))
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(with_moe_defaults_note(with_tokenizer_note(cfg.to_yaml(), cfg), cfg), end="")
    ds_config = json.dumps(checked.deepspeed.config, indent=1)  # (as the run writes it)
    print(f"# the DeepSpeed config of this run on {world_size} rank(s), saved as deepspeed_config.json in its folder:")
    print("\n".join(f"# {line}" for line in ds_config.splitlines()))
    return 0


def with_tokenizer_note(text: str, cfg: Config) -> str:
    """`cfg`'s YAML `text` with, above its tokenizer section, a comment naming the tokenizer the run loads where it
    trains none (`tokenizer_source`: tokenizer.path's, else model.name_or_path's own), so tokenizer.train is unused."""
    from t2t_mtl.config import tokenizer_source

    source = tokenizer_source(cfg)
    if source is None:
        return text
    key = "tokenizer.path" if cfg.tokenizer.path is not None else "model.name_or_path"
    note = f"# the run loads the tokenizer of {key} ({source}) and trains none: tokenizer.train is unused\n"
    return text.replace("\ntokenizer:\n", f"\n{note}tokenizer:\n", 1)


def with_moe_defaults_note(text: str, cfg: Config) -> str:
    """`cfg`'s YAML `text` with, above its model.moe section, a comment naming the MoE keys the section leaves unset
    and the defaults the run takes for them (renormalize's null as what it decides for this top_k), then those its
    routing never reads (`unread_moe_keys`), with the setting that leaves them unread; task_names (the run's tasks)
    and expert_ids (an export's) are left out."""
    import dataclasses
    from itertools import groupby

    from t2t_mtl.model.moe_config import MoEConfig, unread_moe_keys

    if not cfg.model.moe:
        return text
    given = dict(cfg.model.moe)
    unread = unread_moe_keys(given.get("routing", MoEConfig.routing), given.get("dropless", MoEConfig.dropless))
    unset = [f for f in dataclasses.fields(MoEConfig) if f.name not in given and f.name not in ("task_names",
                                                                                                "expert_ids")]
    if not unset:
        return text
    top_k = given.get("top_k", MoEConfig.top_k)
    shown = {True: "true", False: "false"}
    used = [f for f in unset if f.name not in unread]
    values = ", ".join(f"{f.name} {shown.get(f.default, f.default)}" if f.name != "renormalize" else
                       f"renormalize null (so {shown[top_k > 1]}: top_k {top_k})" for f in used)
    parts = [f"at their defaults: {values}"] if used else []
    parts += [f"unused under {setting}: {', '.join(keys)}" for setting, keys in
              groupby((f.name for f in unset if f.name in unread), key=unread.get)]
    note = f"  # model.moe keys left unset, {'; '.join(parts)}\n"
    return text.replace("\n  moe:\n", f"\n{note}  moe:\n", 1)


def stopped_before_start(args: argparse.Namespace) -> int:
    """Exit code 2 for a run refused with its error printed; a rank of a job that had not joined the others yet first
    lets them stop too (`report_failed_start`: they wait in the rendezvous for it). Not for `--print-config`, whose
    ranks never join."""
    if not args.print_config:
        from t2t_mtl.engine.distributed import report_failed_start

        report_failed_start()
    return 2


def run(args: argparse.Namespace) -> int:
    from t2t_mtl.config import ConfigError, load_config
    from t2t_mtl.config_errors import LaunchEnvironmentError, RankStoppedError
    from t2t_mtl.engine.checkpoint import CheckpointError
    from t2t_mtl.engine.occupied_run_dir import refuse_occupied_run_dir

    problem = data_dir_problem(args.data_dir)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return stopped_before_start(args)
    saved = None if args.config else resumed_run_config(args.resume)
    try:  # a folder holding another run is refused before the trainer's modules load (seconds) and anything starts
        cfg = load_config(args.config or saved or "quickstart", args.overrides)
        if not args.print_config:  # (which writes nothing to the run folder)
            refuse_occupied_run_dir(Path(cfg.training.output_dir), args.resume)
    except ConfigError as err:
        print(f"error: {err}{saved_config_note(saved)}", file=sys.stderr)
        return stopped_before_start(args)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return stopped_before_start(args)
    # (imported before the try, whose handlers name them: a Ctrl-C while torch and DeepSpeed load is `main`'s 130)
    from t2t_mtl.engine.distributed import leave_process_group, shut_down_process_group
    from t2t_mtl.engine.rank_phases import CollectiveBrokenError, RanksAtDifferentPhasesError
    from t2t_mtl.engine.stop import ignore_stop_signals
    from t2t_mtl.engine.trainer import TrainingAbortedError, train
    from t2t_mtl.launched_ranks import launched_world_size

    try:
        if args.print_config:
            with hidden_datasets_progress_bars():  # (train() shows them on rank 0 while training.progress_bar is on)
                return print_checked_config(cfg, args)
        result = train(cfg, resume=args.resume, data_dir=args.data_dir)
        if result.interrupted and launched_world_size() > 1:  # (saved: the launcher's SIGTERM has nothing to stop)
            ignore_stop_signals()
        shut_down_process_group()
    except ConfigError as err:  # (another rank's stop, or the launch environment's refusal: not this config's)
        caused_elsewhere = isinstance(err, (RankStoppedError, LaunchEnvironmentError))
        print(f"error: {err}{'' if caused_elsewhere else saved_config_note(saved)}", file=sys.stderr)
        return stopped_before_start(args)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return stopped_before_start(args)
    except TrainingAbortedError as err:
        print(f"error: training aborted: {err}", file=sys.stderr)
        leave_process_group()  # (every rank aborts at the same step; gloo's teardown could turn 1 into -6)
        return 1
    except (RanksAtDifferentPhasesError, CollectiveBrokenError) as err:  # (ranks apart, or another rank gone)
        print(f"error: {err}", file=sys.stderr)
        leave_process_group()
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C, or one before training began (a first one in training saves)
        print("error: aborted (Ctrl-C); nothing was saved since the last checkpoint", file=sys.stderr)
        leave_process_group()
        return 130
    except (KeyError, ValueError) as err:  # errors of the registry / sampler / weighting builders name the key
        if type(err).__module__.startswith(("t2t_mtl", "task_registry")):
            print(f"error: {err}", file=sys.stderr)
            return stopped_before_start(args)
        raise
    ended = INTERRUPTED_EXIT if result.interrupted else 0
    if int(os.environ.get("RANK", "0")) != 0:  # one summary per job, not one per rank
        return ended
    state = "interrupted (checkpoint saved)" if result.interrupted else \
        "stopped early (training.early_stopping)" if result.stopped_early else "finished"
    print(f"{state} at step {result.step}; run dir {result.run_dir}; last checkpoint {result.checkpoint}")
    if result.interrupted:  # (a bare `--resume auto` would start the quickstart: it takes CONFIG and --set again)
        print(f"continue it with: t2t-mtl train --resume {shlex.quote(str(result.run_dir))} (its config.yaml, "
              f"--set values included)")
    return ended
