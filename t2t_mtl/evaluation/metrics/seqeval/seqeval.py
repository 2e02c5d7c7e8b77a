"""Entity-span precision/recall/F1 and token accuracy for BIO tagging (seqeval, CoNLL-style)."""
import datasets
import evaluate
from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score


class Seqeval(evaluate.Metric):
    """`compute(predictions=, references=)` → `{"precision", "recall", "f1", "accuracy"}` in [0, 1]; raises
    `ValueError` when an example's tag sequences differ in length, or when no example holds a tag (accuracy over no
    tag is undefined)."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Span-level F1 of BIO tag sequences.",
            citation="Nakayama 2018, seqeval; Tjong Kim Sang & De Meulder 2003 (CoNLL-2003).",
            inputs_description="predictions, references: list of tag sequences (equal lengths per example)",
            features=datasets.Features({
                "predictions": datasets.Sequence(datasets.Value("string")),
                "references": datasets.Sequence(datasets.Value("string")),
            }),
        )

    def _compute(self, predictions, references):
        for i, (p, r) in enumerate(zip(predictions, references)):
            if len(p) != len(r):
                raise ValueError(f"seqeval: example {i} has {len(p)} predicted tags for {len(r)} reference tags")
        if not any(references):
            raise ValueError("seqeval: no example holds a tag (every tag sequence is empty); give each example its "
                             "tags")
        return {
            "precision": float(precision_score(references, predictions, zero_division=0)),
            "recall": float(recall_score(references, predictions, zero_division=0)),
            "f1": float(f1_score(references, predictions, zero_division=0)),
            "accuracy": float(accuracy_score(references, predictions)),
        }
