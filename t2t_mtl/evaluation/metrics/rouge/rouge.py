"""ROUGE-1/2/L/Lsum F-measures (rouge-score), per example the best over its references, then averaged.

For rougeLsum, sentences are the lines of the text (no sentence splitter is needed offline).
"""
import datasets
import evaluate
from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


class Rouge(evaluate.Metric):
    """`compute(predictions=, references=, use_stemmer=False)` → `{"rouge1", "rouge2", "rougeL", "rougeLsum"}`,
    mean F-measures in [0, 1]."""

    def _info(self):
        return evaluate.MetricInfo(
            description="ROUGE F-measures averaged over examples.",
            citation="Lin 2004, ROUGE: A Package for Automatic Evaluation of Summaries.",
            inputs_description="predictions: str; references: list of str per prediction; use_stemmer=False",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Sequence(datasets.Value("string"))}),
        )

    def _compute(self, predictions, references, use_stemmer=False):
        scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
        totals = dict.fromkeys(ROUGE_TYPES, 0.0)
        for prediction, refs in zip(predictions, references):
            best = scorer.score_multi(list(refs), prediction)
            for kind in ROUGE_TYPES:
                totals[kind] += best[kind].fmeasure
        n = len(predictions)
        return {kind: (total / n if n else 0.0) for kind, total in totals.items()}
