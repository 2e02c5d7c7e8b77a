"""Metrics computed by a registered Python function (`register_metric`, seqio's `metric_fns`), against values worked
out by hand."""
from __future__ import annotations

import pytest

import task_registry
from t2t_mtl.evaluation import metrics
from t2t_mtl.evaluation.errors import MetricRegistrationError, UnknownMetricError
from t2t_mtl.evaluation.metrics import compute_metric, metric_spec, register_metric, task_metric_problems
from t2t_mtl.evaluation.scoring import score_predictions


@pytest.fixture(autouse=True)
def restored_metrics():
    """METRICS as it was before the test (registrations are process-wide)."""
    saved = dict(metrics.METRICS)
    yield
    metrics.METRICS.clear()
    metrics.METRICS.update(saved)


def char_overlap(predictions, references):
    """Per example, the best Jaccard overlap of the prediction's characters with a reference's; their mean."""
    best = [max(len(set(p) & set(r)) / len(set(p) | set(r)) if set(p) | set(r) else 1.0 for r in refs)
            for p, refs in zip(predictions, references)]
    return {"char_overlap": sum(best) / len(best), "examples": len(best)}


def test_a_registered_function_is_a_metric_by_name():
    assert register_metric("Char Overlap", char_overlap) == "char_overlap"
    # {a,b,c} vs {a,b,d}: 2/4; {x,y} vs {x,y}: 1 (the better of its two references)
    assert compute_metric("char overlap", ["abc", "xy"], [["abd"], ["q", "xy"]]) == {"char_overlap": 0.75,
                                                                                      "examples": 2.0}
    assert metric_spec("char_overlap").kind == "text" and metric_spec("char_overlap").scale == 100.0
    assert register_metric("char_overlap", char_overlap) == "char_overlap"  # the same function again: nothing new
    # through the evaluation's scoring, which gives a text metric every example's gold answers
    scored = score_predictions(["char_overlap"], ["abc", "xy"], ["abd", "xy"], [[], []],
                               references=[["abd"], ["q", "xy"]])
    assert scored == {"char_overlap": {"char_overlap": 0.75, "examples": 2.0}}


def test_a_task_may_name_a_registered_metric(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"q": "a", "a": "b"}\n')
    task = task_registry.Task("overlap_task", task_registry.LocalFileSource(str(rows)),
                              task_registry.Template("t", "{{ q }} ||| {{ a }}"), metrics=("char_overlap",))
    assert "unknown metric 'char_overlap'" in task_metric_problems(task)[0][1]
    register_metric("char_overlap", char_overlap)
    assert task_metric_problems(task) == []


def test_a_label_metric_gets_label_ids():
    def balanced_hits(predictions, references):
        per_label = {label: [p == r for p, r in zip(predictions, references) if r == label]
                     for label in set(references)}
        return {"balanced_hits": sum(sum(hits) / len(hits) for hits in per_label.values()) / len(per_label)}

    register_metric("balanced_hits", balanced_hits, kind="label", chance="uniform")
    # choices (no, yes): predictions no, no, yes against no, yes, yes — label 0: 1/1, label 1: 1/2 → 0.75
    scored = score_predictions(["balanced_hits"], ["no", "no", "yes"], ["no", "yes", "yes"], [["no", "yes"]] * 3)
    assert scored["balanced_hits"] == {"balanced_hits": 0.75}


def seqio_style(targets, predictions):
    """seqio's metric_fns signature: (targets, predictions)."""
    return {"seqio_style": sum(t == p for t, p in zip(targets, predictions)) / len(targets)}


@pytest.mark.parametrize("name, function, options, problem", [
    # were registered, and failed only when computed, after training ("got an unexpected keyword argument")
    ("mine", seqio_style, {}, r"the function 'seqio_style'\(targets, predictions\) cannot be called with the keywords "
                              r"predictions, references a metric is given \(missing a required argument: 'targets'\); "
                              r"name its parameters so \(seqio's metric_fns take targets, predictions: write "
                              r"predictions, references\)"),
    ("mine", char_overlap, {"kind": "group_label"}, r"cannot be called with the keywords predictions, references, "
                                                    r"groups"),
    ("accuracy", char_overlap, {}, "'accuracy' is a shipped metric"),
    ("EM", char_overlap, {}, r"'em' is a shipped metric \(or an alias of one\)"),
    ("mine", char_overlap, {"kind": "words"}, "kind 'words' is none of label, group_label"),
    ("mine", char_overlap, {"chance": "half"}, "chance must be None, 'uniform' or 'zero'"),
    ("mine", "char_overlap", {}, "give a function predictions, references"),
    ("  ", char_overlap, {}, "give the metric a name"),
])
def test_a_metric_that_cannot_be_registered_says_why(name, function, options, problem):
    with pytest.raises(MetricRegistrationError, match=problem):
        register_metric(name, function, **options)


def test_a_function_taking_the_metric_keywords_any_way_is_registered():
    register_metric("by_keywords", lambda **given: {"by_keywords": float(given["predictions"] == given["references"])})
    register_metric("grouped", lambda predictions, references, groups: {"grouped": 1 / len(set(groups))},
                    kind="group_label")
    assert compute_metric("by_keywords", ["a"], ["a"]) == {"by_keywords": 1.0}
    assert compute_metric("grouped", [1, 0], [1, 1], groups=["q1", "q2"]) == {"grouped": 0.5}


