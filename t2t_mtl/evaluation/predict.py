"""Predictions for free-form instructed inputs: generation, or rank classification over given answer choices.

A request is an input text with, optionally, its answer choices and the task it belongs to (the task picks
the experts of a task-routed MoE model and the adapters of per-task LoRA; a model with task embeddings
(TE⊕ENC) gets that task's token in front of the input, as in training and evaluation; a task the model was not
trained on is answered as an unseen task, with a warning naming it). `read_requests` parses
plain lines (one input each) or JSON lines in the rendered-dataset schema (`inputs`, optional
`answer_choices`, optional `task`, other keys kept — but an earlier answer's `prediction` and `scores`, which
this run replaces), which is what `t2t-mtl tasks preview --jsonl` prints. A JSON line is answered by the same
object, its keys in their order, with `prediction` (and `scores` when ranked) after them. A generated prediction of
a task that has a `postprocess` is that postprocess's output, as evaluation scores it (a ranked one is the answer
choice as written, as in rank classification). A ranked input of a task whose evaluation protocol breaks a tie between
answer choices by its own rule (BIG-bench's, reading the line's `choice_file_positions`, which `tasks preview --jsonl`
writes) is picked by that rule, as evaluation picks it; else the first of the highest-scoring choices is. An
over-long input of such a task is cut as evaluation cuts it (BIG-bench's keeps its end); others keep their beginning.
"""
from __future__ import annotations

import collections
import json
import logging
from typing import Any, Callable, Collection, Mapping, Optional, Sequence

from t2t_mtl.analysis.task_embeddings import find_task_tokens, prefix_task_token
from t2t_mtl.evaluation.errors import EvaluationError, NoAnswerChoicesError
from t2t_mtl.evaluation.eval_settings import SCORING_MODES
from t2t_mtl.evaluation.generation import generate_texts
from t2t_mtl.evaluation.generation_sizes import check_generation_sizes
from t2t_mtl.evaluation.predict_requests import (PredictInputError, Prediction, PredictRequest, check_requests,
                                                  read_requests)
from t2t_mtl.evaluation.rank_classification import argmax_first, score_choices
from t2t_mtl.evaluation.token_lengths import input_lengths
from t2t_mtl.model.moe import batch_dependent, capacity_drops
from t2t_mtl.model.task_routing import routing_task_id

#: (the request and prediction records and read_requests are defined in predict_requests, without torch or
#: transformers; they are importable from here too)
__all__ = ["PredictInputError", "PredictRequest", "Prediction", "implied_task", "predict", "read_requests"]

logger = logging.getLogger(__name__)


def implied_task(model: Any, meta: Optional[Mapping[str, Any]] = None) -> Optional[str]:
    """The task of inputs that name none for a model that serves one task only, which answers them as that task,
    postprocess included: an `export --task` folder's (its one route, or, for the plain T5 a task-routed model
    exports as, `meta`'s "task": `load_checkpoint`'s meta); None for other models."""
    names = getattr(model, "routing_task_names", None) or []
    return names[0] if len(names) == 1 else (meta or {}).get("task")


def _task_ids(model: Any, requests: Sequence[PredictRequest], default_task: Optional[str],
              task_tokens: bool = False, served: Collection[str] = (), registered: Collection[str] = (),
              implied: bool = False) -> Optional[list[int]]:
    """Each request's routing task id (None when the model takes no task ids). `task_tokens`: the model has
    task embeddings (TE⊕ENC), so a task is used even when no layer routes by it; a task in `served` is used for its
    postprocess, its tie rule or the side its over-long inputs are cut from; `registered`: the tasks the caller knows
    (served or not), for the error of a `default_task` that would change nothing (`implied`: the model's own task,
    or a task given to a model that serves one, an `export --task` folder, which is no error: its own task changes
    nothing, another is warned of, `_warn_of_untrained_tasks`)."""
    if routing_task_id(model, "") is None:  # None for every name: plain T5 or token routing
        if default_task is not None and not implied and not task_tokens and default_task not in served:
            raise _idle_task_error(default_task, default_task in registered)
        return None
    ids = []
    for index, request in enumerate(requests):
        task = request.task or default_task
        if task is None:
            raise EvaluationError(
                f"input {index + 1}: this model computes per task (task-routed experts or per-task LoRA adapters "
                f"of tasks {model.routing_task_names}), so every input needs one: pass --task NAME (a trained task, "
                f"or any other name for the unseen-task route) or a \"task\" field (from Python: predict's "
                f"default_task, or PredictRequest(..., task=NAME))")
        ids.append(routing_task_id(model, task))
    return ids


