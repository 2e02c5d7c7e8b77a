"""The evaluation runner, aggregates, reports, checkpoints and the `t2t-mtl eval` command, end to end."""
from __future__ import annotations

import collections
import dataclasses
import json
import multiprocessing
import os
import re
import shutil
import socket
import statistics
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

import task_registry
from t2t_mtl.cli import main as cli_main
from t2t_mtl.config import ConfigError, config_from_dict
from t2t_mtl.engine.validation import evaluation_plan
from t2t_mtl.evaluation import (CheckpointError, EvalReport, EvalSettings, EvaluationError, NoAnswerChoicesError,
                                TemplateResult, compare, comparison_markdown, evaluate_tasks, load_checkpoint,
                                read_report, summarize, to_markdown, write_report)
from t2t_mtl.evaluation.aggregate import differing_settings
from t2t_mtl.evaluation.few_shot import Demonstrations
from t2t_mtl.evaluation.generation import generate_texts
from t2t_mtl.evaluation.rank_classification import score_choices
from t2t_mtl.evaluation.rendered_examples import render_examples
from t2t_mtl.model.moe import UNSEEN_TASK_ID, convert_to_moe, moe_blocks
from t2t_mtl.tokenizer import load_tokenizer

ROWS = [{"text": f"review number {i} was {'great fun' if i % 3 else 'dull and slow'}", "label": int(i % 3 != 0)}
        for i in range(10)]


def toy_task(data_file: str) -> task_registry.Task:
    """A sentiment task with a rank-scored template, a generation template and a template that skips rows."""
    templates = [
        task_registry.Template("choices", "Is this review positive? {{ text }} ||| {{ answer_choices[label] }}",
                               answer_choices="no ||| yes"),
        task_registry.Template("free", "Label the review: {{ text }} ||| {{ ['negative', 'positive'][label] }}"),
        task_registry.Template("positives_only", "{% if label == 1 %}Positive review? {{ text }} ||| "
                               "{{ answer_choices[label] }}{% endif %}", answer_choices="no ||| yes"),
    ]
    return task_registry.Task("toy_sentiment", task_registry.LocalFileSource({"validation": data_file}), templates,
                              metrics=("accuracy",), task_type="sentiment", cluster="toy", splits=("validation",))


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "validation.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, t5_tokenizer_dir):
    tokenizer = load_tokenizer(t5_tokenizer_dir)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer), d_model=16, d_ff=32, d_kv=8,
                                                num_heads=2, num_layers=2, pad_token_id=0, eos_token_id=1,
                                                decoder_start_token_id=0))
    folder = tmp_path_factory.mktemp("ckpt")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def loaded(checkpoint):
    model, tokenizer, _ = load_checkpoint(checkpoint)
    return model, tokenizer


@pytest.fixture(scope="module")
def toy_report(loaded, data_file):
    model, tokenizer = loaded
    return evaluate_tasks(model, tokenizer, [toy_task(data_file)], EvalSettings(keep_predictions=True,
                                                                                 max_new_tokens=4, batch_size=4),
                          progress=False)


def test_every_template_is_scored_and_the_numbers_follow_from_the_predictions(toy_report):
    by_name = {r.template: r for r in toy_report.results}
    assert list(by_name) == ["choices", "free", "positives_only"]
    ranked, generated, partial = by_name["choices"], by_name["free"], by_name["positives_only"]
    assert (ranked.scoring, generated.scoring, partial.scoring) == ("rank", "generate", "rank")
    targets = [["no", "yes"][row["label"]] for row in ROWS]
    assert [p["target"] for p in ranked.predictions] == targets
    hits = [p["prediction"] == p["target"] for p in ranked.predictions]
    assert ranked.score == pytest.approx(100 * sum(hits) / len(hits))
    assert ranked.majority_baseline == pytest.approx(100 * collections.Counter(targets).most_common(1)[0][1] / 10)
    assert ranked.chance_baseline == pytest.approx(50.0)
    for p in ranked.predictions:  # the prediction is the highest-scoring choice
        assert p["prediction"] == ["no", "yes"][max(range(2), key=p["choice_scores"].__getitem__)]
    # generation: every prediction (empty ones included) is scored against the target text
    assert generated.num_examples == 10 and len(generated.predictions) == 10
    gen_hits = [p["prediction"] == p["target"] for p in generated.predictions]
    assert generated.score == pytest.approx(100 * sum(gen_hits) / 10)
    # the template that renders no target for negative rows: those rows are counted, not scored
    negatives = sum(1 for row in ROWS if row["label"] == 0)
    assert (partial.num_examples, partial.num_skipped) == (10 - negatives, negatives)


def test_rank_scoring_of_a_template_without_choices_says_to_use_generation(loaded, data_file):
    model, tokenizer = loaded
    task = toy_task(data_file)
    with pytest.raises(NoAnswerChoicesError, match="'free'.*use generation"):
        evaluate_tasks(model, tokenizer, [task], EvalSettings(scoring="rank", templates={task.name: ["free"]}),
                       progress=False)


def test_lockstep_decoder_passes_are_the_most_any_ranks_batch_of_that_index_runs():
    # ZeRO-3 ranks score their shards in the same decoder passes; 64 answer-choice rows make a pass
    from t2t_mtl.evaluation.rendered_examples import EvalExample
    from t2t_mtl.evaluation.runner import _lockstep_decoder_passes

    counts = [40, 1, 40, 1, 30]  # 2 ranks, batches of 2: rank 0 rows [0, 2] (80 choices) then [4] (30);
    # rank 1 [1, 3] (2), padding [0]
    examples = [EvalExample(i, "q", "a", ["a"] * n) for i, n in enumerate(counts)]
    assert _lockstep_decoder_passes(examples, 2, 2) == [2, 1]
    assert _lockstep_decoder_passes(examples, 5, 1) == [2]  # 112 choices
    assert _lockstep_decoder_passes(examples, 1, 2) == [1, 1, 1]


def _result(task, template, score, majority=None):
    return TemplateResult(task=task, template=template, split="validation", scoring="rank", num_examples=10,
                          metrics={"accuracy": {"accuracy": score / 100}}, primary_metric="accuracy",
                          primary_key="accuracy", score=score, majority_baseline=majority)


def test_aggregates_median_mean_decascore_macro_and_comparison():
    a = EvalReport("a", [_result("t1", "x", 40.0, 50.0), _result("t1", "y", 70.0, 50.0), _result("t1", "z", 60.0),
                         _result("t2", "x", 10.0), _result("t2", "y", 30.0)])
    summary = summarize(a)
    t1, t2 = summary["tasks"]["t1"], summary["tasks"]["t2"]
    assert (t1.median, t1.mean, t1.min, t1.max, t1.majority_baseline) == (60.0, pytest.approx(170 / 3), 40.0, 70.0,
                                                                          50.0)
    assert (t2.median, t2.mean) == (20.0, 20.0)
    assert summary["decascore"] == pytest.approx(80.0) and summary["macro_average"] == pytest.approx(40.0)
    b = EvalReport("b", [_result("t1", "x", 90.0), _result("t3", "x", 20.0)])
    table = compare([a, b])
    assert table["tasks"] == {"t1": {"a": 60.0, "b": 90.0}, "t2": {"a": 20.0, "b": None}, "t3": {"a": None, "b": 20.0}}
    assert table["decascore"] == {"a": 80.0, "b": 110.0} and table["common_tasks"] == ["t1"]
    assert "| t2 | 20.0 | — |" in comparison_markdown([a, b])
    # the baselines are medians over the templates too (as the score they are compared with)
    baselines = [replace(_result("t", name, 50.0, majority), chance_baseline=chance)
                 for name, majority, chance in (("x", 60.0, 50.0), ("y", 10.0, 20.0), ("z", 20.0, 25.0))]
    t = summarize(EvalReport("m", baselines))["tasks"]["t"]
    assert (t.majority_baseline, t.chance_baseline) == (20.0, 25.0)
    # a task's example count is its largest template's (a template skipping rows scores fewer)
    sizes = [replace(_result("t", name, 50.0), num_examples=n) for name, n in (("x", 7), ("y", 10), ("z", 3))]
    assert summarize(EvalReport("m", sizes))["tasks"]["t"].num_examples == 10


def test_a_comparison_of_reports_scoring_different_tasks_adds_their_aggregates_over_the_tasks_all_score():
    # was: step-30's report of two tasks beside the run's report of nine, decaScore 105.0 against 395.0 and macro
    # averages over different tasks side by side, with nothing saying so (compare's common_tasks went unprinted)
    a = EvalReport("a", [_result("t1", "x", 40.0), _result("t1", "y", 60.0), _result("t2", "x", 90.0)])
    b = EvalReport("b", [_result("t1", "x", 70.0), _result("t3", "x", 10.0)])
    c = EvalReport("c", [_result("t1", "x", 20.0), _result("t2", "x", 30.0), _result("t3", "x", 30.0)])
    lines = comparison_markdown([a, b, c]).splitlines()
    assert lines[5:10] == ["| **decaScore** | 140.0 | 80.0 | 80.0 |", "| **macro average** | 70.0 | 40.0 | 26.7 |",
                           "| **decaScore, the 1 task every report scores** | 50.0 | 70.0 | 20.0 |",
                           "| **macro average, the 1 task every report scores** | 50.0 | 70.0 | 20.0 |", ""]
    assert lines[10] == ("The reports score different tasks: each one's decaScore and macro average cover its own; "
                         "compare those over the 1 task every report scores (t1).")
    table = compare([a, c])
    assert (table["common_tasks"], table["common_decascore"], table["common_macro_average"]) == (
        ["t1", "t2"], {"a": 140.0, "c": 50.0}, {"a": 70.0, "c": 25.0})
    assert comparison_markdown([a, c]).splitlines()[-3] == (
        "| **macro average, the 2 tasks every report scores** | 70.0 | 25.0 |")
    no_common = comparison_markdown([EvalReport("a", [_result("t2", "x", 90.0)]), b]).splitlines()
    assert no_common[-1] == ("The reports score different tasks, no task in all of them: their decaScores and macro "
                             "averages cover different tasks and do not compare.")
    assert "every report" not in "".join(no_common)
    same = comparison_markdown([a, replace(a, name="a2")]).splitlines()  # the same tasks: the rows alone
    assert same[-1] == "| **macro average** | 70.0 | 70.0 |"


def test_a_comparison_names_the_settings_that_change_scores_and_differ_between_the_reports():
    # was: a report scored with inputs cut at 320 tokens beside one cut at 128 (the run's own), or of 40 examples
    # beside one of every row, compared without a word
    settings = EvalSettings(max_examples=40, max_input_length=128).to_dict()
    a = EvalReport("step-30", [_result("t1", "x", 40.0)], settings=settings)
    b = replace(a, name="step-60", settings={**settings, "max_input_length": 320, "max_examples": None,
                                             "batch_size": 4, "keep_predictions": True})
    assert differing_settings([a, b]) == {"max_examples": {"step-30": 40, "step-60": None},
                                          "max_input_length": {"step-30": 128, "step-60": 320}}
    assert comparison_markdown([a, b]).splitlines()[-3:] == [
        "Scored with different `max_examples`: 40 (step-30), default (step-60); their scores are not like for like.",
        "",
        "Scored with different `max_input_length`: 128 (step-30), 320 (step-60); their scores are not like for like."]
    templates = replace(a, name="some", settings={**settings, "templates": ["x", "y"]})
    assert comparison_markdown([a, templates]).splitlines()[-1] == (
        'Scored with different `templates`: default (step-30), ["x", "y"] (some); their scores are not like for like.')
    # batch size and kept predictions leave the scores; a report recording no settings (Python-built) is not compared
    assert differing_settings([a, replace(b, settings={**settings, "batch_size": 4, "keep_predictions": True})]) == {}
    assert differing_settings([a, replace(b, settings={})]) == {}
    assert comparison_markdown([a, replace(a, name="same")]).endswith("| **macro average** | 40.0 | 40.0 |\n")
    # `--split validation` and the default, which scored validation too, are one split; test is another
    named = replace(a, name="named", settings={**settings, "split": "validation"})
    assert differing_settings([a, named]) == {}
    on_test = replace(named, results=[replace(_result("t1", "x", 40.0), split="test")], settings={**settings,
                                                                                                     "split": "test"})
    assert differing_settings([a, on_test]) == {"split": {"step-30": None, "named": "test"}}
    # a zero-shot evaluation's seed (the run's training.seed: two training seeds' reports) moves only the templates
    # that draw at random; a k-shot one's draws the demonstrations (was: "not like for like" for both)
    seed_1 = replace(a, name="seed-1", settings={**settings, "seed": 1})
    assert comparison_markdown([a, seed_1]).splitlines()[-1] == (
        "Scored with different `seed`: 0 (step-30), 1 (seed-1); zero-shot, it changes only what templates drawing at "
        "random (Jinja's `choice` and `random` filters) render.")
    k_shot = [replace(r, settings={**r.settings, "num_shots": 2}) for r in (a, seed_1)]
    assert comparison_markdown(k_shot).splitlines()[-1] == (
        "Scored with different `seed`: 0 (step-30), 1 (seed-1); their scores are not like for like.")


def test_report_md_says_why_a_template_scored_fewer_rows_and_what_chose_the_templates():
    # was: COPA's "…As a result, C1 or C2?" showed n 15 and skipped 25 with no word of why, and a report of
    # --original-task or --template said "templates 12/12" of the templates chosen, not that others were left out
    full, partial = _result("copa", "choose", 50.0), replace(_result("copa", "as a result", 60.0), num_skipped=25,
                                                             num_examples=14, num_errors=1)
    text = to_markdown(EvalReport("m", [full, partial], settings=EvalSettings().to_dict()))
    assert ("\nRows a template skipped, rendering no target or no input for them (promptsource writes some templates "
            "for some rows alone, as COPA's for its cause or its effect questions), so its score covers the other "
            "rows:\n- copa / as a result: 25 of 40 rows\n") in text
    assert "Templates" not in text
    chosen = EvalSettings(templates={"copa": ["choose", "as a result"], "cb": ["GPT-3 style"]}, original_task_only=True)
    text = to_markdown(EvalReport("m", [full], settings=chosen.to_dict()))
    assert ("\nTemplates chosen by name (`--template`), the others not scored:\n- copa: choose, as a result\n"
            "- cb: GPT-3 style\n\nTemplates whose promptsource metadata marks original_task alone (`--original-task`, "
            "`evaluation.original_task_only`), as T0's evaluation scored; the others not scored.\n") in text
    assert "Rows a template skipped" not in text


def test_the_chance_level_averages_the_same_tasks_as_the_macro_average():
    # it averaged the tasks that had a chance level, the macro average every scored task: with a generation task
    # in the set the two did not compare
    ranked = [replace(_result("t1", "x", 60.0), chance_baseline=50.0), replace(_result("t2", "x", 40.0),
                                                                               chance_baseline=25.0)]
    unscored = replace(_result("t3", "x", 0.0), score=None, chance_baseline=None)
    summary = summarize(EvalReport("m", ranked + [unscored]))
    assert (summary["macro_average"], summary["chance"]) == (50.0, 37.5)  # t3 unscored: in neither
    assert "macro average: 50.0 (chance 37.5)" in to_markdown(EvalReport("m", ranked))
    assert "| t2 | x | rank | 40.0 | — | 25.0 |" in to_markdown(EvalReport("m", ranked))  # per template too
    generated = replace(_result("t3", "x", 10.0), chance_baseline=None)
    summary = summarize(EvalReport("m", ranked + [generated]))
    assert summary["macro_average"] == pytest.approx(110 / 3) and summary["chance"] is None


def test_a_task_whose_templates_use_different_metrics_names_them_all_in_its_summary():
    # promptsource's glue/mrpc: accuracy templates beside BLEU-scored paraphrase generation; the task median mixes
    # both and was labelled with the first template's metric alone
    bleu = _result("mrpc", "paraphrase", 20.0)
    bleu.primary_metric = bleu.primary_key = "bleu"
    report = EvalReport("m", [_result("mrpc", "same", 80.0), _result("mrpc", "equivalent", 60.0), bleu])
    summary = summarize(report)["tasks"]["mrpc"]
    assert (summary.primary_metric, summary.median) == ("accuracy, bleu", 60.0)
    assert "| mrpc | accuracy, bleu | 3/3 | 60.0 |" in to_markdown(report)
    assert summarize(EvalReport("m", report.results[:2]))["tasks"]["mrpc"].primary_metric == "accuracy"


def test_the_metric_column_adds_the_key_only_where_it_is_not_the_metrics_name(tmp_path):
    # was: '| cb | accuracy.accuracy |' in report.md (and report.json's summary), the metric's name twice
    def scored_by(task, metric, key):
        return replace(_result(task, "t", 50.0), metrics={metric: {key: 0.5}}, primary_metric=metric, primary_key=key)

    report = EvalReport("m", [scored_by("cb", "accuracy", "accuracy"), scored_by("sum", "rouge", "rougeL"),
                              scored_by("rte", "f1_macro", "f1"), scored_by("mix", "squad", "f1"),
                              scored_by("mix", "squad_exact_match", "exact_match")])
    labels = {"cb": "accuracy", "sum": "rouge.rougeL", "rte": "f1_macro.f1",
              "mix": "squad.f1, squad_exact_match.exact_match"}
    text = to_markdown(report)
    assert [f"| {task} | {label} | {1 + (task == 'mix')}/{1 + (task == 'mix')} |" in text
            for task, label in labels.items()] == [True] * 4
    summary = json.loads(write_report(report, tmp_path, plots=False)["json"].read_text())["summary"]
    assert {task: s["primary_metric"] for task, s in summary["tasks"].items()} == labels
    assert [r["primary_metric"] for r in json.loads((tmp_path / "report.json").read_text())["results"]] == [
        "accuracy", "rouge", "f1_macro", "squad", "squad_exact_match"]  # each template's record keeps both fields


