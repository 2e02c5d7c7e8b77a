"""Turn text predictions into metric inputs and compute a task's metrics on them.

Every prediction is scored, empty ones included. Conversions by metric kind (see `metrics.MetricSpec`):
- "label": the index of the target / prediction among the example's answer choices (a prediction outside
  them is -1, always wrong); without answer choices, the index in the sorted set of targets.
- "number": `float(text)`; an unparsable prediction becomes -1.0 (T5's convention for STS-B).
- "text": the prediction string against the example's references (the target, or `references[i]`).
- "tags": whitespace-split tags; the prediction is cut or padded with "O" to the target's length.
- "choice_scores": the chosen choice index against the per-choice target scores (`choice_scores[i]`, or
  1 for the target choice and 0 for the others).
"""
from __future__ import annotations

from typing import Optional, Sequence

from t2t_mtl.evaluation.metrics import canonical_metric_name, compute_metric, metric_spec

UNPARSABLE_NUMBER = -1.0


def _choice_index(text: str, choices: Sequence[str]) -> int:
    text = text.strip()
    for index, choice in enumerate(choices):
        if choice.strip() == text:
            return index
    return -1


def _number(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        return UNPARSABLE_NUMBER


def _tags(prediction: str, target: str) -> tuple[list[str], list[str]]:
    reference = target.split()
    predicted = prediction.split()[:len(reference)]
    return predicted + ["O"] * (len(reference) - len(predicted)), reference


def metric_inputs(metric: str, predictions: Sequence[str], targets: Sequence[str],
                  answer_choices: Sequence[Sequence[str]], *, chosen: Optional[Sequence[int]] = None,
                  choice_scores: Optional[Sequence[Sequence[float]]] = None,
                  references: Optional[Sequence[Sequence[str]]] = None) -> tuple[list, list]:
    """The (predictions, references) a metric module takes, converted from text as the module docstring says.

    `chosen` (rank classification's picked indices) overrides matching the prediction text to a choice.
    """
    kind = metric_spec(metric).kind
    n = len(predictions)
    if kind in ("label", "choice_scores"):
        if chosen is not None:
            picked = list(chosen)
        elif all(answer_choices):
            picked = [_choice_index(p, c) for p, c in zip(predictions, answer_choices)]
        else:
            picked = None
        if kind == "choice_scores":
            if picked is None:
                raise ValueError(f"metric {metric!r} needs answer choices on every example")
            if choice_scores is None:
                choice_scores = [[float(i == _choice_index(t, c)) for i in range(len(c))]
                                 for t, c in zip(targets, answer_choices)]
            return picked, [list(map(float, s)) for s in choice_scores]
        if picked is not None:
            gold = [_choice_index(t, c) for t, c in zip(targets, answer_choices)]
            return picked, gold
        vocabulary = {label: i for i, label in enumerate(sorted({t.strip() for t in targets}))}
        return [vocabulary.get(p.strip(), -1) for p in predictions], [vocabulary[t.strip()] for t in targets]
    if kind == "number":
        return [_number(p) for p in predictions], [float(t) for t in targets]
    if kind == "text":
        refs = [list(r) for r in references] if references is not None else [[t] for t in targets]
        return list(predictions), refs
    if kind == "tags":
        pairs = [_tags(p, t) for p, t in zip(predictions, targets)]
        return [p for p, _ in pairs], [r for _, r in pairs]
    raise AssertionError(f"unhandled metric kind {kind!r} ({n} predictions)")


def score_predictions(metrics: Sequence[str], predictions: Sequence[str], targets: Sequence[str],
                      answer_choices: Sequence[Sequence[str]], **kwargs) -> dict[str, dict[str, float]]:
    """Compute every metric on the predictions: {canonical metric name: {output name: value}}."""
    results: dict[str, dict[str, float]] = {}
    for metric in metrics:
        name = canonical_metric_name(metric)
        preds, refs = metric_inputs(name, predictions, targets, answer_choices, **kwargs)
        results[name] = compute_metric(name, preds, refs)
    return results
