"""Matthews correlation coefficient over label ids (scikit-learn).

One class on both sides (every prediction and reference the same label) leaves the coefficient undefined; it is 0.0,
as scikit-learn reports it, without scikit-learn's warning, whose advice (its `labels` parameter) is for its own API.
"""
import warnings

import datasets
import evaluate
from sklearn.metrics import matthews_corrcoef


class MatthewsCorrelation(evaluate.Metric):
    """`compute(predictions=, references=)` → `{"matthews_correlation": in [-1, 1]}`."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Matthews correlation coefficient between predicted and reference labels.",
            citation="",
            inputs_description="predictions, references: int label ids (-1 for a prediction outside the labels)",
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="A single label was found", category=UserWarning)
            return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