def test_the_markdown_shows_a_tasks_other_declared_metrics_per_template_and_their_median():
    # CB declares accuracy and macro F1, CoLA Matthews correlation and accuracy (as SuperGLUE / GLUE report them);
    # report.md showed the primary metric alone, the others only in report.json
    def cb(template, accuracy, f1):
        result = _result("cb", template, 100 * accuracy)
        result.metrics = {"accuracy": {"accuracy": accuracy}, "f1_macro": {"f1": f1}}
        return result

    cola = _result("cola", "t5", 10.0)
    cola.primary_metric, cola.primary_key = "matthews_correlation", "matthews_correlation"
    cola.metrics = {"matthews_correlation": {"matthews_correlation": 0.1}, "accuracy": {"accuracy": 0.625}}
    report = EvalReport("m", [cb("a", 0.5, 0.2), cb("b", 0.25, 0.4), cb("c", 0.75, 0.9), cola])
    text = to_markdown(report)
    # (F1 0.2, 0.4, 0.9: median 40.0, mean 50.0; with 0.3 for 0.9 the two agreed and a mean passed)
    assert "| cb | accuracy | 3/3 | 50.0 | 50.0 | 25.0 | 75.0 | — | — | 10 | f1_macro 40.0 |" in text
    assert "| cb | b | rank | 25.0 | — | — | 10 | 0 | 0 | f1_macro 40.0 |" in text
    assert "| cola | t5 | rank | 10.0 | — | — | 10 | 0 | 0 | accuracy 62.5 |" in text
    assert "| t | x | rank | 40.0 | — | — | 10 | 0 | 0 | — |" in to_markdown(EvalReport("m", [_result("t", "x", 40.0)]))


