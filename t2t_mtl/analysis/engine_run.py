"""One transfer-study run through the real stack: train with the engine, score with the evaluation runner.

A run is a single process (world size 1); studies spread runs over processes instead. Every run of a study
shares one tokenizer, trained once on all of the study's tasks (so that scores differ only by the training
set), unless the base config names one.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from t2t_mtl.analysis.errors import RunResultError, StudyConfigError

TOKENIZER_DIR = "tokenizer"

#: config keys each run of a study sets itself (`_run_config`), and the option that sets them where there is one
STUDY_KEYS = {"data.mixture": "--tasks", "data.tasks": "--tasks", "data.validation_examples": None,
              "training.seed": "--seeds", "training.steps": "--steps", "training.output_dir": "--out",
              "training.progress_bar": None, "training.checkpoint_every": None, "training.keep_checkpoints": None,
              "training.plot": None, "training.tensorboard": None, "evaluation": "--eval-examples"}


def refuse_study_overrides(overrides: Sequence[str]) -> None:
    """StudyConfigError for a `--set` of a key that every run of the study replaces (it would be ignored)."""
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        for study_key, option in STUDY_KEYS.items():
            if key == study_key or key.startswith(study_key + "."):
                use = f"; use {option}" if option else ""
                raise StudyConfigError(f"--set {item!r}: the study sets {study_key} for each of its runs, so it would "
                                       f"be ignored{use}")


def base_config_dict(config: Optional[str] = None, overrides: Sequence[str] = (), *,
                     data_dir: Optional[str] = None, tasks_dir: Union[None, str, Sequence[str]] = None,
                     task_modules: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """The validated base training config of a study as a plain dict (default: the packaged quickstart).

    `data_dir` replaces data.data_dir; `tasks_dir` (a folder of YAML task files, or several) is added to
    data.tasks_dir, `task_modules` to data.task_modules."""
    from t2t_mtl.config import load_config

    cfg = load_config(config if config is not None else "quickstart", list(overrides))
    if data_dir is not None:
        cfg.data.data_dir = str(data_dir)
    cfg.data.tasks_dir = _with_added(cfg.data.tasks_dir, tasks_dir)
    cfg.data.task_modules = _with_added(cfg.data.task_modules, task_modules)
    return cfg.to_dict()


def _with_added(value: Union[None, str, Sequence[str]], added: Union[None, str, Sequence[str]]
                ) -> Union[None, str, list[str]]:
    """A config's one-or-list value (`data.tasks_dir`, `data.task_modules`) with the entries of `added` it lacks
    appended: one entry stays a string, several a list, none None."""
    entries = [] if not value else [value] if isinstance(value, str) else [str(v) for v in value]
    for entry in [added] if isinstance(added, str) else (added or []):
        if str(entry) not in entries:
            entries.append(str(entry))
    return None if not entries else entries[0] if len(entries) == 1 else entries


def _run_config(base_cfg: Optional[Mapping[str, Any]], train_tasks: Sequence[str], seed: int, steps: int,
                out_dir: Path, tokenizer_path: Optional[str], cache_dir: Optional[str] = None) -> Any:
    from t2t_mtl.config import TokenizerConfig, config_from_dict, deep_merge

    approved = ((base_cfg or {}).get("data") or {}).get("train_held_out") or []
    override: dict[str, Any] = {  # data.train_held_out: the study's list, narrowed to the tasks this run trains
        "data": {"mixture": None, "tasks": list(train_tasks), "validation_examples": 0,
                 "train_held_out": [name for name in approved if name in train_tasks]},
        "training": {"seed": int(seed), "steps": int(steps), "output_dir": str(out_dir), "progress_bar": False,
                     "checkpoint_every": 0, "keep_checkpoints": 1, "plot": False, "tensorboard": False},
        "evaluation": {"held_out": False, "tasks": None, "bigbench": None},  # the study scores its runs itself
    }
    if tokenizer_path is not None:
        override["tokenizer"] = {"path": tokenizer_path}
    if cache_dir is not None:
        override["data"]["cache_dir"] = cache_dir
    cfg = config_from_dict(deep_merge(dict(base_cfg or {}), override))
    if tokenizer_path is not None:  # the study trained it with the base's tokenizer.train; no run trains one
        cfg.tokenizer.train = TokenizerConfig().train
    return cfg


def _single_process_env() -> None:
    """Make this process a world of one with its own rendezvous port (pool workers inherit the parent's)."""
    import torch.distributed as dist

    world = os.environ.get("WORLD_SIZE")
    if world not in (None, "1"):
        raise StudyConfigError(f"WORLD_SIZE={world}: a transfer study trains each run in one process; launch it "
                               f"with plain `t2t-mtl affinity transfer` and spread runs with --workers/--shard")
    if not dist.is_initialized():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))


