"""The majority-class and chance baselines of a template's score (`t2t_mtl.evaluation.baselines`), against counts
by hand."""
from __future__ import annotations

import pytest

from t2t_mtl.evaluation.baselines import baselines
from t2t_mtl.evaluation.rendered_examples import EvalExample


def test_majority_baseline_is_the_most_common_gold_position_for_per_example_choices():
    examples = [EvalExample(0, "q", "rain", ["sun", "rain"]), EvalExample(1, "q", "cold", ["hot", "cold"]),
                EvalExample(2, "q", "up", ["up", "down", "left"])]
    majority, chance = baselines(examples, "accuracy", "accuracy")
    assert majority == pytest.approx(100 * 2 / 3)  # "always the second option" is right twice
    assert chance == pytest.approx(100 * (1 / 2 + 1 / 2 + 1 / 3) / 3)
    # one label set in shuffled orders: the majority is the most common label, wherever it is listed
    shuffled = [EvalExample(0, "q", "yes", ["yes", "no"]), EvalExample(1, "q", "yes", ["no", "yes"]),
                EvalExample(2, "q", "no", ["no", "yes"])]
    assert baselines(shuffled, "accuracy", "accuracy")[0] == pytest.approx(100 * 2 / 3)


def test_chance_is_on_the_primary_metrics_scale():
    cola = [EvalExample(i, "x", t, ["unacceptable", "acceptable"])
            for i, t in enumerate(["acceptable", "unacceptable", "acceptable", "acceptable"])]
    assert baselines(cola, "matthews_correlation", "matthews_correlation") == (0.0, 0.0)  # constant: MCC 0
    assert baselines(cola, "accuracy", "accuracy") == (75.0, 50.0)
    assert baselines(cola, "squad", "f1")[1] is None
    graded = [EvalExample(0, "x", "a", ["a", "b", "c"], [1.0, 0.5, 0.0]),
              EvalExample(1, "x", "b", ["a", "b"], [0.0, 1.0])]
    assert baselines(graded, "multiple_choice_grade", "multiple_choice_grade")[1] == pytest.approx(
        100 * (0.5 + 0.5) / 2)  # the mean target score of a random choice
    numbers = [EvalExample(i, "x", t, []) for i, t in enumerate(["1.0", "2.5", "2.5"])]
    assert baselines(numbers, "pearsonr", "pearsonr") == (None, None)
