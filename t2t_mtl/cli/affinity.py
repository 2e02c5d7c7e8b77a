"""`t2t-mtl affinity`: which tasks help which (transfer study, gradient affinity, task embeddings)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from t2t_mtl.analysis.errors import AffinityError, StudyConfigError
from t2t_mtl.cli.common import (add_data_dir_option, add_task_module_option, add_tasks_dir_option, below_one,
                                comma_list_argument, data_dir_problem, fail, path_argument)
from t2t_mtl.output_paths import prepare_output_dir, unwritten_output
from t2t_mtl.registration import register_tasks
from t2t_mtl.wording import counted


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected I/N, e.g. 0/2") from None
    return index, count


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("affinity", help="task relatedness: transfer study, gradient affinity, "
                                   "task embeddings")
    sub = parser.add_subparsers(dest="affinity_command", metavar="ANALYSIS", required=True)

    tr = sub.add_parser("transfer", help="pairwise transfer study (STL, pairs, All, All-but-one, Oracle)")
    tr.add_argument("--tasks", type=comma_list_argument("--tasks", "task names"), required=True,
                    help="comma-separated registered task names")
    tr.add_argument("--seeds", type=int, default=3, help="seeds per setting (default 3)")
    tr.add_argument("--steps", type=int, required=True, help="training steps of every run")
    tr.add_argument("--k", type=float, default=1.5, help="significance factor of the benefit/harm rule (default 1.5)")
    tr.add_argument("--out", type=path_argument, default="runs/affinity-transfer",
                    help="study directory (resumable; default runs/affinity-transfer)")
    tr.add_argument("--workers", type=int, default=1, help="runs trained at once in worker processes (default 1)")
    tr.add_argument("--shard", type=_shard, default=(0, 1),
                    help="run only every N-th run from I (I/N; default 0/1: every run)")
    tr.add_argument("--config", type=path_argument, default=None,
                    help="base training config (YAML or packaged name; default: quickstart)")
    tr.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a base config key (repeatable)")
    add_data_dir_option(tr, fallback="the base config's data.data_dir, else $T2T_MTL_DATA_DIR")
    add_tasks_dir_option(tr)  # added to the base config's data.tasks_dir: every run registers them
    add_task_module_option(tr)  # (and to its data.task_modules)
    tr.add_argument("--eval-examples", type=int, default=64, help="validation examples scored per task (default 64)")
    tr.add_argument("--keep-checkpoints", action="store_true",
                    help="keep each run's final checkpoint (default: delete it once the run is scored)")
    tr.set_defaults(func=_run_transfer)

    gr = sub.add_parser("gradients", help="per-pair gradient cosines of a run trained with gradient surgery")
    gr.add_argument("run_dir", type=path_argument, help="training run directory (holds the JSONL log)")
    gr.add_argument("--out", type=path_argument, default=None, help="output folder (default RUN_DIR/affinity)")
    gr.add_argument("--threshold", type=float, default=None,
                    help="cut the clustering at 1 - mean cosine (default 1.0)")
    gr.add_argument("--clusters", type=int, default=None, help="cut into this many clusters instead")
    gr.set_defaults(func=_run_gradients)

    em = sub.add_parser("embeddings", help="export and plot the task embeddings (TE⊕ENC) of a trained run")
    em.add_argument("run_dir", type=path_argument, help="run directory, checkpoint directory or exported HF folder")
    em.add_argument("--out", type=path_argument, default=None, help="output folder (default RUN_DIR/affinity)")
    em.set_defaults(func=_run_embeddings)


def check_trainable(tasks: list[str], base_cfg: dict) -> None:
    """Raise before anything is trained when a study task could not be trained under the base config: its
    cluster is held out there, it is evaluation-only, flagged held out and not in data.train_held_out, or it
    lacks a template data.templates names (the engine's own checks, worded for this command line)."""
    import task_registry

    from t2t_mtl.engine.held_out import (HeldOutClusterTaskError, UnapprovedHeldOutTaskError,
                                         refuse_held_out_cluster, refuse_unapproved_held_out)

    data = base_cfg.get("data") or {}
    try:
        for name in tasks:
            refuse_held_out_cluster(name, data.get("held_out_clusters") or [])
        task_registry.training_rates(task_registry.Mixture("--tasks", dict.fromkeys(tasks, 1.0)), force=True)
        refuse_unapproved_held_out(tasks, data.get("train_held_out") or [], "--tasks")
    except HeldOutClusterTaskError as err:
        fix = "" if task_registry.get_task(err.task).held_out else " or pass --set 'data.held_out_clusters=[]'"
        raise StudyConfigError(
            f"task {err.task!r} is in cluster {err.cluster!r}, which the base config holds out "
            f"(data.held_out_clusters: {err.held_out_clusters}), so no run could train on it; drop it from "
            f"--tasks{fix}") from None
    except UnapprovedHeldOutTaskError as err:
        raise StudyConfigError(
            f"task(s) {err.tasks} are flagged held_out (kept for zero-shot evaluation); to train on them "
            f"deliberately pass --set 'data.train_held_out=[{','.join(err.tasks)}]', else drop them from "
            f"--tasks") from None
    for template in data.get("templates") or ():
        lacking = [name for name in tasks if template not in task_registry.get_task(name).template_names]
        if lacking:
            raise StudyConfigError(
                f"task(s) {lacking} have no template {template!r}, which the base config's data.templates asks of "
                f"every training task, so no run could train on them; drop them from --tasks or change "
                f"data.templates")


def _run_transfer(args: argparse.Namespace) -> int:
    from t2t_mtl.analysis.engine_run import base_config_dict, refuse_study_overrides
    from t2t_mtl.analysis.transfer_study import TransferStudy

    try:
        import task_registry

        task_registry.load_builtin_tasks()
        prepare_output_dir(args.out, "--out", create=False)  # (a refused study creates no folder)
        invalid = below_one(args, ("seeds", "steps", "workers", "eval_examples")) or data_dir_problem(args.data_dir)
        if invalid:
            raise StudyConfigError(invalid)
        if not 0 <= args.k < float("inf"):  # (NaN compared false and was let through; inf ruled out every relation)
            raise StudyConfigError(f"--k must be a finite number, at least 0, got {args.k}")
        refuse_study_overrides(args.overrides)
        base_cfg = base_config_dict(args.config, args.overrides, data_dir=args.data_dir, tasks_dir=args.tasks_dir,
                                    task_modules=args.task_modules)
        register_tasks(base_cfg["data"]["tasks_dir"], base_cfg["data"]["task_modules"])
        for name in args.tasks:  # unknown names fail here, before anything is trained
            task_registry.get_task(name)
        check_trainable(args.tasks, base_cfg)
        study = TransferStudy(args.tasks, args.seeds, args.steps, args.out, k=args.k, base_cfg=base_cfg,
                              run_options={"eval_examples": args.eval_examples,
                                           "keep_checkpoints": args.keep_checkpoints})
        outcome = study.run(workers=args.workers, shard=args.shard)
    except (AffinityError, ValueError, KeyError) as exc:
        return fail(exc, args.tasks_dir)
    if not outcome.complete:
        print(f"{counted(len(outcome.missing), 'run')} still missing (other shards or a later phase): rerun the same "
              f"command (any shard, or without --shard) to finish")
        return 0
    print(f"study complete: {counted(len(outcome.ran), 'run')} trained now; outputs:")
    for name, path in outcome.outputs.items():
        print(f"  {name}: {path}")
    return 0


def _run_gradients(args: argparse.Namespace) -> int:
    from t2t_mtl.analysis.gradient_affinity import affinity_summary, read_cosine_log, write_gradient_affinity

    if args.clusters is not None and args.clusters < 1:  # scipy would silently cut 0 into one cluster
        print(f"error: --clusters must be at least 1, got {args.clusters}", file=sys.stderr)
        return 2
    if args.threshold is not None and not 0 < args.threshold <= 2:  # (NaN and <= 0 kept every task apart, > 2
        print(f"error: --threshold must be a distance in (0, 2] (1 - mean cosine; --clusters 1 puts every task in "
              f"one cluster), got {args.threshold}", file=sys.stderr)  # merged every task, however opposed)
        return 2
    if args.clusters is not None and args.threshold is not None:
        print("error: --clusters cuts the clustering into that many clusters instead of at --threshold, which "
              "would be ignored: give one of the two", file=sys.stderr)
        return 2
    try:
        series = read_cosine_log(args.run_dir)
        series.check_comparable()
        unmeasured = series.tasks_never_measured()
        if unmeasured:
            one = len(unmeasured) == 1
            print(f"warning: task{'' if one else 's'} {', '.join(unmeasured)} {'was' if one else 'were'} never "
                  f"measured beside another task in the {counted(len(series.steps), 'logged step')}: no cosine, so "
                  f"{'it is' if one else 'each is'} clustered alone", file=sys.stderr)
        out = prepare_output_dir(Path(args.out) if args.out else Path(args.run_dir) / "affinity", "--out", create=False)
        paths = write_gradient_affinity(series, out, threshold=1.0 if args.threshold is None else args.threshold,
                                        n_clusters=args.clusters)
    except (AffinityError, ValueError, KeyError) as exc:
        return fail(exc)
    except OSError as exc:  # an --out that cannot be written (permissions, a read-only disk)
        return fail(unwritten_output(exc, "--out", out, "the gradient affinity"))
    print("\n".join(affinity_summary(json.loads(paths["json"].read_text(encoding="utf-8")))))
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _run_embeddings(args: argparse.Namespace) -> int:
    from t2t_mtl.analysis.task_embeddings import export_task_embeddings

    try:
        from t2t_mtl.engine.export import load_trained_model

        out = prepare_output_dir(Path(args.out) if args.out else Path(args.run_dir) / "affinity", "--out", create=False)
        model, tokenizer, _meta = load_trained_model(args.run_dir)
    except (AffinityError, ValueError, KeyError, FileNotFoundError) as exc:
        return fail(exc)
    try:
        paths = export_task_embeddings(model, tokenizer, out)
    except (AffinityError, ValueError, KeyError) as exc:
        return fail(exc)
    except OSError as exc:  # an --out that cannot be written (permissions, a read-only disk)
        return fail(unwritten_output(exc, "--out", out, "the task embeddings"))
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0
