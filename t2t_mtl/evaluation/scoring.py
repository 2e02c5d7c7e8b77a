"""Turn text predictions into metric inputs and compute a task's metrics on them.

Every prediction is scored, empty ones included. Conversions by metric kind (see `metrics.MetricSpec`):
- "label": the index of the target / prediction among the example's answer choices (a prediction outside
  them is -1, always wrong) — among the first example's choices when every example lists the same ones in
  some order, so that a label is one class whatever position a row lists it at; without answer choices, the
  index in the sorted set of targets. Binary F1 needs two answer choices: its positive class is the second
  (of the first example). A prediction matches a choice (or target) equal to it, ends ignored, else one equal to
  it as a T5 tokenizer writes text back (`written_form`: NFKC form, a run of whitespace one space), as the exact_match
  metric and held-in validation read text: a generation cannot reproduce a choice's double space or decomposed
  accent.
- "group_label": labels as for "label", scored per group of examples (`groups[i]`: example i's key from the
  task's `group_by`, e.g. MultiRC's question); the examples of `incomplete_groups` (groups some of whose rows
  are not scored) are left out, so a partly scored question never counts as fully right.
- "number": `float(text)`; an unparsable or non-finite prediction becomes -1.0 (T5's convention for STS-B);
  every target must be a finite number.
- "text": the prediction string against the example's references (`references[i]`: every acceptable answer
  the template lists, or `[target]`).
- "target": the prediction string against the target string.
- "tags": whitespace-split tags; the prediction is cut or padded with "O" to the target's length.
- "choice_scores": the chosen choice index against the per-choice target scores (`choice_scores[i]`, or
  1 for the target choice and 0 for the others).
"""
from __future__ import annotations

import math
import unicodedata
from typing import Any, Collection, Mapping, Optional, Sequence

from t2t_mtl.evaluation.errors import EvaluationError
from t2t_mtl.evaluation.metrics import canonical_metric_name, compute_metric, metric_spec

UNPARSABLE_NUMBER = -1.0


def written_form(text: str) -> str:
    """`text` as a T5 tokenizer writes it back (SentencePiece's nmt_nfkc): NFKC form, every run of whitespace one
    space, ends dropped: how label metrics and held-in validation's exact match compare text."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _choice_index(text: str, choices: Sequence[str]) -> int:
    """The position of the first of `choices` equal to `text` (ends ignored), else of the first equal to it as
    `written_form`; -1 where none is."""
    for key in (str.strip, written_form):
        keyed = [key(choice) for choice in choices]
        if key(text) in keyed:
            return keyed.index(key(text))
    return -1


def _label_order(answer_choices: Sequence[Sequence[str]]) -> Optional[list[str]]:
    """The first example's distinct choices when every example lists that same set (in any order), else None:
    choices that differ per example (COPA's alternatives) are labelled by position."""
    first = [c.strip() for c in answer_choices[0]] if answer_choices else []
    if len(set(first)) != len(first) or any({c.strip() for c in choices} != set(first) for choices in answer_choices):
        return None
    return first


def _as_labels(indices: Sequence[int], answer_choices: Sequence[Sequence[str]]) -> list[int]:
    """Choice positions -> positions in `_label_order` (unchanged where there is none; -1 stays -1)."""
    order = _label_order(answer_choices)
    if order is None:
        return list(indices)
    return [order.index(c[i].strip()) if i >= 0 else -1 for i, c in zip(indices, answer_choices)]


def _number(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        return UNPARSABLE_NUMBER
    return value if math.isfinite(value) else UNPARSABLE_NUMBER


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text.strip()))
    except ValueError:
        return False


def metric_problem(metric: str, targets: Sequence[str], answer_choices: Sequence[Sequence[str]], *,
                   rows: Optional[Sequence[int]] = None, groups: Optional[Sequence[Any]] = None) -> Optional[str]:
    """Why `metric` cannot score examples with these targets, answer choices and groups (None: it can).

    A target that is not a finite number under a "number" metric; binary F1 or a "choice_scores" metric
    without answer choices on every example; binary F1 on an example without exactly two choices; a "group_label"
    metric without a group per example (the task declares no `group_by`). `rows` (the examples' row indices) names
    the offending row.
    """
    spec = metric_spec(metric)
    has_choices = bool(answer_choices) and all(answer_choices)
    if spec.kind == "number":
        for index, target in enumerate(targets):
            if not _is_number(target):
                where = f"row {rows[index]}" if rows is not None else f"example {index}"
                return (f"the target {target!r} ({where}) is not a number; {metric} correlates numbers, so the "
                        f"template must render numeric targets")
    binary = spec.kind == "label" and spec.kwargs.get("average") == "binary" and targets
    if binary and not has_choices:
        return ("binary F1 needs answer choices to know its positive class (the second choice) and the template "
                "has none: declare `answer_choices`, or use f1_macro")
    many = next((c for c in answer_choices if len(c) != 2), None) if binary else None
    if many is not None:
        return (f"binary F1 scores the second of two answer choices as the positive class and the template has "
                f"{len(many)} ({', '.join(map(repr, many))}): use f1_macro")
    if spec.kind == "choice_scores" and targets and not has_choices:
        return f"{metric} scores the chosen answer choice and the template has no answer choices"
    if spec.kind == "group_label" and targets and (groups is None or any(g is None for g in groups)):
        return (f"{metric} scores groups of examples (e.g. all the answers to one question) and the task declares "
                f"no `group_by`: give the task a Jinja expression naming each row's group, e.g. `idx.question`")
    return None


def _tags(prediction: str, target: str) -> tuple[list[str], list[str]]:
    reference = target.split()
    predicted = prediction.split()[:len(reference)]
    return predicted + ["O"] * (len(reference) - len(predicted)), reference


