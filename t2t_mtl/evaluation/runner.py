"""Evaluate a model on tasks: every template of every task, scored by rank classification or generation.

Sharding: with `world_size` > 1 (or an initialised torch.distributed group) rank r scores the examples
r, r + world_size, ... of every template; the per-example outputs are gathered with
`torch.distributed.all_gather_object` (gloo on CPU) and every rank computes the metrics on the full,
re-ordered set, so the numbers are those of one process; a rank that fails tells the others at their next gather, and
they stop naming it (`t2t_mtl.evaluation.rank_gathers`). A rank batches its examples longest input first, so that
a batch pads to similar lengths (the outputs are put back in example order; a model whose rows' outputs depend on
their batch, an MoE routing by token with a capacity, keeps example order). With `lockstep` (a DeepSpeed ZeRO-3
model, whose forward passes gather parameters collectively) every rank runs the same forward passes, padding its
shorter shard with passes whose results are discarded. A model with task-conditioned layers (task-routed MoE,
per-task LoRA) gets each example's task id (`t2t_mtl.model.task_routing.routing_task_id`): its training id for a
task it was trained on, else the unseen sentinel (MoE: routed by `unseen_task_routing`; LoRA: the mean adapter).

This module runs the scoring; `eval_settings` holds the settings, `selection` picks each task's split and templates,
`template_metrics` their metrics, `rendered_examples` renders the examples, `token_lengths` measures the inputs and
answers warned of, and `baselines` computes what a score is compared with.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from t2t_mtl.analysis.task_embeddings import find_task_tokens, prefix_task_token
from t2t_mtl.engine.distributed import join_gloo_group
from t2t_mtl.evaluation.baselines import baselines
from t2t_mtl.evaluation.errors import EvaluationError, NoAnswerChoicesError
from t2t_mtl.evaluation.eval_settings import EvalSettings
from t2t_mtl.evaluation.few_shot import Demonstrations, ShotsFit, demonstration_split, fit_prompts
from t2t_mtl.evaluation.generation import generate_texts
from t2t_mtl.evaluation.generation_sizes import check_generation_sizes
from t2t_mtl.evaluation.metrics import metric_spec
from t2t_mtl.evaluation.rank_classification import decoder_passes, score_choices
from t2t_mtl.evaluation.rank_gathers import RankGathers
from t2t_mtl.evaluation.rendered_examples import EvalExample, choice_scores, group_sizes, render_examples
from t2t_mtl.evaluation.results import EvalReport, TemplateResult
from t2t_mtl.evaluation.scoring import score_predictions
from t2t_mtl.evaluation.selection import default_split, evaluated_templates
from t2t_mtl.evaluation.sharding import shard_batches
from t2t_mtl.evaluation.template_metrics import applicable_metrics, task_metrics
from t2t_mtl.evaluation.token_lengths import input_lengths, long_answers
from t2t_mtl.evaluation.truncated_inputs import TruncatedInputs
from t2t_mtl.model.moe import CapacityDrops, batch_dependent, capacity_drops
from t2t_mtl.model.task_routing import UNSEEN_TASK_ID, routing_task_id
from t2t_mtl.rank_warnings import ROW_LOGGERS, warned_by_rank_0
from t2t_mtl.wording import counted

if TYPE_CHECKING:  # task_registry (and datasets) load only when a task is resolved
    import datasets

    from task_registry.task import Task
    from task_registry.template import Template

logger = logging.getLogger(__name__)


def dist_info(rank: Optional[int] = None, world_size: Optional[int] = None) -> tuple[int, int]:
    """(rank, world size): the arguments, else the initialised process group's, else (0, 1)."""
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed_from_env() -> tuple[int, int]:
    """(rank, world size) once joined to the launched ranks (`join_gloo_group`; no-op for one process).

    gloo, also on a GPU machine: the loaded model is evaluated where `load_checkpoint` puts it (the CPU) and
    only Python objects are gathered; an NCCL group would gather them on every rank's current CUDA device, cuda:0
    for all of them, which NCCL refuses. The group's timeout is train's (`group_timeout`); the gathers, where ranks
    done with their shard wait for the others, go through the waiting group (`wait_timeout`)."""
    env = join_gloo_group()
    return env.rank, env.world_size