def _idle_task_error(task: str, registered: bool) -> EvaluationError:
    """The error of `--task task` for a model that takes no task, where the task brings no postprocess or tie rule
    either (`registered`: it is a registered task, which has none; else it is none)."""
    why = (f"the registered task {task!r} has no postprocess or tie rule of its own for predict to apply (its answers "
           f"are the decoded text or the highest-scoring choice, with or without --task): drop --task" if registered
           else f"{task!r} is not a registered task (built in, or from --tasks-dir / --task-module, by default the "
                f"run's data.tasks_dir / data.task_modules) whose postprocess or tie rule predict could apply: drop "
                f"--task, or register the task")
    return EvaluationError(f"--task {task} would change nothing here: this model takes no task (it has no task-routed "
                           f"experts, per-task LoRA adapters or task embeddings to pick from), and {why}")


def _warn_of_untrained_tasks(model: Any, requests: Sequence[PredictRequest], default_task: Optional[str],
                             tokens: Mapping[str, int], own_task: Optional[str] = None) -> None:
    """Log, once per name, each task of the inputs that the model computes per task but was not trained on (its
    inputs take the unseen-task route and no task token), or that is not `own_task`, the one task of a model that
    serves one (`implied_task`: an `export --task` folder, whose plain T5 answers every input as its task's
    sub-network), with the trained task it is close to: a misspelt name is otherwise answered silently as an unseen
    task."""
    trained = getattr(model, "routing_task_names", None) or ([own_task] if own_task else list(tokens))
    if not trained:  # the model takes no task (plain T5, token routing): a task serves only its postprocess
        return
    given = [request.task or default_task for request in requests]
    for name in dict.fromkeys(task for task in given if task is not None and task not in trained):
        from task_registry.errors import close_matches

        close = close_matches(name, trained, n=1, cutoff=0.6, substrings=False)
        logger.warning("task %r (%d of %d inputs) is not one the model was trained on (%s), so it is answered as an "
                       "unseen task, as evaluation answers a held-out one%s", name, given.count(name), len(given),
                       ", ".join(trained), f"; did you mean {close[0]!r}?" if close else "")


def _with_task_token(text: str, task: Optional[str], tokens: Mapping[str, int]) -> str:
    """`text` with the task's TE⊕ENC token in front when the tokenizer has one for `task` (as evaluation does; a
    task the model was not trained on gets none)."""
    return prefix_task_token(text, task) if task is not None and task in tokens else text


def _subset(task_ids: Optional[list[int]], rows: Sequence[int]) -> Optional[list[int]]:
    return None if task_ids is None else [task_ids[i] for i in rows]


def _longest_first(model: Any, lengths: Sequence[int], rows: list[int]) -> list[int]:
    """`rows` (indices of the inputs, whose token `lengths` are given) longest input first, ties in order, so that a
    batch pads its inputs to similar lengths; in order for a model whose rows' outputs depend on their batch
    (`batch_dependent`)."""
    if len(rows) < 2 or batch_dependent(model):
        return rows
    return sorted(rows, key=lambda row: -lengths[row])