def study_tokenizer(base_cfg: Optional[Mapping[str, Any]], tasks: Sequence[str], study_dir: Path) -> Optional[str]:
    """Path of the tokenizer shared by every run: the base config's, or one prepared once for all `tasks` as a
    run prepares its own (a pretrained model's own tokenizer, else one trained on the tasks), cached in
    `<study>/tokenizer`. Returns None only when the base config names a tokenizer. Whichever it is (the base's, one
    cached by an earlier invocation, or the one prepared now, before it is cached) passes a run's tokenizer checks
    (`check_run_tokenizer`) here, once, before any run: a ConfigError names what to use instead.

    Shards started together may each train it: each trains in a folder of its own and moves it into place,
    and one that finds the tokenizer already there keeps that one (the training is deterministic)."""
    if base_cfg and (base_cfg.get("tokenizer") or {}).get("path"):
        _check_tokenizer_folder(_run_config(base_cfg, tasks, 0, 1, Path(study_dir), None))
        return None
    out = Path(study_dir).resolve() / TOKENIZER_DIR
    if (out / "tokenizer_config.json").exists():
        _check_tokenizer_folder(_run_config(base_cfg, tasks, 0, 1, Path(study_dir), str(out)), cached=True)
        return str(out)
    import torch

    from t2t_mtl.engine.distributed import DistEnv
    from t2t_mtl.engine.run_tokenizer import check_run_tokenizer, prepare_tokenizer
    from t2t_mtl.engine.run_mixture import training_rates

    cfg = _run_config(base_cfg, tasks, 0, 1, Path(study_dir), None)
    main_process = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend="none")
    staging = out.parent / f".{TOKENIZER_DIR}-{socket.gethostname()}-{os.getpid()}"
    try:
        check_run_tokenizer(prepare_tokenizer(cfg, staging, list(training_rates(cfg)), main_process), cfg)
        try:
            os.replace(staging / TOKENIZER_DIR, out)
        except OSError:  # another shard moved its (identical) tokenizer in first
            if not (out / "tokenizer_config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(out)


def _check_tokenizer_folder(cfg: Any, cached: bool = False) -> None:
    """The paths `cfg` names (`check_paths`), then `check_run_tokenizer` of the tokenizer `cfg.tokenizer.path`, as
    each run's `train()` checks them. `cached`: the path is the study's own tokenizer, which an earlier invocation
    prepared; a failing check's ConfigError then says so and how to prepare it again."""
    from t2t_mtl.config import ConfigError, check_paths
    from t2t_mtl.engine.run_tokenizer import check_run_tokenizer
    from t2t_mtl.tokenizer import load_tokenizer

    try:
        check_paths(cfg)
        check_run_tokenizer(load_tokenizer(cfg.tokenizer.path), cfg)
    except ConfigError as err:
        if not cached:
            raise
        raise ConfigError(f"the study's tokenizer {cfg.tokenizer.path}, prepared by an earlier invocation, fails a "
                          f"run's check: {err}; remove {cfg.tokenizer.path} to prepare it again from the base "
                          f"config") from None


def prepare_study(base_cfg: Optional[Mapping[str, Any]], tasks: Sequence[str], study_dir: Path) -> dict[str, Any]:
    """Run options every run of a study shares: the tokenizer's path and (unless the base config names one)
    a tokenized-data cache in the study directory, so each task is tokenized once per seed, not per run."""
    options: dict[str, Any] = {}
    path = study_tokenizer(base_cfg, tasks, study_dir)
    if path is not None:
        options["tokenizer_path"] = path
    if not (base_cfg and (base_cfg.get("data") or {}).get("cache_dir")):
        options["cache_dir"] = str(Path(study_dir).resolve() / "cache")
    return options


def train_and_score(train_tasks: Sequence[str], test_tasks: Sequence[str], seed: int, steps: int,
                    base_cfg: Optional[Mapping[str, Any]], work_dir: Path, *, eval_examples: int = 64,
                    tokenizer_path: Optional[str] = None, cache_dir: Optional[str] = None,
                    keep_checkpoints: bool = False) -> dict[str, float]:
    """Train on `train_tasks` (engine, one process) and return each test task's score.

    A task's score is the mean over its templates of the evaluation runner's primary metric (0–100) on the
    first `eval_examples` validation rows, rendered identically for every run (rank classification for
    tasks with answer choices, greedy generation otherwise). The evaluation report is kept in
    `work_dir/eval.json`; the checkpoint is deleted after scoring unless `keep_checkpoints`.
    """
    from t2t_mtl.engine.trainer import train
    from t2t_mtl.evaluation.aggregate import summarize_task
    from t2t_mtl.evaluation.checkpoint import load_checkpoint
    from t2t_mtl.evaluation.eval_settings import EvalSettings
    from t2t_mtl.evaluation.runner import evaluate_tasks
    from t2t_mtl.transformers_progress_bars import hidden_transformers_progress_bars

    _single_process_env()
    work_dir = Path(work_dir)
    run_dir = work_dir / "train"
    cfg = _run_config(base_cfg, train_tasks, seed, steps, run_dir, tokenizer_path, cache_dir)
    result = train(cfg, resume="auto")  # a retried run continues from its last checkpoint
    if result.interrupted or result.checkpoint is None:
        raise RunResultError(f"training {list(train_tasks)} (seed {seed}) stopped at step {result.step} of {steps} "
                             f"without a final checkpoint; rerun the study to retry this run")
    with hidden_transformers_progress_bars():  # ('Loading weights': the run's own bars are off)
        model, tokenizer, _ = load_checkpoint(run_dir)
    templates = {t: list(cfg.data.templates) for t in test_tasks} if cfg.data.templates else None
    settings = EvalSettings(max_examples=eval_examples, max_input_length=cfg.data.max_input_length,
                            max_new_tokens=cfg.data.max_target_length, templates=templates, seed=0)
    report = evaluate_tasks(model, tokenizer, list(test_tasks), settings, name="+".join(train_tasks),
                            progress=False)
    (work_dir / "eval.json").write_text(json.dumps(report.to_dict(), indent=2))
    scores: dict[str, float] = {}
    for task in test_tasks:
        summary = summarize_task(report.for_task(task))
        if summary.mean is None:
            raise RunResultError(f"task {task!r}: no template could be scored on its validation split "
                                 f"(see {work_dir / 'eval.json'})")
        scores[task] = float(summary.mean)
    if not keep_checkpoints:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return scores