def test_report_files_round_trip(toy_report, tmp_path):
    paths = write_report(toy_report, tmp_path / "report")
    data = json.loads(paths["json"].read_text())
    scores = [r.score for r in toy_report.results if r.score is not None]
    assert data["summary"]["tasks"]["toy_sentiment"]["median"] == pytest.approx(statistics.median(scores))
    assert read_report(tmp_path / "report").to_dict() == toy_report.to_dict()
    assert "| toy_sentiment | choices | rank |" in paths["markdown"].read_text()
    assert to_markdown(toy_report) == paths["markdown"].read_text()
    assert len(paths["plots"]) == 1 and paths["plots"][0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_compare_path_without_a_report_names_the_report_it_likely_meant(toy_report, tmp_path):
    # was: "no evaluation report at 'runs/my/report.json'" for `--compare runs/my`, a run whose after-training report
    # is in runs/my/eval, and nothing about the close folder for a misspelt `--compare reprt`
    write_report(toy_report, tmp_path / "runs" / "my" / "eval", plots=False)
    (tmp_path / "runs" / "my" / "checkpoints").mkdir()
    with pytest.raises(FileNotFoundError) as raised:
        read_report(tmp_path / "runs" / "my")
    assert str(raised.value) == (f"no evaluation report at {str(tmp_path / 'runs' / 'my' / 'report.json')!r}; it is "
                                 f"a run's folder, whose report after training is in eval/: pass "
                                 f"{tmp_path / 'runs' / 'my' / 'eval'}")
    with pytest.raises(FileNotFoundError) as raised:
        read_report(tmp_path / "runs" / "my" / "evl")
    assert str(raised.value) == (f"no evaluation report at {str(tmp_path / 'runs' / 'my' / 'evl')!r} (did you mean "
                                 f"{str(tmp_path / 'runs' / 'my' / 'eval')!r}?); write one with `t2t-mtl eval --out "
                                 f"DIR`")
    assert read_report(tmp_path / "runs" / "my" / "eval").to_dict() == toy_report.to_dict()


def test_compare_puts_reports_side_by_side_without_a_model(toy_report, tmp_path, capsys):
    # was: only `eval --compare` compared reports, and it evaluated a checkpoint first
    first, second = tmp_path / "first", tmp_path / "second"
    write_report(toy_report, first, plots=False)
    write_report(replace(toy_report, name="tuned"), second, plots=False)
    assert cli_main(["compare", str(first), str(second / "report.json"), "--out", str(tmp_path / "cmp.md")]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert lines[0] == f"| task | {toy_report.name} | tuned |"
    median = statistics.median(r.score for r in toy_report.results if r.score is not None)
    assert lines[2].startswith("| toy_sentiment | ") and lines[2].count(f"{median:.1f}") == 2
    assert (tmp_path / "cmp.md").read_text() == printed
    # reports of one model name are labelled by their paths; the same report twice cannot be told apart
    assert cli_main(["compare", str(first), str(second), str(tmp_path / "again")]) == 2
    assert "no evaluation report at" in capsys.readouterr().err
    write_report(toy_report, tmp_path / "again", plots=False)
    assert cli_main(["compare", str(first), str(tmp_path / "again")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (f"| task | {toy_report.name} ({first}) | "
                                                       f"{toy_report.name} ({tmp_path / 'again'}) |")
    for args, message in (([str(first), str(first)], "would name more than one column; give each report once"),
                          ([str(first)], "compare takes two or more reports, got one"),
                          ([str(first), str(second), "--out", str(tmp_path)], "is a folder; give a file name")):
        assert cli_main(["compare", *args]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and captured.out == ""


def test_a_report_given_as_its_folder_and_as_its_file_is_one_report(toy_report, tmp_path, capsys):
    # was: `compare RUN/eval RUN/eval/report.json` (and `eval --compare` with both) printed the report twice, as two
    # columns labelled by their paths, though the same path given twice was refused
    write_report(toy_report, tmp_path / "first", plots=False)
    write_report(replace(toy_report, name="tuned"), tmp_path / "second", plots=False)
    folder, file = tmp_path / "first", tmp_path / "first" / "report.json"
    for paths in ([folder, file], [file, tmp_path / "second", folder], [tmp_path / "second" / ".." / "first", file]):
        assert cli_main(["compare", *map(str, paths)]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err == (f"error: {str(paths[-1])!r} is the report that "
                                                       f"{str(paths[0])!r} names; give each report once\n")
    assert cli_main(["compare", str(folder), str(tmp_path / "second" / "report.json")]) == 0


def test_the_markdown_keeps_the_tasks_first_seen_order_and_escapes_pipes_in_template_names():
    def result(task, template, score):
        return TemplateResult(task=task, template=template, split="validation", scoring="rank", num_examples=4,
                              metrics={"accuracy": {"accuracy": score / 100}}, primary_metric="accuracy",
                              primary_key="accuracy", score=score)

    report = EvalReport("m", [result("zeta", "a | b", 75.0), result("alpha", "plain", 50.0)])
    assert report.tasks() == ["zeta", "alpha"]
    text = to_markdown(report)
    assert "| zeta | a \\| b | rank | 75.0 |" in text  # a bare "|" in a name would split its row's cells
    assert text.index("| zeta | accuracy |") < text.index("| alpha | accuracy |")


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="'bert' model.*T5"):
        load_checkpoint(tmp_path / "bert")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json|could not be loaded"):
        load_checkpoint(tmp_path / "empty")
    (tmp_path / "listed").mkdir()  # (was: AttributeError: 'list' object has no attribute 'get', a raw traceback)
    (tmp_path / "listed" / "config.json").write_text("[]")
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tmp_path / "listed")
    assert str(caught.value) == (f"checkpoint {str(tmp_path / 'listed' / 'config.json')!r} is a JSON list, not the "
                                 f"JSON object of a model config; pass a folder written whole by save_pretrained or "
                                 f"`t2t-mtl export`, a run directory or a checkpoint")


@pytest.mark.parametrize("kind", ["umt5", "longt5"])
def test_a_umt5_or_longt5_folder_is_refused_naming_its_type(tmp_path, kind, t5_tokenizer, capsys):
    # umt5, was: eval, predict, merge and load_trained_model loaded it as a T5ForConditionalGeneration, which
    # dropped the relative position bias of every layer but the first (transformers' load report: UNEXPECTED), and
    # scored that other model
    from transformers import LongT5Config, LongT5ForConditionalGeneration, UMT5Config, UMT5ForConditionalGeneration

    config_class, model_class = ((UMT5Config, UMT5ForConditionalGeneration) if kind == "umt5" else
                                 (LongT5Config, LongT5ForConditionalGeneration))
    model_class(config_class(vocab_size=len(t5_tokenizer), d_model=8, d_kv=4, d_ff=16, num_layers=2, num_heads=2,
                             decoder_start_token_id=0)).save_pretrained(tmp_path / kind)
    t5_tokenizer.save_pretrained(tmp_path / kind)
    why = (f"is a '{kind}' model, not a T5 encoder-decoder (model_type 't5' or 'mt5': T5, T5 v1.1, Flan-T5, mT5; "
           f"UMT5 and LongT5 are other architectures, which t2t-mtl does not load)")
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tmp_path / kind)
    assert str(caught.value) == f"checkpoint {str(tmp_path / kind)!r} {why}"
    capsys.readouterr()
    assert cli_main(["predict", "--checkpoint", str(tmp_path / kind), "a question"]) == 2
    assert capsys.readouterr().err == f"error: checkpoint {str(tmp_path / kind)!r} {why}\n"
    from t2t_mtl import load_trained_model  # (the Python API, which reads no model_type first)
    from t2t_mtl.engine.export import ExportError

    with pytest.raises(ExportError) as caught:
        load_trained_model(tmp_path / kind)
    assert str(caught.value) == f"model folder {tmp_path / kind}: {str(tmp_path / kind)!r} {why}"


def test_a_checkpoint_with_corrupt_weights_is_named_not_a_traceback(checkpoint, tmp_path, capsys):
    # a weights file cut short (an interrupted copy) escaped as safetensors' own SafetensorError traceback
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="checkpoint '.*broken' could not be loaded: .*header"):
        load_checkpoint(broken)
    for command in (["eval", "--tasks", "parity"], ["predict", "a text"]):
        assert cli_main([command[0], "--checkpoint", str(broken), *command[1:]]) in (1, 2)
        assert "could not be loaded" in capsys.readouterr().err


def test_held_out_tasks_are_refused_in_a_training_mixture():
    task_registry.load_builtin_tasks()
    held_out = [n for n in task_registry.list_tasks() if task_registry.get_task(n).held_out]
    held_in = [n for n in task_registry.list_tasks() if not task_registry.get_task(n).held_out]
    assert held_out and held_in
    leaky = task_registry.Mixture("leaky", [held_in[0], held_out[0]])
    with pytest.raises(task_registry.HeldOutTaskError, match=held_out[0]):
        task_registry.training_rates(leaky)
    cluster = task_registry.get_task(held_out[0]).cluster
    assert held_out[0] not in task_registry.training_rates(leaky, held_out_clusters=[cluster])


def test_cli_eval_writes_the_report_and_reports_bad_checkpoints(checkpoint, data_file, tmp_path, capsys):
    with task_registry.isolated_registry():
        task_registry.register_task(toy_task(data_file))
        code = cli_main(["eval", "--checkpoint", checkpoint, "--tasks", "toy_sentiment", "--max-examples", "4",
                         "--out", str(tmp_path / "out"), "--no-progress", "--max-new-tokens", "3",
                         "--compare", str(tmp_path / "missing")])
        assert code == 2 and "no evaluation report" in capsys.readouterr().err
        code = cli_main(["eval", "--checkpoint", checkpoint, "--tasks", "toy_sentiment", "--max-examples", "4",
                         "--out", str(tmp_path / "out"), "--no-progress", "--max-new-tokens", "3"])
    assert code == 0
    report = read_report(tmp_path / "out")
    assert [r.num_examples for r in report.results] == [4, 4, 2]  # rows 0 and 3 are negative
    assert (tmp_path / "out" / "plots" / "toy_sentiment.png").exists()
    assert all(not r.predictions for r in report.results)
    # (mutation testing: eval_settings dropping --keep-predictions passed every test, none of which read them back)
    with task_registry.isolated_registry():
        task_registry.register_task(toy_task(data_file))
        assert cli_main(["eval", "--checkpoint", checkpoint, "--tasks", "toy_sentiment", "--max-examples", "4",
                         "--out", str(tmp_path / "kept"), "--no-progress", "--max-new-tokens", "3",
                         "--keep-predictions"]) == 0
    kept = read_report(tmp_path / "kept")
    assert [[p["row"] for p in r.predictions] for r in kept.results] == [[0, 1, 2, 3], [0, 1, 2, 3], [1, 2]]
    assert cli_main(["eval", "--checkpoint", str(tmp_path / "nope"), "--tasks", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_eval_names_a_report_folder_it_cannot_write_after_printing_the_scores(checkpoint, data_file, capsys):
    # a folder that cannot be created (here under /proc; elsewhere a read-only or foreign folder) raised a raw
    # FileNotFoundError / PermissionError traceback from write_report once the whole evaluation had run
    with task_registry.isolated_registry():
        task_registry.register_task(toy_task(data_file))
        code = cli_main(["eval", "--checkpoint", checkpoint, "--tasks", "toy_sentiment", "--max-examples", "2",
                         "--no-progress", "--max-new-tokens", "2", "--out", "/proc/t2t-mtl-no-such/report"])
    captured = capsys.readouterr()
    assert code == 2 and "| toy_sentiment | choices | rank |" in captured.out  # the scores are not lost
    assert "error: --out /proc/t2t-mtl-no-such/report: the report could not be written" in captured.err


def test_cli_eval_compares_with_an_earlier_report_of_the_same_checkpoint(checkpoint, data_file, tmp_path, capsys):
    args = ["eval", "--checkpoint", checkpoint, "--tasks", "toy_sentiment", "--max-examples", "2", "--no-progress",
            "--max-new-tokens", "2"]
    with task_registry.isolated_registry():
        task_registry.register_task(toy_task(data_file))
        for option in ("--batch-size", "--num-beams", "--max-new-tokens", "--max-input-length"):
            assert cli_main([*args, option, "0"]) == 2  # a usage error, named as typed (as predict does)
            assert f"{option} must be at least 1, got 0" in capsys.readouterr().err
        assert cli_main([*args, "--out", str(tmp_path / "first")]) == 0
        # both reports carry the default name (the checkpoint path): the earlier one is labelled by its path
        assert cli_main([*args, "--out", str(tmp_path / "second"), "--compare", str(tmp_path / "first")]) == 0
        capsys.readouterr()
        assert cli_main([*args, "--compare", str(tmp_path / "first"), str(tmp_path / "first")]) == 2
        err = capsys.readouterr().err  # (mutation testing: the error without its option and remedy passed the test)
        assert err.startswith("error: --compare: ") and "would name more than one column" in err, err
        assert err.endswith("; give each report once (and another --name)\n") and err.count("\n") == 1, err
    header = (tmp_path / "second" / "comparison.md").read_text().splitlines()[0]
    assert header == f"| task | {checkpoint} ({tmp_path / 'first'}) | {checkpoint} |"


def test_cli_eval_refuses_an_out_folder_holding_a_report_unless_overwrite(checkpoint, data_file, tmp_path, capsys):
    # was: a second `eval --out DIR` replaced the report there silently (export and tokenizer train refuse)
    args = ["eval", "--checkpoint", checkpoint, "--tasks", "toy_sentiment", "--max-examples", "2", "--no-progress",
            "--max-new-tokens", "2"]
    out = tmp_path / "report"
    with task_registry.isolated_registry():
        task_registry.register_task(toy_task(data_file))
        assert cli_main([*args, "--out", str(out)]) == 0
        (out / "report.json").write_text('{"an": "earlier report"}')
        capsys.readouterr()
        assert cli_main([*args, "--out", str(out)]) == 2
        captured = capsys.readouterr()
        assert captured.err == (f"error: --out {out} is not empty (it holds plots, report.json, report.md); writing "
                                f"into it would overwrite what is there: choose another folder, or pass --overwrite "
                                f"to write into it anyway\n")
        assert captured.out == "" and (out / "report.json").read_text() == '{"an": "earlier report"}'
        assert cli_main([*args, "--overwrite"]) == 2  # nothing to overwrite without --out
        assert capsys.readouterr().err == ("error: --overwrite lets --out write into a non-empty folder; without "
                                           "--out DIR it is ignored\n")
        assert cli_main([*args, "--out", str(out), "--overwrite"]) == 0
    assert read_report(out).results[0].task == "toy_sentiment"


MRPC_ROWS = [{"sentence1": f"The firm sold {i} shares on Monday.", "sentence2": f"On Monday {i} shares were sold.",
              "label": i % 2, "idx": i} for i in range(4)]


def test_original_task_only_scores_the_templates_promptsource_marks_original_as_t0(
        loaded, checkpoint, tmp_path, promptsource_dir, capsys):
    # T0 evaluated only a dataset's original-task prompts; promptsource's glue/mrpc adds two that generate a
    # sentence (no answer choices), which `--scoring rank` refused and `auto` scored by BLEU into the task's median
    templates = task_registry.import_promptsource(promptsource_dir, dataset="glue", subset="mrpc")
    original = [t.name for t in templates if t.metadata.original_task]
    assert len(templates) == 7 and len(original) == 5  # (what the shared templates file marks)
    data = tmp_path / "validation.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in MRPC_ROWS), encoding="utf-8")
    task = task_registry.Task("mrpc_ps", task_registry.LocalFileSource({"validation": str(data)}), templates,
                              task_type="paraphrase", cluster="toy_paraphrase", splits=("validation",))
    model, tokenizer = loaded
    settings = EvalSettings(scoring="rank", batch_size=8, original_task_only=True)
    report = evaluate_tasks(model, tokenizer, [task], settings, progress=False)
    assert [r.template for r in report.results] == original
    scores = sorted(r.score for r in report.results)
    assert summarize(report)["tasks"]["mrpc_ps"].median == scores[2]  # the middle one of five
    with pytest.raises(NoAnswerChoicesError, match="generate_paraphrase"):  # every template: refused by rank
        evaluate_tasks(model, tokenizer, [task], replace(settings, original_task_only=False), progress=False)
    unmarked = task_registry.Task("unmarked", task.source, task_registry.Template("t", "{{ sentence1 }} ||| x"),
                                  splits=("validation",))
    with pytest.raises(EvaluationError, match="task 'unmarked': none of its templates \\['t'\\] is marked "
                                              "original_task") as raised:
        evaluate_tasks(model, tokenizer, [task, unmarked], settings, progress=False)
    # was: "or score every template", naming neither the option nor the config key that does it
    assert str(raised.value).endswith("(`eval --no-original-task`; in a config, evaluation.original_task_only: false)")
    with task_registry.isolated_registry():  # the CLI option, and `--no-original-task` scoring them all again
        task_registry.register_task(task)
        args = ["eval", "--checkpoint", checkpoint, "--tasks", "mrpc_ps",
                "--no-progress", "--scoring", "auto", "--max-new-tokens", "2"]
        assert cli_main([*args, "--original-task"]) == 0
        assert "| mrpc_ps | accuracy | 5/5 |" in capsys.readouterr().out
        assert cli_main([*args, "--no-original-task"]) == 0
        assert "| mrpc_ps | bleu, accuracy | 7/7 |" in capsys.readouterr().out


def test_cli_eval_scores_only_the_templates_named_by_template(checkpoint, data_file, tmp_path, capsys):
    # EvalSettings.templates had no option: `eval` scored every template of a task, one could not be looked at alone
    args = ["eval", "--checkpoint", checkpoint, "--tasks", "toy_sentiment", "--max-examples", "4", "--no-progress",
            "--max-new-tokens", "2"]
    with task_registry.isolated_registry():
        task_registry.register_task(toy_task(data_file))
        assert cli_main([*args, "--template", "free", "--template", "choices", "--out", str(tmp_path / "r")]) == 0
        capsys.readouterr()
        assert cli_main([*args, "--template", "nope"]) == 2
        assert capsys.readouterr().err.endswith("error: task 'toy_sentiment' has no template(s) ['nope']; it has "
                                                "['choices', 'free', 'positives_only']\n")
        assert cli_main([*args, "--template", "free", "--template", "free"]) == 2
        assert "--template names 'free' more than once" in capsys.readouterr().err
    report = read_report(tmp_path / "r")
    assert [(r.template, r.scoring) for r in report.results] == [("free", "generate"), ("choices", "rank")]


SOLUTION_ROWS = [{"question": f"What is {i} + {i}?", "answer": f"{i} plus {i} makes {2 * i}.\n#### {2 * i}"}
                 for i in range(4)]


def final_number(text: str) -> str:
    """The number after the last `####` of a GSM8K-style solution ('' without one)."""
    return text.rsplit("####", 1)[1].strip() if "####" in text else ""


def test_a_tasks_postprocess_is_applied_to_generations_and_gold_answers_before_the_metrics(
        loaded, tmp_path, monkeypatch):
    # seqio's postprocess_fn: a task trained on whole solutions is scored on their final answer; Task had no such
    # hook, so exact match compared whole texts (here 0 of 4, though two final answers are right)
    from t2t_mtl.evaluation import runner
    from t2t_mtl.engine import validation

    data = tmp_path / "validation.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in SOLUTION_ROWS), encoding="utf-8")
    template = task_registry.Template("solve", "{{ question }} ||| {{ answer }}")
    source = task_registry.LocalFileSource({"validation": str(data)})
    task = task_registry.Task("sums", source, template, metrics=("exact_match",), splits=("validation",),
                              postprocess=final_number)
    plain = task_registry.Task("sums", source, template, metrics=("exact_match",), splits=("validation",))
    generated = ["0 and 0 make 0. #### 0", "I think #### 3", "2 + 2 = 4\n#### 4", "no idea"]
    monkeypatch.setattr(runner, "generate_texts", lambda model, tokenizer, inputs, **kwargs: generated[:len(inputs)])
    model, tokenizer = loaded
    settings = EvalSettings(batch_size=8, keep_predictions=True)
    result = evaluate_tasks(model, tokenizer, [task], settings, progress=False).results[0]
    assert result.score == pytest.approx(50.0)  # rows 0 and 2: '0' == '0', '4' == '4'; '3' != '2', '' != '6'
    assert [p["prediction"] for p in result.predictions] == ["0", "3", "4", ""]
    assert [p["output"] for p in result.predictions] == generated
    assert [p["target"] for p in result.predictions] == ["0", "2", "4", "6"]
    assert evaluate_tasks(model, tokenizer, [plain], settings, progress=False).results[0].score == 0.0
    # held-in validation's exact match reads them the same way
    monkeypatch.setattr(validation, "decode_generated", lambda tokenizer, out, inputs: generated)

    class Generating:
        def generate(self, **kwargs):
            return None

    golds = [[row["answer"]] for row in SOLUTION_ROWS]
    assert validation._exact_matches(Generating(), tokenizer, {"input_ids": None, "attention_mask": None}, generated,
                                     golds, 8, False, {}, task) == 2
    assert validation._exact_matches(Generating(), tokenizer, {"input_ids": None, "attention_mask": None}, generated,
                                     golds, 8, False, {}, plain) == 0
    assert task.definition_digest() != plain.definition_digest() and task.describe()["postprocess"] == "final_number"
    broken = task_registry.Task("sums", source, template, splits=("validation",), postprocess=lambda text: None)
    with pytest.raises(task_registry.TaskDefinitionError, match="task 'sums': postprocess must return a string"):
        evaluate_tasks(model, tokenizer, [broken], settings, progress=False)
    with pytest.raises(task_registry.TaskDefinitionError, match="postprocess must be a function"):
        task_registry.Task("sums", source, template, postprocess=42)


def test_a_generation_scored_template_with_choices_compares_postprocessed_answers_among_postprocessed_choices(
        loaded, tmp_path, monkeypatch):
    # the choices stayed as written, so the postprocessed gold 'yes' was none of them: the evaluation stopped
    # ("'yes' is not in list", from the majority baseline), and the label metric would read every answer as -1
    from t2t_mtl.evaluation import runner

    rows = [{"q": f"Question {i}?", "label": label} for i, label in enumerate([1, 0, 0, 1])]
    data = tmp_path / "validation.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    template = task_registry.Template("t", "{{ q }} ||| {{ answer_choices[label] }}",
                                      answer_choices="The answer is no ||| The answer is yes")
    task = task_registry.Task("last_word", task_registry.LocalFileSource({"validation": str(data)}), template,
                              metrics=("accuracy",), splits=("validation",),
                              postprocess=lambda text: (text.split() or [""])[-1])
    generated = ["yes", "It is yes", "The answer is no", "maybe"]  # right, wrong, right, wrong
    monkeypatch.setattr(runner, "generate_texts", lambda model, tokenizer, inputs, **kwargs: generated[:len(inputs)])
    model, tokenizer = loaded
    result = evaluate_tasks(model, tokenizer, [task], EvalSettings(scoring="generate"), progress=False).results[0]
    assert result.score == pytest.approx(50.0)


def test_a_config_whose_original_task_only_leaves_a_task_no_template_is_refused_before_training(data_file):
    base = {"model": {"dims": {"d_model": 8}}, "data": {"tasks": ["parity"], "held_out_clusters": ["comparison"]}}
    names, settings = evaluation_plan(config_from_dict({**base, "evaluation": {"held_out": True,
                                                                                "original_task_only": True}}))
    assert names and settings.original_task_only  # the built-in templates are marked original_task
    with task_registry.isolated_registry():
        task_registry.register_task(toy_task(data_file))  # templates without promptsource metadata
        with pytest.raises(ConfigError, match="evaluation.original_task_only: task 'toy_sentiment': none of its "
                                              "templates .* is marked original_task"):
            evaluation_plan(config_from_dict({**base, "evaluation": {"tasks": ["toy_sentiment"],
                                                                      "original_task_only": True}}))


def test_a_config_ranking_a_template_without_answer_choices_is_refused_before_training(data_file, loaded):
    # the quickstart's evaluation.scoring rank over an added generation task passed every check, trained, and was
    # refused only by the runner after training ("has examples without answer choices")
    base = {"model": {"dims": {"d_model": 8}}, "data": {"tasks": ["parity"], "held_out_clusters": ["comparison"]}}
    with task_registry.isolated_registry():
        task = toy_task(data_file)
        task_registry.register_task(task)
        with pytest.raises(NoAnswerChoicesError, match="template 'free' has examples without answer choices"):
            evaluate_tasks(*loaded, [task], EvalSettings(scoring="rank", max_examples=2), progress=False)
        with pytest.raises(ConfigError, match="evaluation.scoring rank .* task 'toy_sentiment' template\\(s\\) "
                                              "'free' have no answer_choices, .* set evaluation.scoring: auto"):
            evaluation_plan(config_from_dict({**base, "evaluation": {"tasks": ["toy_sentiment"], "scoring": "rank"}}))
        names, settings = evaluation_plan(config_from_dict({**base, "evaluation": {"tasks": ["toy_sentiment"],
                                                                                    "scoring": "auto"}}))
        assert names == ["toy_sentiment"] and settings.scoring == "auto"
    names, settings = evaluation_plan(config_from_dict({**base, "evaluation": {"held_out": True, "scoring": "rank"}}))
    assert names and settings.scoring == "rank"  # the held-out comparison cluster's templates all have choices


@pytest.mark.parametrize("options, expected", [
    # was "task 'toy_sentiment' has no split 'train' for demonstrations (shots_split); ...", raised once the tasks
    # before it had been scored
    (["--shots", "1", "--shots-split", "train"], "--shots-split 'train'"),
    (["--split", "train"], "--split 'train'"),  # was Task.load_rows' message, also after scoring parity
])
def test_cli_eval_names_a_split_option_a_task_lacks_before_scoring(checkpoint, data_file, monkeypatch, capsys,
                                                                  options, expected):
    import t2t_mtl.evaluation

    def not_reached(*args, **kwargs):
        raise AssertionError("evaluated before the splits were checked")

    monkeypatch.setattr(t2t_mtl.evaluation, "evaluate_tasks", not_reached)
    with task_registry.isolated_registry():
        task_registry.register_task(toy_task(data_file))
        assert cli_main(["eval", "--checkpoint", checkpoint, "--tasks", "parity,toy_sentiment", "--max-examples",
                         "2", "--no-progress", *options]) == 2
    err = capsys.readouterr().err  # (before the weights load: no transformers progress bar)
    assert err == f"error: {expected}: task 'toy_sentiment' has no such split; its splits are ['validation']\n", err


@pytest.mark.parametrize("run_scoring, options, source", [
    ("rank", [], "the run's evaluation.scoring rank"), (None, ["--scoring", "rank"], "--scoring rank")])
def test_cli_eval_ranking_a_template_without_answer_choices_is_refused_before_the_model_loads(
        checkpoint, data_file, tmp_path, monkeypatch, capsys, run_scoring, options, source):
    # was: refused by the runner once the model was loaded ("task 'toy_sentiment' template 'free' has examples
    # without answer choices"), as a training config's was after training before evaluation_plan checked it
    import t2t_mtl.evaluation

    model = tmp_path / "model"
    shutil.copytree(checkpoint, model)
    if run_scoring:  # (an exported run's meta holds its config)
        (model / "t2t_mtl_meta.json").write_text(json.dumps({"config": {"evaluation": {"scoring": run_scoring}}}))
    loads = []
    real_load = t2t_mtl.evaluation.load_checkpoint
    monkeypatch.setattr(t2t_mtl.evaluation, "load_checkpoint", lambda path: loads.append(path) or real_load(path))
    argv = ["eval", "--checkpoint", str(model), "--tasks", "toy_sentiment", "--max-examples", "2", "--no-progress"]
    with task_registry.isolated_registry():
        task_registry.register_task(toy_task(data_file))
        assert cli_main(argv + options) == 2
        assert loads == []
        assert capsys.readouterr().err == (
            f"error: {source} ranks each example's answer choices, and task 'toy_sentiment' template(s) 'free' have "
            f"no answer_choices, so rank classification cannot score them; pass --scoring auto (rank where a template "
            f"has choices, generation elsewhere) or --scoring generate\n")
        # the templates with choices are ranked as asked; --scoring auto scores the rest by generation
        assert cli_main(argv + options + ["--template", "choices"]) == 0 and len(loads) == 1
        assert cli_main(argv + ["--scoring", "auto", "--max-new-tokens", "2"]) == 0 and len(loads) == 2


def test_cli_eval_refuses_unusable_arguments_before_evaluating(checkpoint, data_file, tmp_path, capsys):
    args = ["eval", "--checkpoint", checkpoint, "--max-examples", "2", "--no-progress"]
    (tmp_path / "afile.txt").write_text("x")
    (tmp_path / "notes.json").write_text('{"some": "json"}')
    with task_registry.isolated_registry():
        task_registry.register_task(toy_task(data_file))
        for out in ("afile.txt", "afile.txt/report"):
            assert cli_main([*args, "--tasks", "toy_sentiment", "--out", str(tmp_path / out)]) == 2
            captured = capsys.readouterr()
            assert "afile.txt exists and is not a folder" in captured.err and "toy_sentiment" not in captured.out
        for extra, message in ((["--held-out-clusters", "nli"], "--held-out-clusters chooses the clusters of "
                                                                "--held-out"),
                               (["--scoring", "generate", "--length-norm"], "--length-norm changes how"),
                               (["--scoring", "rank", "--num-beams", "4"], "--num-beams sets the beam width"),
                               # was: accepted and silently unused
                               (["--scoring", "rank", "--max-new-tokens", "4"], "--max-new-tokens limits generation"),
                               (["--keep-predictions"], "--keep-predictions stores every prediction in report.json, "
                                                        "which only --out writes")):
            assert cli_main([*args, "--tasks", "toy_sentiment", *extra]) == 2
            assert message in capsys.readouterr().err
        # was: silently not registered (the BIG-bench tasks under DIR are all that --bigbench scores)
        assert cli_main([*args, "--bigbench", str(tmp_path), "--tasks-dir", str(tmp_path)]) == 2
        assert "--tasks-dir registers YAML tasks" in capsys.readouterr().err
        assert cli_main([*args, "--bigbench", str(tmp_path), "--data-dir", str(tmp_path)]) == 2
        assert "--data-dir locates hub datasets" in capsys.readouterr().err
        assert cli_main([*args, "--tasks", " , "]) == 2  # e.g. an empty shell variable: not every held-out task
        assert "--tasks ' , ' names nothing; give comma-separated task names" in capsys.readouterr().err
        assert cli_main([*args, "--tasks", "toy_sentmient", "--out", str(tmp_path / "report")]) == 2
        assert "did you mean 'toy_sentiment'" in capsys.readouterr().err
        assert not (tmp_path / "report").exists()  # was: an empty --out folder left behind
        assert cli_main([*args, "--tasks", "toy_sentiment,toy_sentiment"]) == 2  # was: every template twice
        assert "--tasks names toy_sentiment more than once" in capsys.readouterr().err
        assert cli_main([*args, "--tasks", "toy_sentiment", "--compare", str(tmp_path / "notes.json")]) == 2
        assert f"{str(tmp_path / 'notes.json')!r} is not an evaluation report.json" in capsys.readouterr().err


def test_cli_eval_registers_yaml_tasks_from_tasks_dir(checkpoint, data_file, tmp_path, capsys):
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    (tasks_dir / "yaml_sentiment.yaml").write_text(
        "name: yaml_sentiment\nmetrics: [accuracy]\nsplits: [validation]\n"
        f"source: {{files: {{validation: {data_file}}}}}\n"
        "templates:\n  - name: t\n    jinja: 'Positive? {{ text }} ||| {{ answer_choices[label] }}'\n"
        "    answer_choices: 'no ||| yes'\n")
    with task_registry.isolated_registry():
        assert cli_main(["eval", "--checkpoint", checkpoint, "--tasks-dir", str(tasks_dir), "--tasks",
                         "yaml_sentiment", "--max-examples", "3", "--no-progress"]) == 0
        assert "| yaml_sentiment | t | rank |" in capsys.readouterr().out
        other = tmp_path / "other"  # --tasks-dir repeats: every folder is registered
        other.mkdir()
        (other / "yaml_sentiment_2.yaml").write_text((tasks_dir / "yaml_sentiment.yaml").read_text().replace(
            "name: yaml_sentiment", "name: yaml_sentiment_2"))
        assert cli_main(["eval", "--checkpoint", checkpoint, "--tasks-dir", str(tasks_dir), "--tasks-dir", str(other),
                         "--tasks", "yaml_sentiment,yaml_sentiment_2", "--max-examples", "3", "--no-progress"]) == 0
        assert "| yaml_sentiment_2 | t | rank |" in capsys.readouterr().out
        assert cli_main(["eval", "--checkpoint", checkpoint, "--tasks-dir", str(tmp_path / "none"), "--tasks",
                         "yaml_sentiment"]) == 2
        assert "task directory" in capsys.readouterr().err


def _run_with_relative_tasks_dir(checkpoint, data_file, tmp_path):
    """A copy of `checkpoint` as a run whose config names data.tasks_dir 'tasks', relative to `tmp_path`, which holds
    that folder with the YAML task yaml_sentiment (accuracy on `data_file`'s validation rows)."""
    model = tmp_path / "model"
    shutil.copytree(checkpoint, model)
    (model / "t2t_mtl_meta.json").write_text(json.dumps({"config": {"data": {"tasks_dir": "tasks"}}}))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "yaml_sentiment.yaml").write_text(
        "name: yaml_sentiment\nmetrics: [accuracy]\nsplits: [validation]\n"
        f"source: {{files: {{validation: {data_file}}}}}\n"
        "templates:\n  - name: t\n    jinja: 'Positive? {{ text }} ||| {{ answer_choices[label] }}'\n"
        "    answer_choices: 'no ||| yes'\n")
    return model


def test_cli_eval_names_the_runs_relative_tasks_dir_when_run_from_another_folder(checkpoint, data_file, tmp_path,
                                                                                   capsys, monkeypatch):
    # was: "task directory tasks does not exist" — a default read from the run's config.yaml, relative to where the
    # run was trained, with no word of where it came from or of --tasks-dir
    model = _run_with_relative_tasks_dir(checkpoint, data_file, tmp_path)
    argv = ["eval", "--checkpoint", str(model), "--tasks", "yaml_sentiment", "--max-examples", "2", "--no-progress"]
    with task_registry.isolated_registry():
        monkeypatch.chdir(tmp_path)  # where the run was trained: its tasks_dir is found
        assert cli_main(argv) == 0
        assert "| yaml_sentiment | t | rank |" in capsys.readouterr().out
        monkeypatch.chdir(model)
        assert cli_main(argv) == 2
        err = capsys.readouterr().err
        assert (f"error: the run's data.tasks_dir 'tasks' is not a folder here (a relative path, read from the current "
                f"directory {model}): run eval from where the run was trained, or pass --tasks-dir DIR") in err


def test_cli_eval_of_an_unknown_task_does_not_send_to_tasks_dir_where_the_runs_folder_is_registered(
        checkpoint, data_file, tmp_path, capsys, monkeypatch):
    # was: "unknown task 'yaml_sentimen'; did you mean 'yaml_sentiment'? ...; a YAML task file's task is registered
    # by --tasks-dir FOLDER" for a run whose data.tasks_dir eval had registered already
    model = _run_with_relative_tasks_dir(checkpoint, data_file, tmp_path)
    monkeypatch.chdir(tmp_path)
    with task_registry.isolated_registry():
        assert cli_main(["eval", "--checkpoint", str(model), "--tasks", "yaml_sentimen"]) == 2
        err = capsys.readouterr().err
        assert "unknown task 'yaml_sentimen'; did you mean 'yaml_sentiment'" in err and "--tasks-dir" not in err
        assert cli_main(["eval", "--checkpoint", checkpoint, "--tasks", "yaml_sentimen"]) == 2  # no run: the hint
        assert "a YAML task file's task is registered by --tasks-dir FOLDER" in capsys.readouterr().err


@pytest.mark.parametrize("key, option", [("tasks_dir", "--tasks-dir DIR, the folder of its YAML task files"),
                                         ("data_dir", "--data-dir DIR, the folder holding <hub path>")])
def test_cli_eval_names_the_runs_absolute_folder_that_is_missing_or_a_file(key, option, checkpoint, tmp_path, capsys,
                                                                          monkeypatch):
    # mutation testing: the check skipping an absolute tasks_dir that is no folder, and taking a data_dir that
    # exists (a file) as a folder, passed every test, whose run folders were relative and missing
    monkeypatch.setattr(task_registry.sources, "_data_dir", None)  # (the eval sets it; restored after the test)
    model = tmp_path / "model"
    shutil.copytree(checkpoint, model)
    afile = tmp_path / "afile"
    afile.write_text("x")
    for folder in (tmp_path / "missing", afile):
        (model / "t2t_mtl_meta.json").write_text(json.dumps({"config": {"data": {key: str(folder)}}}))
        with task_registry.isolated_registry():
            assert cli_main(["eval", "--checkpoint", str(model), "--tasks", "parity", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err == f"error: the run's data.{key} {str(folder)!r} is not a folder: pass {option}" + (
            "\n" if key == "tasks_dir" else "/<config or default>/<split>.jsonl\n"), err


def test_cli_eval_of_bigbench_tasks_reads_nothing_from_the_runs_data_dir(checkpoint, bigbench_dir, tmp_path, capsys,
                                                                         monkeypatch):
    # mutation testing: eval --bigbench taking the run's data.data_dir (refused when it is not there) passed every
    # test; BIG-bench tasks read their own task.json, so a run trained elsewhere is scored on them as it is
    monkeypatch.setattr(task_registry.sources, "_data_dir", None)  # (the eval sets it; restored after the test)
    model, tasks = tmp_path / "model", tmp_path / "bigbench"
    shutil.copytree(checkpoint, model)
    (model / "t2t_mtl_meta.json").write_text(json.dumps({"config": {"data": {"data_dir": str(tmp_path / "gone")}}}))
    shutil.copytree(Path(bigbench_dir) / "anachronisms", tasks / "anachronisms")
    with task_registry.isolated_registry():
        assert cli_main(["eval", "--checkpoint", str(model), "--bigbench", str(tasks), "--max-examples", "2",
                         "--no-progress"]) == 0, capsys.readouterr().err
    assert "| bigbench_anachronisms |" in capsys.readouterr().out


def test_cli_eval_reads_hub_datasets_from_the_runs_data_dir(checkpoint, tmp_path, capsys, monkeypatch):
    # was: `t2t-mtl eval --checkpoint RUN --held-out` of a run trained with data.data_dir (the README's
    # --data-dir ../shared/data) went to the hub for its tasks' rows and failed offline, while it took the run's
    # tasks_dir, clusters and scoring; only a repeated --data-dir found them
    monkeypatch.setattr(task_registry.sources, "_data_dir", None)  # (the eval sets it; restored after the test)
    model = tmp_path / "model"
    shutil.copytree(checkpoint, model)
    (model / "t2t_mtl_meta.json").write_text(json.dumps({"config": {"data": {"data_dir": "data",
                                                                             "tasks_dir": "tasks"}}}))
    rows = tmp_path / "data" / "toy_hub" / "default"
    rows.mkdir(parents=True)
    (rows / "validation.jsonl").write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "hub_sentiment.yaml").write_text(
        "name: hub_sentiment\nmetrics: [accuracy]\nsplits: [validation]\nsource: {hf: toy_hub}\n"
        "templates:\n  - name: t\n    jinja: 'Positive? {{ text }} ||| {{ answer_choices[label] }}'\n"
        "    answer_choices: 'no ||| yes'\n")
    argv = ["eval", "--checkpoint", str(model), "--tasks", "hub_sentiment", "--no-progress"]
    with task_registry.isolated_registry():
        monkeypatch.chdir(tmp_path)  # where the run was trained
        assert cli_main(argv) == 0
        assert "| hub_sentiment | t | rank | " in capsys.readouterr().out
        monkeypatch.chdir(model)
        assert cli_main([*argv, "--tasks-dir", str(tmp_path / "tasks")]) == 2
        assert (f"error: the run's data.data_dir 'data' is not a folder here (a relative path, read from the current "
                f"directory {model}): run eval from where the run was trained, or pass --data-dir DIR"
                in capsys.readouterr().err)
        assert cli_main([*argv, "--tasks-dir", str(tmp_path / "tasks"), "--data-dir", str(tmp_path / "data")]) == 0


def test_cli_eval_on_the_held_out_procedural_cluster(checkpoint, tmp_path, capsys):
    task_registry.load_builtin_tasks()
    clusters = {task_registry.get_task(n).cluster for n in task_registry.get_mixture("procedural_held_out").flatten()}
    code = cli_main(["eval", "--checkpoint", checkpoint, "--held-out", "--held-out-clusters", ",".join(clusters),
                     "--max-examples", "6", "--out", str(tmp_path / "held_out"), "--no-progress"])
    assert code == 0
    report = read_report(tmp_path / "held_out")
    expected = sorted(task_registry.get_mixture("procedural_held_out").flatten())
    assert sorted(report.tasks()) == expected
    expected_templates = sum(len(task_registry.get_task(n).templates) for n in expected)
    assert len(report.results) == expected_templates
    assert all(r.score is not None and r.num_examples == 6 for r in report.results)
    assert summarize(report)["num_tasks"] == len(expected)
    # a misspelt cluster is refused, not silently left out of the report
    code = cli_main(["eval", "--checkpoint", checkpoint, "--held-out", "--held-out-clusters",
                     ",".join([*clusters, "comparsion"]), "--max-examples", "1", "--no-progress"])
    assert code == 2
    assert "no registered task is in cluster(s) ['comparsion']; did you mean 'comparison'?" in capsys.readouterr().err


def test_cli_eval_held_out_takes_the_clusters_the_checkpoints_run_held_out(checkpoint, data_file, tmp_path, capsys):
    # mutation testing: --held-out without --held-out-clusters taking the tasks flagged held_out instead of the run's
    # data.held_out_clusters passed every test, which named the clusters; toy_sentiment is in cluster toy, unflagged
    model = tmp_path / "model"
    shutil.copytree(checkpoint, model)
    argv = ["eval", "--checkpoint", str(model), "--held-out", "--max-examples", "2", "--no-progress"]
    with task_registry.isolated_registry():
        task_registry.register_task(toy_task(data_file))
        (model / "t2t_mtl_meta.json").write_text(json.dumps({"config": {"data": {"held_out_clusters": ["toy"]}}}))
        assert cli_main([*argv, "--out", str(tmp_path / "report")]) == 0
        assert read_report(tmp_path / "report").tasks() == ["toy_sentiment"]
        (model / "t2t_mtl_meta.json").write_text(json.dumps({"config": {"data": {"held_out_clusters": ["toyy"]}}}))
        capsys.readouterr()
        assert cli_main(argv) == 2
        assert capsys.readouterr().err.startswith("error: the checkpoint's data.held_out_clusters: no registered task "
                                                  "is in cluster(s) ['toyy']; did you mean 'toy'? ")


def _task_moe(model, task_names):
    torch.manual_seed(0)
    return convert_to_moe(model, {"num_experts": 4, "top_k": 2, "every": 1, "routing": "task",
                                  "task_names": task_names, "upcycle": False}).eval()


MOE_SETTINGS = dict(keep_predictions=True, max_examples=4, max_new_tokens=3, batch_size=4,
                    templates={"toy_sentiment": ["choices", "free"]})


@pytest.mark.parametrize("trained_on, task_id", [(["nli", "toy_sentiment"], 1), (["nli", "qa"], UNSEEN_TASK_ID)])
def test_task_routed_moe_is_evaluated_with_the_tasks_id(loaded, data_file, trained_on, task_id):
    """A held-in task runs with its training id, a held-out one with the unseen sentinel; the scores are
    those of rank classification / generation given these ids explicitly."""
    moe, tokenizer = _task_moe(loaded[0], trained_on), loaded[1]
    task = toy_task(data_file)
    seen: set = set()
    handles = [block.register_forward_pre_hook(lambda mod, args: seen.update(mod.task_ids.tolist()))
               for _, block in moe_blocks(moe)]
    try:
        report = evaluate_tasks(moe, tokenizer, [task], EvalSettings(**MOE_SETTINGS), progress=False)
    finally:
        for handle in handles:
            handle.remove()
    assert seen == {task_id}
    ranked, generated = report.results
    rows = task.load_rows("validation").select(range(4))
    examples = render_examples(task, task.templates[0], rows).examples
    want = score_choices(moe, tokenizer, [e.inputs for e in examples], [e.answer_choices for e in examples],
                         task_ids=[task_id] * 4)
    for got, row in zip([p["choice_scores"] for p in ranked.predictions], want):
        assert got == pytest.approx(row, abs=1e-5)
    inputs = [e.inputs for e in render_examples(task, task.templates[1], rows).examples]
    assert [p["prediction"] for p in generated.predictions] == generate_texts(moe, tokenizer, inputs,
                                                                              max_new_tokens=3, task_ids=[task_id] * 4)


@pytest.mark.parametrize("unseen, route", [
    ("mean", "experts routed by model.moe.unseen_task_routing 'mean' (the mean of the trained tasks' gate rows)"),
    ("qa", "experts routed by model.moe.unseen_task_routing 'qa' (the gate rows of task 'qa')")])
def test_the_report_names_the_tasks_served_by_the_unseen_task_route(loaded, data_file, tmp_path, unseen, route):
    # was: report.md and report.json gave a held-out task's scores with no word that its experts were those of
    # model.moe.unseen_task_routing, not of a task the model was trained on
    torch.manual_seed(0)
    moe = convert_to_moe(loaded[0], {"num_experts": 4, "top_k": 2, "every": 1, "routing": "task", "upcycle": False,
                                     "task_names": ["nli", "qa"], "unseen_task_routing": unseen}).eval()
    settings = EvalSettings(max_examples=2, templates={"toy_sentiment": ["choices"]})
    report = evaluate_tasks(moe, loaded[1], [toy_task(data_file)], settings, progress=False)
    assert report.unseen_tasks == {"toy_sentiment": route}
    write_report(report, tmp_path / "out", plots=False)
    assert read_report(tmp_path / "out").unseen_tasks == report.unseen_tasks  # report.json
    assert (f"Tasks the model was not trained on, served by the unseen-task route ({route}): toy_sentiment\n"
            in (tmp_path / "out" / "report.md").read_text())
    held_in = _task_moe(loaded[0], ["nli", "toy_sentiment"])  # (a task it was trained on: its own route)
    report = evaluate_tasks(held_in, loaded[1], [toy_task(data_file)], settings, progress=False)
    assert report.unseen_tasks == {} and "unseen-task route" not in to_markdown(report)


def test_cli_eval_of_a_task_routed_moe_on_a_held_out_task(loaded, data_file, tmp_path):
    moe, tokenizer = _task_moe(loaded[0], ["nli", "qa"]), loaded[1]
    moe.save_pretrained(tmp_path / "moe")
    tokenizer.save_pretrained(tmp_path / "moe")
    with task_registry.isolated_registry():
        task = task_registry.register_task(toy_task(data_file))
        assert cli_main(["eval", "--checkpoint", str(tmp_path / "moe"), "--tasks", "toy_sentiment",
                         "--max-examples", "4", "--max-new-tokens", "3", "--out", str(tmp_path / "out"),
                         "--no-progress"]) == 0
        expected = evaluate_tasks(moe, tokenizer, [task], EvalSettings(max_examples=4, max_new_tokens=3),
                                  progress=False)
    assert [r.score for r in read_report(tmp_path / "out").results] == [r.score for r in expected.results]


# -- sharded evaluation --------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sharded_worker(rank: int, world_size: int, port: int, checkpoint: str, data_file: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        model, tokenizer, _ = load_checkpoint(checkpoint)
        report = evaluate_tasks(model, tokenizer, [toy_task(data_file)],
                                EvalSettings(keep_predictions=True, max_new_tokens=4, batch_size=3), progress=False)
        with open(f"{out}.{rank}", "w", encoding="utf-8") as handle:
            json.dump(report.to_dict(), handle)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_process_sharded_evaluation_equals_one_process(checkpoint, data_file, toy_report, tmp_path):
    context = multiprocessing.get_context("spawn")
    port = _free_port()
    out = str(tmp_path / "sharded.json")
    processes = [context.Process(target=_sharded_worker, args=(rank, 2, port, checkpoint, data_file, out))
                 for rank in range(2)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=240)
        assert p.exitcode == 0
    reports = [EvalReport.from_dict(json.loads(open(f"{out}.{rank}").read())) for rank in range(2)]
    assert reports[0].to_dict() == reports[1].to_dict()  # every rank holds the gathered result
    for sharded, single in zip(reports[0].results, toy_report.results):
        assert (sharded.template, sharded.num_examples, sharded.num_skipped) == \
            (single.template, single.num_examples, single.num_skipped)
        assert [p["prediction"] for p in sharded.predictions] == [p["prediction"] for p in single.predictions]
        flat = lambda metrics: {(m, k): v for m, values in metrics.items() for k, v in values.items()}  # noqa: E731
        assert flat(sharded.metrics) == pytest.approx(flat(single.metrics))
        assert sharded.score == pytest.approx(single.score)
        for a, b in zip(sharded.predictions, single.predictions):
            assert a.get("choice_scores", []) == pytest.approx(b.get("choice_scores", []), abs=1e-5)


def _eval_rank_worker(rank: int, port: int, argv: list, out: str) -> None:
    """`t2t-mtl eval argv` as rank `rank` of 2 (torchrun's variables); writes its exit code, whether a process group is
    left joined, and its stderr."""
    import contextlib
    import io

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli_main(argv)
    Path(f"{out}.{rank}").write_text(json.dumps([code, torch.distributed.is_initialized(), err.getvalue()]))


@pytest.mark.slow
@pytest.mark.parametrize("refused, message", [
    (["--max-examples", "0"], "error: --max-examples must be at least 1"),  # refused before anything
    (["--checkpoint", "/no/such/t2t-checkpoint"], "'/no/such/t2t-checkpoint' does not exist"),  # its node lacks it
])
def test_a_rank_refused_before_the_evaluation_stops_the_other_ranks_at_once(checkpoint, tmp_path, refused, message):
    # was: the other ranks waited for it in the rendezvous for torch's 30-minute timeout (refused before joining), or
    # went on to evaluate and died in the first gather with a traceback (refused after joining)
    from engine_helpers import forked_ranks, free_port

    base = ["eval", "--checkpoint", checkpoint, "--tasks", "parity", "--max-examples", "2", "--max-new-tokens", "2",
            "--no-progress"]
    out = str(tmp_path / "rank")
    port = free_port()  # rank 1's own value of an option comes last, and wins
    codes = forked_ranks(_eval_rank_worker, [(rank, port, base + refused * rank, out) for rank in range(2)],
                         timeout=150)
    assert codes == [0, 0]  # (a rank still waiting after 150 s is killed: -9)
    (code0, joined0, err0), (code1, joined1, err1) = [json.loads(Path(f"{out}.{rank}").read_text()) for rank in (0, 1)]
    assert (code0, code1, joined0, joined1) == (2, 2, False, False), (err0, err1)
    assert message in err1 and "stopped before" not in err1
    assert "error: rank 1 of 2 stopped before the evaluation began (see its error" in err0 and "Traceback" not in err0


def _eval_rank_bad_wait_timeout_worker(rank: int, port: int, argv: list, out: str) -> None:
    """`_eval_rank_worker`, where rank 1 alone has a T2T_MTL_WAIT_TIMEOUT it refuses (one host's ~/.deepspeed_env)."""
    if rank == 1:
        os.environ["T2T_MTL_WAIT_TIMEOUT"] = "2h"
    _eval_rank_worker(rank, port, argv, out)


@pytest.mark.slow
def test_a_rank_refusing_its_own_wait_timeout_stops_the_other_ranks_at_once(checkpoint, tmp_path):
    # was: its join to tell the others was refused for the same variable, and they waited in the rendezvous for it
    # until the group's timeout (DEEPSPEED_TIMEOUT, 10 minutes)
    from engine_helpers import forked_ranks, free_port

    argv = ["eval", "--checkpoint", checkpoint, "--tasks", "parity", "--max-examples", "2", "--no-progress"]
    out, port = str(tmp_path / "rank"), free_port()
    codes = forked_ranks(_eval_rank_bad_wait_timeout_worker, [(rank, port, argv, out) for rank in range(2)],
                         timeout=150)
    assert codes == [0, 0]  # (a rank still waiting after 150 s is killed: -9)
    (code0, joined0, err0), (code1, joined1, err1) = [json.loads(Path(f"{out}.{rank}").read_text()) for rank in (0, 1)]
    assert (code0, code1, joined0, joined1) == (2, 2, False, False), (err0, err1)
    assert "error: environment variable T2T_MTL_WAIT_TIMEOUT must be a whole number of minutes" in err1, err1
    assert "error: rank 1 of 2 stopped before the evaluation began (see its error" in err0 and "Traceback" not in err0


def _eval_rank_gone_at_start_worker(rank: int, port: int, argv: list, out: str) -> None:
    """`_eval_rank_worker`, where rank 1 exits (code 3) right after joining, before the start's check."""
    if rank == 1:
        from t2t_mtl.engine import distributed

        distributed.refuse_failed_start = lambda *args, **kwargs: os._exit(3)
    _eval_rank_worker(rank, port, argv, out)


@pytest.mark.slow
def test_a_rank_left_alone_in_the_evaluation_s_start_check_says_where_it_was_in_one_line(checkpoint, tmp_path):
    # was: gloo's "Connection closed by peer" ended rank 0's gather, which eval printed as a traceback (train: one line)
    from engine_helpers import forked_ranks, free_port

    argv = ["eval", "--checkpoint", checkpoint, "--tasks", "parity", "--max-examples", "2", "--no-progress"]
    out, port = str(tmp_path / "rank"), free_port()
    codes = forked_ranks(_eval_rank_gone_at_start_worker, [(rank, port, argv, out) for rank in range(2)], timeout=150)
    assert codes == [0, 3]  # (rank 0 still waiting after 150 s is killed: -9; one ending on a traceback exits 1)
    code, joined, err = json.loads(Path(f"{out}.0").read_text())
    assert (code, joined) == (1, False), err
    assert err.startswith("error: rank 0 of 2 was at 'ranks stopped before joining checked' when the other ranks were "
                          "lost (") and "Traceback" not in err and err.count("\n") == 1, err


def _eval_rank_gone_at_a_template_worker(rank: int, port: int, argv: list, out: str) -> None:
    """`_eval_rank_worker`, where rank 1 exits (code 3) in the evaluation, at its first template's gather, without
    telling (as a rank killed there would)."""
    if rank == 1:
        from t2t_mtl.evaluation.rank_gathers import RankGathers

        RankGathers.gather = lambda self, local, step: os._exit(3)
    _eval_rank_worker(rank, port, argv, out)


@pytest.mark.slow
def test_a_rank_left_alone_in_an_evaluation_s_gather_names_the_template_in_one_line(checkpoint, tmp_path):
    # was: gloo's error (its words vary by run: 'Connection closed by peer', '... reset by peer') ended rank 0's gather
    # of the template as a traceback naming neither the template nor the rank
    from engine_helpers import forked_ranks, free_port

    argv = ["eval", "--checkpoint", checkpoint, "--tasks", "parity", "--template", "t5_prefix", "--max-examples", "2",
            "--no-progress"]
    out, port = str(tmp_path / "rank"), free_port()
    codes = forked_ranks(_eval_rank_gone_at_a_template_worker, [(rank, port, argv, out) for rank in range(2)],
                         timeout=150)
    assert codes == [0, 3]  # (rank 0 still waiting after 150 s is killed: -9; one ending on a traceback exits 1)
    code, joined, err = json.loads(Path(f"{out}.0").read_text())
    assert (code, joined) == (1, False), err
    assert err.startswith("error: rank 0 of 2 was at the evaluation's gather (task 'parity' template 't5_prefix') when "
                          "the other ranks were lost (") and "Traceback" not in err and err.count("\n") == 1, err


@pytest.mark.parametrize("raised", ["apart", "lost"])
def test_ranks_met_apart_or_a_rank_lost_in_the_evaluation_end_it_in_one_line(checkpoint, monkeypatch, capsys, raised):
    # the evaluation's own gathers raise as the start check's does: ranks at different phases, or one gone
    from t2t_mtl.engine.rank_phases import CollectiveBrokenError, RanksAtDifferentPhasesError, mismatch_message

    error = RanksAtDifferentPhasesError(mismatch_message(["the evaluation's results gathered", "a rank's scores"])) \
        if raised == "apart" else CollectiveBrokenError("rank 0 of 2 was at 'the evaluation's results gathered' when "
                                                        "the other ranks were lost")

    def evaluate_tasks(*args, **kwargs):
        raise error

    monkeypatch.setattr("t2t_mtl.evaluation.evaluate_tasks", evaluate_tasks)
    assert cli_main(["eval", "--checkpoint", checkpoint, "--tasks", "parity", "--max-examples", "2",
                     "--no-progress"]) == 1
    assert capsys.readouterr().err == f"error: {error}\n"  # (one line: no traceback)


# A task module that registers, on each rank, a task reading that rank's rows file and scored by a metric that fails on
# rank 1 where the settings beside the module say so
_RANK_TASK_MODULE = '''
import json
import os
from pathlib import Path

import task_registry
from t2t_mtl.evaluation.metrics import register_metric

RANK = os.environ["RANK"]
SETTINGS = json.loads(Path(__file__).with_suffix(".json").read_text())


def hits(predictions, references):
    if RANK == "1" and SETTINGS["fail_metric"]:
        raise ValueError("rank 1's metric module cannot score")
    return {"hits": sum(p in r for p, r in zip(predictions, references)) / len(predictions)}


register_metric("hits", hits)
source = task_registry.LocalFileSource({"validation": SETTINGS["rows"].format(rank=RANK)})
task_registry.register_task(task_registry.Task("ranked_data", source, [
    task_registry.Template("one", "{{ text }} ||| {{ answer_choices[label] }}", answer_choices="no ||| yes"),
    task_registry.Template("two", "Is it? {{ text }} ||| {{ answer_choices[label] }}", answer_choices="no ||| yes"),
], metrics=("hits",), splits=("validation",)))
'''


@pytest.mark.slow
@pytest.mark.parametrize("failure, message", [
    ("data", "error: task 'ranked_data': local files source: split 'validation' expects the file"),
    ("metric",
     "error: task 'ranked_data' template 'one': metric 'hits' (function 'hits') failed: ValueError: rank 1's"),
])
def test_a_rank_failing_during_the_evaluation_stops_the_other_ranks_naming_it(checkpoint, data_file, tmp_path,
                                                                                failure, message):
    # was: rank 1 exited with its error while rank 0 died in its next gather with gloo's traceback (its data), or
    # finished and printed the report (exit 0) as if every rank had scored it (its metric, after the last gather)
    from engine_helpers import forked_ranks, free_port

    for rank in (0, 1) if failure == "metric" else (0,):  # rank 1 lacks its rows file where its data fails
        shutil.copy(data_file, tmp_path / f"rows.{rank}.jsonl")
    module = tmp_path / "ranked_tasks.py"
    module.write_text(_RANK_TASK_MODULE, encoding="utf-8")
    module.with_suffix(".json").write_text(json.dumps({"rows": str(tmp_path / "rows.{rank}.jsonl"),
                                                       "fail_metric": failure == "metric"}))
    argv = ["eval", "--checkpoint", checkpoint, "--task-module", str(module), "--tasks", "ranked_data",
            "--max-examples", "4", "--no-progress"]
    out, port = str(tmp_path / "rank"), free_port()
    codes = forked_ranks(_eval_rank_worker, [(rank, port, argv, out) for rank in range(2)], timeout=150)
    assert codes == [0, 0]  # (a rank still waiting after 150 s is killed: -9; one dying on a traceback exits 1)
    (code0, joined0, err0), (code1, joined1, err1) = [json.loads(Path(f"{out}.{r}").read_text()) for r in (0, 1)]
    assert (code0, code1, joined0, joined1) == (2, 2, False, False), (err0, err1)
    assert message in err1 and "Traceback" not in err1
    assert "error: rank 1 of 2 failed during the evaluation (see its error" in err0 and "Traceback" not in err0


# -- gathers that carry a rank's failure (the other ranks' parts given, not gathered) ------------------------------
def _gathers(monkeypatch, rank, world_size, others=None, sent=None):
    """Rank `rank`'s `RankGathers`, whose gathers record what it sends in `sent` and return `others` (each rank's part,
    None where this rank's own goes)."""
    from t2t_mtl.evaluation.rank_gathers import RankGathers

    gathers = RankGathers(rank, world_size)

    def parts(local):
        if sent is not None:
            sent.append(local)
        return [local if part is None else part for part in others or [None] * world_size]

    monkeypatch.setattr(gathers, "_parts", parts)
    return gathers


def _failure_mark(monkeypatch, rank, world_size):
    """What rank `rank` sends to the others' gather when its own step fails."""
    sent = []
    with pytest.raises(KeyError, match="its own"):
        with _gathers(monkeypatch, rank, world_size, sent=sent).telling_failures():
            raise KeyError("its own")
    return sent[0]


def test_a_gather_puts_the_ranks_parts_in_rank_order(monkeypatch):
    gathers = _gathers(monkeypatch, 1, 3, others=[("t", ["a", "b"]), None, ("t", [])])
    assert gathers.gather(["c"], "t") == ["a", "b", "c"]


def test_a_gather_that_meets_failure_marks_names_the_failed_ranks(monkeypatch):
    from t2t_mtl.evaluation import RankFailedError

    marks = [_failure_mark(monkeypatch, rank, 3) for rank in (1, 2)]
    with pytest.raises(RankFailedError, match=r"^ranks 1, 2 of 3 failed during the evaluation \(see their error\)"):
        _gathers(monkeypatch, 0, 3, others=[None] + marks).gather(["x"], "t")
    with pytest.raises(RankFailedError, match=r"^rank 2 of 3 failed during the evaluation \(see its error\)"):
        _gathers(monkeypatch, 0, 3, others=[None, ("t", []), marks[1]]).finish()


def test_ranks_at_different_steps_stop_together_naming_each_ones_step(monkeypatch):
    from t2t_mtl.evaluation import RankFailedError, RanksStoppedError

    gathers = _gathers(monkeypatch, 0, 2, others=[None, ("the end of the evaluation", [])])
    with pytest.raises(RanksStoppedError) as raised:
        gathers.gather([(0, "yes", 1, None)], "task 'a' template 'b'")
    assert not isinstance(raised.value, RankFailedError)
    assert str(raised.value) == ("the ranks reached different steps of the evaluation (rank 0: task 'a' template 'b'; "
                                 "rank 1: the end of the evaluation); every rank must evaluate the same tasks and "
                                 "templates")


def test_only_a_rank_s_own_failure_is_told_and_its_own_error_is_raised(monkeypatch):
    from t2t_mtl.evaluation import RanksStoppedError

    sent = []
    with pytest.raises(RanksStoppedError):  # every rank raises it at the same gather: nobody waits for a telling
        with _gathers(monkeypatch, 0, 2, sent=sent).telling_failures():
            raise RanksStoppedError("seen by every rank")
    assert sent == []
    gathers = _gathers(monkeypatch, 0, 2)

    def others_gone(local):
        raise RuntimeError("Connection closed by peer")

    monkeypatch.setattr(gathers, "_parts", others_gone)
    with pytest.raises(ValueError, match="this rank's data"):  # the others gone: its own error all the same
        with gathers.telling_failures():
            raise ValueError("this rank's data")
    with _gathers(monkeypatch, 0, 1, sent=sent).telling_failures():  # one process: nobody to tell
        pass
    with pytest.raises(ValueError):
        with _gathers(monkeypatch, 0, 1, sent=sent).telling_failures():
            raise ValueError("alone")
    assert sent == []


def test_a_gather_the_other_ranks_left_names_its_step_and_is_not_told_to_them(monkeypatch):
    # was: the gather's RuntimeError from gloo, naming no step, which telling_failures then tried to tell in a gather
    # of the same broken group (waiting out the group's timeout where a rank hung alive)
    from t2t_mtl.engine.rank_phases import CollectiveBrokenError

    lost, sent = RuntimeError("gloo's words, whatever they are"), []
    gathers = _gathers(monkeypatch, 1, 3)

    def others_gone(local):
        sent.append(local)
        raise lost

    monkeypatch.setattr(gathers, "_parts", others_gone)
    with pytest.raises(CollectiveBrokenError) as raised:
        with gathers.telling_failures():
            gathers.gather(["x"], "task 'a' template 'b'")
    assert str(raised.value) == ("rank 1 of 3 was at the evaluation's gather (task 'a' template 'b') when the other "
                                 "ranks were lost (gloo's words, whatever they are): another rank stopped (see its "
                                 "error) or waits in another collective")
    assert raised.value.__cause__ is lost and sent == [("task 'a' template 'b'", ["x"])]  # (one gather: none told)


def test_a_sharded_evaluation_warns_of_a_template_s_examples_on_rank_0_alone(tmp_path, monkeypatch, caplog):
    # every rank counts a template's whole examples (inputs past the input limit, answers past max_new_tokens) and
    # logged the same warnings: `deepspeed --num_gpus 2 ... train` printed each of its evaluation's twice
    template = task_registry.Template("qa", "{{ question }} ||| {{ answers[0] }}")
    task = _local_task(tmp_path, "long_qa", QA_ROWS[:1], [template], metrics=("exact_match",))  # rank 1 scores none
    _answer_with(monkeypatch, lambda text: "Paris")
    settings = EvalSettings(max_input_length=2, max_new_tokens=3)  # an input of 3 words, an answer of 4
    reports, warned = _as_rank_0_then_1(monkeypatch, caplog, task, settings)
    first, second = (report.results[0] for report in reports)
    assert (first.num_truncated, first.num_long_answers) == (second.num_truncated, second.num_long_answers) == (1, 1)
    assert [message.split(": ", 1)[1].split(" (")[0].split(";")[0] for message in warned[0]] == [
        "1 of 1 examples have no gold answer that fits max_new_tokens=3 tokens, where generation stops, so none can "
        "be written whole",
        "inputs longer than max_input_length=2 tokens are truncated"]  # (the task's templates together, last)
    assert warned[1] == []


def test_a_sharded_evaluation_warns_of_the_rows_the_registry_drops_on_rank_0_alone(tmp_path, monkeypatch, caplog):
    # every rank loads the whole split, and the registry's warning of the rows a task's filter drops was logged by each
    template = task_registry.Template("qa", "{{ question }} ||| {{ answers[0] }}")
    task = _local_task(tmp_path, "filtered_qa", QA_ROWS, [template], metrics=("exact_match",))
    task.preprocessors = [task_registry.Filter("answers | length == 1")]  # (one row left: rank 1 scores none)
    _answer_with(monkeypatch, lambda text: "Paris")
    reports, warned = _as_rank_0_then_1(monkeypatch, caplog, task, EvalSettings())
    assert [report.results[0].score for report in reports] == [100.0, 100.0]
    assert warned == [["task 'filtered_qa' split 'validation': filter(answers | length == 1) dropped 2 of 3 rows"], []]


def _as_rank_0_then_1(monkeypatch, caplog, task, settings):
    """`task` evaluated as rank 0, then as rank 1, of 2 (rank 1's gathers given rank 0's parts): each rank's report,
    and the warnings each logged."""
    from t2t_mtl.evaluation.rank_gathers import RankGathers

    sent = []  # rank 0's part of each gather, in order: what rank 1's gathers then get from it

    def rank_0_parts(self, local):
        sent.append(local)
        return [local, (local[0], [])]

    reports, warned = [], []
    for rank, parts in ((0, rank_0_parts), (1, lambda self, local: [sent.pop(0), local])):
        monkeypatch.setattr(RankGathers, "_parts", parts)
        caplog.clear()
        with caplog.at_level("WARNING"):
            reports.append(evaluate_tasks(None, _NoTaskTokens(), [task], settings, rank=rank, world_size=2,
                                          progress=False))
        warned.append([record.getMessage() for record in caplog.records])
    assert sent == []  # rank 1 met every gather rank 0 did
    return reports, warned


def test_torchrun_evaluation_joins_a_gloo_group_also_where_cuda_is_available(monkeypatch):
    # `t2t-mtl eval` keeps the model on the CPU; the NCCL group chosen whenever CUDA was available gathered every
    # rank's outputs on its current device, cuda:0 for all ranks (never set), which NCCL refuses
    from t2t_mtl.evaluation import runner

    backends = []
    for key, value in (("WORLD_SIZE", "2"), ("RANK", "1"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "127.0.0.1"),
                       ("MASTER_PORT", "29500")):
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend=None, **kw: backends.append(backend))
    monkeypatch.setattr(torch.distributed, "new_group", lambda backend=None, **kw: backends.append(backend))
    monkeypatch.setattr("t2t_mtl.engine.distributed._waiting_group", None)
    runner.init_distributed_from_env()
    assert backends == ["gloo", "gloo"]  # the group, and its waiting group


# -- metric semantics in the runner (fake models: the numbers follow from the predictions alone) ----------------
class _NoTaskTokens:
    def get_vocab(self):
        return {}

    def __call__(self, texts, **kwargs):
        return {"input_ids": [text.split() for text in texts]}


def _local_task(tmp_path, name, rows, templates, metrics=()):
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return task_registry.Task(name, task_registry.LocalFileSource({"validation": str(path)}), templates,
                              metrics=metrics, splits=("validation",))


def _answer_with(monkeypatch, answer):
    """Generation answers `answer(input text)`; rank classification picks the first choice."""
    from t2t_mtl.evaluation import runner

    monkeypatch.setattr(runner, "generate_texts", lambda model, tok, inputs, **kw: [answer(x) for x in inputs])
    monkeypatch.setattr(runner, "score_choices", lambda model, tok, inputs, choices, **kw:
                        [[0.0] + [-1.0] * (len(c) - 1) for c in choices])


QA_ROWS = [{"question": "language of Jamaica?", "answers": ["Jamaican Creole English Language", "Jamaican English"]},
           {"question": "capital of France?", "answers": ["Paris"]},
           {"question": "who wrote Hamlet?", "answers": ["Shakespeare", "William Shakespeare"]}]


def test_a_prediction_matching_any_listed_gold_answer_scores(tmp_path, monkeypatch):
    templates = [task_registry.Template("all", "{{ question }} ||| {{ answers[0] }}",
                                        references="{{ answers | join(' ||| ') }}"),
                 task_registry.Template("first", "{{ question }} ||| {{ answers[0] }}")]
    task = _local_task(tmp_path, "qa", QA_ROWS, templates, metrics=("squad_exact_match", "exact_match"))
    last = {r["question"]: r["answers"][-1] for r in QA_ROWS}
    _answer_with(monkeypatch, lambda text: last[text].lower() + ".")  # the last answer, lower-cased, with a "."
    report = evaluate_tasks(None, _NoTaskTokens(), [task], EvalSettings(keep_predictions=True), progress=False)
    every, first_only = report.results
    # SQuAD normalisation drops case and punctuation; every listed answer counts: 3 of 3 (by hand)
    assert (every.primary_metric, every.primary_key, every.score) == ("squad_exact_match", "exact_match", 100.0)
    assert every.metrics["exact_match"]["exact_match"] == 0.0  # strict exact match: case and "." differ
    assert every.predictions[0]["references"] == QA_ROWS[0]["answers"]
    # without references only answers[0] is gold: only Paris (a one-answer row) is right
    assert first_only.score == pytest.approx(100 / 3) and "references" not in first_only.predictions[0]
    assert every.majority_baseline == pytest.approx(100 / 3)  # "jamaican creole ..." right once of 3


def test_rows_that_render_an_empty_input_are_skipped_and_counted_as_in_training_data(tmp_path):
    # was: scored (training data, Task.to_dataset, drops them); 3 rows: the second has no question
    rows = [{"question": "capital of France?", "answer": "Paris"}, {"question": "", "answer": "none"},
            {"question": "who wrote Hamlet?", "answer": "Shakespeare"}]
    template = task_registry.Template("qa", "{{ question }} ||| {{ answer }}")
    task = _local_task(tmp_path, "qa_gaps", rows, [template], metrics=("exact_match",))
    rendered = render_examples(task, template, task.load_rows("validation"))
    assert [(e.row_index, e.targets) for e in rendered.examples] == [(0, "Paris"), (2, "Shakespeare")]
    assert rendered.skipped == 1 and rendered.errors == 0
    assert [r["targets"] for r in task.to_dataset("validation")] == ["Paris", "Shakespeare"]
    demonstrations = Demonstrations(task, template, task.load_rows("validation"), same_split=False)
    assert sorted(demonstrations.draw(0, 5)) == ["capital of France?\nParis", "who wrote Hamlet?\nShakespeare"]


def test_metrics_that_cannot_score_a_template_error_when_declared_and_are_skipped_from_metadata(tmp_path, monkeypatch):
    from t2t_mtl.evaluation import EvaluationError

    rows = [{"review": f"review {i}", "stars": 1 + i % 5} for i in range(6)]
    words = "{{ ['bad', 'poor', 'ok', 'good', 'great'][stars - 1] }}"
    text_target = task_registry.Template("words", "Rate: {{ review }} ||| " + words,
                                         metadata={"metrics": ["Accuracy", "Spearman Correlation", "f1"]})
    numeric = task_registry.Template("stars", "Stars: {{ review }} ||| {{ stars }}",
                                     metadata={"metrics": ["Spearman Correlation", "Accuracy"]})
    only_unusable = task_registry.Template("only", "Rate: {{ review }} ||| " + words,
                                           metadata={"metrics": ["Pearson Correlation"]})
    called = []
    _answer_with(monkeypatch, lambda text: called.append(text) or "3")
    declared = _local_task(tmp_path, "declared", rows, [text_target], metrics=("spearmanr",))
    with pytest.raises(EvaluationError, match="task 'declared' template 'words': metric 'spearmanr' cannot score it: "
                                              "the target 'bad' \\(row 0\\) is not a number"):
        evaluate_tasks(None, _NoTaskTokens(), [declared], EvalSettings(), progress=False)
    declared_f1 = _local_task(tmp_path, "declared_f1", rows, [text_target], metrics=("accuracy", "f1"))
    with pytest.raises(EvaluationError, match="template 'words': metric 'f1'.*declare `answer_choices`"):
        evaluate_tasks(None, _NoTaskTokens(), [declared_f1], EvalSettings(), progress=False)
    assert called == []  # refused before the model ran

    hinted = _local_task(tmp_path, "hinted", rows, [text_target, numeric, only_unusable])
    report = evaluate_tasks(None, _NoTaskTokens(), [hinted], EvalSettings(), progress=False)
    words_result, stars_result, only_result = report.results
    assert list(words_result.metrics) == ["accuracy"] and words_result.primary_metric == "accuracy"
    assert set(words_result.skipped_metrics) == {"spearmanr", "f1"}
    assert "'bad' (row 0) is not a number" in words_result.skipped_metrics["spearmanr"]
    assert stars_result.skipped_metrics == {} and stars_result.primary_metric == "spearmanr"
    assert stars_result.score == 0.0 and stars_result.majority_baseline is None  # constant "3": no correlation
    assert only_result.metrics.keys() == {"exact_match"} and "pearsonr" in only_result.skipped_metrics
    markdown = to_markdown(report)
    assert "- hinted / words: spearmanr: the target 'bad' (row 0) is not a number" in markdown
    assert "- hinted / words: f1: binary F1 needs answer choices" in markdown


def test_reports_never_hold_nan(tmp_path):
    nan = float("nan")
    report = EvalReport("m", [_result("t1", "x", nan, nan), _result("t1", "y", 40.0, 10.0), _result("t2", "x", nan)])
    report.results[0].metrics = {"pearsonr": {"pearsonr": nan}}
    summary = summarize(report)
    assert summary["tasks"]["t1"].median == 40.0 and summary["tasks"]["t1"].majority_baseline == 10.0
    assert summary["unscored_tasks"] == ["t2"] and summary["decascore"] == 40.0
    paths = write_report(report, tmp_path / "out")

    def refuse(constant):
        raise AssertionError(f"{constant} in report.json")

    data = json.loads(paths["json"].read_text(), parse_constant=refuse)
    assert data["results"][0]["score"] is None and data["results"][0]["metrics"]["pearsonr"]["pearsonr"] is None
    assert "nan" not in paths["markdown"].read_text().lower()


MULTIRC_ROWS = [{"idx": {"question": q, "answer": a}, "answer": text, "label": label}
                for q, a, text, label in [(0, 0, "a", 1), (0, 1, "b", 0), (0, 2, "c", 1),
                                          (1, 0, "d", 0), (1, 1, "e", 0),
                                          (2, 0, "f", 1)]]


def _mini_multirc(tmp_path) -> tuple:
    """(its `verify` template, a MultiRC-like task over MULTIRC_ROWS grouped by question)."""
    template = task_registry.Template("verify", "Is {{ answer }} right? ||| {{ answer_choices[label] }}",
                                      answer_choices="no ||| yes")
    path = tmp_path / "multirc.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in MULTIRC_ROWS), encoding="utf-8")
    return template, task_registry.Task("mini_multirc", task_registry.LocalFileSource({"validation": str(path)}),
                                        [template], metrics=("group_exact_match", "accuracy"),
                                        splits=("validation",), group_by="idx.question")


def test_group_exact_match_counts_a_question_only_when_all_its_answers_are_right(tmp_path, monkeypatch):
    from t2t_mtl.evaluation import EvaluationError

    template, task = _mini_multirc(tmp_path)
    said = {"a": "yes", "b": "no", "c": "no", "d": "no", "e": "no", "f": "yes"}  # wrong only on "c" (question 0)
    _answer_with(monkeypatch, lambda text: said[text.split()[1]])
    report = evaluate_tasks(None, _NoTaskTokens(), [task], EvalSettings(keep_predictions=True, scoring="generate"),
                            progress=False)
    result = report.results[0]
    # by hand: questions 1 and 2 have every answer right, question 0 does not; 5 of 6 answers are right
    assert (result.primary_metric, result.score) == ("group_exact_match", pytest.approx(200 / 3))
    assert result.metrics["accuracy"]["accuracy"] == pytest.approx(5 / 6)
    assert [p["group"] for p in result.predictions] == ["0", "0", "0", "1", "1", "2"]
    # always "no": right on question 1 only
    assert result.majority_baseline == pytest.approx(100 / 3)

    ungrouped = _local_task(tmp_path, "ungrouped", MULTIRC_ROWS, [template], metrics=("group_exact_match",))
    with pytest.raises(EvaluationError, match="template 'verify': metric 'group_exact_match' cannot score it: .*"
                                              "no `group_by`"):
        evaluate_tasks(None, _NoTaskTokens(), [ungrouped], EvalSettings(scoring="generate"), progress=False)


def test_group_exact_match_leaves_out_questions_with_answers_that_are_not_scored(tmp_path, monkeypatch):
    # a question cut by max_examples, or one of whose answers the template skipped, was scored on the answers
    # present: question 1 counted as fully right on "d" alone although its answer "e" is wrong
    template = task_registry.Template("verify", "Is {{ answer }} right? ||| {{ answer_choices[label] }}",
                                      answer_choices="no ||| yes")
    skipping = task_registry.Template("skips_e", "{% if answer != 'e' %}Is {{ answer }} right? ||| "
                                                 "{{ answer_choices[label] }}{% endif %}", answer_choices="no ||| yes")
    path = tmp_path / "multirc.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in MULTIRC_ROWS), encoding="utf-8")
    task = task_registry.Task("mini_multirc", task_registry.LocalFileSource({"validation": str(path)}),
                              [template, skipping], metrics=("group_exact_match", "accuracy"),
                              splits=("validation",), group_by="idx.question")
    said = {"a": "yes", "b": "no", "c": "no", "d": "no", "e": "yes", "f": "yes"}  # wrong on "c" and "e"
    _answer_with(monkeypatch, lambda text: said[text.split()[1]])
    cut = evaluate_tasks(None, _NoTaskTokens(), [task], EvalSettings(scoring="generate", max_examples=4),
                         progress=False)
    verify, skips_e = cut.results
    # rows a-d: question 0 is wrong, question 1 has only "d" of its answers d, e: left out
    assert (verify.score, verify.incomplete_groups) == (0.0, 1)
    assert verify.metrics["accuracy"]["accuracy"] == pytest.approx(3 / 4)  # per-answer metrics keep every row
    assert skips_e.incomplete_groups == 1 and skips_e.score == 0.0
    full = evaluate_tasks(None, _NoTaskTokens(), [task], EvalSettings(scoring="generate"), progress=False)
    verify, skips_e = full.results
    assert (verify.score, verify.incomplete_groups) == (pytest.approx(100 / 3), 0)  # question 2 only
    assert (skips_e.score, skips_e.incomplete_groups, skips_e.num_skipped) == (50.0, 1, 1)  # questions 0, 2
    assert "- mini_multirc / skips_e: 1" in to_markdown(full)


def test_a_template_with_no_complete_group_is_unscored_not_scored_zero(tmp_path, monkeypatch):
    # --max-examples 2 keeps two of question 0's three answers: no question is left for group_exact_match, which
    # was computed over no group at all and reported 0.0 (majority 0.0), averaged into the task median
    _, task = _mini_multirc(tmp_path)
    _answer_with(monkeypatch, lambda text: "yes")
    report = evaluate_tasks(None, _NoTaskTokens(), [task], EvalSettings(scoring="generate", max_examples=2),
                            progress=False)
    result = report.results[0]
    assert (result.score, result.majority_baseline, result.incomplete_groups) == (None, None, 1)
    assert "group_exact_match" not in result.metrics
    assert result.metrics["accuracy"]["accuracy"] == 0.5  # per-answer metrics keep both rows
    assert summarize(report)["unscored_tasks"] == ["mini_multirc"]


def test_inputs_longer_than_the_input_limit_are_counted_and_reported(loaded, data_file, tmp_path, caplog):
    # inputs past max_input_length were cut silently (the training data counts and logs its truncated rows)
    model, tokenizer = loaded
    task = toy_task(data_file)
    inputs = [f"Is this review positive? {row['text']}" for row in ROWS]
    lengths = [len(ids) for ids in tokenizer(inputs)["input_ids"]]
    limit = min(lengths)
    expected = sum(length > limit for length in lengths)
    assert 0 < expected < len(ROWS)
    settings = EvalSettings(max_input_length=limit, templates={"toy_sentiment": ["choices"]})
    with caplog.at_level("WARNING"):
        report = evaluate_tasks(model, tokenizer, [task], settings, progress=False)
    result = report.results[0]
    assert result.num_truncated == expected
    assert (f"inputs longer than max_input_length={limit} tokens are truncated (the model sees only their beginning) "
            f"in 1 template: 'choices' {expected} of {len(ROWS)};") in caplog.text
    assert f"- toy_sentiment / choices: {expected} of {len(ROWS)}" in to_markdown(report)
    data = json.loads(write_report(report, tmp_path / "out", plots=False)["json"].read_text())
    assert data["results"][0]["num_truncated"] == expected
    untouched = evaluate_tasks(model, tokenizer, [task], EvalSettings(templates={"toy_sentiment": ["choices"]}),
                               progress=False)
    assert untouched.results[0].num_truncated == 0 and "truncated" not in to_markdown(untouched)


def _task_token_model(t5_tokenizer_dir):
    """(a tiny TE⊕ENC T5, a private copy of the T5 tokenizer with the toy task's token added)."""
    from t2t_mtl.analysis.task_embeddings import TaskTokens, resize_for_task_tokens

    tokenizer = load_tokenizer(t5_tokenizer_dir)  # a private copy: a task token is added to it
    TaskTokens(tokenizer, ["toy_sentiment"])
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=32, d_model=16, d_ff=32, d_kv=8, num_heads=2, num_layers=1,
                                                pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)).eval()
    resize_for_task_tokens(model, tokenizer)
    return model, tokenizer