def _lockstep_decoder_passes(examples: Sequence[EvalExample], batch_size: int, world_size: int,
                             lengths: Optional[Sequence[int]] = None) -> list[int]:
    """Per batch index of the lockstep shards (`shard_batches`, with the examples' `lengths` as `_score_local` gets
    them): the most decoder passes (`decoder_passes`) any rank's rank classification batch of that index runs —
    known on every rank, since every rank holds every example."""
    shards = [shard_batches(len(examples), batch_size, r, world_size, lockstep=True, lengths=lengths)
              for r in range(world_size)]
    return [max(decoder_passes(sum(len(examples[i].answer_choices) for i in batch.rows)) for batch in same_index)
            for same_index in zip(*shards)]


def _score_local(model, tokenizer, examples: Sequence[EvalExample], mode: str, settings: EvalSettings,
                 progress: Optional[Callable[[int], None]], task_id: Optional[int] = None, *, rank: int = 0,
                 world_size: int = 1, lockstep: bool = False, lengths: Optional[Sequence[int]] = None,
                 truncation_side: str = "right", pick: Callable[[EvalExample, list[float]], int],
                 drops: Optional[CapacityDrops] = None) -> list[tuple[int, str, int, Optional[list[float]]]]:
    """(position, prediction text, chosen index or -1, choice scores) for each of this rank's `examples`
    (`shard_batches`: rank, rank + world_size, ...; batched longest first by their input `lengths` when given).

    `task_id` (None: the model takes none) is passed with every example; an input longer than the limit is cut from
    its `truncation_side` and rank classification chooses `pick(example, its scores)` (the task's `EvalProtocol`).
    With `lockstep` (ZeRO-3, several ranks) every rank runs the same forward passes: as many batches (padding ones
    discarded), as many decoder passes per rank-classification batch, generation synced. `drops` gets the MoE
    capacity drops of the batches kept (`capacity_drops`; padding batches and lockstep's padding passes left out)."""
    batches = shard_batches(len(examples), settings.batch_size, rank, world_size, lockstep=lockstep, lengths=lengths)
    passes = (_lockstep_decoder_passes(examples, settings.batch_size, world_size, lengths)
              if lockstep and mode == "rank" else [0] * len(batches))
    out = []
    for batch, min_passes in zip(batches, passes):
        chunk = [examples[i] for i in batch.rows]
        task_ids = None if task_id is None else [task_id] * len(chunk)
        with capacity_drops(model) as batch_drops:
            scored = _score_batch(model, tokenizer, chunk, mode, settings, task_ids, min_passes, truncation_side,
                                  pick, lockstep)
        if batch.counted:
            out.extend(scored)
            if drops is not None:
                drops.dropped += batch_drops.dropped
                drops.choices += batch_drops.choices
            if progress:
                progress(len(chunk))
    return out


def _score_batch(model, tokenizer, chunk: Sequence[EvalExample], mode: str, settings: EvalSettings,
                 task_ids: Optional[list[int]], min_passes: int, truncation_side: str,
                 pick: Callable[[EvalExample, list[float]], int], lockstep: bool
                 ) -> list[tuple[int, str, int, Optional[list[float]]]]:
    """`_score_local`'s outputs for one batch `chunk`."""
    if mode == "rank":
        scores = score_choices(model, tokenizer, [e.inputs for e in chunk], [e.answer_choices for e in chunk],
                               length_normalize=settings.length_normalize, batch_size=settings.batch_size,
                               max_input_length=settings.max_input_length, task_ids=task_ids,
                               min_decoder_passes=min_passes, truncation_side=truncation_side)
        chosen = [pick(e, row) for e, row in zip(chunk, scores)]
        return [(e.position, e.answer_choices[k], k, row) for e, k, row in zip(chunk, chosen, scores)]
    texts = generate_texts(model, tokenizer, [e.inputs for e in chunk], num_beams=settings.num_beams,
                           max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size,
                           max_input_length=settings.max_input_length, task_ids=task_ids,
                           synced_gpus=lockstep, truncation_side=truncation_side)
    return [(e.position, text, -1, None) for e, text in zip(chunk, texts)]