def _truncation_side(task: Optional[str], protocols: Mapping[str, Any]) -> str:
    """The side an over-long input of `task` is cut from: its `EvalProtocol`'s in `protocols` (BIG-bench's keeps the
    end), as evaluation cuts it; else "right", keeping the beginning."""
    protocol = protocols.get(task) if task is not None else None
    return "right" if protocol is None else protocol.truncation_side


def _warn_of_truncated_inputs(lengths: Sequence[int], limits: Sequence[int], sides: Sequence[str],
                              max_input_length: int) -> None:
    """Log how many inputs (of token `lengths`) are longer than their limit (`limits`: `max_input_length`, plus a
    task token on top), so that each is answered on the part that fits (cut from its `sides`), and the limit that
    holds them whole."""
    over = [(length - (limit - max_input_length), side)
            for length, limit, side in zip(lengths, limits, sides) if length > limit]
    if not over:
        return
    from task_registry.eval_protocol import KEPT_PARTS  # (BIG-bench's protocol names its rule beside the part)

    counts = {side: count for side in KEPT_PARTS if (count := sum(cut == side for _, cut in over))}
    seen = (f"their {KEPT_PARTS[next(iter(counts))]}" if len(counts) == 1
            else " and ".join(f"the {KEPT_PARTS[side]} of {count}" for side, count in counts.items()))
    needed = max(length for length, _ in over)
    logger.warning("%d of %d inputs are longer than max_input_length=%d tokens and are answered on the part that fits "
                   "(the model sees only %s); to answer them whole, raise it to %d tokens (t2t-mtl predict "
                   "--max-input-length %d)", len(over), len(lengths), max_input_length, seen, needed, needed)


def _postprocessed(texts: list[str], tasks: Sequence[Optional[str]], postprocessing: Mapping[str, Any]) -> list[str]:
    """Each of `texts` through the `postprocessed` of its task in `postprocessing` (as is when its task is not)."""
    return [postprocessing[task].postprocessed([text])[0] if task in postprocessing else text
            for text, task in zip(texts, tasks)]


def _choice_pickers(requests: Sequence[PredictRequest], ranked: Sequence[int], default_task: Optional[str],
                    protocols: Mapping[str, Any]) -> dict[int, Callable[[list[float]], int]]:
    """For each ranked request (by its index; `ranked`: those ranked) of a task in `protocols` whose JSON row holds its
    `pick_fields`: the choice its `EvalProtocol.pick` takes for given scores. The others pick the first of the highest;
    those of a task in `protocols` are warned of (their ties may go otherwise than evaluation's), once per task.
    Fields the protocol cannot read for the request's choices are a PredictInputError naming the input, before the
    model runs. A task not in `protocols` whose rows hold a known tie rule's fields is warned of too
    (`_warn_of_unregistered_tie_rules`)."""
    pickers: dict[int, Callable[[list[float]], int]] = {}
    lacking: collections.Counter[str] = collections.Counter()
    unregistered: dict[str, list[PredictRequest]] = collections.defaultdict(list)
    for index in ranked:
        request = requests[index]
        task = request.task or default_task
        protocol = protocols.get(task) if task is not None else None
        if protocol is None and task is not None and request.row:
            unregistered[task].append(request)
        if protocol is None or not protocol.pick_fields:
            continue
        if not all(name in request.row for name in protocol.pick_fields):
            lacking[task] += 1
            continue
        fields = {name: request.row[name] for name in protocol.pick_fields}
        try:  # (scores alike: a tie among every choice, which the rule must be able to break)
            protocol.pick([0.0] * len(request.answer_choices), fields)
        except (IndexError, KeyError, TypeError, ValueError) as error:
            raise PredictInputError(f"input {index + 1} (task {task!r}): {json.dumps(fields)} does not fit its "
                                    f"{len(request.answer_choices)} answer choices ({error}); give the fields as "
                                    f"`t2t-mtl tasks preview --jsonl` writes them with the choices") from None
        pickers[index] = lambda scores, protocol=protocol, fields=fields: protocol.pick(scores, fields)
    for task, count in lacking.items():
        fields = ", ".join(protocols[task].pick_fields)
        logger.warning("task %r breaks a tie between answer choices by its evaluation protocol, which reads %s from an "
                       "input's JSON line; %d of its ranked inputs lack it, and a tie among theirs goes to the first "
                       "listed (`t2t-mtl tasks preview --jsonl` writes it)", task, fields, count)
    if unregistered:
        _warn_of_unregistered_tie_rules(unregistered)
    return pickers


