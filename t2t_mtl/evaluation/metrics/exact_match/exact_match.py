"""Exact string match against any of an example's references, Unicode and whitespace normalised: both sides in NFKC
form, ends ignored and every run of whitespace inside read as one space. T5's tokenizers write text so (SentencePiece's
nmt_nfkc normalisation; a run of whitespace is one space), so a generation cannot reproduce a reference's decomposed
"é", full-width "ＡＢＣ", "…" or "ﬁ", double spaces or newlines; held-in validation's exact match reads text the same
way.

`ignore_case=True` case-folds both sides first (`str.casefold`: "Straße" equals "STRASSE", a final "ς" equals "σ").
Every prediction needs at least one reference.
"""
import unicodedata

import datasets
import evaluate


class ExactMatch(evaluate.Metric):
    """`compute(predictions=, references=, ignore_case=False)` → `{"exact_match": fraction in [0, 1]}`; raises
    `ValueError` when a prediction has no reference."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Fraction of predictions equal to one of their references.",
            citation="",
            inputs_description="predictions: str; references: list of acceptable str per prediction",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Sequence(datasets.Value("string"))}),
        )

    def _compute(self, predictions, references, ignore_case=False):
        for index, refs in enumerate(references):
            if len(refs) == 0:
                raise ValueError(f"exact_match: example {index} has no reference; give at least one per prediction")

        def clean(text):
            text = " ".join(unicodedata.normalize("NFKC", text).split())
            return text.casefold() if ignore_case else text

        hits = [any(clean(p) == clean(r) for r in refs) for p, refs in zip(predictions, references)]
        return {"exact_match": sum(hits) / len(hits) if hits else 0.0}