def _scoring_mode(requested: str, task, template, examples: Sequence[EvalExample]) -> str:
    has_choices = bool(examples) and all(e.answer_choices for e in examples)
    if requested == "rank" and examples and not has_choices:
        raise NoAnswerChoicesError(
            f"task {task.name!r} template {template.name!r} has examples without answer choices: rank "
            f"classification cannot score it; use generation (--scoring generate, or --scoring auto)")
    if requested == "auto":
        return "rank" if has_choices else "generate"
    return requested


def evaluate_template(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, task: Task, template: Template,
                      rows: datasets.Dataset, settings: EvalSettings, *, split: str,
                      rank: int = 0, world_size: int = 1, progress_bar: Optional[tqdm] = None,
                      demonstration_rows: Any = None, demonstration_split: Optional[str] = None,
                      group_sizes: Optional[Mapping[str, int]] = None, lockstep: bool = False,
                      gathers: Optional[RankGathers] = None, row_ids: Optional[Sequence[int]] = None,
                      truncations: TruncatedInputs, task_tokens: Optional[Mapping[str, int]] = None
                      ) -> TemplateResult:
    """Score one template on `rows` (sharded over ranks; `lockstep`: in the same forward passes on every rank, as
    ZeRO-3 needs) and compute its metrics; with `settings.num_shots`, each input gets demonstrations drawn from
    `demonstration_rows` (of `demonstration_split`). The ranks' outputs are gathered through `gathers` (default: this
    rank's `RankGathers`). `row_ids` are the indices of `rows` in the split, those the task's
    `EvalProtocol.example_rows` kept under `max_examples`: the first N, or a benchmark's draw (default: their
    positions, `rows` being the split or its first rows). Inputs longer than `settings.max_input_length` are counted
    in `truncations`, which the caller warns of once for the task's templates. `task_tokens` are the tokenizer's
    TE⊕ENC task tokens (`find_task_tokens`, read from its whole vocabulary: default, read here), which a caller scoring
    several templates with one tokenizer reads once.

    Group metrics leave out the groups with rows that are not scored (`render_examples`; `group_sizes`: the
    split's group sizes when `rows` are part of it), counted in `incomplete_groups` and logged; with no
    complete group left they are not computed, and a template whose primary metric is one is unscored (score
    None), not scored 0."""
    rendered = render_examples(task, template, rows, seed=settings.seed, group_sizes=group_sizes, row_ids=row_ids)
    examples = rendered.examples
    protocol = eval_protocol(task)
    wrap = (lambda text: text)
    stated_limit = f"max_input_length={settings.max_input_length} tokens"  # the user's limit, as warnings state it
    on_top = 0  # tokens the model's input holds on top of the user's limit (a task token)
    task_tokens = find_task_tokens(tokenizer) if task_tokens is None else task_tokens
    if task.name in task_tokens:  # a TE⊕ENC model: its task token in front, as in training,
        wrap = (lambda text: prefix_task_token(text, task.name))  # where it comes on top of max_input_length
        on_top = 1
        settings = replace(settings, max_input_length=settings.max_input_length + on_top)
        stated_limit += " (the task token in front comes on top)"
    shots_fit = ShotsFit()
    if settings.num_shots:  # the demonstrations are cut to fit with the task token counted
        demos = Demonstrations(task, template, demonstration_rows, same_split=demonstration_split == split,
                               seed=settings.seed)
        shots_fit = fit_prompts(examples, demos, settings.num_shots, tokenizer, settings.max_input_length, wrap)
    else:
        for example in examples:
            example.inputs = wrap(example.inputs)
    mode = _scoring_mode(settings.scoring, task, template, examples)
    long_rows, answer_limit = long_answers(tokenizer, [e.gold for e in examples], settings.max_new_tokens) \
        if mode == "generate" else (0, 0)  # (the answers as the model writes them, before a task's postprocess)
    postprocess = getattr(task, "postprocess", None) is not None and mode == "generate"
    if postprocess:  # the gold answers (and choices, which label metrics index) as the metrics see them
        for example in examples:
            example.targets = task.postprocessed([example.targets])[0]
            example.references = None if example.references is None else task.postprocessed(example.references)
            example.answer_choices = task.postprocessed(example.answer_choices)
    metrics, unsupported = task_metrics(task, template)
    metrics, skipped = applicable_metrics(task, template, metrics, examples)  # before the model runs
    primary = metrics[0]
    key = metric_spec(primary).primary
    lengths = input_lengths(tokenizer, [e.inputs for e in examples])
    # batched by length (less padding) unless a row's output would depend on the rows batched with it
    drops = CapacityDrops()
    local = _score_local(model, tokenizer, examples, mode, settings, progress_bar.update if progress_bar else None,
                         routing_task_id(model, task.name), rank=rank, world_size=world_size, lockstep=lockstep,
                         lengths=None if batch_dependent(model) else lengths,
                         truncation_side=protocol.truncation_side, pick=_picker(protocol, rows, row_ids), drops=drops)
    step = f"task {task.name!r} template {template.name!r}"
    gathers = gathers or RankGathers(rank, world_size)
    outputs = sorted(gathers.gather(local, step))
    if [o[0] for o in outputs] != list(range(len(examples))):
        raise EvaluationError(f"task {task.name!r} template {template.name!r}: gathered {len(outputs)} outputs "
                              f"for {len(examples)} examples; every rank must evaluate the same tasks")
    result = TemplateResult(task=task.name, template=template.name, split=split, scoring=mode,
                            num_examples=len(examples), metrics={}, primary_metric=primary, primary_key=key,
                            score=None, num_skipped=rendered.skipped, num_errors=rendered.errors,
                            error=rendered.first_error, unsupported_metrics=unsupported, skipped_metrics=skipped,
                            truncation_side=protocol.truncation_side)
    if rendered.incomplete_groups and any(metric_spec(m).kind == "group_label" for m in metrics):
        result.incomplete_groups = len(rendered.incomplete_groups)
        logger.warning("task %r template %r: %d of %d groups have rows that are not scored (cut by "
                       "max_examples, skipped by the template or failed to render); group metrics leave them out",
                       task.name, template.name, result.incomplete_groups, rendered.groups)
    if batch_dependent(model):  # (an MoE with an expert capacity: every rank's model is, so every rank gathers)
        _record_capacity_drops(result, gathers.gather([(drops.dropped, drops.choices)], f"{step}: MoE drops"))
    _record_shots_fit(result, shots_fit, settings.num_shots, on_top, stated_limit)
    result.num_truncated = sum(length > settings.max_input_length for length in lengths)
    truncations.add(template.name, result.num_truncated, len(examples), max(lengths, default=0) - on_top,
                    stated_limit, protocol.kept_part)
    result.num_long_answers = long_rows
    if long_rows:
        logger.warning("task %r template %r: %d of %d examples have no gold answer that fits "
                       "max_new_tokens=%d tokens, where generation stops, so none can be written whole; to let the "
                       "model write every example's shortest answer, raise the limit to %d tokens (t2t-mtl eval "
                       "--max-new-tokens %d; evaluation.max_new_tokens in a config; EvalSettings(max_new_tokens=%d) "
                       "from Python)", task.name, template.name, long_rows, len(examples), settings.max_new_tokens,
                       answer_limit, answer_limit, answer_limit)
    if not examples:
        return result
    texts = [o[1] for o in outputs]
    predictions = task.postprocessed(texts) if postprocess else texts
    chosen = [o[2] for o in outputs] if mode == "rank" else None
    complete = rendered.groups > len(rendered.incomplete_groups)  # a group metric has a group left to score
    metrics = [m for m in metrics if complete or metric_spec(m).kind != "group_label"]
    try:
        result.metrics = score_predictions(metrics, predictions, [e.targets for e in examples],
                                           [e.answer_choices for e in examples], chosen=chosen,
                                           choice_scores=choice_scores(examples),
                                           references=[e.gold for e in examples],
                                           groups=[e.group for e in examples],
                                           incomplete_groups=rendered.incomplete_groups)
        if primary in metrics:
            result.majority_baseline, result.chance_baseline = baselines(examples, primary, key,
                                                                          rendered.incomplete_groups)
    except ValueError as error:  # a metric module refused its inputs (e.g. a gold it cannot parse)
        raise EvaluationError(f"task {task.name!r} template {template.name!r}: {error}") from None
    if primary in metrics:
        result.score = result.metrics[primary][key] * metric_spec(primary).scale
    if settings.keep_predictions:
        result.predictions = [{"row": e.row_index, "prediction": p, **({"output": o[1]} if postprocess else {}),
                               "target": e.targets,
                               **({"references": e.references} if e.references is not None else {}),
                               **({"group": e.group} if e.group is not None else {}),
                               **({"choice_scores": o[3]} if o[3] is not None else {})}
                              for e, o, p in zip(examples, outputs, predictions)]
    return result