def test_input_limit_warnings_of_a_task_token_model_state_the_configured_limit(data_file, t5_tokenizer_dir, caplog):
    # was: a TE⊕ENC model's warnings said max_input_length=LIMIT+1, the limit with the task token that comes on top
    model, tokenizer = _task_token_model(t5_tokenizer_dir)
    inputs = [f"Is this review positive? {row['text']}" for row in ROWS]
    lengths = [len(ids) for ids in tokenizer(inputs)["input_ids"]]  # without the token, which comes on top
    limit = min(lengths)
    expected = sum(length > limit for length in lengths)
    assert 0 < expected < len(ROWS)
    for shots in (0, 2):  # with 2 shots no demonstration fits either: every input gets fewer
        caplog.clear()
        settings = EvalSettings(max_input_length=limit, num_shots=shots, templates={"toy_sentiment": ["choices"]})
        with caplog.at_level("WARNING"):
            result = evaluate_tasks(model, tokenizer, [toy_task(data_file)], settings, progress=False).results[0]
        assert result.num_truncated == expected and result.num_fewer_shots == (len(ROWS) if shots else 0)
        assert f"inputs longer than max_input_length={limit} tokens (the task token in front comes on top) are " \
               f"truncated (the model sees only their beginning) in 1 template: 'choices' {expected} of " \
               f"{len(ROWS)};" in caplog.text
        assert f"raise the limit to the longest, {max(lengths)} tokens (t2t-mtl eval --max-input-length " \
               f"{max(lengths)};" in caplog.text  # the user's limit, which the task token comes on top of
        # (and the setting that takes it here, where evaluate_tasks was called from Python: the command's option and
        # the config key alone were named)
        assert f"EvalSettings(max_input_length={max(lengths)}) from Python)" in caplog.text
        stated = re.findall(r"(?<!EvalSettings\()max_input_length=(\d+)", caplog.text)
        assert len(stated) == (2 if shots else 1) and set(stated) == {str(limit)}


