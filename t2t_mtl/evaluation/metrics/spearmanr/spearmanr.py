"""Spearman rank correlation between predicted and reference numbers (scipy).

The coefficient is undefined when either side is constant (e.g. a model that always answers "3.0") or there
are fewer than two examples; it is then reported as 0.0, no measurable correlation, never NaN.
"""
import math

import datasets
import evaluate
from scipy.stats import spearmanr


class Spearmanr(evaluate.Metric):
    """`compute(predictions=, references=)` → `{"spearmanr": in [-1, 1]}`, 0.0 where undefined."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Spearman rank correlation coefficient.",
            citation="",
            inputs_description="predictions, references: floats",
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("float64")}),
        )

    def _compute(self, predictions, references):
        if len(predictions) < 2 or len(set(predictions)) < 2 or len(set(references)) < 2:
            return {"spearmanr": 0.0}
        value = float(spearmanr(references, predictions)[0])
        return {"spearmanr": value if math.isfinite(value) else 0.0}