def _picker(protocol: Any, rows: datasets.Dataset, row_ids: Optional[Sequence[int]]
            ) -> Callable[[EvalExample, list[float]], int]:
    """The choice rank classification picks for an example with these scores: `protocol.pick` given its source row's
    `pick_fields` (of `rows`, whose split indices are `row_ids`, default their positions; each field's column is read
    once, no row at all for a protocol that reads none)."""
    at = {index: position for position, index in enumerate(row_ids)} if row_ids is not None else None
    columns = {field: list(rows[field]) for field in protocol.pick_fields}

    def pick(example: EvalExample, scores: list[float]) -> int:
        position = example.row_index if at is None else at[example.row_index]
        return protocol.pick(scores, {field: values[position] for field, values in columns.items()})

    return pick


def eval_protocol(task: Any) -> Any:
    """The task's `EvalProtocol` (how its benchmark treats its examples), the project's default for a task without."""
    protocol = getattr(task, "eval_protocol", None)
    if protocol is None:
        from task_registry.eval_protocol import EvalProtocol

        protocol = EvalProtocol()
    return protocol


def _record_capacity_drops(result: TemplateResult, counts: Sequence[tuple[int, int]]) -> None:
    """Put the MoE capacity drops of the ranks' (dropped, choices) `counts` in `result` and warn when any."""
    result.num_moe_dropped = sum(dropped for dropped, _ in counts)
    result.num_moe_choices = sum(choices for _, choices in counts)
    if result.num_moe_dropped:
        logger.warning("task %r template %r: the MoE layers dropped %d of the %d (token, slot) choices they "
                       "routed over expert capacity (those get no expert output, and the scores depend on which "
                       "examples share a batch); raise model.moe.eval_capacity_factor, or set model.moe.dropless",
                       result.task, result.template, result.num_moe_dropped, result.num_moe_choices)


