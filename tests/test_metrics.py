"""Each shipped metric module against an independent reference computed by hand or by its formula."""
from __future__ import annotations

import collections
import json
import math
import re

import numpy as np
import pytest

from t2t_mtl.evaluation.errors import EvaluationError, UnknownMetricError
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
    # a misspelt name first gets the close metric or alias (was: only the list of 30-odd names to search)
    for given, close in (("acuracy", "accuracy"), ("Mathews correlation", "matthews_correlation"),
                         ("rouge_l", "rouge")):
        with pytest.raises(UnknownMetricError) as raised:
            canonical_metric_name(given)
        assert str(raised.value).startswith(f"unknown metric {given!r} (did you mean {close!r}?): the shipped")
    with pytest.raises(UnknownMetricError, match="^unknown metric 'Edit Distance': the shipped"):
        canonical_metric_name("Edit Distance")



_PERFECT = {"label": ([1, 0, 2], [1, 0, 2]), "group_label": ([1, 0], [1, 0]),
            "number": ([1.0, 2.0, 4.0], [1.0, 2.0, 4.0]),
            "text": (["the cat sat on the mat"], [["the cat sat on the mat"]]), "target": (["EU: ORG"], ["EU: ORG"]),
            "tags": ([["B-PER", "O"]], [["B-PER", "O"]]), "choice_scores": ([1], [[0.0, 1.0]])}


def test_a_perfect_prediction_scores_100_on_every_metrics_scale():
    # `scale` puts the primary output on 0-100 (BLEU is already there: sacreBLEU's scale)
    for name, spec in METRICS.items():
        preds, refs = _PERFECT[spec.kind]
        if spec.kwargs.get("average") == "binary":
            preds, refs = [1, 0], [1, 0]
        kwargs = {"groups": ["q1", "q2"]} if spec.kind == "group_label" else {}
        assert compute_metric(name, preds, refs, **kwargs)[spec.primary] * spec.scale == pytest.approx(100), name

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


def test_f1_macro_averages_a_label_only_predicted_with_f1_zero():
    """As scikit-learn's default and SuperGLUE's CB F1: the labels of both sides are averaged (a subset of rows
    may lack a class the model predicts); -1 (no label) adds no class."""
    from sklearn.metrics import f1_score

    preds, refs = [2, 0, 1, 1, -1], [0, 0, 1, 1, 1]
    # class 0: TP 1, FN 1 -> F1 2/3; class 1: TP 2, FN 1 (the -1) -> P 1, R 2/3, F1 4/5; class 2: F1 0
    assert compute_metric("f1_macro", preds, refs)["f1"] == pytest.approx((2 / 3 + 4 / 5 + 0) / 3)
    assert compute_metric("f1_macro", preds[:4], refs[:4])["f1"] == pytest.approx(
        f1_score(refs[:4], preds[:4], average="macro", zero_division=0))
    # label 0 only predicted counts too: class 0 F1 0, class 1 P 1 R 1/2 (F1 2/3), class 2 F1 1
    assert compute_metric("f1_macro", [0, 1, 2, 2], [1, 1, 2, 2])["f1"] == pytest.approx((0 + 2 / 3 + 1) / 3)
    # keyword arguments override the metric's defaults: class 0 F1 1, classes 1 and 2 F1 2/3
    assert compute_metric("f1", [0, 1, 2, 2], [0, 1, 1, 2], average="macro")["f1"] == pytest.approx(7 / 9)


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
    # case counts unless ignore_case says otherwise
    assert compute_metric("exact_match", ["Paris"], [["paris"]])["exact_match"] == 0.0
    assert compute_metric("exact_match", ["Paris"], [["paris"]], ignore_case=True)["exact_match"] == 1.0


def test_exact_match_ignore_case_folds_case_beyond_lower_casing():
    # was: lower() only, which keeps "ß" against "SS" (upper-cased "straße") and final "ς" against "σ"
    preds, refs = ["STRASSE", "οδοσ", "Paris"], [["Straße"], ["ΟΔΟΣ"], ["paris"]]
    assert compute_metric("exact_match", preds, refs, ignore_case=True)["exact_match"] == 1.0
    assert compute_metric("exact_match", preds, refs)["exact_match"] == 0.0


def test_exact_match_reads_whitespace_as_held_in_validation_does():
    # was: only the ends trimmed, so a reference's newline or double space (which a T5 tokenizer encodes as one
    # space: no generation can reproduce it) never matched, while held-in validation's exact match collapsed them
    from t2t_mtl.engine.validation import count_exact_matches

    preds, refs = ["a b", "a  b", " x\ny ", "a b", "ab"], [["a  b"], ["a b"], ["x y"], ["a\tb\n"], ["a b"]]
    assert compute_metric("exact_match", preds, refs)["exact_match"] == pytest.approx(4 / 5)
    assert count_exact_matches(preds, refs) == 4


def test_exact_match_reads_references_as_t5_tokenizers_write_them(t5_tokenizer):
    # a reference outside NFKC form (decomposed accents, full-width forms, ligatures, "…", superscripts) never
    # matched: T5's SentencePiece normalisation (nmt_nfkc) writes every generation in NFKC form
    from t2t_mtl.engine.validation import count_exact_matches

    refs = ["cafe\u0301 au lait", "ＡＢＣ１２", "ﬁne …", "x²", "Ⅻ"]
    written = [t5_tokenizer.decode(t5_tokenizer(r)["input_ids"], skip_special_tokens=True) for r in refs]
    assert written == ["café au lait", "ABC12", "fine ...", "x2", "XII"]  # what a generation can reproduce
    assert all(w != r for w, r in zip(written, refs))
    assert compute_metric("exact_match", written, [[r] for r in refs])["exact_match"] == 1.0
    assert count_exact_matches(written, [[r] for r in refs]) == len(refs)
    assert compute_metric("exact_match", ["x3", "ABC"], [["x²"], ["ＡＢＣ１２"]])["exact_match"] == 0.0


def test_rouge_and_entity_f1_read_references_as_t5_tokenizers_write_them(t5_tokenizer):
    # rouge's words and entity_f1's spans compared raw code points: a decomposed accent or a full-width form in the
    # gold (never in a generation, which T5's nmt_nfkc normalisation writes in NFKC form) made a word or span miss
    def written(text):
        return t5_tokenizer.decode(t5_tokenizer(text)["input_ids"], skip_special_tokens=True)

    summary, entities = "Mu\u0308ller met ＥＵ officials in Ko\u0308ln", "Mu\u0308ller: PER; ＥＵ: ORG; Ko\u0308ln: LOC"
    assert (written(summary), written(entities)) == ("Müller met EU officials in Köln",
                                                     "Müller: PER; EU: ORG; Köln: LOC")
    assert compute_metric("rouge", [written(summary)], [[summary]]) == pytest.approx(dict.fromkeys(
        ("rouge1", "rouge2", "rougeL", "rougeLsum"), 1.0))
    result = compute_metric("entity_f1", [written(entities)], [entities])
    assert (result["precision"], result["recall"], result["f1"]) == (1.0, 1.0, 1.0)


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
    # F-measures, not precisions: a prediction shorter than its reference loses recall
    short = compute_metric("rouge", ["the cat"], [[ref]])
    assert (short["rouge1"], short["rouge2"], short["rougeL"]) == pytest.approx((_f(2, 2, 6), _f(1, 1, 5), _f(2, 2, 6)))