def test_a_name_registered_to_another_function_needs_overwrite():
    register_metric("mine", char_overlap)
    with pytest.raises(MetricRegistrationError, match="'mine' is already registered to .*overwrite=True"):
        register_metric("mine", lambda predictions, references: {"mine": 1.0})
    register_metric("mine", lambda predictions, references: {"mine": 1.0}, overwrite=True)
    assert compute_metric("mine", ["a"], [["b"]]) == {"mine": 1.0}


@pytest.mark.parametrize("returned, problem", [
    (0.5, "must return a mapping of output name to number holding 'bad'"),
    ({"other": 1.0}, "must return a mapping .* holding 'bad' .*got {'other': 1.0}"),
    ({"bad": "high"}, "must return numbers"),
    ({"bad": float("nan")}, "returned 'bad' = nan, not a finite number"),
])
def test_a_registered_function_that_returns_no_score_is_named(returned, problem):
    register_metric("bad", lambda predictions, references: returned)
    with pytest.raises(ValueError, match=rf"metric 'bad' \(function '.*<lambda>'\) {problem}"):
        compute_metric("bad", ["a"], [["a"]])


def test_a_percentage_under_the_default_fraction_scale_is_refused_naming_scale_1():
    # seqio's metric_fns return percentages: 25.0 was reported as 2500 (a majority baseline of 2500.0 in report.md)
    def percent_hits(predictions, references):
        return {"percent_hits": 100.0 * sum(p in refs for p, refs in zip(predictions, references)) / len(predictions)}

    register_metric("percent_hits", percent_hits)
    with pytest.raises(ValueError, match=r"metric 'percent_hits' .* returned 'percent_hits' = 50, which its scale 100 "
                                         r"puts at 5000 on the reports' 0-100 scale; .*register_metric\(\.\.\., "
                                         r"scale=1\.0\)"):
        compute_metric("percent_hits", ["a", "b"], [["a"], ["c"]])
    register_metric("percent_hits", percent_hits, scale=1.0, overwrite=True)
    assert compute_metric("percent_hits", ["a", "b"], [["a"], ["c"]]) == {"percent_hits": 50.0}
    # a fraction at its ends, or a correlation down to -1, stays within the scale
    register_metric("signed", lambda predictions, references: {"signed": -1.0, "count": 500.0})
    assert compute_metric("signed", ["a"], [["a"]]) == {"signed": -1.0, "count": 500.0}


def test_a_registered_function_that_raises_is_named():
    def broken(predictions, references):
        raise ZeroDivisionError("no references")

    register_metric("broken", broken)
    with pytest.raises(ValueError, match=r"metric 'broken' \(function '.*broken'\) failed: ZeroDivisionError: no "):
        compute_metric("broken", ["a"], [["a"]])


def test_an_unknown_metric_says_how_a_function_becomes_one():
    register_metric("mine", char_overlap)
    with pytest.raises(UnknownMetricError, match="registered: mine; a Python function becomes a metric through "
                                                 "t2t_mtl.evaluation.register_metric"):
        metric_spec("yours")
    with pytest.raises(UnknownMetricError, match="is a function registered by register_metric"):
        metrics.load_metric("mine")


def test_list_metrics_names_every_metric_with_its_aliases_a_task_modules_too(tmp_path, capsys):
    # was: no command listed them (`list` had samplers and weightings); a task file's author learnt the names from
    # the error of a wrong one
    import sys
    import uuid

    from t2t_mtl.cli import main as cli_main
    from t2t_mtl.evaluation.metrics import canonical_metric_name

    name = f"overlap_{uuid.uuid4().hex[:8]}"
    module = tmp_path / f"{name}.py"
    module.write_text("from t2t_mtl.evaluation import register_metric\n\n\n"
                      "def overlap(predictions, references):\n    return {'overlap': 0.5}\n\n\n"
                      f"register_metric({name!r}, overlap)\n")
    try:
        assert cli_main(["list", "metrics", "--task-module", str(module)]) == 0
    finally:
        sys.modules.pop(name, None)
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split(":")[0].split()[0]: line for line in lines if line.startswith("  ")}
    assert listed[name] == (f"  {name} (registered: {name}.overlap): the predicted text against every gold answer "
                            f"(a template's references); reports {name}")
    # every name a task's `metrics` takes (the registry's, the one registered here too) is listed, each on the line of
    # the metric it resolves to: each metric once, with every one of its aliases
    assert len(listed) == len([line for line in lines if line.startswith("  ")]) and set(listed) == set(
        metrics.METRICS)
    named = {alias: metric for metric, line in listed.items()
             for alias in line.partition("; aliases: ")[2].split(", ") if alias}
    assert named == {alias: canonical_metric_name(alias) for alias in metrics.ALIASES}
    assert listed["f1"].startswith("  f1: the predicted answer choice against the gold one") and \
        "reports f1 (average=binary); aliases: f1_binary" in listed["f1"]
    assert "pearson, pearson_correlation" in listed["pearsonr"]
    assert lines[-1] == "binary f1 counts the second of a template's two answer choices as the positive class."


def test_list_metrics_with_a_task_module_that_cannot_be_imported_fails_listing_nothing(tmp_path, capsys):
    # (mut44: listing after the import error, with exit status 0, passed every test)
    from t2t_mtl.cli import main as cli_main

    assert cli_main(["list", "metrics", "--task-module", str(tmp_path / "missing.py")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and "missing.py" in err
