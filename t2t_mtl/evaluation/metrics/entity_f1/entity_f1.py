"""Entity-level precision, recall and F1 of named entities written as text, micro-averaged over the corpus.

A text lists entities as "span: TYPE" items joined by "; " ("EU: ORG; German: MISC"), or says "none" (any
case) when there are none — the form of the built-in conll2003 targets. Each text becomes a multiset of
(span, type) pairs: the type is the text after an item's last ":" (a single word), the span the text before
it with whitespace collapsed; both compare exactly, in NFKC form (as T5's tokenizers write every generation: a
gold "Müller" written with a decomposed umlaut is the one a generation can write). Empty items (a trailing ";")
are ignored.

Scores follow the CoNLL-2003 evaluation (conlleval), with every entity of the corpus pooled: precision =
correct / predicted, recall = correct / gold, F1 = 2PR / (P + R), each 0 when its denominator is 0 (so a
corpus without gold entities scores 0). A predicted pair is correct when the example's gold has it; a
repeated pair counts as often as it appears on both sides (multisets). Being text, an entity is matched by
its words, not its position in the sentence.

A prediction that does not parse (empty, or an item without "span: TYPE") counts as predicting no entities;
the fraction of such predictions is returned as `unparsable`. A reference that does not parse is an error.
"""
import collections
import unicodedata

import datasets
import evaluate

NO_ENTITIES = "none"


def parse_entities(text: str) -> collections.Counter[tuple[str, str]] | None:
    """The Counter of (span, type) pairs of an entity list, or None when `text` is not one."""
    text = unicodedata.normalize("NFKC", text).strip()
    if text.lower() == NO_ENTITIES:
        return collections.Counter()
    pairs = collections.Counter()
    for item in (part.strip() for part in text.split(";")):
        if not item:
            continue
        span, colon, kind = item.rpartition(":")
        span, kind = " ".join(span.split()), kind.strip()
        if not colon or not span or not kind or len(kind.split()) != 1:
            return None
        pairs[(span, kind)] += 1
    return pairs or None


class EntityF1(evaluate.Metric):
    """`compute(predictions=, references=)` → `{"precision", "recall", "f1", "unparsable"}`, fractions in [0, 1];
    raises `ValueError` for a reference that is not an entity list."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Micro-averaged entity precision/recall/F1 over (span, type) pairs parsed from "
                        "'span: TYPE; span: TYPE' texts ('none' for no entities).",
            citation="Tjong Kim Sang & De Meulder 2003, Introduction to the CoNLL-2003 Shared Task.",
            inputs_description="predictions: str; references: the gold entity list str per prediction",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        correct = predicted = gold = unparsable = 0
        for index, (prediction, reference) in enumerate(zip(predictions, references)):
            gold_pairs = parse_entities(reference)
            if gold_pairs is None:
                raise ValueError(f"entity_f1: reference {index} ({reference!r}) is not an entity list "
                                 f"'span: TYPE; span: TYPE' or 'none'")
            predicted_pairs = parse_entities(prediction)
            if predicted_pairs is None:
                unparsable += 1
                predicted_pairs = collections.Counter()
            correct += sum((predicted_pairs & gold_pairs).values())
            predicted += sum(predicted_pairs.values())
            gold += sum(gold_pairs.values())
        precision = correct / predicted if predicted else 0.0
        recall = correct / gold if gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1,
                "unparsable": unparsable / len(predictions) if predictions else 0.0}