def test_device_option_resolves_and_refuses_what_the_machine_lacks(monkeypatch):
    from t2t_mtl.cli.common import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")
    for name, message in (("cuda", "CUDA is not available"), ("cuda:1", "CUDA is not available"),
                          ("meta", "use auto, cpu"), ("gpu!", "is not a device")):
        with pytest.raises(ValueError, match=f"--device '{name}'.*{message}"):
            resolve_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device("auto") == torch.device("cuda", 1)  # this rank's GPU (ranks wrap over the GPUs)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="has 2 CUDA device"):
        resolve_device("cuda:2")


def test_eval_and_predict_refuse_a_device_the_machine_lacks(checkpoint, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli_main(["eval", "--checkpoint", checkpoint, "--tasks", "x", "--device", "cuda"]) == 2
    assert "--device 'cuda': CUDA is not available" in capsys.readouterr().err
    assert cli_main(["predict", "--checkpoint", checkpoint, "--device", "cuda:0", "a text"]) == 2
    assert "--device 'cuda:0': CUDA is not available" in capsys.readouterr().err


def _eval_settings_seen(monkeypatch, checkpoint, config, attribute: str) -> dict:
    """`t2t-mtl eval` patched to load `checkpoint` with the run config `config` (None: a model folder) and to stop
    (ValueError) at evaluate_tasks, recording the EvalSettings `attribute` it got as "eval" in the returned dict
    (and the whole settings as "settings")."""
    import t2t_mtl.evaluation as evaluation

    model, tokenizer, _ = load_checkpoint(checkpoint)
    seen = {}
    meta = {"config": config} if config else {}
    monkeypatch.setattr(evaluation, "checkpoint_meta", lambda path: meta)
    monkeypatch.setattr(evaluation, "load_checkpoint", lambda path: (model, tokenizer, meta))

    def fake_evaluate(model, tokenizer, tasks, settings, **kwargs):
        seen["eval"], seen["settings"] = getattr(settings, attribute), settings
        raise ValueError("stop here")

    monkeypatch.setattr(evaluation, "evaluate_tasks", fake_evaluate)
    return seen


@pytest.mark.parametrize("config, expected", [
    ({"data": {"max_input_length": 96}, "evaluation": {"max_input_length": 200}}, 200),
    ({"data": {"max_input_length": 96}, "evaluation": {}}, 96),
    (None, 512),  # a model folder: EvalSettings' default
])
def test_eval_cuts_inputs_at_the_runs_own_limit(config, expected, checkpoint, monkeypatch):
    # was: always 512, so `eval` of a run trained (and evaluated after training) at 128 scored other inputs
    seen = _eval_settings_seen(monkeypatch, checkpoint, config, "max_input_length")
    task_registry.load_builtin_tasks()
    task = task_registry.list_tasks()[0]
    assert cli_main(["eval", "--checkpoint", checkpoint, "--tasks", task]) == 2
    assert seen["eval"] == expected
    assert cli_main(["eval", "--checkpoint", checkpoint, "--tasks", task, "--max-input-length", "64"]) == 2
    assert seen["eval"] == 64


def test_eval_names_only_the_settings_the_runs_config_gave_that_no_option_did(checkpoint, monkeypatch, capsys):
    # mutation testing: the line naming a setting that an option gave, at the run's own value, passed every test
    _eval_settings_seen(monkeypatch, checkpoint, {"evaluation": {"scoring": "generate", "num_beams": 3}}, "scoring")
    task_registry.load_builtin_tasks()
    assert cli_main(["eval", "--checkpoint", checkpoint, "--tasks", task_registry.list_tasks()[0],
                     "--num-beams", "3"]) == 2
    assert ("eval: from the run's config (an option given wins): scoring 'generate' (the run's evaluation.scoring)\n"
            in capsys.readouterr().err)


@pytest.mark.parametrize("config, flags, expected", [
    ({"evaluation": {"scoring": "generate", "length_normalize": True, "num_beams": 3}}, [], ("generate", True, 3)),
    ({"evaluation": {"scoring": "generate", "length_normalize": True, "num_beams": 3}},
     ["--scoring", "rank", "--no-length-norm", "--num-beams", "1"], ("rank", False, 1)),
    ({"data": {}}, ["--length-norm"], ("auto", True, 1)),
    (None, [], ("auto", False, 1)),  # a model folder: EvalSettings' defaults
])
def test_eval_scores_as_the_run_did_unless_told_otherwise(config, flags, expected, checkpoint, monkeypatch):
    # was: --scoring auto, the sum of log-probabilities and greedy decoding whatever the run's evaluation section
    # said, so `t2t-mtl eval` of a run scored otherwise than the run's own report
    seen = _eval_settings_seen(monkeypatch, checkpoint, config, "scoring")
    task_registry.load_builtin_tasks()
    assert cli_main(["eval", "--checkpoint", checkpoint, "--tasks", task_registry.list_tasks()[0], *flags]) == 2
    settings = seen["settings"]
    assert (settings.scoring, settings.length_normalize, settings.num_beams) == expected


def test_eval_of_a_run_renders_and_draws_demonstrations_as_its_own_evaluation_did(checkpoint, monkeypatch, capsys):
    # was: seed 0 and zero-shot whatever the run said, so `t2t-mtl eval` of a run evaluated k-shot scored it zero-shot,
    # and of a run with another training.seed rendered templates' choice/random filters and drew the demonstrations
    # otherwise than the run's own report (README: eval of a run scores as the run's own report did); and batches of
    # 16 whatever the run's evaluation.batch_size, by whose batches a token-routed MoE model with a capacity answers
    task_registry.load_builtin_tasks()
    dims = {"model": {"dims": {"d_model": 8}}, "data": {"tasks": ["sort_words"]}}
    run = config_from_dict({**dims, "training": {"seed": 3}, "evaluation": {"tasks": ["parity"], "num_shots": 2,
                                                                          "shots_split": "test", "batch_size": 4}})
    _, reference = evaluation_plan(run)  # what the trainer scored the run's own report with
    seen = _eval_settings_seen(monkeypatch, checkpoint, run.to_dict(), "seed")
    assert cli_main(["eval", "--checkpoint", checkpoint, "--tasks", "parity"]) == 2
    assert seen["settings"] == reference
    for flags, expected in ((["--shots", "0"], (3, 0, None)), (["--shots", "1"], (3, 1, "test")),
                            (["--shots-split", "train"], (3, 2, "train"))):  # what is given still wins
        assert cli_main(["eval", "--checkpoint", checkpoint, "--tasks", "parity", *flags]) == 2
        assert (seen["settings"].seed, seen["settings"].num_shots, seen["settings"].shots_split) == expected, flags
    zero_shot_run = config_from_dict({**dims, "evaluation": {"tasks": ["parity"]}}).to_dict()
    seen = _eval_settings_seen(monkeypatch, checkpoint, zero_shot_run, "seed")
    capsys.readouterr()
    assert cli_main(["eval", "--checkpoint", checkpoint, "--tasks", "parity", "--shots-split", "train"]) == 2
    assert "settings" not in seen
    assert capsys.readouterr().err == ("error: --shots-split names the split of k-shot demonstrations; without --shots "
                                       "K (or the run's evaluation.num_shots) it is ignored\n")


def test_eval_of_a_run_scores_the_split_and_the_examples_its_own_evaluation_did(checkpoint, monkeypatch, capsys):
    # was: --split and --max-examples defaulted to the task's validation split and every row whatever the run's
    # evaluation.split / max_examples, so `t2t-mtl eval` of a run that evaluated 7 test rows scored every validation
    # row, while its other settings followed the run; and nothing said which settings came from the run
    task_registry.load_builtin_tasks()
    run = config_from_dict({"model": {"dims": {"d_model": 8}}, "data": {"tasks": ["sort_words"]},
                            "training": {"seed": 3}, "evaluation": {"tasks": ["parity"], "split": "test",
                                                                    "max_examples": 7, "num_beams": 2}})
    _, reference = evaluation_plan(run)  # what the trainer scored the run's own report with
    seen = _eval_settings_seen(monkeypatch, checkpoint, run.to_dict(), "seed")
    capsys.readouterr()
    assert cli_main(["eval", "--checkpoint", checkpoint, "--tasks", "parity", "--batch-size", "4"]) == 2
    assert seen["settings"] == dataclasses.replace(reference, batch_size=4)
    taken = capsys.readouterr().err.splitlines()[0]
    assert taken.startswith("eval: from the run's config (an option given wins): split 'test' (the run's "
                            "evaluation.split); max_examples 7 (the run's evaluation.max_examples); ")
    assert "num_beams 2 (the run's evaluation.num_beams)" in taken and "seed 3 (the run's training.seed)" in taken
    assert "batch_size" not in taken  # (given)
    for flags, expected in ((["--split", "validation"], ("validation", 7)), (["--max-examples", "3"], ("test", 3)),
                            (["--max-examples", "all"], ("test", None))):  # what is given still wins
        assert cli_main(["eval", "--checkpoint", checkpoint, "--tasks", "parity", *flags]) == 2
        assert (seen["settings"].split, seen["settings"].max_examples) == expected, flags
    capsys.readouterr()
    assert cli_main(["eval", "--checkpoint", checkpoint, "--tasks", "glue_rte"]) == 2
    assert capsys.readouterr().err == ("error: the run's evaluation.split 'test': task 'glue_rte' has no such split; "
                                       "its splits are ['train', 'validation'] (pass --split SPLIT)\n")
    seen = _eval_settings_seen(monkeypatch, checkpoint, None, "seed")  # a model folder: nothing from a run
    assert cli_main(["eval", "--checkpoint", checkpoint, "--tasks", "parity"]) == 2
    assert (seen["settings"].split, seen["settings"].max_examples) == (None, None)
    assert "from the run's config" not in capsys.readouterr().err


@pytest.mark.parametrize("config, flags, expected", [
    ({"evaluation": {"scoring": "generate", "length_normalize": True, "num_beams": 3}}, [], ("auto", True, 3)),
    ({"evaluation": {"length_normalize": True, "num_beams": 3}}, ["--no-length-norm", "--num-beams", "1"],
     ("auto", False, 1)),
    (None, ["--length-norm", "--choices", "yes ||| no"], ("auto", True, 1)),
    (None, [], ("auto", False, 1)),  # a model folder: EvalSettings' defaults
])
def test_predict_ranks_and_decodes_as_the_run_did_unless_told_otherwise(config, flags, expected, checkpoint,
                                                                        monkeypatch):
    # was: the sum of log-probabilities and greedy decoding whatever the run's evaluation section said, while `eval`
    # of the same run took them from it; what is ranked and what generated stays the inputs' call (--scoring auto:
    # ranked where an input has choices), so the run's evaluation.scoring is not taken
    import importlib

    predict_module = importlib.import_module("t2t_mtl.evaluation.predict")
    _eval_settings_seen(monkeypatch, checkpoint, config, "scoring")
    seen = {}

    def fake_predict(model, tokenizer, requests, **kwargs):
        seen.update(kwargs)
        return []

    monkeypatch.setattr(predict_module, "predict", fake_predict)
    assert cli_main(["predict", "--checkpoint", checkpoint, *flags, "a text"]) == 0
    assert (seen["scoring"], seen["length_normalize"], seen["num_beams"]) == expected


@pytest.mark.parametrize("config, expected", [
    ({"data": {"max_target_length": 96}, "evaluation": {"max_new_tokens": 200}}, 200),
    ({"data": {"max_target_length": 96}, "evaluation": {}}, 96),
    (None, 64),  # a model folder: EvalSettings' default
])
def test_eval_and_predict_generate_up_to_the_runs_own_limit(config, expected, checkpoint, monkeypatch, capsys):
    # was: always 64 new tokens, so `eval` of a run whose own evaluation generated up to data.max_target_length
    # (or evaluation.max_new_tokens) cut longer predictions and scored other numbers than the run's report
    import importlib

    predict_module = importlib.import_module("t2t_mtl.evaluation.predict")  # (the package's `predict` is the function)
    seen = _eval_settings_seen(monkeypatch, checkpoint, config, "max_new_tokens")

    def fake_predict(model, tokenizer, requests, **kwargs):
        seen["predict"] = kwargs["max_new_tokens"]
        return []

    monkeypatch.setattr(predict_module, "predict", fake_predict)
    task_registry.load_builtin_tasks()
    task = task_registry.list_tasks()[0]
    assert cli_main(["eval", "--checkpoint", checkpoint, "--tasks", task]) == 2  # the stub raises ValueError: exit 2
    assert cli_main(["predict", "--checkpoint", checkpoint, "a text"]) == 0
    assert (seen["eval"], seen["predict"]) == (expected, expected)
    assert cli_main(["eval", "--checkpoint", checkpoint, "--tasks", task, "--max-new-tokens", "5"]) == 2
    assert cli_main(["predict", "--checkpoint", checkpoint, "--max-new-tokens", "5", "a text"]) == 0
    assert (seen["eval"], seen["predict"]) == (5, 5)


def test_cli_eval_of_an_unknown_mixture_or_task_says_how_yaml_tasks_are_registered(checkpoint, capsys):
    # was: `eval --mixture nosuch` (or --tasks) said only that it is unknown, where the other commands add that a
    # YAML task file's tasks are registered by --tasks-dir
    for selection in (["--mixture", "nosuch"], ["--tasks", "nosuch_task"]):
        assert cli_main(["eval", "--checkpoint", checkpoint, *selection, "--no-progress"]) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]  # (after transformers' loading progress)
        assert last.startswith("error: unknown ") and last.endswith(
            "a YAML task file's task is registered by --tasks-dir FOLDER (a Python module's by --task-module "
            "MODULE)"), last