def _record_shots_fit(result: TemplateResult, fit: ShotsFit, num_shots: int, on_top: int, stated_limit: str
                      ) -> None:
    """Put how the k-shot prompts fitted (`fit_prompts`) in `result` and warn when inputs got fewer than
    `num_shots` demonstrations, naming the limit that gives each all of its own (the task token's `on_top` not in
    it)."""
    result.num_fewer_shots, result.num_dropped_shots = fit.fewer, fit.dropped
    result.shots_fit_length = fit.needed - on_top if fit.dropped else None
    if not fit.fewer:
        return
    step = f"task {result.task!r} template {result.template!r}"
    shots = counted(num_shots, "demonstration")
    if fit.fewer > fit.cut:
        logger.warning("%s: %d of %d inputs got fewer than %s (the demonstration split has too few "
                       "renderable rows)", step, fit.fewer - fit.cut, result.num_examples, shots)
    if fit.cut:
        logger.warning("%s: %d of %d inputs got fewer than %s (%s dropped from their front to fit %s, keeping "
                       "the input itself); to give every input all of its drawn demonstrations, raise the limit to "
                       "%d tokens (t2t-mtl eval --max-input-length %d; evaluation.max_input_length in a config; "
                       "EvalSettings(max_input_length=%d) from Python)", step, fit.cut, result.num_examples, shots,
                       counted(fit.dropped, "demonstration"), stated_limit, result.shots_fit_length,
                       result.shots_fit_length, result.shots_fit_length)


