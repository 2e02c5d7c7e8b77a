"""The training loop, top to bottom: `train(config) -> TrainResult`.

One call does everything a run needs, in order: validate the config and its paths, refuse a folder that already
holds a run unless resuming, join the process group, resolve the mixture (held-out clusters dropped),
prepare the tokenizer (trained on the mixture when none is given; kept in the run directory), tokenize each
task (cached per task), build the T5, the sampler, the per-task row streams and the loss weighting, start
DeepSpeed, restore a checkpoint when resuming, then loop:

    for each optimizer step:
        for each of grad_accum micro-batches (sampler picks the task(s), TaskStreams the rows):
            forward → per-example token-mean CE → mean per task → weighting → scalar loss
            a non-finite loss, or all-zero task losses, poison the micro-batch's loss (NaN, on the device)
            engine.backward(loss); [gradient-surgery hook]
        the step's losses read once, its figures summed over ranks in one collective; a micro-batch bad on any
            rank skips the step on every rank (DeepSpeed's overflow check, or guarded_skip_step); engine.step()
        sampler.update(all-reduced per-task losses)
        every validate_every steps: held-in validation → samplers, weighting, keep_best (a new best is saved),
            early_stopping (stop after N validations without a new best)
        every evaluation.every steps: zero-shot evaluation of the held-out tasks (logged only)
        log; checkpoint every N steps or on SIGTERM / a first Ctrl-C (a second one aborts)

and finally save a checkpoint, plot the per-task losses, load the best checkpoint (keep_best), score held-in
validation examples by greedy generation (exact match) and run the `evaluation:` section. Every rank runs this
same function (launch with torchrun/deepspeed/srun).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from t2t_mtl.config import Config, ConfigError, ConfigTypeError, check_paths, config_from_dict, load_config
from t2t_mtl.config_errors import RankStoppedError
from t2t_mtl.data import BatchBuilder, Seq2SeqCollator, build_task_streams, count_tokens
from t2t_mtl.data.few_shot import FewShotMix
from t2t_mtl.data.packing import PackedCollator
from t2t_mtl.data.streams import shared_cache_dir
from t2t_mtl.datasets_progress_bars import hidden_datasets_progress_bars
from t2t_mtl.engine import checkpoint as ckpt_io
from t2t_mtl.engine import checkpoint_saving, resume_checks, universal_conversion
from t2t_mtl.engine.capacity_overflow import CapacityOverflowWarning
from t2t_mtl.engine.host_precision import auto_precision_reason, check_precision, emulated_bf16_warning
from t2t_mtl.engine.deepspeed_engine import (check_engine_settings, engine_precision, guarded_skip_step,
                                             has_overflow_check, initialize_deepspeed, loads_through_universal,
                                             step_weighting)
from t2t_mtl.engine.distributed import (DistEnv, barrier, failed_ranks, failed_ranks_wording,
                                        init_distributed, max_over_ranks, refuse_failed_start, sum_over_ranks)
from t2t_mtl.engine.durable_writes import write_text_atomic
from t2t_mtl.engine.best import BestValidation
from t2t_mtl.engine.config_changes import config_change_warning
from t2t_mtl.engine.evaluated_data import evaluated_data_warnings
from t2t_mtl.engine.final_evaluation import (evaluation_label, load_best_for_evaluation, score_held_in,
                                             score_held_out)
from t2t_mtl.engine.export import initialisation_record
from t2t_mtl.engine.losses import add_task_entropies, example_task_ids, per_task_losses
from t2t_mtl.engine.logging import ScalarSinks, TrainLogger, open_tensorboard, plot_task_losses, show_logger
from t2t_mtl.engine.occupied_run_dir import refuse_occupied_run_dir
from t2t_mtl.engine.one_rank_clipping import use_one_rank_clipping
from t2t_mtl.engine.own_checkpoint_files import check_own_files, nvme_offload_index
from t2t_mtl.engine.checked_deepspeed import CheckedDeepSpeed
from t2t_mtl.engine.idle_settings import config_warnings, idle_curriculum_warning, idle_schedule_warning
from t2t_mtl.engine.model_checks import check_moe_backend, is_local_model, pretrained_config_dict
from t2t_mtl.engine.run_checks import check_run_config
from t2t_mtl.engine.run_sampling import with_template_sizes
from t2t_mtl.engine.training_templates import template_digests_of, template_names_of, training_template_selection
from t2t_mtl.engine.rank_agreement import disagreement
from t2t_mtl.engine.rng_states import callers_rng_kept, rng_kept
from t2t_mtl.engine.run_lock import RunLock, take_together
from t2t_mtl.engine.resumed_model import check_universal_fills, left_unfilled, loads_every_tensor
from t2t_mtl.engine.run_tokenizer import (check_model_tokenizer, check_resumed_tokenizer, check_run_tokenizer,
                                          prepare_task_tokens, prepare_tokenizer, vocab_before_task_tokens)
from t2t_mtl.engine.signals import finite_validation, select_candidate_chunk, task_means
from t2t_mtl.engine.step_totals import StepTotals
from t2t_mtl.engine.stop import StopSignals
from t2t_mtl.engine.training_state import LoopParts, Progress, rank_state, restore, shared_parts, trainer_state
from t2t_mtl.engine.universal_frozen import check_saved_frozen, frozen_names
from t2t_mtl.engine.universal_limits import check_universal_resume
from t2t_mtl.launched_ranks import launched_rank
from t2t_mtl.model import (accepts_task_ids, build_model, count_parameters, moe_stats, moe_stats_dict,
                           special_ids_of)
from t2t_mtl.model.lora import trainable_parameter_count
from t2t_mtl.model.moe import CapacityDrops, token_masks
from t2t_mtl.model.packing import cross_attention_mask, packed_model_inputs
from t2t_mtl.model.t5 import unfilled
from t2t_mtl.rank_warnings import warned_by_rank_0
from t2t_mtl.repeated_warnings import warned_once
from t2t_mtl.transformers_progress_bars import hidden_transformers_progress_bars
from t2t_mtl.wording import counted


class TrainingAbortedError(RuntimeError):
    """Training stopped: `training.max_bad_steps` consecutive steps had a non-finite or zero loss, or the ranks hold
    different states of a part a checkpoint saves from rank 0 alone (`rank_agreement`)."""


@dataclass(repr=False)
class TrainResult:
    """What a finished (or SIGTERM-interrupted) run produced. Its repr is one line (`__repr__`), not its
    `task_sequence` (a task per micro-batch) and per-task dicts."""

    run_dir: Path
    step: int
    final_loss: float
    task_losses: Dict[str, float]
    examples_seen: Dict[str, int]
    skipped_steps: int
    tokens_per_second: float
    wall_time_s: float
    checkpoint: Optional[Path]
    held_in_accuracy: Optional[float] = None
    held_in_per_task: Dict[str, float] = field(default_factory=dict)
    chance_accuracy: Optional[float] = None
    held_in_moe_drops: Optional[CapacityDrops] = None  # (MoE with an expert capacity) the held-in generations' drops
    interrupted: bool = False
    stopped_early: bool = False  # training.early_stopping ended the run before training.steps
    task_sequence: List[str] = field(default_factory=list)
    held_out_scores: Dict[str, float] = field(default_factory=dict)  # zero-shot task medians (0-100)
    held_out_accuracy: Optional[float] = None  # their macro average (0-100)
    eval_report: Optional[Path] = None
    best_checkpoint: Optional[Path] = None  # training.keep_best: the selected checkpoint
    evaluated_step: Optional[int] = None  # the step whose weights the after-training evaluations scored

    def __repr__(self) -> str:
        """`TrainResult('runs/x', step 2500, final loss 1.234, held-in exact match 52.1%, held-out macro average
        48.0)`: the scores where they were computed (`—` for an average with none), then `interrupted` or `stopped
        early` where so."""
        parts = [repr(str(self.run_dir)), f"step {self.step}", f"final loss {self.final_loss:.4g}"]
        if self.held_in_accuracy is not None:
            parts.append(f"held-in exact match {100 * self.held_in_accuracy:.1f}%")
        if self.held_out_scores:
            average = "—" if self.held_out_accuracy is None else f"{self.held_out_accuracy:.1f}"
            parts.append(f"held-out macro average {average}")
        parts += ["interrupted"] * self.interrupted + ["stopped early"] * self.stopped_early
        return f"TrainResult({', '.join(parts)})"


# ------------------------------------------------------------------------------------------ set-up helpers

def as_config(config: Union[Config, Mapping[str, Any], str, Path, None], overrides: Sequence[str] = ()) -> Config:
    """A Config validated once from a Config (checked again, as edited in Python, into a copy that keeps its
    `base_only_keys` the `overrides` leave alone), a dict (its `base:` read as a YAML file's), a YAML path / packaged
    name, or None (quickstart); a `config` of another type is a ConfigTypeError saying what it takes."""
    if isinstance(config, (Config, Mapping)):
        return load_config(None, overrides, extra=config) if overrides else config_from_dict(config)
    if not isinstance(config, (str, os.PathLike, type(None))):
        raise ConfigTypeError(f"train() takes a Config, a dict (a YAML file's keys), a YAML file's path or a packaged "
                              f"config's name (quickstart), got {config!r} ({type(config).__name__})")
    return load_config("quickstart" if config is None else config, overrides)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's (`seed` mod 2³²) and torch's generators with `seed`."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def make_run_folders(run_dir: Path, cache_dir: Path, cache_key: str) -> None:
    """Create the run folder and the tokenized-data cache on every rank (so each rank meets the same error, none
    waits at a barrier); a folder that cannot be created (permissions, a read-only disk) is a ConfigError naming
    training.output_dir or `cache_key`."""
    from t2t_mtl.output_paths import OutputPathError, prepare_output_dir

    try:
        prepare_output_dir(run_dir, "training.output_dir")
        prepare_output_dir(cache_dir, cache_key)
    except OutputPathError as error:
        raise ConfigError(str(error)) from None


def tokenized_cache_dir(cfg: Config, run_dir: Path) -> Tuple[Path, str]:
    """(the folder of the run's tokenized tasks, the setting naming it): data.cache_dir, else the one runs share in
    datasets' cache folder (`shared_cache_dir`), else, with datasets' caching off, `run_dir/cache`."""
    if cfg.data.cache_dir:
        return Path(cfg.data.cache_dir), "data.cache_dir"
    shared = shared_cache_dir()
    if shared is not None:
        return shared, "data.cache_dir (unset: datasets' cache folder, HF_DATASETS_CACHE)"
    return run_dir / "cache", "training.output_dir"


def training_streams(cfg: Config, task_names: Sequence[str], tokenizer: Any, cache_dir: Path, env: DistEnv
                     ) -> Dict[str, Any]:
    """Each training task's tokenized train rows (`build_task_streams`); rank 0 tokenizes and caches first, the
    other ranks then read its cache files (without repeating its warnings of the rows: `warned_by_rank_0`). A rank
    that cannot read them (data its node lacks) raises its error and every other rank a ConfigError naming it, at
    once: left alone, they would wait for it in DeepSpeed's start."""
    d = cfg.data
    if not env.is_main:
        barrier("rank 0's training data tokenized")
    error = None
    try:
        with warned_by_rank_0(env.is_main):
            streams = build_task_streams(task_names, tokenizer, split="train",
                                         max_input_length=d.max_input_length,
                                         max_target_length=d.max_target_length, cache_dir=cache_dir,
                                         templates=d.templates, every_template=d.all_templates,
                                         max_examples=d.max_examples_per_task, seed=cfg.training.seed,
                                         few_shot=FewShotMix.from_config(d.few_shot))
    except Exception as err:  # noqa: BLE001 (raised below, once the other ranks know)
        if env.is_main:
            raise  # the others wait for rank 0 in the barrier: its exit ends it
        error = err
    if env.is_main:
        barrier("rank 0's training data tokenized")
    failed = failed_ranks(error is not None, env, "training data read")
    if error is not None:
        raise error
    if failed:
        ranks, its = failed_ranks_wording(failed, env.world_size)
        raise ConfigError(f"{ranks} could not read the training data (see {its} error); every rank must see the same "
                          f"data: data.data_dir, data.cache_dir and task files on a filesystem all nodes share")
    return streams


def build_collator(cfg: Config, pad_id: int, task_tokens: Any = None) -> Union[Seq2SeqCollator, PackedCollator]:
    """The micro-batch collator `data.batching` asks for; packed batches get the TE⊕ENC task token in front
    of every example (padded ones get it from `task_tokens(batch)` after collating)."""
    d = cfg.data
    if d.batching == "pack":
        prefixes = None
        if task_tokens is not None:
            prefixes = {k: [int(token)] for k, token in enumerate(task_tokens.table.tolist())}
        return PackedCollator(pad_id, rows=cfg.training.micro_batch_size, max_input_length=d.max_input_length,
                              max_target_length=d.max_target_length, prefixes=prefixes,
                              pad_to_multiple_of=d.pad_to_multiple_of)
    return Seq2SeqCollator(pad_id, max_input_length=d.max_input_length, max_target_length=d.max_target_length,
                           padding="max_length" if d.batching == "pad_to_max" else "longest",
                           pad_to_multiple_of=d.pad_to_multiple_of)


# -------------------------------------------------------------------------------------------------- losses

def forward_losses(engine: Any, batch: Dict[str, torch.Tensor], task_ids_cpu: torch.Tensor,
                   task_names: Sequence[str], pass_task_ids: bool, entropy_acc: Optional[torch.Tensor] = None,
                   reduction: str = "example") -> Tuple[Dict[str, torch.Tensor], Optional[torch.Tensor]]:
    """Run the model (decoder inputs = labels shifted right, within each segment of a packed batch) and return
    the per-task losses and the MoE layers' auxiliary loss (None for a model without MoE layers).

    `entropy_acc` ([2T] float64, optional): gets each example's normalised prediction entropy added to its
    task's slot and 1 to its task's count (T + id), from this forward's logits (no extra pass). `reduction`:
    `training.loss_reduction` (see `per_task_losses`)."""
    labels = batch["labels"]
    segments = batch.get("decoder_segment_ids")
    if segments is not None:
        kwargs, cross_mask = packed_model_inputs(engine.module, batch)
        attending = cross_attention_mask(engine.module, cross_mask)
    else:
        kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                  "decoder_input_ids": engine.module._shift_right(labels)}
        attending = contextlib.nullcontext()
    kwargs["use_cache"] = False  # no decoding here
    if pass_task_ids:
        kwargs["task_ids"] = batch["task_ids"]
    # MoE layers route no padding: a packed encoder's is segment 0, the decoder's the positions labelled -100
    with attending, token_masks(engine.module, encoder=batch.get("encoder_segment_ids"), decoder=labels.ne(-100)):
        out = engine(**kwargs)
    per_task = per_task_losses(out.logits, labels, task_ids_cpu, task_names, segments, reduction)
    if entropy_acc is not None:
        add_task_entropies(entropy_acc, out.logits, labels, task_ids_cpu, segments)
    return per_task, getattr(out, "aux_loss", None)  # MoE layers' load-balancing and z losses


def start_logging(cfg: Config, run_dir: Path, env: DistEnv, sinks: Optional[ScalarSinks], step: int,
                  resume_from: Optional[Path], log_window: Optional[Dict[str, Any]],
                  resume_warnings: Sequence[str] = (), deepspeed: Optional[CheckedDeepSpeed] = None,
                  sampler: Any = None) -> TrainLogger:
    """The run's `TrainLogger` (rank 0 writes), with the config's warnings (`config_warnings`, of the run's checked
    DeepSpeed config `deepspeed` and its `sampler`) and, on a resume, the message, the `resume_warnings` and the
    logging window the interrupted run had open (so the resumed run's logs equal an uninterrupted run's)."""
    t = cfg.training
    logger = TrainLogger(run_dir / "logs", total_steps=t.steps, start_step=step, log_every=t.log_every,
                         enabled=env.is_main, progress_bar=t.progress_bar, sinks=sinks)
    for warning in config_warnings(cfg, env.world_size, deepspeed, sampler, resuming=resume_from is not None):
        logger.message(f"warning: {warning}")
    if step > 0:
        logger.message(f"resumed from {resume_from} at step {step}")
        later = ckpt_io.later_checkpoints(run_dir, step) if ckpt_io.resumes_in_place(resume_from, run_dir) else []
        if later:
            logger.message(f"warning: {run_dir / ckpt_io.CHECKPOINTS} still holds {', '.join(later)} of the run that "
                           f"went on past step {step}; this run saves over each as it reaches its step, and until then "
                           f"keeps them (unpruned; `latest` names this run's checkpoints)")
        for warning in resume_warnings:
            logger.message(f"warning: {warning}")
        if log_window:
            logger.load_state_dict(log_window)
    return logger


def open_sinks(cfg: Config, run_dir: Path, start_step: int) -> ScalarSinks:
    """Rank 0's scalar sinks: TensorBoard (`training.tensorboard`; a resumed run's later steps purged) and W&B
    (`training.wandb`)."""
    from t2t_mtl.engine.wandb_logging import WandbWriter, check_wandb_section

    t = cfg.training
    tensorboard = open_tensorboard(run_dir / "logs", purge_step=start_step + 1) if t.tensorboard else None
    section = check_wandb_section(t.wandb)
    wandb = WandbWriter(section, run_dir / "logs", cfg.to_dict(), resumed=start_step > 0) if section else None
    return ScalarSinks(tensorboard, wandb)


# ---------------------------------------------------------------------------------------------- the loop

def train(config: Union[Config, Mapping[str, Any], str, Path, None] = None, *, overrides: Sequence[str] = (),
          resume: Union[str, Path, None] = None, data_dir: Union[str, Path, None] = None,
          evaluate_held_in: Optional[bool] = None) -> TrainResult:
    """Train per `config` (Config, dict, YAML path or packaged name; None = quickstart) and return the result.
    A Config is checked again first (edits made in Python included) into a copy, the caller's left as it is;
    `overrides`: `--set` strings layered over `config`.

    `resume`: "auto" (latest checkpoint of the run dir, if any), a run dir, or a checkpoint dir (a str or a Path).
    `data_dir` (a str or a Path): overrides data.data_dir (local copies of hub datasets); the run's data dir holds
    for the run only, one set by `task_registry.set_data_dir` before the call again after it. `evaluate_held_in`: score
    held-in validation examples at the end (default: when `data.validation_examples > 0`). Hugging Face datasets'
    progress bars (loading, rendering, tokenizing) and transformers' (loading a pretrained model) are hidden for the
    run on ranks other than 0 and wherever `training.progress_bar` is off, and left as they were found after it; so
    are torch's intra-op threads, which `training.num_threads` sets for the run only. A warning of a task's rows (a
    filter's dropped rows, an evaluation's truncated inputs) is logged once a run while its words stay the same, though
    the run reads the rows more than once and evaluates every `evaluation.every` steps (`warned_once`). The global
    random generators the run seeds with training.seed are put back as they were found (`callers_rng_kept`).
    """
    from task_registry import restored_data_dir

    started = time.perf_counter()
    cfg = as_config(config, overrides)
    threads = torch.get_num_threads()
    lock = RunLock()
    try:
        hidden = not cfg.training.progress_bar or launched_rank() != 0
        with hidden_datasets_progress_bars(hidden), hidden_transformers_progress_bars(hidden), restored_data_dir(), \
                warned_once(), callers_rng_kept(), contextlib.ExitStack() as closing:
            return _train(cfg, started, resume, data_dir, evaluate_held_in, lock, closing)
    finally:
        lock.release()
        torch.set_num_threads(threads)  # (the caller's, for what it runs next in this process)


def _train(cfg: Config, started: float, resume: Union[str, Path, None], data_dir: Union[str, Path, None],
           evaluate_held_in: Optional[bool], lock: RunLock, closing: contextlib.ExitStack) -> TrainResult:
    """`train` on a validated Config, from `started` (its perf_counter at the call); rank 0 holds the run folder's
    `lock` while it trains (taken before the process group where the folder exists, else once it is created);
    `closing` releases what the run holds (its DeepSpeed engine) when `train` returns or raises."""
    if data_dir is not None:
        cfg.data.data_dir = str(data_dir)
    check_paths(cfg)
    run_dir = Path(cfg.training.output_dir)
    refuse_occupied_run_dir(run_dir, resume)  # (before the process group and the mixture's checks)
    if launched_rank() == 0:
        lock.take(run_dir)  # (a run still training there, as a resume's: refused before the others wait for it)
    env = init_distributed(cfg.training.num_threads)
    refuse_failed_start(env, "training", "a run folder another process trains (rank 0's run.lock), or a config, data "
                        "or path", "config, data and paths", RankStoppedError)
    check_precision(cfg.training.precision, on_gpu=env.device.type == "cuda")
    t = cfg.training
    seed_everything(t.seed)
    if resume and ckpt_io.resumes_in_place(resume, run_dir):  # (a resume with nothing left to train saves
        checkpoint_saving.remove_stale_temporaries(run_dir, env)   # nothing: what a killed save left goes here)
        barrier("a killed save's leftovers removed")
    resume_from = ckpt_io.resolve_checkpoint(resume, run_dir) if resume else None
    if resume_from is not None:
        ckpt_io.check_resume_meta(resume_from)

    # ---- data: mixture → tokenizer → per-task tokenized streams
    path = cfg.model.name_or_path
    saved = pretrained_config_dict(path) if is_local_model(path) else None  # a hub model's: read after the checks
    checked = check_run_config(cfg, rank=env.rank, world_size=env.world_size, saved=saved)
    check_moe_backend(cfg, saved, env.device)
    rates, sampling_cfg = checked.rates, checked.sampling
    task_names = list(rates)
    templates = training_template_selection(cfg, task_names)  # (their names and digests: checks and meta)
    template_names, template_digests = template_names_of(templates), template_digests_of(templates)
    resume_meta = (resume_checks.check_resume_config(cfg, resume_from, task_names, template_names)
                   if resume_from is not None else {})
    # where the weights came from, as the run's start recorded it (the folder may change while the run trains)
    initialised_from = resume_meta["initialised_from"] if "initialised_from" in resume_meta else \
        initialisation_record(path)
    resume_warnings = (resume_checks.template_change_warnings(resume_from, resume_meta, template_digests)
                       if resume_from is not None else [])
    in_place = resume_from is not None and ckpt_io.resumes_in_place(resume_from, run_dir)
    cache_dir, cache_key = tokenized_cache_dir(cfg, run_dir)
    make_run_folders(run_dir, cache_dir, cache_key)
    take_together(lock, run_dir, env)  # (a new folder's)
    tokenizer = prepare_tokenizer(cfg, run_dir, task_names, env, fresh=resume_from is None)
    if resume_from is not None:
        check_resumed_tokenizer(cfg, tokenizer, resume_from)
    if saved is None:
        saved = pretrained_config_dict(path)
    check_run_tokenizer(tokenizer, cfg, saved)
    if resume_from is None:
        check_model_tokenizer(tokenizer, cfg)
    # what a pretrained model's embedding must already cover (a resumed run's tokenizer holds its task tokens)
    base_vocab = vocab_before_task_tokens(tokenizer) if cfg.model.task_embeddings else len(tokenizer)
    task_tokens = prepare_task_tokens(tokenizer, task_names, run_dir, env) if cfg.model.task_embeddings else None
    streams = training_streams(cfg, task_names, tokenizer, cache_dir, env)
    task_sizes = {name: len(s) for name, s in streams.items()}
    if cfg.data.all_templates:  # (each template is then rated at the examples it rendered)
        sampling_cfg = with_template_sizes(cfg, sampling_cfg, {name: s.template_sizes for name, s in streams.items()})
    if "task_sizes" in resume_meta:  # (checkpoints before 2026-12-04 lack them)
        resume_checks.check_task_sizes(resume_from, resume_meta["task_sizes"], task_sizes)

    # ---- model, sampler, streams, weighting
    from t2t_mtl.gradients.deepspeed_hook import loss_scale
    from t2t_mtl.sampling import TaskStreams, build_sampler, starved_tasks
    from t2t_mtl.weighting import build_weighting

    ds_config = checked.deepspeed.config  # (built and parsed by the checks)
    # a checkpoint from another world size or ZeRO stage loads through DeepSpeed's universal format
    universal = bool(resume_meta) and loads_through_universal(resume_meta, ds_config, env.world_size)

    def build(filled: bool) -> torch.nn.Module:
        """The run's model; `filled` false: for a load that fills every tensor, inside `unfilled` (a pretrained
        model's weights not read, its embedding grown for the task tokens without a mean of rows it does not hold)."""
        built = build_model(cfg.model, vocab_size=base_vocab if cfg.model.name_or_path else len(tokenizer),
                            task_names=task_names, saved=saved, special_ids=special_ids_of(tokenizer), weights=filled)
        if task_tokens is not None:  # a pretrained model's embedding grows to cover the task tokens
            task_tokens.resize(built, mean_resizing=filled)
        return built

    seed_everything(t.seed)  # the initial weights depend on the seed only
    # a resume whose load fills every tensor builds no random init (nor reads a pretrained model's weights)
    unfilled_load = resume_from is not None and loads_every_tensor(ds_config)
    model = unfilled(lambda: build(False)) if unfilled_load else build(True)
    if unfilled_load and left_unfilled(model):  # (the unfilled build drew no random number)
        unfilled_load, model = False, build(True)
    shapes, model_settings = resume_checks.parameter_shapes(model), resume_checks.model_section(cfg)
    if resume_meta:  # weights of other shapes: refused naming the model settings that changed; others: warned of
        own_dims = resume_checks.own_dims(cfg.model, saved)  # (what model.dims leaves unset is the model's own)
        resume_checks.check_model_shapes(resume_from, resume_meta, model_settings, shapes, own_dims)
        changed = resume_checks.model_change_warning(resume_from, resume_meta, model_settings, own_dims)
        if changed:
            resume_warnings.append(changed)
    pass_task_ids = accepts_task_ids(model)
    mode = sampling_cfg.get("mode", "homogeneous")
    sampler = build_sampler(sampling_cfg, task_sizes, seed=t.seed, rank=env.rank, world_size=env.world_size)
    task_streams = TaskStreams(task_sizes, seed=t.seed, rank=env.rank, world_size=env.world_size)
    weighting = build_weighting(cfg.weighting, task_names, task_sizes).to(env.device)
    weighting_params = [p for p in weighting.parameters() if p.requires_grad]
    # learned weights (uncertainty's log σ²) follow the model's lr schedule (set every step)
    weighting_opt = torch.optim.AdamW(weighting_params, lr=t.lr, weight_decay=0.0) if weighting_params else None
    collator = build_collator(cfg, tokenizer.pad_token_id, task_tokens)
    builder = BatchBuilder(streams, sampler, task_streams, collator, micro_batch_size=t.micro_batch_size, mode=mode,
                           bucket_batches=cfg.data.bucket_batches if cfg.data.batching in ("bucket", "pack") else 1,
                           seed=t.seed)
    # adaptive-sampling signals: training-forward entropies, periodic validation, CA-MTL candidate selection
    entropy_acc = (torch.zeros(2 * len(task_names), dtype=torch.float64, device=env.device)  # (added to there)
                   if sampler.needs_entropy else None)
    validator = None
    if t.validate_every > 0:
        from t2t_mtl.engine.validation import PeriodicValidator

        validator = PeriodicValidator(tokenizer, task_names, cfg, env, t.validate_examples, pass_task_ids)
    from t2t_mtl.engine.validation import (evaluation_every, evaluation_plan, validation_drop_figures,
                                           zero_shot_evaluation)

    eval_every = evaluation_every(cfg)  # zero-shot evaluations during training (logged, never fed back)
    eval_plan = evaluation_plan(cfg)  # (worked out once: every evaluation of the run uses it)
    evaluated, eval_settings = eval_plan
    eval_label = evaluation_label(evaluated, task_names, eval_settings.num_shots if eval_settings else 0)
    select_candidates = sampling_cfg.get("strategy") == "uncertainty"

    # ---- DeepSpeed
    if resume_meta:  # (before converting the checkpoint and starting the engine: what DeepSpeed is given)
        check_engine_settings(resume_from, resume_meta, ds_config, universal,
                              auto_precision_reason(on_gpu=env.device.type == "cuda")
                              if checked.deepspeed.autos.precision_by_auto else None)
        if universal:  # (what that load would not restore: refused before anything is converted)
            check_universal_resume(resume_from, resume_meta, ds_config, model)
        # (each rank's own files, the refusal agreed: a rank stopping alone in DeepSpeed's load left the others going)
        check_own_files(resume_from, resume_meta, env, universal, model if unfilled_load and not universal else None,
                        nvme_offload_index(ds_config, env), fills_frozen=universal and bool(frozen_names(model)))
    if universal:
        check_saved_frozen(model, resume_from, int(resume_meta["zero_stage"]))  # (`restore` writes them)
        ds_config.setdefault("checkpoint", {})["load_universal"] = True
        check_universal_fills(model, universal_conversion.ensure_universal(resume_from, env))
    engine = initialize_deepspeed(model, ds_config, cfg)
    # (ZeRO-1/2 hook every parameter's gradient accumulation with closures over the optimizer, held by torch's C++
    # side out of the garbage collector's reach: without destroy() the model and optimizer outlive the run)
    closing.callback(engine.destroy)
    precision = engine_precision(engine)  # from DeepSpeed itself: a deepspeed.config JSON may set it
    if env.world_size == 1 and engine.zero_optimization_stage() == 0:
        engine.enable_backward_allreduce = False  # one rank: nothing to average, skip the flatten/copy round trip
        use_one_rank_clipping(engine)  # (fp32: DeepSpeed's clipping all-reduces the norm over the one rank)
    surgery = None
    if cfg.gradient_surgery:
        surgery = build_surgery_hook(cfg.gradient_surgery, engine, task_names, mode)

    best_val = BestValidation(t.keep_best) if t.keep_best else None  # checkpoint selection (held-in only)
    parts = LoopParts(sampler, task_streams, builder, weighting, weighting_opt, surgery, best_val)
    stopped_early = False

    def early_stop_due(at_step: int) -> bool:
        """`training.early_stopping`: before the last step, that many validations in a row (counted as they ran,
        and kept in the checkpoint) have brought no new best — the same on every rank: the best is chosen on
        all-reduced figures."""
        return bool(t.early_stopping and best_val is not None and at_step < t.steps
                    and best_val.stale >= t.early_stopping)

    progress, log_window = Progress(), None
    if resume_from is not None:
        progress, log_window = restore(engine, resume_from, parts, env, universal=universal)
    if in_place and best_val is not None and best_val.step is not None:
        if env.is_main:  # a kill between a save's `latest` and its `best` left the link on an earlier best
            checkpoint_saving.link_best(run_dir, ckpt_io.step_name(best_val.step))
        barrier("the best checkpoint's link repaired")  # (every rank reads the link after training)
    if env.is_main:  # written once the run is known to go on (a refused resume keeps the run's own config)
        if resume_from is not None and (changed := config_change_warning(
                resume_from.parent.parent / "config.yaml", cfg.to_dict(), progress.step)):  # (checkpoints/step-N)
            resume_warnings.append(changed)
        write_text_atomic(run_dir / "config.yaml", cfg.to_yaml())  # (export and eval read it)
        write_text_atomic(run_dir / "deepspeed_config.json", json.dumps(ds_config, indent=1) + "\n")
    meta = {"zero_stage": engine.zero_optimization_stage(), "precision": precision, "tasks": task_names,
            "vocab_size": len(tokenizer), "task_sizes": task_sizes, "lora": resume_checks.lora_section(cfg),
            "task_embeddings": bool(cfg.model.task_embeddings), "settings": resume_checks.resume_settings(cfg),
            "model": model_settings, "param_shapes": shapes,
            "templates": template_names, "template_digests": template_digests, "initialised_from": initialised_from}

    def checked_trainer_state() -> Dict[str, Any]:
        """The checkpoint's trainer state, once every rank is seen to hold its shared parts alike (a collective:
        TrainingAbortedError on every rank naming the parts that differ)."""
        state = trainer_state(progress, parts, logger.state_dict())
        problem = disagreement(shared_parts(state, parts), env, progress.step)
        if problem:
            raise TrainingAbortedError(problem)
        return state

    def save() -> Path:
        """Checkpoint the run at the current step (a collective: every rank calls it)."""
        with logger.paused():  # (not training time: left out of tokens/s)
            return checkpoint_saving.save_checkpoint(engine, run_dir, progress.step,
                                                     trainer_state=checked_trainer_state(),
                                                     rank_state=rank_state(parts), meta=meta, env=env,
                                                     keep=t.keep_checkpoints,
                                                     best_step=best_val.step if best_val is not None else None)

    def evaluate_zero_shot(at_step: int) -> None:
        """`evaluation.every`: score the held-out tasks with the current weights and log it (never fed back, nor
        drawing from the training RNGs)."""
        with logger.paused(), rng_kept():  # (not training time: left out of tokens/s)
            logger.held_out(at_step, zero_shot_evaluation(engine, tokenizer, cfg, env,
                                                          run_dir / "eval" / ckpt_io.step_name(at_step),
                                                          progress=False, plots=False, plan=eval_plan), eval_label)

    total_examples = sum(task_sizes.values())
    if progress.seen_examples is None:  # (a checkpoint that lacks it: every step drew full micro-batches)
        progress.seen_examples = float(progress.step * t.micro_batch_size * t.grad_accum * env.world_size)
    sinks = open_sinks(cfg, run_dir, start_step=progress.step) if env.is_main else None  # TensorBoard, W&B
    try:
        logger = start_logging(cfg, run_dir, env, sinks, progress.step, resume_from, log_window, resume_warnings,
                               deepspeed=checked.deepspeed, sampler=sampler)
        emulated = emulated_bf16_warning(precision, env.device.type == "cuda",
                                         checked.deepspeed.autos.precision_chosen_by, resumed=resume_from is not None)
        if emulated:
            logger.message(f"warning: {emulated}")
        # (rank 0's logger alone prints: the other ranks need not read the sources)
        shared = evaluated_data_warnings(cfg, evaluated, task_names) if env.is_main else []
        for warning in shared:
            logger.message(f"warning: {warning}")
        if progress.step == 0:
            total, trained = count_parameters(engine.module), trainable_parameter_count(engine.module)
            frozen = "" if trained == total else f" ({trained / 1e6:.3f}M trained)"
            logger.message(f"model: {total / 1e6:.2f}M parameters{frozen}; tasks: {len(task_names)}; "
                           f"examples: {sum(task_sizes.values())}; world size {env.world_size}; ZeRO stage "
                           f"{engine.zero_optimization_stage()}; precision {precision}")
        elif progress.pending_evaluation == progress.step and eval_every:  # deferred by the SIGTERM that ended
            evaluate_zero_shot(progress.step)  # the interrupted run (none where the resumed run evaluates none)
        if progress.step < t.steps:
            logger.message(sampler.describe())  # the rates trained on (a schedule's changes: see show_logger below)
            per_micro_batch = 1 if mode == "homogeneous" else t.micro_batch_size * env.world_size  # tasks drawn
            draws = (t.steps - progress.step) * t.grad_accum * per_micro_batch
            # (CA-MTL selection draws no tasks: every micro-batch scores a pool of every task)
            starved = [] if select_candidates else starved_tasks(sampler.probabilities(), draws)
            if starved:
                logger.message(f"warning: at the sampler's current rates {', '.join(starved)} "
                               f"{'expects' if len(starved) == 1 else 'each expect'} less than one of the {draws} "
                               f"task draws left in the run (rate × draws < 1), so most likely never trains: raise "
                               f"its rate, train longer, or leave it out of data.tasks")
            # a step's examples (packed batches hold as many as fit: not known ahead, so not warned of below)
            per_step = t.micro_batch_size * t.grad_accum * env.world_size
            last_epoch = (progress.seen_examples + (t.steps - progress.step - 1) * per_step) / total_examples
            for idle in ([] if builder.packed else [idle_schedule_warning(sampler, last_epoch, total_examples),
                                                    idle_curriculum_warning(weighting, last_epoch, total_examples)]):
                if idle:
                    logger.message(f"warning: {idle}")
    except BaseException:
        if sinks is not None:
            sinks.close(failed=True)
        raise
    if progress.step > 0:
        progress.pending_evaluation = None
        if progress.step >= t.steps:
            logger.message(f"the checkpoint is at step {progress.step} >= training.steps={t.steps}: nothing left to "
                           f"train (raise training.steps to continue)")
        elif early_stop_due(progress.step):
            stopped_early = True
            logger.message(f"the run stopped early at step {progress.step} ({counted(best_val.stale, 'validation')} "
                           f"without a new best {t.keep_best} since step {best_val.step}): nothing left to train")
    resumed_at = progress.step
    overflow = CapacityOverflowWarning(logger.message)
    last_record: Dict[str, Any] = {}
    task_sequence: List[str] = []
    checkpoint_path: Optional[Path] = None
    interrupted = False
    engine.train()

    # ---- SIGTERM or a first Ctrl-C: finish the current step, save, exit cleanly (a second Ctrl-C aborts)
    stop = StopSignals(announce=env.is_main).install()
    hide_rates = show_logger("t2t_mtl.sampling", logger)  # the rates tables a schedule logs when it changes them
    hide_surgery = show_logger("t2t_mtl.gradients", logger, logging.WARNING)  # e.g. nashmtl's unconverged solve
    try:
        while progress.step < t.steps and not stopped_early:
            step_lr = float(engine.get_lr()[0])  # the lr engine.step() applies at this step
            step_scale = loss_scale(engine) if weighting_opt is not None else 1.0  # (before engine.step() moves it)
            epoch = progress.seen_examples / total_examples
            sampler.set_epoch(epoch)
            if select_candidates:  # CA-MTL: score the candidate pool under no_grad, train on the top b
                chunks = [select_candidate_chunk(builder, engine, pass_task_ids, env, task_tokens)
                          for _ in range(t.grad_accum)]
            else:
                chunks = [builder.next_chunk() for _ in range(t.grad_accum)]
            if surgery is not None:  # per-task micro-batches, grouped by task within the step
                chunks.sort(key=lambda c: task_names.index(c[0][0]))
                surgery.begin_step(engine)
            task_sequence.extend(c[0][0] if mode == "homogeneous" and not select_candidates else "*" for c in chunks)
            totals = StepTotals(task_names)  # kept on the device, read and combined over ranks once, at the end
            moe_acc: Optional[torch.Tensor] = None  # summed moe_stats of this step's forwards (MoE models)
            validates = validator is not None and (progress.step + 1) % t.validate_every == 0
            logged = logger.logs(progress.step + 1, flush=validates)  # (its moe figures are read on these only)
            for micro, chunk in enumerate(chunks):
                batch = builder.collate(chunk)
                if task_tokens is not None and not builder.packed:  # (a packed batch has them per example)
                    batch = task_tokens(batch)  # TE⊕ENC: each example's <task:NAME> token in front
                task_ids_cpu = batch["task_ids"]
                step_examples_cpu = example_task_ids(batch)
                tokens = count_tokens(batch)
                batch = {k: v.to(env.device, non_blocking=True) for k, v in batch.items()}
                per_task, aux = forward_losses(engine, batch, task_ids_cpu, task_names, pass_task_ids,
                                               entropy_acc, t.loss_reduction)
                forward_moe = moe_stats(engine.module) if logged else None
                if forward_moe is not None:
                    moe_acc = forward_moe if moe_acc is None else moe_acc + forward_moe
                loss = weighting(per_task, epoch=epoch, stats=progress.weighting_stats)
                if aux is not None:  # once, outside the task weighting: its coefficients alone set its strength
                    loss = loss + aux
                progress.weighting_stats = {}
                # NaN where the micro-batch is bad (a non-finite loss, or all its task losses zero), decided on the
                # device: the whole step is then skipped (DeepSpeed's overflow check, or guarded_skip_step below)
                loss = totals.add_micro_batch(loss, per_task, tokens, step_examples_cpu)
                engine.backward(loss)
                if surgery is not None:
                    surgery.after_backward(engine, chunk[0][0])
                if micro < len(chunks) - 1:
                    engine.step()  # (within the accumulation: no optimizer step)

            # the step's losses read from the device once, its figures combined over the ranks in one collective: a
            # micro-batch bad on any rank poisons the step on every rank
            totals.set_drawn(sum(len(chunk) for chunk in chunks))
            totals.set_stop_requested(stop.requested)  # (a signal after this is seen at the next step's vote)
            figures = totals.reduce()
            poisoned = figures.poisoned
            if surgery is not None and not poisoned:
                surgery.before_optimizer_step(engine)
            if poisoned and not has_overflow_check(engine):
                guarded_skip_step(engine)
            else:
                engine.step()
            if weighting_opt is not None:
                step_weighting(weighting_opt, weighting_params, engine, lr=step_lr, loss_scale=step_scale,
                               world_size=env.world_size, skip=poisoned)
            progress.step += 1
            step = progress.step
            weighting.synchronize(sum_over_ranks)  # state built from each rank's own losses: the same everywhere
            progress.seen_examples += figures.drawn
            logger.add(figures.tokens, figures.task_examples)
            for name, n in figures.task_examples.items():
                progress.examples_trained[name] = progress.examples_trained.get(name, 0) + n
            if poisoned:
                progress.skipped += 1
                progress.bad_in_a_row += 1
                logger.message(f"step {step}: non-finite or zero loss, step skipped ({progress.bad_in_a_row} in a row)")
                if progress.bad_in_a_row >= t.max_bad_steps:
                    raise TrainingAbortedError(
                        f"{counted(progress.bad_in_a_row, 'consecutive step')} had a non-finite or exactly-zero loss "
                        f"(last at step {step}); training stopped. Lower training.lr, raise training.warmup, keep "
                        f"precision bf16 (T5 overflows in fp16), or check the data for empty targets. Last good "
                        f"checkpoint: {ckpt_io.latest_checkpoint(run_dir)}")
            else:
                progress.bad_in_a_row = 0
                sampler.update({"loss": figures.task_loss, "trained": figures.task_examples})
            extra: Dict[str, Any] = {"epoch": epoch}
            if moe_acc is not None:  # MoE aux loss (in the weighted loss) and routing stats, mean over forwards
                extra["moe"] = moe_stats_dict(sum_over_ranks(moe_acc), engine.module)
                overflow.check(step, extra["moe"], engine.module.moe_config)  # (once a run, where it dropped many)
            if entropy_acc is not None:  # per-task mean normalised entropy of this step's training forwards
                entropy = task_means(sum_over_ranks(entropy_acc), task_names)
                entropy_acc.zero_()
                if not poisoned and entropy:
                    sampler.update({"entropy": entropy})
                    extra["entropy"] = entropy
            improved = False
            if validates:
                with logger.paused():  # (not training time: left out of tokens/s)
                    val_loss, val_score = validator(engine)
                sampler.update(finite_validation({"val_loss": val_loss, "val_score": val_score}, step, logger))
                progress.weighting_stats = {"kpi": val_score}
                extra.update(val_loss=val_loss, val_score=val_score)
                if validator.moe_drops is not None:  # (an MoE with an expert capacity)
                    extra["moe"] = {**extra.get("moe", {}), **validation_drop_figures(validator.moe_drops)}
                if best_val is not None:  # every rank decides on the same number: the save below is collective
                    improved = best_val.update(step, max_over_ranks(best_val.task_mean(extra), env.device))
                    stopped_early = early_stop_due(step)
            final_scored_later = step == t.steps and (best_val is None or best_val.step == step)
            if eval_every and step % eval_every == 0 and not final_scored_later:
                if figures.stop_requested:  # save first; the resumed run evaluates these weights
                    progress.pending_evaluation = step
                else:
                    evaluate_zero_shot(step)
            if logged:  # the adaptive state after this step: what the sampler draws by, the losses' weights
                extra["task_probability"] = sampler.probabilities()
                extra.update(sampler.logged_state())  # (a bandit's values or Beta parameters, a registered one's own)
                extra["task_weight"] = weighting.task_weights(epoch, progress.weighting_stats)
            if surgery is not None and not poisoned and surgery.stats() is not None:
                extra["gradient_surgery"] = surgery.stats()  # per-task gradient norms and cosines (from G)
            record = logger.step(step, figures.loss, task_loss=figures.task_loss, weighted_loss=figures.weighted_loss,
                                 lr=float(engine.get_lr()[0]), skipped_total=progress.skipped, extra=extra,
                                 flush="val_loss" in extra)  # validation results are always logged
            if record is not None:
                last_record = record
            if step == resumed_at + 1:  # this process's first step: ranks apart stop now, not at the first save
                checked_trainer_state()
            if stopped_early:  # the final checkpoint below is saved at this step
                logger.message(f"early stopping at step {step}: {counted(t.early_stopping, 'validation')} without a "
                               f"new best {t.keep_best} (best at step {best_val.step})")
            elif ((t.checkpoint_every and step % t.checkpoint_every == 0) or improved) and step < t.steps:
                checkpoint_path = save()  # a new best is checkpointed (and linked as best) right away
            if figures.stop_requested:
                logger.message(f"SIGTERM, SIGUSR1 or an interrupt (Ctrl-C): saving a checkpoint at step {step} and "
                               "stopping")
                if checkpoint_path is None or checkpoint_path.name != ckpt_io.step_name(step):  # (not saved just now)
                    checkpoint_path = save()
                interrupted = True
                break
        if not interrupted:  # a run resumed in place that trained no step keeps its checkpoint as it is
            checkpoint_path = resume_from if in_place and progress.step == resumed_at else save()
    except BaseException:
        if sinks is not None:
            sinks.close(failed=True)
        raise
    finally:
        stop.restore()
        hide_rates()
        hide_surgery()
        logger.close()

    step = progress.step
    result = TrainResult(
        run_dir=run_dir, step=step, final_loss=float(last_record.get("loss", float("nan"))),
        task_losses=dict(last_record.get("task_loss", {})),
        examples_seen=dict(progress.examples_trained), skipped_steps=progress.skipped,
        tokens_per_second=logger.run_tokens / max(time.perf_counter() - logger.run_start, 1e-9),
        wall_time_s=0.0, checkpoint=checkpoint_path, interrupted=interrupted, task_sequence=task_sequence,
        stopped_early=stopped_early)
    try:  # the sinks stay open for the after-training evaluations
        if env.is_main and t.plot and not interrupted:
            plot_task_losses(run_dir / "logs")
        if best_val is not None and best_val.step is not None:
            result.best_checkpoint = ckpt_io.best_checkpoint(run_dir, best_val.step)
        if not interrupted:
            result.evaluated_step = step
            if best_val is not None and best_val.step not in (None, step):
                result.evaluated_step = load_best_for_evaluation(engine, result.best_checkpoint, best_val, env,
                                                                 step, nvme_offload_index(ds_config, env))
            if evaluate_held_in if evaluate_held_in is not None else cfg.data.validation_examples > 0:
                score_held_in(engine, tokenizer, task_names, cfg, env, pass_task_ids, result)
            if cfg.evaluation:  # zero-shot evaluation of the held-out tasks (evaluation: section)
                score_held_out(engine, tokenizer, cfg, env, run_dir, sinks, result, eval_label, eval_plan)
    except BaseException:
        if sinks is not None:
            sinks.close(failed=True)
        raise
    if sinks is not None:
        sinks.close()
    result.wall_time_s = time.perf_counter() - started
    return result


def build_surgery_hook(surgery_cfg: Mapping[str, Any], engine: Any, task_names: Sequence[str], mode: str) -> Any:
    """The gradient-surgery step hook from `t2t_mtl.gradients.build_step_hook` (owned by that component).

    Contract: `begin_step(engine)`, `after_backward(engine, task)` after each per-task micro-batch's
    backward, `before_optimizer_step(engine)` after the last backward and before the optimizer step (combine
    the per-task gradients in place), `state_dict()` / `load_state_dict()`.
    """
    from t2t_mtl.gradients import build_step_hook

    if mode != "homogeneous":
        raise ConfigError("gradient_surgery needs per-task micro-batches: set sampling.mode: homogeneous")
    return build_step_hook(dict(surgery_cfg), engine, list(task_names))