# -- batching by input length ---------------------------------------------------------------------------------
LENGTH_ROWS = [{"text": " ".join(["word"] * n), "label": n % 2} for n in (3, 11, 1, 7, 12, 2, 9, 4, 6, 10, 5)]


def _batches_seen(monkeypatch, name):
    """Record the inputs of every call of the runner's `name` (one call per batch) and run the real function."""
    from t2t_mtl.evaluation import runner

    calls, real = [], getattr(runner, name)

    def spy(model, tokenizer, inputs, *args, **kwargs):
        calls.append(list(inputs))
        return real(model, tokenizer, inputs, *args, **kwargs)

    monkeypatch.setattr(runner, name, spy)
    return calls


def test_batches_hold_inputs_of_similar_length_and_every_example_scores_as_alone(loaded, tmp_path, monkeypatch):
    # was: batches were cut in row order, so a short input padded to the longest input of its batch
    model, tokenizer = loaded
    templates = [task_registry.Template("choices", "Odd? {{ text }} ||| {{ answer_choices[label] }}",
                                        answer_choices="no ||| yes"),
                 task_registry.Template("free", "Count: {{ text }} ||| {{ label }}")]
    task = _local_task(tmp_path, "lengths", LENGTH_ROWS, templates)
    ranked, generated = _batches_seen(monkeypatch, "score_choices"), _batches_seen(monkeypatch, "generate_texts")
    report = evaluate_tasks(model, tokenizer, [task], EvalSettings(keep_predictions=True, max_new_tokens=3,
                                                                   batch_size=3), progress=False)
    for calls, template in ((ranked, "Odd? "), (generated, "Count: ")):
        inputs = [template + row["text"] for row in LENGTH_ROWS]
        longest_first = sorted(inputs, key=lambda text: -len(tokenizer(text).input_ids))
        assert calls == [longest_first[i:i + 3] for i in range(0, len(inputs), 3)]
    choices, free = report.results
    # the reference: each input scored alone, in a batch of one (no padding)
    for prediction, row in zip(choices.predictions, LENGTH_ROWS):
        alone = score_choices(model, tokenizer, ["Odd? " + row["text"]], [["no", "yes"]])[0]
        assert prediction["choice_scores"] == pytest.approx(alone, abs=1e-5)
    assert [p["prediction"] for p in free.predictions] == [
        generate_texts(model, tokenizer, ["Count: " + row["text"]], max_new_tokens=3)[0] for row in LENGTH_ROWS]
    assert [p["row"] for p in free.predictions] == list(range(len(LENGTH_ROWS)))