def test_rouge_reads_ascii_text_as_rouge_score_does():
    from rouge_score import rouge_scorer

    texts = ["The cat's mat, 3.14 m_long!", "the CAT sat\non the mat.", "U.S.A.-made e-mail x2 (running) ponies",
             "caresses_generously: ran 42", "", "!!!", "a\tb  c\n\nd"]
    preds, refs = texts, [[texts[(i + 1) % len(texts)], texts[(i + 3) % len(texts)]] for i in range(len(texts))]
    for stemmer in (False, True):
        scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=stemmer)
        best = [scorer.score_multi(r, p) for p, r in zip(preds, refs)]
        want = {kind: sum(b[kind].fmeasure for b in best) / len(best) for kind in best[0]}
        assert compute_metric("rouge", preds, refs, use_stemmer=stemmer) == pytest.approx(want, abs=1e-12)


SENTENCES = [(["The cat sat on the mat.", "It was happy!"], ["A cat sat.", "The mat was red?", "It was happy."]),
             (["Rain fell all day.", "The roads flooded."], ["The roads flooded.", "Rain fell all day."]),
             (['He said "stop."', "Then he left."], ["He left.", 'Then he said "stop."']),
             (["我爱北京。", "他爱上海！"], ["他爱上海。", "我爱北京！"])]


@pytest.mark.parametrize("prediction, reference", SENTENCES)
def test_rouge_lsum_reads_the_sentences_of_texts_without_newlines(prediction, reference):
    # was: rougeLsum read only a text's lines as its sentences, and a generation holds none (T5's tokenizers write no
    # newline), so rougeLsum was rougeL on such texts (0.5 for two sentences in swapped order, not 1.0), and a
    # reference with newlines was scored line by line against the one-line generation; the reference is
    # rouge-score's rougeLsum of the sentences given one a line, as the usual sentence splitting hands them to it
    # (with our tokenizer, which is rouge-score's on ASCII text and reads the Chinese words)
    from rouge_score import rouge_scorer

    from t2t_mtl.evaluation.metrics.rouge.rouge import UnicodeTokenizer

    scorer = rouge_scorer.RougeScorer(["rougeLsum"], tokenizer=UnicodeTokenizer())
    want = scorer.score("\n".join(reference), "\n".join(prediction))["rougeLsum"].fmeasure
    joined = {"\n".join(reference), " ".join(reference)}  # (the same reference written either way)
    for gold in joined:
        assert compute_metric("rouge", [" ".join(prediction)], [[gold]])["rougeLsum"] == pytest.approx(want)
    if reference[::-1] == prediction:
        assert want == 1.0 and compute_metric("rouge", [" ".join(prediction)], [[" ".join(reference)]])[
            "rougeL"] < 1.0


@pytest.mark.parametrize("prediction, reference", [
    (["Meet at 5 p.m. near the U.S. embassy.", "Bring ID."],
     ["Bring ID.", "Meet near the U.S. embassy at 5 p.m. sharp."]),
    (["Use a solvent, i.e. water, on it."], ["On it use water, i.e. a solvent."]),
    (["Bring tools (e.g. a hammer) and nails.", "Then build it."], ["Then build it.", "Bring nails, e.g. a hammer."]),
    (["She moved to the U.S.", "Then she found work there."], ["She found work there.", "Then she moved to the U.S."])])
def test_rouge_lsum_reads_a_dotted_abbreviation_as_no_sentence_end(prediction, reference):
    # was: rougeLsum cut a sentence after "e.g.", "i.e.", "U.S." or "p.m." as after any period before a space, and
    # scored the pieces as sentences (0.96 for the first pair, where its two sentences score 0.64): as punkt, whose
    # sentences rouge-score is usually given, a dotted abbreviation of single letters ends no sentence, unless a capital
    # letter follows (the last pair); the reference is rouge-score's rougeLsum of the sentences given one a line
    from rouge_score import rouge_scorer

    from t2t_mtl.evaluation.metrics.rouge.rouge import UnicodeTokenizer

    scorer = rouge_scorer.RougeScorer(["rougeLsum"], tokenizer=UnicodeTokenizer())
    want = scorer.score("\n".join(reference), "\n".join(prediction))["rougeLsum"].fmeasure
    assert compute_metric("rouge", [" ".join(prediction)], [[" ".join(reference)]])["rougeLsum"] == pytest.approx(want)


def test_rouge_scores_text_of_other_scripts_by_its_words():
    # rouge-score's tokenizer keeps [a-z0-9] only: a perfect Russian prediction scored 0
    from rouge_score import rouge_scorer

    pred, ref = "Кошка сидит на ковре.", "кошка лежит на ковре"
    assert rouge_scorer.RougeScorer(["rouge1"]).score(pred, pred)["rouge1"].fmeasure == 0.0
    assert compute_metric("rouge", [pred], [[pred]])["rougeL"] == 1.0
    # by hand over the words кошка/сидит/на/ковре (case and "." dropped): 3 shared, bigram на-ковре, LCS 3
    assert compute_metric("rouge", [pred], [[ref]]) == pytest.approx(
        {"rouge1": _f(3, 4, 4), "rouge2": _f(1, 3, 3), "rougeL": _f(3, 4, 4), "rougeLsum": _f(3, 4, 4)})
    # Devanagari vowel signs and viramas are combining marks inside a word: "हिन्दी भाषा" is two words
    assert compute_metric("rouge", ["हिन्दी"], [["हिन्दी भाषा"]])["rouge1"] == pytest.approx(_f(1, 1, 2))
    # Chinese has no spaces between words: each character is one: 我 爱 北 京 against 我 爱 上 海
    assert compute_metric("rouge", ["我爱北京。"], [["我爱上海"]]) == pytest.approx(
        {"rouge1": _f(2, 4, 4), "rouge2": _f(1, 3, 3), "rougeL": _f(2, 4, 4), "rougeLsum": _f(2, 4, 4)})


