"""`evaluate_tasks`' reported numbers against independent computations written here: each answer choice's
log-likelihood from a plain forward with labels (truncated inputs, choices of different lengths, end-of-sequence token
included, length-normalised or not), and generation metrics from rouge-score, sacreBLEU and the SQuAD v1.1 formulas
called directly on the predictions and every gold answer."""
from __future__ import annotations

import collections
import json
import re
import string

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

import task_registry
from t2t_mtl.evaluation import EvalSettings, evaluate_tasks

CHOICES = ["no", "a much longer answer than the others", "maybe so"]  # 2, 9 and 3 tokens with the EOS
ROWS = [{"text": " ".join(["word"] * n) + f" number {n}", "label": n % 3} for n in (3, 11, 1, 7, 20, 2, 5)]
LIMIT = 9  # tokens: the longer inputs are truncated


def _task(tmp_path, name, rows, templates, metrics):
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return task_registry.Task(name, task_registry.LocalFileSource({"validation": str(path)}), templates,
                              metrics=metrics, splits=("validation",))


@pytest.fixture(scope="module")
def model(t5_tokenizer):
    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(vocab_size=len(t5_tokenizer), d_model=16, d_ff=32, d_kv=8, num_heads=2,
                                               num_layers=2, pad_token_id=0, eos_token_id=1,
                                               decoder_start_token_id=0)).eval()


@torch.no_grad()
def _log_likelihood(model, tokenizer, text: str, choice: str, length_normalize: bool) -> float:
    """One unpadded forward: the input's ids cut to LIMIT - 1 then the EOS (as training cuts), the choice's ids and
    the EOS as labels; the sum of their log-probabilities in float64, or its mean over those tokens."""
    eos = tokenizer.eos_token_id
    input_ids = tokenizer(text, add_special_tokens=False).input_ids[:LIMIT - 1] + [eos]
    labels = torch.tensor([tokenizer(choice, add_special_tokens=False).input_ids + [eos]])
    logits = model(input_ids=torch.tensor([input_ids]), labels=labels).logits[0].double()
    token_log_probs = torch.log_softmax(logits, -1).gather(-1, labels[0].unsqueeze(-1))
    return float(token_log_probs.mean() if length_normalize else token_log_probs.sum())


@pytest.mark.parametrize("length_normalize", [False, True])
def test_rank_classification_reports_each_choices_log_likelihood_and_the_accuracy_of_the_best(
        model, t5_tokenizer, tmp_path, length_normalize):
    template = task_registry.Template("pick", "Pick: {{ text }} ||| {{ answer_choices[label] }}",
                                      answer_choices=" ||| ".join(CHOICES))
    task = _task(tmp_path, "ranked", ROWS, [template], ("accuracy",))
    report = evaluate_tasks(model, t5_tokenizer, [task], EvalSettings(
        keep_predictions=True, batch_size=3, max_input_length=LIMIT, length_normalize=length_normalize),
        progress=False)
    result, = report.results
    hits = 0
    for prediction, row in zip(result.predictions, ROWS):
        want = [_log_likelihood(model, t5_tokenizer, "Pick: " + row["text"], c, length_normalize) for c in CHOICES]
        assert prediction["choice_scores"] == pytest.approx(want, abs=1e-4)
        best = max(range(len(CHOICES)), key=want.__getitem__)
        assert prediction["prediction"] == CHOICES[best]
        hits += best == row["label"]
    assert result.score == pytest.approx(100 * hits / len(ROWS))
    long_inputs = sum(len(t5_tokenizer("Pick: " + row["text"]).input_ids) > LIMIT for row in ROWS)
    assert 0 < long_inputs < len(ROWS) and result.num_truncated == long_inputs
    labels = collections.Counter(row["label"] for row in ROWS)
    assert result.majority_baseline == pytest.approx(100 * labels.most_common(1)[0][1] / len(ROWS))
    assert result.chance_baseline == pytest.approx(100 / 3)


QA_ROWS = [{"q": "where is the cat?", "answers": ["The cat sat on the mat.", "on a mat"]},
           {"q": "capital of France?", "answers": ["Paris, France"]},
           {"q": "what jumps?", "answers": ["the quick brown fox jumps over the lazy dog", "a quick fox", "fox"]},
           {"q": "meaning of life?", "answers": ["42"]},
           {"q": "who wrote Hamlet?", "answers": ["William Shakespeare", "Shakespeare"]}]
GENERATED = {"where is the cat?": "the cat is on a mat", "capital of France?": "paris",
             "what jumps?": "a quick brown fox jumped over a lazy dog", "meaning of life?": "",
             "who wrote Hamlet?": "shakespeare."}


