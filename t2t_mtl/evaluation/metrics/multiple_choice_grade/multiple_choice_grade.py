"""BIG-bench multiple_choice_grade: the mean over examples of the target score of the chosen answer.

An invalid choice (-1) scores 0; an example without the target score of its chosen choice is refused.
"""
import datasets
import evaluate


class MultipleChoiceGrade(evaluate.Metric):
    """`compute(predictions=, references=)` → `{"multiple_choice_grade": ...}`, the mean target score of the
    chosen choices (0 for an invalid one); raises `ValueError` naming the example when it has no target scores or
    none for the choice it chose."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Mean target score of the chosen answer choice (BIG-bench).",
            citation="Srivastava et al. 2022, Beyond the Imitation Game (BIG-bench).",
            inputs_description="predictions: chosen choice index (int, -1 invalid); references: the target "
                               "score of every choice, in choice order",
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Sequence(datasets.Value("float64"))}),
        )

    def _compute(self, predictions, references):
        for index, (chosen, scores) in enumerate(zip(predictions, references)):
            if len(scores) == 0:
                raise ValueError(f"multiple_choice_grade: example {index} has no target scores; give the target "
                                 f"score of every answer choice")
            if chosen >= len(scores):
                raise ValueError(f"multiple_choice_grade: example {index} chose choice {chosen} but has target "
                                 f"scores for {len(scores)} choices; give the target score of every answer choice")
        grades = [scores[p] if p >= 0 else 0.0 for p, scores in zip(predictions, references)]
        return {"multiple_choice_grade": sum(grades) / len(grades) if grades else 0.0}