def _resolve_task(task):
    if isinstance(task, str):
        import task_registry

        return task_registry.get_task(task)
    return task


def _task_list(tasks: Any) -> list[Any]:
    """`tasks` as a list; refused, saying what was given, unless it holds task names and `Task` objects only."""
    from task_registry import Task

    if isinstance(tasks, str):
        raise EvaluationError(f"evaluate_tasks: tasks must be a list of task names or Task objects, got the string "
                              f"{tasks!r}: write [{tasks!r}]")
    if isinstance(tasks, Task):
        raise EvaluationError(f"evaluate_tasks: tasks must be a list of task names or Task objects, got one Task "
                              f"({tasks.name!r}): put it in a list, [task]")
    if not isinstance(tasks, Iterable):
        raise EvaluationError(f"evaluate_tasks: tasks must be a list of task names or Task objects, got {tasks!r}")
    tasks = list(tasks)
    for number, task in enumerate(tasks, 1):
        if not isinstance(task, (str, Task)):
            raise EvaluationError(f"evaluate_tasks: task {number} must be a task name or a Task, got {task!r}")
    return tasks


def _settings(settings: Optional[EvalSettings]) -> EvalSettings:
    """`settings`, or the default EvalSettings for None; refused, with what to write, unless it is an EvalSettings."""
    if settings is None:
        return EvalSettings()
    if not isinstance(settings, EvalSettings):
        given = f"a {type(settings).__name__}"
        if isinstance(settings, Mapping):
            given += f": write EvalSettings(**{dict(settings)!r})"
        raise EvaluationError(f"evaluate_tasks: settings must be an EvalSettings (t2t_mtl.evaluation.EvalSettings, "
                              f"e.g. EvalSettings(max_examples=100)) or None for the defaults, got {given}")
    return settings


def evaluate_tasks(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, tasks: Sequence[Union[str, Any]],
                   settings: Optional[EvalSettings] = None, *, name: str = "model", rank: Optional[int] = None,
                   world_size: Optional[int] = None, progress: bool = True, lockstep: bool = False) -> EvalReport:
    """Evaluate every template (or `settings.templates[task]`) of every task; returns the full report.

    Every rank must call this with the same tasks and settings; each returns the same report, or raises. A rank whose
    own step fails (its data, its scoring) tells the others at their next gather, which raise `RankFailedError` naming
    it, and raises its own error (`RankGathers.telling_failures`). `lockstep`: the model's forward passes are
    collective (DeepSpeed ZeRO-3 with several ranks), so every rank runs the same ones — padding batches and decoder
    passes whose results are discarded, synced generation; a rank that fails there is not waited for in a gather (the
    others are in a forward pass, which its exit ends). Unless `settings.scoring` is rank, an EvaluationError
    (`check_generation_sizes`) for a beam width past the model's vocabulary, before any task is scored. The warnings
    of the rows every rank reads (`ROW_LOGGERS`: rows a preprocessor drops, ...) and of a template's examples, which
    every rank counts whole, are logged by rank 0 alone (`warned_by_rank_0`).
    """
    tasks = _task_list(tasks)
    settings = _settings(settings)
    if settings.scoring != "rank":  # (before any task is scored)
        check_generation_sizes(settings.num_beams, settings.max_new_tokens, model)
    rank, world_size = dist_info(rank, world_size)
    gathers = RankGathers(rank, world_size)
    with warned_by_rank_0(rank == 0, [__name__, *ROW_LOGGERS]), \
            contextlib.nullcontext() if lockstep else gathers.telling_failures():
        results = _evaluate_all(model, tokenizer, tasks, settings, rank, world_size, progress, lockstep, gathers)
        gathers.finish()
    unseen = {r.task: _unseen_task_route(model) for r in results if routing_task_id(model, r.task) == UNSEEN_TASK_ID}
    return EvalReport(name=name, results=results, settings=settings.to_dict(), unseen_tasks=unseen)


