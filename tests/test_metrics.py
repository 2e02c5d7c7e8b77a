"""Each shipped metric module against an independent reference computed by hand or by its formula."""
from __future__ import annotations

import collections
import math

import numpy as np
import pytest

from t2t_mtl.evaluation.errors import UnknownMetricError
from t2t_mtl.evaluation.metrics import METRICS, canonical_metric_name, compute_metric, load_metric
from t2t_mtl.evaluation.scoring import metric_inputs, score_predictions


def test_every_metric_loads_offline_as_a_local_evaluate_module():
    for name in METRICS:
        module = load_metric(name)
        assert module.__class__.__module__.split(".")[-1] == METRICS[name].module


def test_aliases_and_unknown_names():
    assert canonical_metric_name("Accuracy") == "accuracy"
    assert canonical_metric_name("Pearson Correlation") == "pearsonr"
    assert canonical_metric_name("sacrebleu") == "bleu"
    with pytest.raises(UnknownMetricError, match="unknown metric 'Edit Distance'.*accuracy"):
        canonical_metric_name("Edit Distance")


def test_accuracy():
    assert compute_metric("accuracy", [1, 0, -1, 2], [1, 1, 0, 2]) == {"accuracy": 0.5}


def test_f1_binary_and_macro():
    preds, refs = [1, 0, -1, 1, 1, 0], [1, 1, 0, 0, 1, 0]
    # positive class 1: TP = 2 (idx 0, 4), FP = 1 (idx 3), FN = 1 (idx 1)
    p, r = 2 / 3, 2 / 3
    assert compute_metric("f1", preds, refs)["f1"] == pytest.approx(2 * p * r / (p + r))
    # class 0: TP = 1 (idx 5), FP = 1 (idx 1), FN = 2 (idx 2 predicted -1, idx 3) -> P 1/2, R 1/3
    f1_zero = 2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3)
    assert compute_metric("f1_macro", preds, refs)["f1"] == pytest.approx((f1_zero + 2 * p * r / (p + r)) / 2)


def test_matthews_correlation_binary_formula():
    preds, refs = [1, 1, 0, 0, 1, 0, 1], [1, 0, 0, 0, 1, 1, 1]
    tp, tn, fp, fn = 3, 2, 1, 1
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert compute_metric("matthews_correlation", preds, refs)["matthews_correlation"] == pytest.approx(expected)


def test_pearson_and_spearman():
    x = [0.5, 2.0, 1.0, 4.0, 3.5]
    y = [1.0, 1.5, 2.0, 5.0, 3.0]
    xc, yc = np.array(x) - np.mean(x), np.array(y) - np.mean(y)
    pearson = float((xc * yc).sum() / math.sqrt((xc ** 2).sum() * (yc ** 2).sum()))
    assert compute_metric("pearsonr", x, y)["pearsonr"] == pytest.approx(pearson)
    rank_x, rank_y = [1, 3, 2, 5, 4], [1, 2, 3, 5, 4]  # no ties: 1 - 6 Σd² / (n (n² - 1))
    d2 = sum((a - b) ** 2 for a, b in zip(rank_x, rank_y))
    assert compute_metric("spearmanr", x, y)["spearmanr"] == pytest.approx(1 - 6 * d2 / (5 * 24))


def test_exact_match_any_reference_and_empty_prediction():
    result = compute_metric("exact_match", ["Paris ", "", "b"], [["Paris"], ["x"], ["a", "b"]])
    assert result["exact_match"] == pytest.approx(2 / 3)


def test_squad_exact_match_and_token_f1():
    preds = ["The Eiffel tower", "in Paris France", ""]
    refs = [["eiffel tower"], ["Paris", "Paris, France!"], ["x"]]
    # 1: normalised equal -> EM 1, F1 1. 2: "in paris france" vs "paris france": EM 0, overlap 2,
    # P 2/3, R 1 -> F1 0.8 (vs "paris": 0.5; the max counts). 3: empty vs "x" -> 0.
    assert compute_metric("squad", preds, refs) == pytest.approx({"exact_match": 1 / 3, "f1": (1 + 0.8) / 3})
    # token F1 by hand: "big red dog" vs "red dog barks": overlap 2, P 2/3, R 2/3
    assert compute_metric("squad", ["big red dog"], [["red dog barks"]])["f1"] == pytest.approx(2 / 3)


