"""SQuAD-style exact match and token F1, each the maximum over an example's references.

Answers are normalised as in the SQuAD v1.1 evaluation script — lower case, punctuation and the articles a/an/the
removed, whitespace collapsed — after putting the text in NFKC form, as T5's tokenizers write every generation
(SentencePiece's nmt_nfkc) and the exact_match metric reads both sides: a gold "café" with a decomposed accent, a
full-width "ＡＢＣ！" or "ﬁne …" is the answer a generation can write (the script compares raw code points, so those
scored exact match 0 where plain exact match gave 1). On NFKC text, ASCII included, the scores are the script's. As
there, exact match compares the normalised strings and token F1 is 0 when no token is shared — also when both sides
normalise to nothing (e.g. "the" against "The": exact match 1, F1 0; SQuAD v2 would give F1 1). Scores are fractions
in [0, 1]; every prediction needs at least one reference.
"""
import collections
import re
import string
import unicodedata

import datasets
import evaluate

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """`text` in NFKC form, lower-cased, without punctuation or the articles a/an/the, whitespace collapsed (SQuAD
    v1.1's normalisation of NFKC text)."""
    text = "".join(ch for ch in unicodedata.normalize("NFKC", text).lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, reference: str) -> float:
    """The F1 of the normalised tokens of `prediction` against `reference` (bags of words), in [0, 1]; 0.0 when
    they share no token."""
    pred_tokens = normalize_answer(prediction).split()
    ref_tokens = normalize_answer(reference).split()
    common = collections.Counter(pred_tokens) & collections.Counter(ref_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred_tokens), overlap / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


class Squad(evaluate.Metric):
    """`compute(predictions=, references=)` → `{"exact_match", "f1"}`, means in [0, 1] of the best over each
    prediction's references; raises `ValueError` when a prediction has no reference."""

    def _info(self):
        return evaluate.MetricInfo(
            description="SQuAD exact match and token F1 (max over references).",
            citation="Rajpurkar et al. 2016, SQuAD: 100,000+ Questions for Machine Comprehension of Text.",
            inputs_description="predictions: str; references: list of acceptable answers per prediction",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Sequence(datasets.Value("string"))}),
        )

    def _compute(self, predictions, references):
        for index, refs in enumerate(references):
            if len(refs) == 0:
                raise ValueError(f"squad: example {index} has no reference answer; give at least one per prediction")
        em = [max(float(normalize_answer(p) == normalize_answer(r)) for r in refs)
              for p, refs in zip(predictions, references)]
        f1 = [max(token_f1(p, r) for r in refs) for p, refs in zip(predictions, references)]
        n = len(predictions)
        return {"exact_match": sum(em) / n if n else 0.0, "f1": sum(f1) / n if n else 0.0}