def _unseen_task_route(model: torch.nn.Module) -> str:
    """How a task-conditioned `model` serves a task it was not trained on (`UNSEEN_TASK_ID`), in words: its MoE
    experts by `model.moe.unseen_task_routing`, its per-task LoRA adapters by their mean update."""
    from t2t_mtl.model.lora import LoRALinear

    ways = []
    moe = getattr(model, "moe_config", None)
    if moe is not None and moe.routing != "token":
        gates = ("the mean of the trained tasks' gate rows" if moe.unseen_task_routing == "mean"
                 else f"the gate rows of task {moe.unseen_task_routing!r}")
        ways.append(f"experts routed by model.moe.unseen_task_routing {moe.unseen_task_routing!r} ({gates})")
    if any(isinstance(m, LoRALinear) and m.num_tasks for m in model.modules()):
        ways.append("LoRA adapters by the mean of the trained tasks' updates")
    return "; ".join(ways)


def _evaluate_all(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, tasks: Sequence[Union[str, Any]],
                  settings: EvalSettings, rank: int, world_size: int, progress: bool, lockstep: bool,
                  gathers: RankGathers) -> list[TemplateResult]:
    """Every chosen template's result, task by task (`evaluate_tasks` without its last gather)."""
    tasks = [_resolve_task(task) for task in tasks]
    chosen = {task.name: evaluated_templates(task, settings) for task in tasks}  # every task checked before scoring
    task_tokens = find_task_tokens(tokenizer)  # (read once: it goes through the tokenizer's whole vocabulary)
    results: list[TemplateResult] = []
    for task in tasks:
        split = settings.split or default_split(task)
        rows = task.load_rows(split)
        sizes = row_ids = None
        if settings.max_examples is not None and len(rows) > settings.max_examples:
            if getattr(task, "group_by", None) is not None:  # so that a group the cut splits counts as incomplete
                sizes = group_sizes(task, rows)
            row_ids = eval_protocol(task).example_rows(len(rows), settings.max_examples)
            rows = rows.select(row_ids)
        shots_split = demonstration_split(task, split, settings.shots_split) if settings.num_shots else None
        demonstrations = task.load_rows(shots_split) if shots_split is not None else None
        templates = chosen[task.name]
        local_rows = len(range(rank, len(rows), world_size))
        truncations = TruncatedInputs(task.name)
        with tqdm(total=local_rows * len(templates), desc=f"eval {task.name}", unit="ex",
                  disable=not progress or rank != 0, leave=False) as bar:
            for template in templates:
                results.append(evaluate_template(model, tokenizer, task, template, rows, settings, split=split,
                                                 rank=rank, world_size=world_size, progress_bar=bar,
                                                 demonstration_rows=demonstrations,
                                                 demonstration_split=shots_split, group_sizes=sizes,
                                                 lockstep=lockstep, gathers=gathers, row_ids=row_ids,
                                                 truncations=truncations, task_tokens=task_tokens))
        truncations.warn(logger)
    return results
