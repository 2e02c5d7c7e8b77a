"""Pearson correlation between predicted and reference numbers (scipy).

The coefficient is undefined when either side is constant (e.g. a model that always answers "3.0") or there
are fewer than two examples; it is then reported as 0.0, no measurable correlation, never NaN.
"""
import math

import datasets
import evaluate
from scipy.stats import pearsonr


class Pearsonr(evaluate.Metric):
    """`compute(predictions=, references=)` → `{"pearsonr": in [-1, 1]}`, 0.0 where undefined."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Pearson correlation coefficient.",
            citation="",
            inputs_description="predictions, references: floats",
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("float64")}),
        )

    def _compute(self, predictions, references):
        if len(predictions) < 2 or len(set(predictions)) < 2 or len(set(references)) < 2:
            return {"pearsonr": 0.0}
        value = float(pearsonr(references, predictions)[0])
        return {"pearsonr": value if math.isfinite(value) else 0.0}
