"""F1 over label ids (scikit-learn), binary (of `pos_label`) or macro/micro/weighted over the labels.

The labels averaged are those of the references and the predictions, as scikit-learn's default (and
SuperGLUE's CB F1) has it: a label only predicted (absent from the references, e.g. in a subset of the rows)
counts with F1 0. Predictions outside the labels (id -1) count as misses of the reference class; they never
add a class of their own to the average. Binary F1 (= 2TP / (2TP + FP + FN)) is undefined when neither the
references nor the predictions contain `pos_label` (no positive to find, none claimed); it is reported as 0.0,
as scikit-learn's `f1_score` (its default `zero_division`) and Hugging Face evaluate's "f1" report it, so that
scores compare with published ones.
"""
import datasets
import evaluate
from sklearn.metrics import f1_score


class F1(evaluate.Metric):
    """`compute(predictions=, references=, average="binary", pos_label=1)` → `{"f1": in [0, 1]}`."""

    def _info(self):
        return evaluate.MetricInfo(
            description="F1 score: binary of pos_label, or macro/micro/weighted over the labels of both sides.",
            citation="",
            inputs_description="predictions, references: int label ids; average='binary'|'macro'|'micro'|"
                               "'weighted'; pos_label=1",
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, average="binary", pos_label=1):
        if average == "binary":  # pos_label's F1 alone (micro over that one label: a -1 is just not positive)
            labels, average = [pos_label], "micro"
        else:  # a label only predicted has precision 0 and no recall to find: F1 0
            labels = sorted(set(references) | {p for p in predictions if p >= 0})
        score = f1_score(references, predictions, labels=labels, average=average, zero_division=0.0)
        return {"f1": float(score)}
