"""Accuracy: the fraction of predicted label ids equal to the reference label id (scikit-learn).

A prediction that matches no label (id -1, e.g. a generated string outside the answer choices) is wrong.
"""
import datasets
import evaluate
from sklearn.metrics import accuracy_score


class Accuracy(evaluate.Metric):
    """`compute(predictions=, references=)` → `{"accuracy": fraction in [0, 1]}` (see the module docstring)."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Fraction of predictions equal to their reference label.",
            citation="",
            inputs_description="predictions, references: int label ids (-1 for a prediction outside the labels)",
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        return {"accuracy": float(accuracy_score(references, predictions))}
