"""Corpus BLEU (sacreBLEU), on sacreBLEU's 0-100 scale; any number of references.

Text is split into words by sacreBLEU's tokenizer `tokenize`: 13a (the default, WMT's mteval-v13a: space-separated
languages), zh (each Chinese character a word, 13a elsewhere), intl (Unicode punctuation and symbols split off, any
script) or char (every character a word). A task picks one by its metric's name: bleu (13a), bleu_zh, bleu_intl,
bleu_char.

Predictions and references are read in NFKC form, as T5's tokenizers write every generation (SentencePiece's
nmt_nfkc) and the exact_match, squad and rouge metrics read text: a reference's decomposed "ö", full-width "ＡＢＣ", "…"
or "ﬁ" is the word a generation can write (sacreBLEU compares raw code points, so those n-grams could never match). On
NFKC text the score is sacreBLEU's.

Examples with fewer references than the most are padded with their own first reference, which changes
neither n-gram clipping nor the closest reference length. No predictions (an empty corpus, on which sacreBLEU
itself fails) score what sacreBLEU's formula gives their statistics, none of them matched and both lengths 0:
BLEU 0, brevity penalty 1 — as one empty prediction against an empty reference.
"""
import unicodedata

import datasets
import evaluate
import sacrebleu


#: the sacreBLEU tokenizers `tokenize` takes (the others need models or dictionaries downloaded)
TOKENIZERS = ("13a", "zh", "intl", "char")


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


class Bleu(evaluate.Metric):
    """`compute(predictions=, references=, lowercase=False, tokenize="13a")` → `{"bleu": 0-100, "brevity_penalty":
    ...}`; raises `ValueError` when a prediction has no reference or `tokenize` is not one of `TOKENIZERS`."""

    def _info(self):
        return evaluate.MetricInfo(
            description="sacreBLEU corpus BLEU score (0-100).",
            citation="Post 2018, A Call for Clarity in Reporting BLEU Scores.",
            inputs_description="predictions: str; references: non-empty list of str per prediction",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Sequence(datasets.Value("string"))}),
        )

    def _compute(self, predictions, references, lowercase=False, tokenize="13a"):
        if tokenize not in TOKENIZERS:
            raise ValueError(f"bleu: tokenize {tokenize!r} is not a tokenizer this metric offers: "
                             f"{', '.join(TOKENIZERS)} (13a by default)")
        if any(len(refs) == 0 for refs in references):
            raise ValueError("bleu: every prediction needs at least one reference")
        if not predictions:
            return {"bleu": 0.0, "brevity_penalty": 1.0}
        width = max(len(refs) for refs in references)
        padded = [list(refs) + [refs[0]] * (width - len(refs)) for refs in references]
        streams = [[_nfkc(refs[k]) for refs in padded] for k in range(width)]
        result = sacrebleu.corpus_bleu([_nfkc(p) for p in predictions], streams, lowercase=lowercase,
                                       tokenize=tokenize)
        return {"bleu": float(result.score), "brevity_penalty": float(result.bp)}