def _warn_of_unregistered_tie_rules(unregistered: Mapping[str, Sequence[PredictRequest]]) -> None:
    """Log, once per task, the ranked inputs of a task predict has no protocol for (not registered) whose JSON lines
    hold the fields a known tie rule reads (`tie_rule_fields`: a BIG-bench task's `choice_file_positions`, which
    `tasks preview --jsonl` wrote where the task was registered): a tie among their choices goes to the first listed,
    where evaluation breaks it by that rule."""
    from task_registry.eval_protocol import tie_rule_fields

    known = tie_rule_fields()
    for task, requests in unregistered.items():
        held = [request for request in requests if any(name in request.row for name in known)]
        if not held:
            continue
        fields = sorted({name for request in held for name in request.row if name in known})
        rules = sorted({known[name] for name in fields})
        logger.warning("task %r is not a registered task here, so predict has no tie rule for it: %d of its ranked "
                       "inputs hold %s, which %s's tie rule reads, and a tie among their choices goes to the first "
                       "listed, not as evaluation breaks it; register the task (t2t-mtl predict --task-module MODULE, "
                       "a module that registers it, e.g. one calling task_registry.bigbench.import_bigbench(DIR) for "
                       "a BIG-bench task; by default the run's data.task_modules; from Python, pass its "
                       "eval_protocol in pick_protocols)", task, len(held), ", ".join(fields), " / ".join(rules))