def _ngrams(words, n):
    return collections.Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def _bleu(hyps, refs):
    """Corpus BLEU of `hyps` against `refs[i]` (one or more references each): n-grams clipped by their most
    frequent reference count, the reference length closest to the hypothesis's (the shorter on a tie)."""
    matches, totals = [0] * 4, [0] * 4
    hyp_len = ref_len = 0
    for hyp, references in zip(hyps, refs):
        h, rs = hyp.split(), [r.split() for r in references]
        hyp_len += len(h)
        ref_len += min((len(r) for r in rs), key=lambda length: (abs(length - len(h)), length))
        for n in range(1, 5):
            clip = collections.Counter()
            for r in rs:
                clip |= _ngrams(r, n)
            matches[n - 1] += sum((_ngrams(h, n) & clip).values())
            totals[n - 1] += max(len(h) - n + 1, 0)
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / 4
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return 100 * bp * math.exp(log_precision)


def test_bleu_against_the_bleu_formula():
    hyps = ["the quick brown fox jumps over the dog", "a b c d e f"]
    refs = ["the quick brown fox jumped over the lazy dog", "a b c d e g"]
    result = compute_metric("bleu", hyps, [[r] for r in refs])
    assert result["bleu"] == pytest.approx(_bleu(hyps, [[r] for r in refs]), rel=1e-6)
    # uneven reference counts are accepted and a duplicate reference changes nothing
    assert compute_metric("bleu", hyps, [[refs[0], refs[0]], [refs[1]]])["bleu"] == pytest.approx(result["bleu"])
    # a short hypothesis of an example with fewer references is measured against its own reference's length
    hyps = ["the quick brown fox jumps over the dog", "a b"]
    refs = [["the quick brown fox jumped over the lazy dog", "the fast brown fox jumps over the dog"], ["a b c d e g"]]
    assert compute_metric("bleu", hyps, refs)["bleu"] == pytest.approx(_bleu(hyps, refs), rel=1e-6)


def test_bleu_reads_references_as_t5_tokenizers_write_them_and_is_sacrebleus_on_nfkc_text(t5_tokenizer):
    # sacreBLEU compares raw code points: the generation of a reference with a decomposed umlaut, a ligature or "…"
    # (T5 writes it in NFKC form) lost those n-grams: BLEU 9.6 for the T5-written copy of the references
    import unicodedata

    import sacrebleu

    refs = [["Das Cafe\u0301 in Ko\u0308ln ist zu … sagte er"], ["Die ﬁrma zahlt ＥＵＲ 10"]]
    written = [t5_tokenizer.decode(t5_tokenizer(r[0])["input_ids"], skip_special_tokens=True) for r in refs]
    assert written == ["Das Café in Köln ist zu ... sagte er", "Die firma zahlt EUR 10"]
    assert sacrebleu.corpus_bleu(written, [[r[0] for r in refs]]).score < 20
    assert compute_metric("bleu", written, refs) == pytest.approx({"bleu": 100.0, "brevity_penalty": 1.0})
    hyps = ["Das Café in Köln ist ... sagte sie", "die ﬁrma zahlt"]
    nfkc = [[unicodedata.normalize("NFKC", r[0]) for r in refs]]
    want = sacrebleu.corpus_bleu([unicodedata.normalize("NFKC", h) for h in hyps], nfkc)
    assert compute_metric("bleu", hyps, refs) == pytest.approx({"bleu": want.score, "brevity_penalty": want.bp})


@pytest.mark.parametrize("name, hyp, ref, hyp_words, ref_words", [
    # zh and char: each Chinese character (and punctuation mark) a word; 13a keeps the unspaced sentence whole
    ("bleu_zh", "我们今天去公园散步了。", "我们今天在公园散步。", list("我们今天去公园散步了。"), list("我们今天在公园散步。")),
    ("bleu_char", "我们今天去公园散步了。", "我们今天在公园散步。", list("我们今天去公园散步了。"), list("我们今天在公园散步。")),
    # intl: Unicode punctuation split off as words; 13a splits ASCII punctuation only
    ("bleu_intl", "Er sagte—wie immer—„nein“ und ging.", "Er sagte — wie immer — „nein“, und ging nach Hause.",
     "Er sagte — wie immer — „ nein “ und ging .".split(),
     "Er sagte — wie immer — „ nein “ , und ging nach Hause .".split()),
])
def test_a_bleu_metric_names_the_sacrebleu_tokenizer_that_splits_its_words(name, hyp, ref, hyp_words, ref_words):
    # was: bleu always split words with 13a (mteval-v13a: spaces and ASCII punctuation), scoring an unspaced
    # Chinese sentence as one word (BLEU 0 for a near copy); a task picks zh, intl or char by its metric's name
    expected = _bleu([" ".join(hyp_words)], [[" ".join(ref_words)]])
    assert compute_metric(name, [hyp], [[ref]])["bleu"] == pytest.approx(expected, rel=1e-9)
    assert compute_metric("bleu", [hyp], [[ref]], tokenize=METRICS[name].kwargs["tokenize"])["bleu"] == \
        pytest.approx(expected, rel=1e-9)
    assert compute_metric("bleu", [hyp], [[ref]])["bleu"] < expected - 10  # 13a, the default
    assert score_predictions([name], [hyp], [ref], [[]])[name]["bleu"] == pytest.approx(expected, rel=1e-9)


def test_bleu_refuses_a_tokenizer_it_does_not_offer_naming_those_it_does():
    with pytest.raises(ValueError, match=r"^bleu: tokenize 'ja-mecab' is not a tokenizer this metric offers: "
                                         r"13a, zh, intl, char \(13a by default\)$"):
        compute_metric("bleu", ["x"], [["x"]], tokenize="ja-mecab")


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
    assert compute_metric("multiple_choice_grade", [-1], [[0, 1]])["multiple_choice_grade"] == 0.0  # not the last


@pytest.mark.parametrize("chosen,scores,missing", [
    ([0, 1], [[1, 0], []], r"example 1 has no target scores"),
    ([0, -1], [[1, 0], []], r"example 1 has no target scores"),  # an invalid choice has none to read either
    ([0, 2], [[1, 0], [0, 1]], r"example 1 chose choice 2 but has target scores for 2 choices"),
])
def test_multiple_choice_grade_refuses_an_example_without_the_target_score_of_its_choice(chosen, scores, missing):
    # was: the example scored 0, as a wrong answer, through the Python API (tasks always give every choice a score)
    with pytest.raises(ValueError, match=rf"^multiple_choice_grade: {missing}; give the target score of every "
                                         rf"answer choice$"):
        compute_metric("multiple_choice_grade", chosen, scores)


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


