"""What a template's score is compared with (`baselines`): always giving the most common answer (majority class), and
picking an answer choice at random (chance), both on its primary metric's scale."""
from __future__ import annotations

import collections
import statistics
from typing import Collection, Optional, Sequence

from t2t_mtl.evaluation.metrics import MetricSpec, metric_spec
from t2t_mtl.evaluation.rendered_examples import EvalExample, choice_scores
from t2t_mtl.evaluation.scoring import score_predictions


def baselines(examples: Sequence[EvalExample], primary: str, key: str, incomplete_groups: Collection[str] = ()
               ) -> tuple[Optional[float], Optional[float]]:
    """(majority-class baseline, chance baseline), both on the primary metric's 0-100 scale, None where they
    do not apply.

    Majority class, scored with the task's primary metric: when every example has the same set of answer
    choices (in any order), always answer the most common target; when the choices differ per example
    (COPA's two alternatives), always answer the most common gold position ("always the second option");
    without answer choices, always the most common target text. None for correlations (a constant prediction
    has no correlation). Chance (`MetricSpec.chance`): the expected score of a uniformly random answer choice
    for accuracy-like metrics (the mean of 1 / number of choices; of the choices' target scores for
    multiple_choice_grade), 0 for Matthews correlation, None for other metrics.
    """
    if not examples:
        return None, None
    spec = metric_spec(primary)
    targets = [e.targets for e in examples]
    choices = [e.answer_choices for e in examples]
    chance = _chance(examples, spec)
    if not spec.majority:
        return None, chance
    if all(choices):
        if len({frozenset(c) for c in choices}) == 1:
            answer = collections.Counter(targets).most_common(1)[0][0]
            chosen = [c.index(answer) for c in choices]
        else:
            gold = [c.index(t) if t in c else -1 for t, c in zip(targets, choices)]
            counts = collections.Counter(g for g in gold if g >= 0)
            position = counts.most_common(1)[0][0] if counts else 0
            chosen = [position if position < len(c) else -1 for c in choices]
        predictions = [c[k] if k >= 0 else "" for c, k in zip(choices, chosen)]
        constant = score_predictions([primary], predictions, targets, choices, chosen=chosen,
                                     choice_scores=choice_scores(examples), references=[e.gold for e in examples],
                                     groups=[e.group for e in examples], incomplete_groups=incomplete_groups)
    else:
        most_common = collections.Counter(targets).most_common(1)[0][0]
        constant = score_predictions([primary], [most_common] * len(examples), targets, choices,
                                     references=[e.gold for e in examples], groups=[e.group for e in examples],
                                     incomplete_groups=incomplete_groups)
    return constant[primary][key] * spec.scale, chance


def _chance(examples: Sequence[EvalExample], spec: MetricSpec) -> Optional[float]:
    if spec.chance == "zero":
        return 0.0
    if spec.chance == "uniform" and all(e.answer_choices for e in examples):
        graded = spec.kind == "choice_scores"
        per_example = [statistics.fmean(e.choice_scores) if graded and e.choice_scores is not None
                       else 1.0 / len(e.answer_choices) for e in examples]
        return spec.scale * statistics.fmean(per_example)
    return None
