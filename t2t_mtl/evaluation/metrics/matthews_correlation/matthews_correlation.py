"""Matthews correlation coefficient over label ids (scikit-learn)."""
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
        return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