def _lcs(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def _f(overlap, n_pred, n_ref):
    if overlap == 0:
        return 0.0
    p, r = overlap / n_pred, overlap / n_ref
    return 2 * p * r / (p + r)


def test_rouge_against_ngram_and_lcs_formulas():
    pred, ref = "the cat sat on the mat", "the cat lay on a mat"
    pt, rt = pred.split(), ref.split()
    unigrams = sum((collections.Counter(pt) & collections.Counter(rt)).values())
    bigrams = sum((collections.Counter(zip(pt, pt[1:])) & collections.Counter(zip(rt, rt[1:]))).values())
    result = compute_metric("rouge", [pred], [[ref]])
    assert result["rouge1"] == pytest.approx(_f(unigrams, 6, 6))
    assert result["rouge2"] == pytest.approx(_f(bigrams, 5, 5))
    assert result["rougeL"] == pytest.approx(_f(_lcs(pt, rt), 6, 6))
    # the best reference counts
    assert compute_metric("rouge", [pred], [["zzz", pred]])["rouge1"] == pytest.approx(1.0)


def _bleu(hyps, refs):
    matches, totals = [0] * 4, [0] * 4
    hyp_len = ref_len = 0
    for hyp, ref in zip(hyps, refs):
        h, r = hyp.split(), ref.split()
        hyp_len, ref_len = hyp_len + len(h), ref_len + len(r)
        for n in range(1, 5):
            hc = collections.Counter(tuple(h[i:i + n]) for i in range(len(h) - n + 1))
            rc = collections.Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
            matches[n - 1] += sum((hc & rc).values())
            totals[n - 1] += max(len(h) - n + 1, 0)
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / 4
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return 100 * bp * math.exp(log_precision)


def test_bleu_against_the_bleu_formula():
    hyps = ["the quick brown fox jumps over the dog", "a b c d e f"]
    refs = ["the quick brown fox jumped over the lazy dog", "a b c d e g"]
    result = compute_metric("bleu", hyps, [[r] for r in refs])
    assert result["bleu"] == pytest.approx(_bleu(hyps, refs), rel=1e-6)
    # uneven reference counts are accepted and a duplicate reference changes nothing
    assert compute_metric("bleu", hyps, [[refs[0], refs[0]], [refs[1]]])["bleu"] == pytest.approx(result["bleu"])


def test_seqeval_span_f1():
    refs = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    preds = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    # gold spans: PER(0-1), LOC(3), ORG(0); predicted: PER(0-1), ORG(3), ORG(0): 2 correct of 3 and 3
    result = compute_metric("seqeval", preds, refs)
    assert result["precision"] == pytest.approx(2 / 3) and result["recall"] == pytest.approx(2 / 3)
    assert result["f1"] == pytest.approx(2 / 3)
    assert result["accuracy"] == pytest.approx(5 / 6)


def test_multiple_choice_grade_is_the_mean_target_score_of_the_choice():
    result = compute_metric("multiple_choice_grade", [0, 2, -1, 1], [[1, 0], [0, 0, 0.5], [1, 0], [0, 1]])
    assert result["multiple_choice_grade"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)


def test_scoring_counts_generations_outside_the_choices_and_empty_ones_as_wrong():
    preds, targets = ["yes", "", "maybe", "no"], ["yes", "no", "no", "no"]
    choices = [["yes", "no"]] * 4
    assert metric_inputs("accuracy", preds, targets, choices) == ([0, -1, -1, 1], [0, 1, 1, 1])
    scores = score_predictions(["accuracy", "exact_match"], preds, targets, choices)
    assert scores["accuracy"]["accuracy"] == 0.5 and scores["exact_match"]["exact_match"] == 0.5
    # without answer choices: labels index the sorted set of targets
    assert metric_inputs("accuracy", ["b", "zz"], ["b", "a"], [[], []]) == ([1, -1], [1, 0])
    # numbers: unparsable -> -1.0; tags: padded with O to the reference length
    assert metric_inputs("pearsonr", ["0.5", "n/a"], ["1", "2"], [[], []]) == ([0.5, -1.0], [1.0, 2.0])
    assert metric_inputs("seqeval", ["B-PER"], ["B-PER O O"], [[]]) == ([["B-PER", "O", "O"]], [["B-PER", "O", "O"]])