@pytest.mark.parametrize("moe, depends", [(None, False), ({"routing": "task"}, False), ({"routing": "token"}, True),
                                          ({"routing": "token", "dropless": True}, False)])
def test_only_an_moe_whose_experts_have_a_capacity_keeps_example_order(loaded, tmp_path, monkeypatch, moe, depends):
    # token routing with a capacity: which tokens overflow depends on the whole batch, so reordering the batches
    # would change the outputs
    from t2t_mtl.model.moe import batch_dependent

    model, tokenizer = loaded
    if moe is not None:
        torch.manual_seed(0)
        model = convert_to_moe(model, {"num_experts": 4, "top_k": 2, "every": 1, "upcycle": False,
                                       "task_names": ["a"], **moe}).eval()
    assert batch_dependent(model) == depends
    calls = _batches_seen(monkeypatch, "generate_texts")
    task = _local_task(tmp_path, "lengths", LENGTH_ROWS, [task_registry.Template("free", "{{ text }} ||| {{ label }}")])
    evaluate_tasks(model, tokenizer, [task], EvalSettings(max_new_tokens=1, batch_size=4), progress=False)
    inputs = [row["text"] for row in LENGTH_ROWS]
    order = inputs if depends else sorted(inputs, key=len, reverse=True)
    assert calls == [order[i:i + 4] for i in range(0, len(inputs), 4)]


def test_the_report_counts_the_moe_choices_dropped_over_capacity_while_scoring(loaded, data_file, tmp_path):
    # was: counted in training only (moe.dropped); an evaluation whose MoE layers dropped tokens over
    # eval_capacity_factor said nothing of it, in report.json, report.md or a warning
    import math

    model, tokenizer = loaded
    torch.manual_seed(0)
    moe = convert_to_moe(model, {"num_experts": 4, "top_k": 1, "every": 1, "upcycle": False, "task_names": ["a"],
                                 "eval_capacity_factor": 0.5, "min_capacity": 1}).eval()
    expected = {"dropped": 0, "choices": 0}

    def reference(block, args):  # the top-1 expert of each real token, and the capacity of the forward's tokens
        x = args[0].reshape(-1, args[0].shape[-1])
        if block.token_mask is not None:
            x = x[block.token_mask[:, -args[0].shape[1]:].reshape(-1).ne(0)]
        counts = torch.bincount((x.float() @ block.router.weight.float().t()).argmax(-1), minlength=4)
        capacity = min(max(math.ceil(len(x) / 4 * 0.5), 1), len(x))
        expected["dropped"] += int((counts - capacity).clamp(min=0).sum())
        expected["choices"] += len(x)

    handles = [block.register_forward_pre_hook(reference) for _, block in moe_blocks(moe)]
    try:
        report = evaluate_tasks(moe, tokenizer, [toy_task(data_file)], EvalSettings(**MOE_SETTINGS), progress=False)
    finally:
        for handle in handles:
            handle.remove()
    assert sum(r.num_moe_dropped for r in report.results) == expected["dropped"] > 0
    assert sum(r.num_moe_choices for r in report.results) == expected["choices"]
    ranked, generated = report.results
    assert ranked.num_moe_dropped and generated.num_moe_dropped
    write_report(report, tmp_path / "out", plots=False)
    assert read_report(tmp_path / "out").results[0].num_moe_dropped == ranked.num_moe_dropped  # report.json
    markdown = (tmp_path / "out" / "report.md").read_text()
    share = 100 * ranked.num_moe_dropped / ranked.num_moe_choices
    assert (f"- toy_sentiment / choices: {ranked.num_moe_dropped} of {ranked.num_moe_choices} ({share:.1f}%)"
            in markdown)
    dense = evaluate_tasks(model, tokenizer, [toy_task(data_file)], EvalSettings(**MOE_SETTINGS), progress=False)
    assert all(r.num_moe_dropped == r.num_moe_choices == 0 for r in dense.results)


@pytest.mark.parametrize("tasks,match", [
    # a string was read a character at a time: "unknown task 'p'"
    ("parity", r"evaluate_tasks: tasks must be a list of task names or Task objects, got the string 'parity': "
               r"write \['parity'\]"),
    # a template (or any other object) failed later, inside the runner, with an AttributeError
    ([task_registry.Template("t", "{{x}} ||| {{x}}")], r"evaluate_tasks: task 1 must be a task name or a Task, "
                                                       r"got Template\(name='t', jinja='\{\{x\}\} \|\|\| \{\{x\}\}', "
                                                       r"answer_choices=None\)"),
    # one Task, or None, ended in a raw TypeError: '...' object is not iterable
    (task_registry.Task("one", task_registry.GeneratorSource(lambda split, num_rows, seed: []),
                        [task_registry.Template("t", "{{x}} ||| {{x}}")]),
     r"evaluate_tasks: tasks must be a list of task names or Task objects, got one Task \('one'\): put it in a "
     r"list, \[task\]$"),
    (None, r"evaluate_tasks: tasks must be a list of task names or Task objects, got None$"),
], ids=["one-string", "not-a-task", "one-task", "none"])
def test_evaluate_tasks_names_tasks_given_in_the_wrong_form(tasks, match):
    with pytest.raises(EvaluationError, match=rf"^{match}"):
        evaluate_tasks(None, None, tasks, progress=False, rank=0, world_size=1)


def _too_long_warnings(call) -> list:
    """The messages of transformers' "Token indices sequence length is longer than the specified maximum" warning
    that `call()` logs."""
    import logging

    records: list = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("transformers.tokenization_utils_base")
    logger.addHandler(handler)
    try:
        call()
    finally:
        logger.removeHandler(handler)
    return [message for message in records if message.startswith("Token indices sequence length is longer")]


