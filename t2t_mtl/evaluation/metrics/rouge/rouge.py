"""ROUGE-1/2/L/Lsum F-measures (rouge-score), per example the best over its references, then averaged.

For rougeLsum, a text's sentences are its lines, each also cut after a sentence-final ".", "!" or "?" (and any
closing quotes or brackets) followed by whitespace, and after "。", "！" or "？": T5's tokenizers write no newline (a
generation never holds one), so reading lines alone scored a one-line prediction against a reference's lines, and
mostly made rougeLsum rougeL. This is the usual practice of splitting both texts into sentences before scoring
(rouge-score's split_summaries, HF's summarization examples), without nltk's punkt data, which is not installed
offline. As punkt does, it does not cut after a dotted abbreviation of single letters ("e.g.", "i.e.", "U.S.",
"p.m.") unless a capital letter follows ("in the U.S. The"): its period mostly ends no sentence (the pieces of such a
cut raised the score: summary-level LCS matches each sentence apart); unlike punkt it cuts after other
abbreviations' periods ("Mr. Smith"). Texts are read as
words by `tokenize`, a Unicode-aware form of rouge-score's tokenizer: in NFKC form (as T5's tokenizers write every
generation: a reference's decomposed "é" or full-width "ＡＢＣ" is the word a generation can write), lower-cased,
cut at every character that is not a letter, digit or combining mark, of any script — on ASCII text exactly
rouge-score's [a-z0-9] words, so English scores are rouge-score's, while its own tokenizer drops every other
character (a Russian, Hindi or Chinese prediction scored 0 against itself). Scripts written without spaces between
words are split into characters where that is the usual unit: each CJK ideograph and kana is a word of its own
(Thai, Lao, Khmer and Myanmar stay cut at spaces and punctuation only). `use_stemmer` stems words of more than 3
characters with rouge-score's Porter stemmer, as rouge-score does (an English stemmer: it changes only Latin-script
endings).
"""
import re
import unicodedata
from typing import Optional

import datasets
import evaluate
from nltk.stem import porter
from rouge_score import rouge_scorer, tokenizers

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
#: a dotted abbreviation of single letters followed by whitespace (a sentence end only before a capital), a sentence
#: end followed by whitespace, or a CJK sentence end (`_line_end` reads which)
_SENTENCE_END = re.compile(r"(?<![^\s(\[\"'“‘])(?P<abbreviation>(?:[^\W\d_]\.){2,})\s+"
                           r"|(?P<end>[.!?][\"'”’)\]]*)\s+|(?P<cjk_end>[。！？][\"'”’)\]」』）]*)\s*")
_UNSPACED = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")  # CJK, kana


def _spaced(char: str) -> str:
    """`char` as it stands in a text of words separated by spaces: a space for a separator, CJK and kana apart."""
    if unicodedata.category(char)[0] not in "LNM":  # "_" separates, as in rouge-score
        return " "
    return f" {char} " if _UNSPACED.match(char) else char


def tokenize(text: str, stemmer: Optional[porter.PorterStemmer] = None) -> list[str]:
    """The words of `text` as ROUGE compares them (see the module docstring), stemmed when `stemmer` is given."""
    words = "".join(_spaced(char) for char in unicodedata.normalize("NFKC", text).lower()).split()
    return [stemmer.stem(word) if len(word) > 3 else word for word in words] if stemmer else words


def sentence_lines(text: str) -> str:
    """`text` with each of its sentences on a line of its own, as rouge-score's rougeLsum reads sentences (see the
    module docstring); the words are unchanged."""
    return _SENTENCE_END.sub(_line_end, text)


def _line_end(match: re.Match) -> str:
    """What `sentence_lines` writes for a match of `_SENTENCE_END`: a sentence's end and a newline, or a dotted
    abbreviation as it stands where no capital letter follows it."""
    end = match["end"] or match["cjk_end"]
    if end is None and match.string[match.end():match.end() + 1].isupper():
        end = match["abbreviation"]
    return match.group(0) if end is None else end + "\n"


class UnicodeTokenizer(tokenizers.Tokenizer):
    """rouge-score's tokenizer interface over `tokenize`."""

    def __init__(self, use_stemmer: bool = False):
        self._stemmer = porter.PorterStemmer() if use_stemmer else None

    def tokenize(self, text: str) -> list[str]:
        return tokenize(text, self._stemmer)


class Rouge(evaluate.Metric):
    """`compute(predictions=, references=, use_stemmer=False)` → `{"rouge1", "rouge2", "rougeL", "rougeLsum"}`,
    mean F-measures in [0, 1]; raises `ValueError` when a prediction has no reference."""

    def _info(self):
        return evaluate.MetricInfo(
            description="ROUGE F-measures averaged over examples.",
            citation="Lin 2004, ROUGE: A Package for Automatic Evaluation of Summaries.",
            inputs_description="predictions: str; references: list of str per prediction; use_stemmer=False",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Sequence(datasets.Value("string"))}),
        )

    def _compute(self, predictions, references, use_stemmer=False):
        for index, refs in enumerate(references):
            if len(refs) == 0:
                raise ValueError(f"rouge: example {index} has no reference; give at least one per prediction")
        scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=UnicodeTokenizer(use_stemmer))
        totals = dict.fromkeys(ROUGE_TYPES, 0.0)
        for prediction, refs in zip(predictions, references):
            best = scorer.score_multi([sentence_lines(ref) for ref in refs], sentence_lines(prediction))
            for kind in ROUGE_TYPES:
                totals[kind] += best[kind].fmeasure
        n = len(predictions)
        return {kind: (total / n if n else 0.0) for kind, total in totals.items()}
