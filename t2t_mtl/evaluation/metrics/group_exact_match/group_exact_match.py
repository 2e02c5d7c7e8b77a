"""Exact match per group: the fraction of example groups whose every prediction equals its reference.

SuperGLUE's MultiRC "EM": each candidate answer to a question is one example labelled correct or incorrect,
and a question counts only when all its answers are labelled right. `groups[i]` names example i's group
(MultiRC: its question); groups are counted once each, whatever their size. Every example of a group must be
given: the evaluation runner leaves out a group some of whose rows it does not score (`--max-examples`, template
skips, render errors), so that a partly scored question never counts as fully right.
"""
import datasets
import evaluate


class GroupExactMatch(evaluate.Metric):
    """`compute(predictions=, references=, groups=)` → `{"group_exact_match": fraction of groups in [0, 1]}`;
    raises `ValueError` unless `groups` has one key per prediction."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Fraction of example groups whose predictions all equal their references.",
            citation="Khashabi et al. 2018, MultiRC; Wang et al. 2019, SuperGLUE (MultiRC EM)",
            inputs_description="predictions, references: int label ids (-1 for a prediction outside the labels); "
                               "groups (keyword): one hashable group key per example",
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, groups=None):
        if groups is None or len(groups) != len(predictions):
            raise ValueError(f"group_exact_match needs one group key per prediction, got "
                             f"{'none' if groups is None else len(groups)} for {len(predictions)}")
        correct: dict = {}
        for prediction, reference, group in zip(predictions, references, groups):
            correct[group] = correct.get(group, True) and prediction == reference
        return {"group_exact_match": sum(correct.values()) / len(correct) if correct else 0.0}
