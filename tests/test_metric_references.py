"""The label, correlation and span metrics on seeded random inputs against their definitions written out here (no
scikit-learn, scipy or seqeval): F1 in its four averages, Matthews correlation over several classes (Gorodkin's R_K),
Spearman's rho with tied ranks, and CoNLL chunk F1 by conlleval's chunk rules. Predictions include -1 (a generation
outside the answer choices): a miss of the reference class, never a class of its own for F1."""
from __future__ import annotations

import math
import random

import pytest

from t2t_mtl.evaluation.metrics import compute_metric


def _labels(rng: random.Random) -> tuple[list[int], list[int]]:
    n, k = rng.randint(1, 12), rng.randint(2, 4)
    return [rng.randrange(-1, k) for _ in range(n)], [rng.randrange(k) for _ in range(n)]


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def _f1_by_definition(predictions: list[int], references: list[int], average: str) -> float:
    """F1 of label 1 ("binary"), or averaged over the labels of both sides, -1 excluded: the mean of the per-label
    F1s ("macro"), weighted by reference support ("weighted"), or the F1 of the pooled counts ("micro")."""
    labels = [1] if average == "binary" else sorted(set(references) | {p for p in predictions if p >= 0})
    counts = {label: (sum(p == label == r for p, r in zip(predictions, references)),
                      sum(p == label != r for p, r in zip(predictions, references)),
                      sum(r == label != p for p, r in zip(predictions, references))) for label in labels}
    if average == "binary":
        return _f1(*counts[1])
    if average == "micro":
        return _f1(*(sum(c[i] for c in counts.values()) for i in range(3)))
    if average == "macro":
        return sum(_f1(*c) for c in counts.values()) / len(labels)
    support = {label: references.count(label) for label in labels}
    return sum(_f1(*counts[label]) * support[label] for label in labels) / sum(support.values())


def _matthews_by_definition(predictions: list[int], references: list[int]) -> float:
    """Gorodkin's R_K from the confusion matrix over every value either side holds (-1 included); 0 where undefined."""
    classes = sorted(set(predictions) | set(references))
    true = [references.count(c) for c in classes]
    predicted = [predictions.count(c) for c in classes]
    correct, n = sum(p == r for p, r in zip(predictions, references)), len(references)
    denominator = math.sqrt((n * n - sum(x * x for x in predicted)) * (n * n - sum(x * x for x in true)))
    return (correct * n - sum(t * p for t, p in zip(true, predicted))) / denominator if denominator else 0.0


def test_f1_in_every_average_and_matthews_correlation_follow_their_definitions():
    rng = random.Random(0)
    for _ in range(25):
        predictions, references = _labels(rng)
        for average in ("binary", "macro", "micro", "weighted"):
            assert compute_metric("f1", predictions, references, average=average)["f1"] == pytest.approx(
                _f1_by_definition(predictions, references, average), abs=1e-12), (average, predictions, references)
        assert compute_metric("mcc", predictions, references)["matthews_correlation"] == pytest.approx(
            _matthews_by_definition(predictions, references), abs=1e-12), (predictions, references)
        assert compute_metric("accuracy", predictions, references)["accuracy"] == pytest.approx(
            sum(p == r for p, r in zip(predictions, references)) / len(references))


def _average_ranks(values: list[float]) -> list[float]:
    """1-based ranks, tied values sharing the mean of the ranks they span."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def _pearson_by_definition(x: list[float], y: list[float]) -> float:
    """The sample correlation coefficient; 0 where a side is constant (undefined: reported as no correlation)."""
    mean_x, mean_y = sum(x) / len(x), sum(y) / len(y)
    sxx, syy = sum((a - mean_x) ** 2 for a in x), sum((b - mean_y) ** 2 for b in y)
    sxy = sum((a - mean_x) * (b - mean_y) for a, b in zip(x, y))
    return sxy / math.sqrt(sxx * syy) if sxx and syy else 0.0


def test_pearson_and_spearman_with_ties_and_constant_sides_follow_their_definitions():
    rng = random.Random(1)
    for _ in range(40):  # few distinct values: ties on both sides, and now and then a constant one
        n = rng.randint(1, 9)
        predictions = [rng.choice([-1.0, 0.0, 1.0, 2.5, 3.0]) for _ in range(n)]
        references = [rng.choice([0.0, 1.2, 2.0, 4.0]) for _ in range(n)]
        assert compute_metric("pearsonr", predictions, references)["pearsonr"] == pytest.approx(
            _pearson_by_definition(predictions, references), abs=1e-9), (predictions, references)
        rho = _pearson_by_definition(_average_ranks(predictions), _average_ranks(references))
        assert compute_metric("spearmanr", predictions, references)["spearmanr"] == pytest.approx(rho, abs=1e-9), (
            predictions, references)


def _conll_chunks(tags: list[str]) -> set[tuple[int, int, str]]:
    """(first, last, type) of each chunk of a BIO sequence, by conlleval's startOfChunk / endOfChunk rules: a chunk
    ends at a B or an O, or where the type changes; one starts at a B, at an I after an O, or where the type
    changes (an I of another type included)."""
    chunks, start, kind = set(), None, ""
    previous, previous_kind = "O", ""
    for index, tag in enumerate([*tags, "O"]):
        prefix, _, tag_kind = tag.partition("-")
        if start is not None and (prefix in ("B", "O") or tag_kind != previous_kind):
            chunks.add((start, index - 1, kind))
            start = None
        if prefix == "B" or (prefix == "I" and (previous == "O" or tag_kind != previous_kind)):
            start, kind = index, tag_kind
        previous, previous_kind = prefix, tag_kind
    return chunks


def test_seqeval_f1_is_conllevals_chunk_f1():
    rng = random.Random(2)
    tags = ["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    for _ in range(40):
        lengths = [rng.randint(1, 6) for _ in range(rng.randint(1, 3))]
        predictions = [[rng.choice(tags) for _ in range(n)] for n in lengths]
        references = [[rng.choice(tags) for _ in range(n)] for n in lengths]
        predicted = {(i, *c) for i, p in enumerate(predictions) for c in _conll_chunks(p)}
        gold = {(i, *c) for i, r in enumerate(references) for c in _conll_chunks(r)}
        correct = len(predicted & gold)
        precision = correct / len(predicted) if predicted else 0.0
        recall = correct / len(gold) if gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if correct else 0.0
        result = compute_metric("seqeval", predictions, references)
        assert (result["precision"], result["recall"], result["f1"]) == pytest.approx((precision, recall, f1)), (
            predictions, references)


def test_matthews_correlation_of_one_class_on_both_sides_is_zero_with_no_warning_from_scikit_learn(recwarn):
    # scikit-learn warned "A single label was found in 'y_true' and 'y_pred'. For the confusion matrix to have the
    # correct shape, use the 'labels' parameter" — advice for its own API, which a report's reader cannot take (a
    # --max-examples run whose gold and predictions are all "acceptable")
    for predictions, references in (([1, 1, 1], [1, 1, 1]), ([-1], [0])):
        assert compute_metric("mcc", predictions, references)["matthews_correlation"] == _matthews_by_definition(
            predictions, references) == 0.0
    assert [str(warning.message) for warning in recwarn] == []