def test_label_metrics_match_a_generation_to_its_choice_as_t5_tokenizers_write_text(t5_tokenizer):
    # a choice or target with a double space, a decomposed accent or a full-width form (choices drawn from a row's
    # text can hold them: ag_news writes "Turner   Newall") was matched raw, so its generation, which T5 writes in NFKC
    # form with single spaces, counted as outside the choices (-1, wrong) under accuracy while exact_match scored it
    # right
    choices = ["Turner   Newall", "cafe\u0301 au lait", "ＡＢＣ corp"]
    written = [t5_tokenizer.decode(t5_tokenizer(c)["input_ids"], skip_special_tokens=True) for c in choices]
    assert written == ["Turner Newall", "café au lait", "ABC corp"] and all(w != c for w, c in zip(written, choices))
    preds, targets = written + ["Turner Newall!"], choices + [choices[0]]
    assert metric_inputs("accuracy", preds, targets, [choices] * 4) == ([0, 1, 2, -1], [0, 1, 2, 0])
    scores = score_predictions(["accuracy", "exact_match", "multiple_choice_grade"], preds, targets, [choices] * 4)
    assert scores == {"accuracy": {"accuracy": 0.75}, "exact_match": {"exact_match": 0.75},
                      "multiple_choice_grade": {"multiple_choice_grade": 0.75}}
    # without answer choices the targets are the labels, read the same way
    assert metric_inputs("accuracy", preds, targets, [[]] * 4) == ([1, 2, 0, -1], [1, 2, 0, 1])
    # a choice equal to the prediction as given still wins over an earlier one equal only as written
    assert metric_inputs("accuracy", ["a b"], ["a b"], [["a  b", "a b"]]) == ([1], [1])