def test_a_tokenizer_model_max_length_below_the_limits_draws_no_indexing_errors_warning(t5_tokenizer_dir):
    # was: evaluation and predict measured inputs, gold answers and answer choices uncut, and a tokenizer saved with
    # model_max_length 8 printed transformers' "Token indices sequence length is longer than the specified maximum
    # sequence length for this model (12 > 8). Running this sequence through the model will result in indexing
    # errors", though nothing is cut there (T5's positions are relative; data.max_input_length cuts) and training
    # tokenizes the same texts without a word
    from t2t_mtl.data.few_shot import fit_demonstrations
    from t2t_mtl.evaluation.labels import target_labels
    from t2t_mtl.evaluation.token_lengths import input_lengths, long_answers

    import copy

    text = "one two three four five six seven"
    short = load_tokenizer(t5_tokenizer_dir)
    short.model_max_length = 4
    whole = len(short(text, verbose=False).input_ids)  # nothing is cut at model_max_length
    assert whole > 4
    assert len(_too_long_warnings(lambda: copy.deepcopy(short)(text))) == 1  # what transformers says of an uncut call
    calls = {"inputs": lambda tok: input_lengths(tok, [text]), "answers": lambda tok: long_answers(tok, [[text]], 2),
             "labels": lambda tok: target_labels(tok, [text]).shape,
             "fitted": lambda tok: fit_demonstrations([text], text, tok, 64)}
    measured = {}
    for name, call in calls.items():  # (transformers warns once per tokenizer: each call gets its own)
        tokenizer = copy.deepcopy(short)
        assert _too_long_warnings(lambda: measured.setdefault(name, call(tokenizer))) == [], name
    assert measured == {"inputs": [whole], "answers": (1, whole - 1), "labels": (1, whole), "fitted": [text]}


@pytest.mark.parametrize("settings,given", [
    ({"max_examples": 4}, r"a dict: write EvalSettings\(\*\*\{'max_examples': 4\}\)"),
    ("rank", "a str"),
], ids=["mapping", "string"])
def test_evaluate_tasks_names_settings_given_in_the_wrong_form(tmp_path, settings, given):
    # was: AttributeError: 'dict' object has no attribute 'templates', from inside the runner
    task = _local_task(tmp_path, "lengths", LENGTH_ROWS, [task_registry.Template("free", "{{ text }} ||| {{ label }}")])
    with pytest.raises(EvaluationError, match=r"^evaluate_tasks: settings must be an EvalSettings \(t2t_mtl.evaluation."
                                              rf"EvalSettings, .*\) or None for the defaults, got {given}$"):
        evaluate_tasks(None, None, [task], settings, progress=False, rank=0, world_size=1)


def test_a_folder_whose_config_names_no_model_type_loads_as_a_t5_as_training_loads_it(checkpoint, tmp_path, capsys):
    # was: eval and predict refused it as "is a None model, not a T5", though training (T5Config) reads a config.json
    # naming no model_type as a T5's and from_pretrained loads the folder whole
    untyped = tmp_path / "untyped"
    shutil.copytree(checkpoint, untyped)
    config = json.loads((untyped / "config.json").read_text())
    del config["model_type"]
    (untyped / "config.json").write_text(json.dumps(config))
    model, _, _ = load_checkpoint(untyped)
    reference = T5ForConditionalGeneration.from_pretrained(str(untyped))  # (as training loads it)
    assert model.state_dict().keys() == reference.state_dict().keys()
    assert all(torch.equal(value, reference.state_dict()[key]) for key, value in model.state_dict().items())
    capsys.readouterr()
    assert cli_main(["predict", "--checkpoint", checkpoint, "a question"]) == 0
    typed_answer = capsys.readouterr().out
    assert cli_main(["predict", "--checkpoint", str(untyped), "a question"]) == 0
    assert capsys.readouterr().out == typed_answer


def test_an_mt5_folder_loads_for_eval_and_predict_with_mt5s_own_logits(tmp_path, t5_tokenizer):
    # mutation testing: evaluation's folder check taking "t5" alone for a T5 passed its tests, and then refused a
    # saved mT5 (model_type "mt5"), which training loads; the reference is transformers' own mT5 class
    from transformers import MT5Config, MT5ForConditionalGeneration

    torch.manual_seed(0)
    mt5 = MT5ForConditionalGeneration(MT5Config(vocab_size=len(t5_tokenizer), d_model=8, d_kv=4, d_ff=16,
                                                num_layers=1, num_heads=2, decoder_start_token_id=0)).eval()
    mt5.save_pretrained(tmp_path / "mt5")
    t5_tokenizer.save_pretrained(tmp_path / "mt5")
    model, _, _ = load_checkpoint(tmp_path / "mt5")
    x, y = torch.tensor([[5, 6, 7, 1]]), torch.tensor([[8, 9, 1]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=x, labels=y).logits, mt5(input_ids=x, labels=y).logits)


def test_a_sharded_evaluation_warns_of_incomplete_groups_and_short_demonstrations_on_rank_0_alone(tmp_path,
                                                                                                monkeypatch, caplog):
    # as the input and answer limits' warnings: every rank counts a template's whole groups and k-shot prompts,
    # and a warning of either logged on rank 1 too printed it twice in a two-rank run (one example each here:
    # rank 1 scores none)
    from t2t_mtl.evaluation.rank_gathers import RankGathers

    _, grouped = _mini_multirc(tmp_path)  # its first row leaves question 0 without two of its answers
    rows = [{"question": "capital of France?", "answers": ["Paris"]}]
    path = tmp_path / "shots.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n", encoding="utf-8")
    shots = task_registry.Task("shots_qa", task_registry.LocalFileSource({"train": str(path), "validation": str(path)}),
                               [task_registry.Template("qa", "{{ question }} ||| {{ answers[0] }}")],
                               metrics=("exact_match",))  # one row to draw from, two demonstrations asked
    _answer_with(monkeypatch, lambda text: "yes")
    sent = []  # rank 0's part of each gather, in order: what rank 1's gathers then get from it

    def rank_0_parts(self, local):
        sent.append(local)
        return [local, (local[0], [])]

    warned = []
    for rank, parts in ((0, rank_0_parts), (1, lambda self, local: [sent.pop(0), local])):
        monkeypatch.setattr(RankGathers, "_parts", parts)
        caplog.clear()
        with caplog.at_level("WARNING"):
            for task, settings in ((grouped, EvalSettings(scoring="generate", max_examples=1)),
                                   (shots, EvalSettings(num_shots=2))):
                evaluate_tasks(None, _NoTaskTokens(), [task], settings, rank=rank, world_size=2, progress=False)
        warned.append([record.getMessage() for record in caplog.records])
    assert sent == []  # rank 1 met every gather rank 0 did
    assert [message.split(": ", 1)[1].split(" (")[0] for message in warned[0]] == [
        "1 of 1 groups have rows that are not scored", "1 of 1 inputs got fewer than 2 demonstrations"]
    assert warned[1] == []


def test_a_sharded_evaluation_warns_of_both_ranks_moe_drops_on_rank_0_alone(tmp_path, monkeypatch, caplog):
    # every rank of an MoE with an expert capacity gathers the ranks' drops: rank 0 warns once of their sum (rank 1
    # scores the second row and drops 2 of its 5 choices; rank 0 drops 1 of 4), rank 1 not at all
    import contextlib

    from t2t_mtl.evaluation import runner
    from t2t_mtl.evaluation.rank_gathers import RankGathers
    from t2t_mtl.model.moe import CapacityDrops

    template = task_registry.Template("q", "{{ question }} ||| {{ answers[0] }}")
    task = _local_task(tmp_path, "qa", QA_ROWS[:2], [template], metrics=("exact_match",))
    _answer_with(monkeypatch, lambda text: "Paris")
    counts = {0: (1, 4), 1: (2, 5)}
    rank_now = [0]
    monkeypatch.setattr(runner, "batch_dependent", lambda model: True)
    monkeypatch.setattr(runner, "capacity_drops",
                        lambda model: contextlib.nullcontext(CapacityDrops(*counts[rank_now[0]])))
    rank_1_parts = {"task 'qa' template 'q'": [(1, "Paris", -1, None)], "task 'qa' template 'q': MoE drops": [(2, 5)],
                    "the end of the evaluation": []}  # what rank 1 sends (checked below)
    sent = []

    def rank_0_parts(self, local):
        sent.append(local)
        return [local, (local[0], rank_1_parts[local[0]])]

    def rank_1_gets(self, local):
        assert local == (local[0], rank_1_parts[local[0]])
        return [sent.pop(0), local]

    warned = []
    for rank, parts in ((0, rank_0_parts), (1, rank_1_gets)):
        rank_now[0] = rank
        monkeypatch.setattr(RankGathers, "_parts", parts)
        caplog.clear()
        with caplog.at_level("WARNING"):
            report = evaluate_tasks(None, _NoTaskTokens(), [task], EvalSettings(scoring="generate", batch_size=1),
                                    rank=rank, world_size=2, progress=False)
        assert (report.results[0].num_moe_dropped, report.results[0].num_moe_choices) == (3, 9)
        warned.append([record.getMessage() for record in caplog.records])
    assert sent == []
    assert [message.split(" (those")[0] for message in warned[0]] == [
        "task 'qa' template 'q': the MoE layers dropped 3 of the 9 (token, slot) choices they routed over expert "
        "capacity"]
    assert warned[1] == []


def test_a_model_folders_meta_that_is_not_json_is_named_before_the_model_loads(tmp_path):
    # eval and predict read a folder's t2t_mtl_meta.json first (checkpoint_meta): a damaged one is named, not quoted
    # as the JSON reader's bare complaint
    from t2t_mtl.evaluation.checkpoint import checkpoint_meta

    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "t5"}))
    (folder / "t2t_mtl_meta.json").write_text("{not json")
    with pytest.raises(CheckpointError) as refused:
        checkpoint_meta(folder)
    assert str(refused.value).startswith(f"checkpoint {str(folder)!r} could not be loaded: model folder {folder}: its "
                                         f"t2t_mtl_meta.json could not be read: ")


@pytest.mark.parametrize("config, flags, ignored", [
    ({"evaluation": {"scoring": "rank"}}, ["--num-beams", "3"], "--num-beams sets the beam width of generation"),
    ({"evaluation": {"scoring": "rank"}}, ["--max-new-tokens", "5"], "--max-new-tokens limits generation"),
    ({"evaluation": {"scoring": "generate"}}, ["--length-norm"], "--length-norm changes how answer choices are ranked"),
])
def test_eval_refuses_an_option_that_the_runs_own_scoring_ignores(config, flags, ignored, checkpoint, monkeypatch,
                                                                  capsys):
    # was: refused only against --scoring given, so `eval` of a run evaluating with scoring: rank (the quickstart's)
    # took --num-beams 3 or --max-new-tokens 5 and scored as without them, not a word said
    scoring = config["evaluation"]["scoring"]
    seen = _eval_settings_seen(monkeypatch, checkpoint, config, "scoring")
    task_registry.load_builtin_tasks()
    task = task_registry.list_tasks()[0]
    capsys.readouterr()
    assert cli_main(["eval", "--checkpoint", checkpoint, "--tasks", task, *flags]) == 2
    assert "settings" not in seen
    assert capsys.readouterr().err == (f"error: {ignored}; it has no effect with the run's evaluation.scoring: "
                                       f"{scoring} (--scoring overrides it)\n")
    other = "generate" if scoring == "rank" else "rank"
    assert cli_main(["eval", "--checkpoint", checkpoint, "--tasks", task, "--scoring", other, *flags]) == 2
    assert seen["settings"].scoring == other  # (the option given wins: scored, up to the patched evaluation)


def test_a_comparison_of_a_zero_shot_and_a_k_shot_report_calls_a_differing_seed_not_like_for_like():
    # the seed draws the k-shot report's demonstrations: the zero-shot note is for reports that are all zero-shot
    settings = EvalSettings().to_dict()
    zero = EvalReport("zero", [_result("t1", "x", 40.0)], settings=settings)
    k_shot = replace(zero, name="k-shot", settings={**settings, "seed": 1, "num_shots": 2})
    assert comparison_markdown([zero, k_shot]).splitlines()[-3:] == [
        "Scored with different `seed`: 0 (zero), 1 (k-shot); their scores are not like for like.", "",
        "Scored with different `num_shots`: 0 (zero), 2 (k-shot); their scores are not like for like."]


def test_a_comparison_of_reports_scoring_no_task_in_common_names_a_differing_split():
    # no task scored by both: nothing shows the two splits to be one, so `split` is named
    settings = EvalSettings().to_dict()
    default = EvalReport("default", [_result("t1", "x", 40.0)], settings=settings)
    on_test = EvalReport("on-test", [replace(_result("t2", "x", 40.0), split="test")],
                         settings={**settings, "split": "test"})
    assert differing_settings([default, on_test]) == {"split": {"default": None, "on-test": "test"}}


def test_a_rank_that_cannot_tell_the_others_of_its_failure_says_so_and_raises_its_own_error(monkeypatch, caplog):
    gathers = _gathers(monkeypatch, 1, 2)

    def others_gone(local):
        raise RuntimeError("Connection closed by peer")

    monkeypatch.setattr(gathers, "_parts", others_gone)
    with caplog.at_level("WARNING", logger="t2t_mtl.evaluation.rank_gathers"):
        with pytest.raises(ValueError, match="^this rank's data$"):
            with gathers.telling_failures():
                raise ValueError("this rank's data")
    assert [record.getMessage() for record in caplog.records] == [
        "rank 1 could not tell the other ranks that it failed: Connection closed by peer"]


def test_a_bare_cuda_device_is_this_ranks_gpu(monkeypatch):
    # was: --device cuda was torch's current device, cuda:0 on every rank of a torchrun eval (nothing there selects
    # another), so its ranks shared the first GPU and left the others idle
    from t2t_mtl.cli.common import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cuda") == torch.device("cuda", 1) == resolve_device("auto")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert resolve_device("cuda") == torch.device("cuda", 0)


def test_a_bare_cuda_device_of_a_process_started_without_torchrun_is_the_first_gpu(monkeypatch):
    # kills a mutant of resolve_device that its test let live (it set LOCAL_RANK): a process without LOCAL_RANK
    # (a plain `t2t-mtl eval`) given another GPU than the first, as rank 0's
    from t2t_mtl.cli.common import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("cuda") == torch.device("cuda", 0) == resolve_device("auto")


def test_a_comparison_counts_the_batch_size_where_an_moe_model_dropped_choices_over_capacity(loaded, data_file):
    # was: batch_size was always score-neutral, but an MoE layer routing by token with an expert capacity drops
    # choices by the tokens of the whole batch: two batch sizes of one checkpoint scored differently without a word.
    # A dropless model (or one that dropped none) scores the same whatever its batches: still no note
    model, tokenizer = loaded
    moe = {"num_experts": 4, "top_k": 1, "every": 1, "upcycle": False, "task_names": ["a"], "min_capacity": 1}
    reports = {}
    for dropless in (False, True):
        torch.manual_seed(0)
        routed = convert_to_moe(model, {**moe, "eval_capacity_factor": 0.5, "dropless": dropless}).eval()
        reports[dropless] = [evaluate_tasks(routed, tokenizer, [toy_task(data_file)],
                                            EvalSettings(**{**MOE_SETTINGS, "batch_size": size}), progress=False,
                                            name=f"batches-of-{size}") for size in (1, 4)]
    def choice_scores(report: EvalReport) -> list:
        return [score for row in report.results[0].predictions for score in row["choice_scores"]]

    one, four = reports[False]
    assert all(r.num_moe_dropped for r in one.results + four.results)  # (half of each expert's even share)
    assert choice_scores(one) != pytest.approx(choice_scores(four), rel=1e-4)
    assert differing_settings([one, four]) == {"batch_size": {"batches-of-1": 1, "batches-of-4": 4}}
    counts = [(sum(r.num_moe_dropped for r in report.results), sum(r.num_moe_choices for r in report.results))
              for report in (one, four)]
    assert comparison_markdown([one, four]).splitlines()[-1] == (
        f"Scored with different `batch_size`: 1 (batches-of-1), 4 (batches-of-4); the MoE layers dropped (token, "
        f"slot) choices over expert capacity while scoring ({counts[0][0]} of {counts[0][1]} (batches-of-1), "
        f"{counts[1][0]} of {counts[1][1]} (batches-of-4)), which ones depending on the examples a batch holds: their "
        f"scores are not like for like.")
    one, four = reports[True]
    assert not any(r.num_moe_dropped for r in one.results + four.results)
    assert choice_scores(one) == pytest.approx(choice_scores(four), rel=1e-5)
    assert [r.score for r in one.results] == [r.score for r in four.results]
    assert differing_settings([one, four]) == {}


def test_the_tokenizers_task_tokens_are_read_once_an_evaluation_and_score_as_read_per_template(
        data_file, t5_tokenizer_dir, monkeypatch):
    # was: read once per template (`find_task_tokens` builds the whole vocabulary: ~50 ms a template for T5's 32k)
    import t2t_mtl.evaluation.runner as runner
    from t2t_mtl.analysis.task_embeddings import find_task_tokens
    from t2t_mtl.evaluation.truncated_inputs import TruncatedInputs

    model, tokenizer = _task_token_model(t5_tokenizer_dir)
    task, settings = toy_task(data_file), EvalSettings(keep_predictions=True, max_new_tokens=4, max_input_length=12)
    reads = []
    monkeypatch.setattr(runner, "find_task_tokens", lambda tok: reads.append(tok) or find_task_tokens(tok))
    report = evaluate_tasks(model, tokenizer, [task, task], settings, progress=False)
    assert len(reads) == 1 and len(report.results) == 6
    monkeypatch.undo()
    rows = task.load_rows("validation")
    for result, template in zip(report.results, task.templates * 2):  # each template on its own, tokens read there
        alone = runner.evaluate_template(model, tokenizer, task, template, rows, settings, split="validation",
                                         truncations=TruncatedInputs(task.name))
        assert dataclasses.asdict(result) == dataclasses.asdict(alone)
    assert report.results[0].num_truncated  # (the task token in front counted: inputs of 12 tokens and more cut)