def _check_columns(metric: str, n: int, columns: Mapping[str, Optional[Sequence[Any]]]) -> None:
    """Refuse, naming `metric` and the column, a per-example column (None: not given) without one item for each of
    the `n` predictions: zipped with them, it would leave examples out of the score."""
    for column, values in columns.items():
        if values is not None and len(values) != n:
            raise EvaluationError(f"metric {metric!r}: {n} predictions but {len(values)} {column}; give one per "
                                  f"prediction")


def _check_chosen(metric: str, chosen: Sequence[int], answer_choices: Sequence[Sequence[str]]) -> None:
    """Refuse, naming `metric` and the example, a chosen index that is no position among the example's answer choices
    nor -1 (none chosen): it would index past them, or be scored as a label of its own."""
    for index, (value, choices) in enumerate(zip(chosen, answer_choices)):
        if not -1 <= value < len(choices):
            raise EvaluationError(f"metric {metric!r}: example {index} chose {value!r}, no position among its "
                                  f"{len(choices)} answer choices (0 to {len(choices) - 1}; -1 for none)")


def metric_inputs(metric: str, predictions: Sequence[str], targets: Sequence[str],
                  answer_choices: Sequence[Sequence[str]], *, chosen: Optional[Sequence[int]] = None,
                  choice_scores: Optional[Sequence[Sequence[float]]] = None,
                  references: Optional[Sequence[Sequence[str]]] = None,
                  groups: Optional[Sequence[Any]] = None) -> tuple[list, list]:
    """The (predictions, references) a metric module takes, converted from text as the module docstring says.

    `chosen` (rank classification's picked indices, -1 for none) overrides matching the prediction text to a choice.
    Raises `EvaluationError` when a per-example column given (`targets`, `answer_choices`, ...) has not one item per
    prediction, a chosen index is no position among its example's choices, or `metric_problem` finds the metric
    cannot score these examples (`groups`: see `metric_problem`).
    """
    kind = metric_spec(metric).kind
    n = len(predictions)
    _check_columns(metric, n, {"targets": targets, "answer_choices": answer_choices, "chosen": chosen,
                               "choice_scores": choice_scores, "references": references, "groups": groups})
    problem = metric_problem(metric, targets, answer_choices, groups=groups)
    if problem:
        raise EvaluationError(f"metric {metric!r}: {problem}")
    if kind in ("label", "group_label", "choice_scores"):
        if chosen is not None:
            _check_chosen(metric, chosen, answer_choices)
            picked = list(chosen)
        elif all(answer_choices):
            picked = [_choice_index(p, c) for p, c in zip(predictions, answer_choices)]
        else:
            picked = None
        if kind == "choice_scores":
            if choice_scores is None:
                choice_scores = [[float(i == _choice_index(t, c)) for i in range(len(c))]
                                 for t, c in zip(targets, answer_choices)]
            return picked, [list(map(float, s)) for s in choice_scores]
        if picked is not None:
            gold = [_choice_index(t, c) for t, c in zip(targets, answer_choices)]
            return _as_labels(picked, answer_choices), _as_labels(gold, answer_choices)
        vocabulary = {label: i for i, label in enumerate(sorted({written_form(t) for t in targets}))}
        return ([vocabulary.get(written_form(p), -1) for p in predictions],
                [vocabulary[written_form(t)] for t in targets])
    if kind == "number":
        return [_number(p) for p in predictions], [float(t) for t in targets]
    if kind == "text":
        refs = [list(r) for r in references] if references is not None else [[t] for t in targets]
        return list(predictions), refs
    if kind == "target":
        return list(predictions), list(targets)
    if kind == "tags":
        pairs = [_tags(p, t) for p, t in zip(predictions, targets)]
        return [p for p, _ in pairs], [r for _, r in pairs]
    raise AssertionError(f"unhandled metric kind {kind!r} ({n} predictions)")


def score_predictions(metrics: Sequence[str], predictions: Sequence[str], targets: Sequence[str],
                      answer_choices: Sequence[Sequence[str]], *, groups: Optional[Sequence[Any]] = None,
                      incomplete_groups: Collection[Any] = (), **kwargs: Any) -> dict[str, dict[str, float]]:
    """Compute every metric on the predictions: {canonical metric name: {output name: value}}.

    `groups` (one key per example) is what "group_label" metrics score by; they leave out the examples of
    `incomplete_groups` (groups with rows that are not among these examples). `kwargs` (per-example sequences or
    None) go to `metric_inputs`.
    """
    results: dict[str, dict[str, float]] = {}
    for metric in metrics:
        name = canonical_metric_name(metric)
        group_metric = metric_spec(name).kind == "group_label"
        if group_metric and incomplete_groups and groups is not None:  # (columns checked before the groups pick them)
            _check_columns(name, len(predictions), {"targets": targets, "answer_choices": answer_choices,
                                                    "groups": groups, **kwargs})
            keep = [i for i, group in enumerate(groups) if group not in incomplete_groups]
            results[name] = score_predictions(
                [name], *(_pick(column, keep) for column in (predictions, targets, answer_choices)),
                groups=_pick(groups, keep), **{key: _pick(value, keep) for key, value in kwargs.items()})[name]
            continue
        preds, refs = metric_inputs(name, predictions, targets, answer_choices, groups=groups, **kwargs)
        results[name] = compute_metric(name, preds, refs, **({"groups": list(groups)} if group_metric else {}))
    return results


def _pick(column: Optional[Sequence[Any]], keep: Sequence[int]) -> Optional[list[Any]]:
    """The `keep` items of a per-example sequence (None stays None)."""
    return None if column is None else [column[i] for i in keep]