def test_scoring_cuts_long_tag_predictions_reads_labels_without_end_whitespace_and_grades_the_target_choice():
    # tags: a prediction longer than the target is cut to its length (seqeval refuses unequal lengths)
    assert metric_inputs("seqeval", ["B-PER O B-LOC"], ["B-PER O"], [[]]) == ([["B-PER", "O"]], [["B-PER", "O"]])
    assert score_predictions(["seqeval"], ["B-PER O B-LOC"], ["B-PER O"], [[]])["seqeval"]["f1"] == 1.0
    # a label is matched to the choices / the targets without surrounding whitespace
    assert metric_inputs("accuracy", [" no ", "yes"], ["no", " yes"], [["yes", "no"]] * 2) == ([1, 0], [1, 0])
    assert metric_inputs("accuracy", [" b", "a "], ["b", "a"], [[], []]) == ([1, 0], [1, 0])
    # without per-choice scores, multiple_choice_grade scores 1 for the target choice and 0 for the others
    preds, refs = metric_inputs("multiple_choice_grade", ["b", "a"], ["b", "c"], [["a", "b", "c"]] * 2)
    assert (preds, refs) == ([1, 0], [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert score_predictions(["multiple_choice_grade"], ["b", "a"], ["b", "c"], [["a", "b", "c"]] * 2) == {
        "multiple_choice_grade": {"multiple_choice_grade": 0.5}}


# -- entity F1 of NER written as text (conll2003) ------------------------------------------------------------
def _bio_to_text(tokens, tags):
    from task_registry.builtin.real import bio_entities

    return "; ".join(f"{text}: {kind}" for text, kind in bio_entities(tokens, tags)) or "none"


def test_entity_f1_equals_seqeval_span_f1_on_the_same_sentences():
    """Entity F1 over the "span: TYPE" texts of BIO sentences equals seqeval's (conlleval) micro span F1 on
    the tags themselves (no sentence repeats an entity text at two positions, where the text form cannot tell)."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    tokens = [["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
              ["Peter", "Blackburn", "met", "Acme", "Corp", "in", "New", "York"],
              ["Nothing", "here", "."],
              ["Somerset", "beat", "Leicestershire", "and", "West", "Indian", "Phil", "Simmons"]]
    gold = [["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"],
            ["B-PER", "I-PER", "O", "B-ORG", "I-ORG", "O", "B-LOC", "I-LOC"],
            ["O", "O", "O"],
            ["B-ORG", "O", "B-ORG", "O", "B-MISC", "I-MISC", "B-PER", "I-PER"]]
    pred = [["B-ORG", "O", "B-LOC", "O", "O", "O", "B-MISC", "O", "O"],   # German: wrong type
            ["B-PER", "O", "O", "B-ORG", "I-ORG", "O", "B-LOC", "I-LOC"],  # Peter (truncated span)
            ["B-PER", "O", "O"],                                            # a spurious entity
            ["B-ORG", "O", "B-ORG", "O", "B-MISC", "I-MISC", "B-PER", "I-PER"]]
    result = compute_metric("entity_f1", [_bio_to_text(t, p) for t, p in zip(tokens, pred)],
                            [_bio_to_text(t, g) for t, g in zip(tokens, gold)])
    assert result["precision"] == pytest.approx(precision_score(gold, pred))
    assert result["recall"] == pytest.approx(recall_score(gold, pred))
    assert result["f1"] == pytest.approx(f1_score(gold, pred))
    assert result["unparsable"] == 0.0


def test_entity_f1_counts_typed_spans_not_string_overlap():
    gold = "West Indian: MISC; Phil Simmons: PER; Leicestershire: ORG; Somerset: ORG"
    # wrong types: only Leicestershire is right -> P = R = 1/4 (squad token F1 said 1.0)
    wrong = compute_metric("entity_f1", ["West Indian: PER; Phil Simmons: ORG; Leicestershire: ORG; Somerset: MISC"],
                           [gold])
    assert (wrong["precision"], wrong["recall"], wrong["f1"]) == pytest.approx((0.25, 0.25, 0.25))
    # another order is the same set (exact match said 0)
    reordered = "Somerset: ORG; Leicestershire: ORG;  Phil  Simmons: PER; West Indian: MISC;"
    assert compute_metric("entity_f1", [reordered], [gold])["f1"] == 1.0
    # multisets: a pair predicted twice is correct once; "none" has no entities; an unparsable prediction none
    result = compute_metric("entity_f1",
                            ["Paris: LOC; Paris: LOC", "None", "Paris is a LOC", "Mission : Impossible: MISC"],
                            ["Paris: LOC", "none", "Lyon: LOC", "Mission : Impossible: MISC"])
    correct, predicted, gold_count = 1 + 0 + 0 + 1, 2 + 0 + 0 + 1, 1 + 0 + 1 + 1
    p, r = correct / predicted, correct / gold_count
    assert result == pytest.approx({"precision": p, "recall": r, "f1": 2 * p * r / (p + r), "unparsable": 1 / 4})
    # conlleval: no gold and no predicted entities anywhere -> 0
    assert compute_metric("entity_f1", ["none"], ["none"])["f1"] == 0.0
    with pytest.raises(ValueError, match="entity_f1: reference 0 .*'oops'.*not an entity list"):
        compute_metric("entity_f1", ["none"], ["oops"])
    assert canonical_metric_name("NER F1") == "entity_f1"
    assert metric_inputs("entity_f1", ["a"], ["b: PER"], [[]]) == (["a"], ["b: PER"])


# -- correlations, F1's positive class, SQuAD v1.1 -----------------------------------------------------------
def test_correlations_of_constant_or_single_predictions_are_zero_not_nan():
    for name in ("pearsonr", "spearmanr"):
        assert compute_metric(name, [3.0, 3.0, 3.0], [1.0, 2.0, 4.0]) == {name: 0.0}  # constant predictions
        assert compute_metric(name, [1.0, 2.0, 4.0], [2.0, 2.0, 2.0]) == {name: 0.0}  # constant gold
        assert compute_metric(name, [1.0], [2.0]) == {name: 0.0}  # one example (scipy raises)
    # a generated "nan" / "inf" is unparsable, not a NaN that poisons the coefficient
    assert metric_inputs("pearsonr", ["nan", "inf", "2"], ["1", "2", "3"], [[]] * 3)[0] == [-1.0, -1.0, 2.0]


def test_non_numeric_targets_under_a_correlation_are_refused_by_name():
    from t2t_mtl.evaluation.errors import EvaluationError
    from t2t_mtl.evaluation.scoring import metric_problem

    assert metric_problem("spearmanr", ["1", "2.5"], [[], []]) is None
    assert "'★★' (row 7) is not a number" in metric_problem("spearmanr", ["1", "★★"], [[], []], rows=[3, 7])
    with pytest.raises(EvaluationError, match="metric 'pearsonr'.*'good' \\(example 0\\) is not a number"):
        score_predictions(["pearsonr"], ["1"], ["good"], [[]])


def test_binary_f1_needs_answer_choices_and_scores_an_all_negative_subset_as_sklearn():
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import f1_score

    from t2t_mtl.evaluation.errors import EvaluationError

    targets = ["equivalent", "equivalent", "equivalent", "not_equivalent"]
    preds = ["equivalent", "equivalent", "not_equivalent", "not_equivalent"]
    with pytest.raises(EvaluationError, match="binary F1 needs answer choices.*declare `answer_choices`"):
        score_predictions(["f1"], preds, targets, [[]] * 4)
    # with choices the second is the positive class, as sklearn's pos_label
    got = score_predictions(["f1"], preds, targets, [["not_equivalent", "equivalent"]] * 4)["f1"]["f1"]
    assert got == pytest.approx(f1_score(targets, preds, pos_label="equivalent"))
    # no positive in the gold, none predicted: 2TP / (2TP + FP + FN) is 0/0, reported as scikit-learn's default
    # (and HF evaluate's "f1") reports it (was 1.0)
    with pytest.warns(UndefinedMetricWarning):
        sklearn_undefined = f1_score(["no"] * 3, ["no"] * 3, pos_label="yes")
    assert score_predictions(["f1"], ["no"] * 3, ["no"] * 3, [["no", "yes"]] * 3)["f1"]["f1"] == sklearn_undefined
    assert compute_metric("f1", [0, -1, 0], [0, 0, 0])["f1"] == sklearn_undefined == 0.0
    assert score_predictions(["f1"], ["no", "yes"], ["no", "no"], [["no", "yes"]] * 2)["f1"]["f1"] == 0.0
    # macro F1 does not name a positive class: fine without choices
    assert score_predictions(["f1_macro"], preds, targets, [[]] * 4)["f1_macro"]["f1"] == pytest.approx(
        f1_score(targets, preds, average="macro"))


def test_binary_f1_is_refused_for_more_than_two_answer_choices():
    # a 3-way task (CB-like) declaring "f1" was scored silently as the binary F1 of its second choice alone
    from t2t_mtl.evaluation.errors import EvaluationError

    choices = [["entailment", "contradiction", "neutral"]] * 3
    targets, preds = ["entailment", "neutral", "contradiction"], ["entailment", "neutral", "neutral"]
    with pytest.raises(EvaluationError, match="binary F1 .* two answer choices.* has 3.*f1_macro"):
        score_predictions(["f1"], preds, targets, choices)
    with pytest.raises(EvaluationError, match="binary F1 .* two answer choices.* has 1 .*f1_macro"):
        score_predictions(["f1"], ["yes"], ["yes"], [["yes"]])  # no second choice to be the positive class
    assert score_predictions(["f1_macro"], preds, targets, choices)["f1_macro"]["f1"] == pytest.approx(
        (1 + 0 + 2 / 3) / 3)  # by hand: entailment 1, contradiction 0, neutral 2PR/(P+R) = 2/3


def test_label_metrics_score_labels_not_positions_when_examples_list_one_label_set_in_other_orders():
    # the same "no"/"yes" choices listed in per-example orders (a row's own option list, BIG-bench's shuffle):
    # F1 and Matthews were computed on choice positions, so "yes" was the positive class on some rows only
    from sklearn.metrics import f1_score, matthews_corrcoef

    choices = [["no", "yes"], ["yes", "no"], ["yes", "no"], ["no", "yes"], ["yes", "no"]]
    targets = ["yes", "yes", "no", "no", "yes"]
    preds = ["yes", "no", "no", "yes", "no"]
    chosen = [c.index(p) for c, p in zip(choices, preds)]  # rank classification's picked positions
    want = {"f1": f1_score(targets, preds, pos_label="yes"),  # the first example's second choice: 0.4 by hand
            "f1_macro": f1_score(targets, preds, average="macro"),
            "matthews_correlation": matthews_corrcoef(targets, preds)}  # -1/6 by hand
    assert (want["f1"], want["matthews_correlation"]) == (pytest.approx(0.4), pytest.approx(-1 / 6))
    for picked in (chosen, None):  # ranked, or generated text matched to the choices
        got = score_predictions(list(want), preds, targets, choices, chosen=picked)
        assert {name: got[name][METRICS[name].primary] for name in want} == pytest.approx(want)
    # choices that differ per example (COPA's two alternatives) keep positions as labels
    copa = score_predictions(["accuracy"], ["b", "c"], ["b", "d"], [["a", "b"], ["c", "d"]])
    assert copa["accuracy"]["accuracy"] == 0.5


def _squad_v11_f1(prediction, reference):
    """Token F1 as the SQuAD v1.1 evaluation script defines it (0 when no token is shared)."""
    import re
    import string

    def normalize(text):
        text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
        return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())

    common = collections.Counter(normalize(prediction).split()) & collections.Counter(normalize(reference).split())
    same = sum(common.values())
    if same == 0:
        return 0.0
    p, r = same / len(normalize(prediction).split()), same / len(normalize(reference).split())
    return 2 * p * r / (p + r)


def test_squad_reads_references_as_t5_tokenizers_write_them_and_is_v1_1_on_nfkc_text(t5_tokenizer):
    # the v1.1 normalisation compared raw code points: the generation of a gold answer with a decomposed accent, a
    # full-width form or a ligature (T5 writes it in NFKC form) scored squad exact match 0 where exact_match gave 1
    import unicodedata

    golds = ["Cafe\u0301 au lait", "ＡＢＣ Corp！", "the ﬁnal …", "Ko\u0308ln, ＮＲＷ"]
    written = [t5_tokenizer.decode(t5_tokenizer(g)["input_ids"], skip_special_tokens=True) for g in golds]
    assert written == ["Café au lait", "ABC Corp!", "the final ...", "Köln, NRW"]
    refs = [[g] for g in golds]
    assert compute_metric("exact_match", written, refs)["exact_match"] == 1.0
    assert compute_metric("squad", written, refs) == {"exact_match": 1.0, "f1": 1.0}
    # partial answers: the v1.1 token F1 of the NFKC forms ("café" against "café au lait": P 1, R 1/3)
    preds = ["café", "abc", "final", "nrw köln"]
    expected = [_squad_v11_f1(p, unicodedata.normalize("NFKC", g)) for p, g in zip(preds, golds)]
    assert expected == pytest.approx([0.5, 2 / 3, 1.0, 1.0])
    assert compute_metric("squad", preds, refs) == pytest.approx({"exact_match": 0.25, "f1": sum(expected) / 4})


def test_squad_follows_v1_1_when_both_sides_normalise_to_nothing_and_needs_a_reference():
    preds, refs = ["the", "An", "a dog"], [["The"], ["!"], ["the dog", "dogs"]]
    result = compute_metric("squad", preds, refs)
    expected_f1 = sum(max(_squad_v11_f1(p, r) for r in rs) for p, rs in zip(preds, refs)) / 3
    assert result == pytest.approx({"exact_match": 1.0, "f1": expected_f1}) and expected_f1 == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="squad: example 1 has no reference answer"):
        compute_metric("squad", ["x", "y"], [["x"], []])
    with pytest.raises(ValueError, match="exact_match: example 0 has no reference"):
        compute_metric("exact_match", ["x"], [[]])


@pytest.mark.parametrize("name", sorted(name for name, spec in METRICS.items() if spec.kind == "text"))
def test_a_text_metric_refuses_an_example_without_references_by_name(name):
    # rouge failed in numpy ("attempt to get argmax of an empty sequence", from rouge-score's score_multi)
    module = METRICS[name].module
    with pytest.raises(ValueError, match=rf"^{module}: (example 1 has no reference|every prediction needs)"):
        compute_metric(name, ["x", "y"], [["x"], []])


def test_squad_exact_match_is_the_normalised_exact_match_of_the_squad_module():
    assert METRICS["squad_exact_match"].module == "squad" and METRICS["squad_exact_match"].primary == "exact_match"
    scores = score_predictions(["squad_exact_match"], ["jamaican english.", "Jamaican"],
                               ["Jamaican English", "Jamaican English"], [[], []],
                               references=[["Jamaican English"], ["Jamaican Creole", "jamaican"]])
    assert scores["squad_exact_match"]["exact_match"] == 1.0


def test_group_exact_match_counts_groups_whose_every_example_is_right():
    # by hand: group "q0" has a wrong answer, "q1" and "q2" are all right -> 2 of 3 groups
    assert compute_metric("group_exact_match", [1, 0, 0, 0, 1], [1, 0, 1, 0, 1],
                          groups=["q0", "q0", "q0", "q1", "q2"]) == {"group_exact_match": pytest.approx(2 / 3)}
    rng = np.random.default_rng(0)
    predictions, references = rng.integers(0, 2, 200).tolist(), rng.integers(0, 2, 200).tolist()
    singletons = compute_metric("group_exact_match", predictions, references, groups=list(range(200)))
    assert singletons["group_exact_match"] == compute_metric("accuracy", predictions, references)["accuracy"]
    one_group = compute_metric("group_exact_match", predictions, references, groups=[7] * 200)
    assert one_group["group_exact_match"] == float(predictions == references)
    with pytest.raises(ValueError, match="one group key per prediction"):
        compute_metric("group_exact_match", [1], [1])


def test_group_exact_match_takes_text_predictions_through_the_answer_choices_and_needs_groups():
    from t2t_mtl.evaluation.errors import EvaluationError

    choices = [["no", "yes"]] * 4
    scores = score_predictions(["group_em"], ["yes", "maybe", "no", "no"], ["yes", "no", "no", "no"], choices,
                               groups=['"a"', '"a"', '"b"', '"b"'])
    assert scores == {"group_exact_match": {"group_exact_match": 0.5}}  # "maybe" is outside the choices: wrong
    with pytest.raises(EvaluationError, match="no `group_by`.*idx.question"):
        score_predictions(["group_exact_match"], ["yes"], ["yes"], [["no", "yes"]])


@pytest.mark.parametrize("name", sorted(METRICS))
def test_no_predictions_is_an_error_naming_the_metric(name):
    # accuracy, f1, bleu, seqeval ... failed in sklearn/nltk ("Found empty input array", "max() arg is an empty
    # sequence"), while exact_match, rouge, squad ... reported a score of 0.0 for nothing scored
    with pytest.raises(ValueError, match=rf"metric '{name}': no predictions to score"):
        compute_metric(name, [], [])


def test_the_bleu_module_scores_no_predictions_as_sacrebleu_scores_an_empty_corpus():
    # it failed in max() ("max() arg is an empty sequence"); sacreBLEU's formula on the statistics of no sentences
    # (nothing matched, hypothesis and reference lengths 0) is BLEU 0 with brevity penalty 1, as for "" against ""
    from sacrebleu.metrics import BLEU

    empty = BLEU.compute_bleu([0] * 4, [0] * 4, sys_len=0, ref_len=0)
    assert load_metric("bleu").compute(predictions=[], references=[]) == {"bleu": empty.score,
                                                                          "brevity_penalty": empty.bp}
    one_empty = BLEU().corpus_score([""], [[""]])
    assert (empty.score, empty.bp) == (one_empty.score, one_empty.bp) == (0.0, 1.0)
    with pytest.raises(ValueError, match="metric 'bleu': no predictions to score"):  # the scoring path refuses
        compute_metric("bleu", [], [])


# -- aggregates over tasks ------------------------------------------------------------------------------------
def _template_result(task, score):
    from t2t_mtl.evaluation.results import TemplateResult

    return TemplateResult(task=task, template="t", split="validation", scoring="generate", num_examples=0 if
                          score is None else 5, metrics={}, primary_metric="bleu", primary_key="bleu", score=score)


def test_the_decascore_of_no_scored_task_is_none_as_the_macro_average_not_zero(tmp_path):
    # it was 0.0 (the sum of no medians) beside a macro average of None, printed as "0.0" in report.md
    from t2t_mtl.evaluation.aggregate import summarize
    from t2t_mtl.evaluation.report import comparison_markdown, to_markdown, write_report
    from t2t_mtl.evaluation.results import EvalReport

    nothing = EvalReport("empty", [_template_result("t1", None), _template_result("t2", float("nan"))])
    summary = summarize(nothing)
    assert (summary["decascore"], summary["macro_average"], summary["num_tasks"]) == (None, None, 0)
    assert "decaScore (sum of 0 task medians): —; macro average: —" in to_markdown(nothing)
    data = json.loads(write_report(nothing, tmp_path, plots=False)["json"].read_text())
    assert (data["summary"]["decascore"], data["summary"]["macro_average"]) == (None, None)
    scored = EvalReport("scored", [_template_result("t1", 30.0), _template_result("t2", 13.0)])
    assert summarize(scored)["decascore"] == 30.0 + 13.0
    assert "decaScore (sum of 2 task medians): 43.0; macro average: 21.5" in to_markdown(scored)
    assert "| **decaScore** | 43.0 | — |" in comparison_markdown([scored, nothing])


def test_a_reports_repr_is_one_line_of_its_task_medians_and_a_notebook_shows_its_markdown():
    # was the dataclass's repr: every template result with its metrics, settings and predictions, screens of it
    # in a notebook
    from t2t_mtl.evaluation.report import to_markdown
    from t2t_mtl.evaluation.results import REPR_TASKS, EvalReport

    results = [_template_result("rte", 50.0), _template_result("rte", 61.0), _template_result("rte", 20.0),
               _template_result("cb", None)]
    results += [_template_result(f"t{i}", float(i)) for i in range(REPR_TASKS)]
    report = EvalReport("step-100", results, settings={"num_shots": 0})
    macro = (50.0 + sum(range(REPR_TASKS))) / (1 + REPR_TASKS)  # (rte's median 50, cb unscored)
    shown = ", ".join(f"t{i}: {i}.0" for i in range(REPR_TASKS - 2))
    assert repr(report) == str(report) == (
        f"EvalReport('step-100', {REPR_TASKS + 2} tasks, {REPR_TASKS + 4} templates, task medians {{rte: 50.0, cb: —, "
        f"{shown}, … 2 more}}, macro average {macro:.1f})")
    assert repr(EvalReport("none", [])) == "EvalReport('none', 0 tasks, 0 templates, task medians {}, macro average —)"
    assert report._repr_markdown_() == to_markdown(report)


def test_a_template_results_repr_is_one_line_of_its_scores_not_its_predictions():
    # was the dataclass's repr: every field, its predictions (one dict per example) among them, a wall of text in a
    # notebook printing one result
    from t2t_mtl.evaluation.results import TemplateResult

    predictions = [{"prediction": "yes", "targets": ["yes"]}] * 277
    result = TemplateResult(task="rte", template="does it follow that", split="validation", scoring="rank",
                            num_examples=277, metrics={"accuracy": {"accuracy": 0.5234}, "f1_macro": {"f1": 0.48}},
                            primary_metric="accuracy", primary_key="accuracy", score=52.34, predictions=predictions)
    assert repr(result) == str(result) == (
        "TemplateResult('rte', 'does it follow that', accuracy 52.3, f1_macro 48.0, 277 examples)")
    rouge = TemplateResult(task="sum", template="tl;dr", split="test", scoring="generate", num_examples=1,
                           metrics={"rouge": {"rougeL": float("nan")}}, primary_metric="rouge", primary_key="rougeL",
                           score=None, num_skipped=3, num_errors=1, error="boom")
    assert repr(rouge) == "TemplateResult('sum', 'tl;dr', rouge.rougeL —, 1 example, 3 skipped, 1 render error)"


def test_a_reports_repr_shows_every_median_of_as_many_tasks_as_it_shows():
    from t2t_mtl.evaluation.results import REPR_TASKS, EvalReport

    report = EvalReport("full", [_template_result(f"t{i}", float(i)) for i in range(REPR_TASKS)])
    shown = ", ".join(f"t{i}: {i}.0" for i in range(REPR_TASKS))
    assert repr(report) == (f"EvalReport('full', {REPR_TASKS} tasks, {REPR_TASKS} templates, task medians {{{shown}}}, "
                            f"macro average {sum(range(REPR_TASKS)) / REPR_TASKS:.1f})")


def test_seqeval_refuses_examples_that_hold_no_tag_by_name():
    # it failed in seqeval's accuracy_score (ZeroDivisionError: division by zero): no tag to count
    with pytest.raises(ValueError, match=r"^seqeval: no example holds a tag \(every tag sequence is empty\); give "
                                         r"each example its tags$"):
        compute_metric("seqeval", [[], []], [[], []])
    one = compute_metric("seqeval", [[], ["B-PER"]], [[], ["B-PER"]])  # an empty one beside tags: scored as seqeval
    assert one == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "accuracy": 1.0}


@pytest.mark.parametrize("name", sorted(name for name, spec in METRICS.items() if spec.kind == "text"))
def test_a_text_metrics_reference_given_as_one_string_is_refused_naming_the_metric_and_the_list_to_write(name):
    # (Hugging Face evaluate's exact_match takes one string per reference): evaluate failed with "Got a string but
    # expected a list instead: 'Paris'", naming no metric
    with pytest.raises(ValueError, match=rf"^metric '{name}': reference 1 is the string 'Paris'; a reference is the "
                                         rf"list of an example's gold answers: write \['Paris'\]$"):
        compute_metric(name, ["Rome", "Paris"], [["Rome"], "Paris"])


def test_tags_given_as_one_string_are_refused_naming_the_metric_and_the_list_to_write():
    with pytest.raises(ValueError, match=r"^metric 'seqeval': prediction 0 is the string 'B-PER O'; a prediction is "
                                         r"the list of an example's tags: write \['B-PER', 'O'\]$"):
        compute_metric("seqeval", ["B-PER O"], [["B-PER", "O"]])
    with pytest.raises(ValueError, match=r"^metric 'seqeval': reference 0 is the string 'B-PER O'; a reference is "):
        compute_metric("seqeval", [["B-PER", "O"]], ["B-PER O"])


@pytest.mark.parametrize("name, predictions, references, problem", [
    ("accuracy", [1, 1.5], [1, 1], "prediction 1 is 1.5, not a label id"),  # read as 1: accuracy 1.0
    ("f1_macro", [0, 1], [0, "yes"], "reference 1 is 'yes', not a label id"),
    ("mcc", [0, float("nan")], [0, 1], "prediction 1 is nan, not a label id"),
    ("multiple_choice_grade", [0.7], [[0.0, 1.0]], "prediction 0 is 0.7, not a choice index"),  # read as choice 0
])
def test_a_label_id_or_choice_index_that_is_no_whole_number_is_refused_naming_the_metric(name, predictions,
                                                                                          references, problem):
    # evaluate's int64 column cut 1.5 to 1 and 0.7 to 0 (scored as those labels and choices, with nothing said), and
    # failed on a string naming no metric ("invalid literal for int() with base 10")
    with pytest.raises(ValueError, match=rf"^metric '{name}': {re.escape(problem)}: give whole numbers \(-1 for a "
                                         rf"prediction outside the answer choices\)$"):
        compute_metric(name, predictions, references)


def test_label_ids_that_are_whole_numbers_of_any_type_are_scored():
    assert compute_metric("accuracy", [np.int64(1), 0.0, True], [1, np.float64(0.0), 0])["accuracy"] == pytest.approx(
        2 / 3)
    assert compute_metric("multiple_choice_grade", [np.int32(1), -1], [[0.0, 1.0], [1.0, 0.0]]) == {
        "multiple_choice_grade": 0.5}


@pytest.mark.parametrize("metric, column, kwargs", [
    ("accuracy", "answer_choices", {"answer_choices": [["no", "yes"]] * 2}),  # scored the first 2 of 3: accuracy 1.0
    ("seqeval", "targets", {"targets": ["O O", "B-PER"]}),  # scored the first 2 of 3
    ("accuracy", "chosen", {"chosen": [1, 0]}),
    ("multiple_choice_grade", "choice_scores", {"choice_scores": [[0.0, 1.0], [1.0, 0.0]]}),
    ("exact_match", "references", {"references": [["yes"], ["no"]]}),
    ("group_exact_match", "groups", {"groups": ["a", "a"]}),
])
def test_a_per_example_column_of_another_length_than_the_predictions_is_refused_naming_it(metric, column, kwargs):
    # the examples past a shorter answer_choices or targets were left out of the score, with nothing said (the others
    # failed on their own, not naming the column)
    columns = {"targets": ["yes", "no", "yes"], "answer_choices": [["no", "yes"]] * 3, **kwargs}
    with pytest.raises(EvaluationError, match=rf"^metric '{metric}': 3 predictions but 2 {column}; give one per "
                                              rf"prediction$"):
        score_predictions([metric], ["yes", "no", "no"], **columns)


def test_groups_of_another_length_than_the_predictions_are_refused_where_incomplete_groups_are_left_out():
    # the groups picked the examples kept: those past the groups were left out, with nothing said
    with pytest.raises(EvaluationError, match=r"^metric 'group_exact_match': 3 predictions but 2 groups; give one "):
        score_predictions(["group_exact_match"], ["yes", "no", "no"], ["yes", "no", "yes"], [["no", "yes"]] * 3,
                          groups=["a", "b"], incomplete_groups={"b"})


@pytest.mark.parametrize("metric, chosen, choices", [
    ("accuracy", [0, 2], [["no", "yes"]] * 2),  # IndexError: list index out of range
    ("f1_macro", [0, 2], [["a", "b"], ["c", "d"]]),  # scored as a label of its own
    ("accuracy", [0, -2], [["a", "b"], ["c", "d"]]),  # scored as a wrong answer
    ("multiple_choice_grade", [0, -2], [["a", "b"], ["c", "d"]]),  # scored 0
])
def test_a_chosen_index_outside_the_examples_answer_choices_is_refused_naming_it(metric, chosen, choices):
    with pytest.raises(EvaluationError, match=rf"^metric '{metric}': example 1 chose {chosen[1]}, no position among "
                                              rf"its 2 answer choices \(0 to 1; -1 for none\)$"):
        score_predictions([metric], ["a", "b"], [choices[0][0], choices[1][0]], choices, chosen=chosen)


def test_a_group_metrics_label_id_that_is_no_whole_number_is_refused_naming_the_metric():
    # kills a mutant no test let live: group_label metrics left out of the whole-number check (0.5 read as label 0:
    # the group of q0 scored as all right)
    with pytest.raises(ValueError, match=r"^metric 'group_exact_match': prediction 1 is 0.5, not a label id: give "
                                         r"whole numbers \(-1 for a prediction outside the answer choices\)$"):
        compute_metric("group_exact_match", [1, 0.5], [1, 0], groups=["q0", "q0"])
    with pytest.raises(ValueError, match=r"^metric 'group_exact_match': reference 0 is 'yes', not a label id"):
        compute_metric("group_exact_match", [1, 0], ["yes", 0], groups=["q0", "q0"])


def test_a_chosen_index_of_minus_one_is_scored_as_no_choice_not_refused():
    # kills a mutant of _check_chosen's lower bound (-1, none chosen, refused as outside the choices) the tests let
    # live: examples 0 and 2 chose their gold answer, example 1 none
    scores = score_predictions(["accuracy", "multiple_choice_grade"], ["a", "b", "x"], ["a", "c", "e"],
                               [["a", "b"], ["c", "d"], ["e", "f"]], chosen=[0, -1, 0])
    assert scores == {"accuracy": {"accuracy": pytest.approx(2 / 3)},
                      "multiple_choice_grade": {"multiple_choice_grade": pytest.approx(2 / 3)}}


@pytest.mark.parametrize("column, kwargs", [
    ("targets", {"targets": ["yes", "no", "yes", "no"]}),
    ("answer_choices", {"answer_choices": [["no", "yes"]] * 4}),
    ("chosen", {"chosen": [1, 0, 0, 1]}),
])
def test_a_per_example_column_longer_than_the_predictions_is_refused_naming_it(column, kwargs):
    # kills a mutant of _check_columns (only a shorter column refused) the tests let live: a longer one was refused
    # by `evaluate` naming no column, or scored with the extra items left out
    columns = {"targets": ["yes", "no", "yes"], "answer_choices": [["no", "yes"]] * 3, **kwargs}
    with pytest.raises(EvaluationError, match=rf"^metric 'accuracy': 3 predictions but 4 {column}; give one per "
                                              rf"prediction$"):
        score_predictions(["accuracy"], ["yes", "no", "no"], **columns)


def test_a_chosen_column_of_another_length_is_refused_where_incomplete_groups_are_left_out():
    # kills a mutant the tests let live: the per-example kwargs left out of the check before the groups pick the
    # examples kept (chosen [1, 0] for 3 predictions: the two kept examples of group "a" scored, nothing said)
    with pytest.raises(EvaluationError, match=r"^metric 'group_exact_match': 3 predictions but 2 chosen; give one "
                                              r"per prediction$"):
        score_predictions(["group_exact_match"], ["yes", "no", "no"], ["yes", "no", "yes"], [["no", "yes"]] * 3,
                          groups=["a", "a", "b"], incomplete_groups={"b"}, chosen=[1, 0])