def predict(model: Any, tokenizer: Any, requests: Sequence[PredictRequest], *, scoring: str = "auto",
            default_task: Optional[str] = None, length_normalize: bool = False, num_beams: int = 1,
            max_new_tokens: int = 64, batch_size: int = 16, max_input_length: int = 512,
            postprocessing: Optional[Mapping[str, Any]] = None,
            pick_protocols: Optional[Mapping[str, Any]] = None,
            meta: Optional[Mapping[str, Any]] = None) -> list[Prediction]:
    """One `Prediction` per request, in order (scored in batches of inputs of similar length).

    scoring "auto": rank classification for requests with answer choices, generation for the others; "rank":
    every request needs choices; "generate": choices are ignored. `default_task` is the task of requests
    that name none (None: the model's `implied_task` given its `meta`, for a model that serves one task — an
    `export --task` folder; `meta`: `load_checkpoint`'s or `load_trained_model`'s third value). A model with task
    embeddings (TE⊕ENC) gets each input's task token in front of it, on top of `max_input_length` (as in training
    and evaluation). `postprocessing` maps task names to tasks (`Task`) whose
    `postprocessed` a generated prediction of that task goes through, as evaluation scores it; ranked ones are the
    answer choice as written. `pick_protocols` maps task names to the `EvalProtocol` whose `pick` chooses among a
    ranked input's scores, as evaluation does (a benchmark's tie rule), given the `pick_fields` in the input's JSON
    row (`_choice_pickers`); otherwise the first of the highest-scoring choices is the prediction. An input longer
    than `max_input_length` tokens is cut from its task's `truncation_side` in `pick_protocols`, as evaluation cuts it
    (BIG-bench's keeps the end); otherwise its beginning is kept. Where an input is
    generated, an EvaluationError (`check_generation_sizes`) for a beam width past the model's vocabulary or more new
    tokens than `MAX_NEW_TOKENS`, before any input is scored.
    """
    if scoring not in SCORING_MODES:
        raise EvaluationError(f"scoring must be one of {SCORING_MODES}, got {scoring!r}")
    check_requests(requests)
    implied, own_task = default_task is None, implied_task(model, meta)
    default_task = own_task if implied else default_task
    ranked = [i for i, r in enumerate(requests) if r.answer_choices and scoring != "generate"]
    if scoring == "rank" and len(ranked) < len(requests):
        missing = next(i for i, r in enumerate(requests) if not r.answer_choices)
        raise NoAnswerChoicesError(f"input {missing + 1} has no answer choices: rank scoring needs them "
                                   f"(--choices, or \"answer_choices\" in a JSON line), or use generation")
    if len(ranked) < len(requests):  # (before any input is scored)
        check_generation_sizes(num_beams, max_new_tokens, model)
    postprocessing, pick_protocols = postprocessing or {}, pick_protocols or {}
    tokens = find_task_tokens(tokenizer)
    served = {*postprocessing, *(name for name, protocol in pick_protocols.items()
                                 if protocol.pick_fields or protocol.truncation_side != "right")}
    task_ids = _task_ids(model, requests, default_task, task_tokens=bool(tokens), served=served,
                         registered={*postprocessing, *pick_protocols}, implied=implied or own_task is not None)
    _warn_of_untrained_tasks(model, requests, default_task, tokens, own_task)
    inputs = [_with_task_token(r.inputs, r.task or default_task, tokens) for r in requests]
    # a task token comes on top of the input limit, as in training and evaluation
    limits = [max_input_length + int(text != r.inputs) for text, r in zip(inputs, requests)]
    sides = [_truncation_side(r.task or default_task, pick_protocols) for r in requests]  # (as evaluation cuts them)
    lengths = input_lengths(tokenizer, inputs)  # (tokenized once: for the warning and the batching order)
    _warn_of_truncated_inputs(lengths, limits, sides, max_input_length)
    generated = _longest_first(model, lengths, sorted(set(range(len(requests))) - set(ranked)))
    ranked = _longest_first(model, lengths, ranked)
    pickers = _choice_pickers(requests, ranked, default_task, pick_protocols)
    results: list[Optional[Prediction]] = [None] * len(requests)
    with capacity_drops(model) as drops:
        for limit, side in sorted(set(zip(limits, sides))):
            rows = [i for i in generated if (limits[i], sides[i]) == (limit, side)]
            texts = generate_texts(model, tokenizer, [inputs[i] for i in rows], num_beams=num_beams,
                                   max_new_tokens=max_new_tokens, batch_size=batch_size, max_input_length=limit,
                                   task_ids=_subset(task_ids, rows), truncation_side=side) if rows else []
            tasks = [requests[i].task or default_task for i in rows]
            for i, text, task, answer in zip(rows, texts, tasks, _postprocessed(texts, tasks, postprocessing)):
                results[i] = Prediction(requests[i], answer, output=text if task in postprocessing else None)
            rows = [i for i in ranked if (limits[i], sides[i]) == (limit, side)]
            scores = score_choices(model, tokenizer, [inputs[i] for i in rows],
                                   [requests[i].answer_choices for i in rows], length_normalize=length_normalize,
                                   batch_size=batch_size, max_input_length=limit,
                                   task_ids=_subset(task_ids, rows), truncation_side=side) if rows else []
            for i, row in zip(rows, scores):
                results[i] = Prediction(requests[i], requests[i].answer_choices[pickers.get(i, argmax_first)(row)],
                                        row)
    if drops.dropped:
        logger.warning("the MoE layers dropped %d of the %d (token, slot) choices they routed over expert capacity "
                       "(those get no expert output, and an answer depends on the inputs batched with it); raise "
                       "model.moe.eval_capacity_factor, or set model.moe.dropless", drops.dropped, drops.choices)
    return results