def _squad_normalized(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def _squad_f1(prediction: str, gold: str) -> float:
    predicted, wanted = _squad_normalized(prediction).split(), _squad_normalized(gold).split()
    shared = sum((collections.Counter(predicted) & collections.Counter(wanted)).values())
    return 0.0 if shared == 0 else 2 * shared / (len(predicted) + len(wanted))


def test_generation_metrics_are_the_libraries_scores_of_the_predictions_against_every_gold_answer(
        t5_tokenizer, tmp_path, monkeypatch):
    import sacrebleu
    from rouge_score import rouge_scorer

    from t2t_mtl.evaluation import runner

    monkeypatch.setattr(runner, "generate_texts", lambda model, tok, inputs, **kwargs: [GENERATED[x] for x in inputs])
    template = task_registry.Template("qa", "{{ q }} ||| {{ answers[0] }}", references="{{ answers | join(' ||| ') }}")
    task = _task(tmp_path, "qa", QA_ROWS, [template], ("rouge", "bleu", "squad", "squad_exact_match"))
    result, = evaluate_tasks(None, t5_tokenizer, [task], EvalSettings(), progress=False).results
    predictions, golds = [GENERATED[row["q"]] for row in QA_ROWS], [row["answers"] for row in QA_ROWS]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"])
    best = [scorer.score_multi(gold, prediction) for prediction, gold in zip(predictions, golds)]
    assert result.metrics["rouge"] == pytest.approx({kind: sum(b[kind].fmeasure for b in best) / len(best)
                                                     for kind in best[0]})
    assert result.score == pytest.approx(100 * result.metrics["rouge"]["rougeL"])  # the primary: rouge.rougeL
    streams = [[gold[k] if k < len(gold) else None for gold in golds] for k in range(max(map(len, golds)))]
    assert result.metrics["bleu"]["bleu"] == pytest.approx(sacrebleu.corpus_bleu(predictions, streams).score)
    assert result.metrics["squad"]["f1"] == pytest.approx(
        sum(max(_squad_f1(p, g) for g in gold) for p, gold in zip(predictions, golds)) / len(golds))
    exact = [any(_squad_normalized(p) == _squad_normalized(g) for g in gold) for p, gold in zip(predictions, golds)]
    assert exact == [False, False, False, False, True]  # "shakespeare." is the second answer, normalised
    assert result.metrics["squad_exact_match"]["exact_match"] == pytest.approx(sum(exact) / len(golds))


def test_examples_whose_every_gold_answer_is_longer_than_the_generation_limit_are_counted(
        t5_tokenizer, tmp_path, monkeypatch, caplog):
    # was: generation stopped at max_new_tokens and such an example could never be answered whole, with nothing said
    from t2t_mtl.evaluation import runner, to_markdown

    monkeypatch.setattr(runner, "generate_texts", lambda model, tok, inputs, **kwargs: [GENERATED[x] for x in inputs])
    template = task_registry.Template("qa", "{{ q }} ||| {{ answers[0] }}", references="{{ answers | join(' ||| ') }}")
    task = _task(tmp_path, "qa", QA_ROWS, [template], ("squad",))
    shortest = [min(len(t5_tokenizer(answer, add_special_tokens=False).input_ids) for answer in row["answers"])
                for row in QA_ROWS]
    limit = sorted(shortest)[2]  # the two rows with longer shortest answers cannot be written whole
    assert sum(length > limit for length in shortest) == 2
    report = evaluate_tasks(None, t5_tokenizer, [task], EvalSettings(max_new_tokens=limit), progress=False)
    assert report.results[0].num_long_answers == 2
    assert (f"2 of 5 examples have no gold answer that fits max_new_tokens={limit} tokens, where generation stops, so "
            f"none can be written whole; to let the model write every example's shortest answer, raise the limit to "
            f"{max(shortest)} tokens (t2t-mtl eval --max-new-tokens {max(shortest)}; evaluation.max_new_tokens in a "
            f"config; EvalSettings(max_new_tokens={max(shortest)}) from Python)") in caplog.text
    assert "- qa / qa: 2 of 5" in to_markdown(report).split(f"generation limit ({limit} tokens)")[1]
    caplog.clear()  # every shortest answer fits: none counted
    assert evaluate_tasks(None, t5_tokenizer, [task], EvalSettings(max_new_tokens=max(shortest)),
                          progress=False).results[0].num_long_answers == 0
    assert "max_new_tokens" not in caplog.text
