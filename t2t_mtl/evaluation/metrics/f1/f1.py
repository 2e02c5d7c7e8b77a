"""F1 over label ids (scikit-learn), binary (of `pos_label`) or macro/micro/weighted over reference labels.

Predictions outside the labels (id -1) count as misses of the reference class; they never add a class of
their own to the average.
"""
import datasets
import evaluate
from sklearn.metrics import f1_score


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="F1 score: binary of pos_label, or macro/micro/weighted over the reference labels.",
            citation="",
            inputs_description="predictions, references: int label ids; average='binary'|'macro'|'micro'|"
                               "'weighted'; pos_label=1",
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, average="binary", pos_label=1):
        if average == "binary":
            labels, average = [pos_label], "micro"
        else:
            labels = sorted(set(references))
        score = f1_score(references, predictions, labels=labels, average=average, zero_division=0)
        return {"f1": float(score)}
