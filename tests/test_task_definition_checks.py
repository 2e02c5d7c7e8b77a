"""The checks of a Task's definition (`task_registry.task_definition_checks`): options of the wrong type, splits in
datasets' slicing, row counts that are no number of rows, names and steps given as generators or one step, a function
given as a preprocessor, and a template that never renders a target."""
from __future__ import annotations

import re

import datasets
import numpy as np
import pytest

import task_registry
from task_registry import GeneratorSource, HFSource, LocalFileSource, Map, Rename, Task, Template

SENTIMENT = Template("t5", "sst2 sentence: {{sentence}} ||| {{ answer_choices[label] }}",
                     answer_choices="negative ||| positive")
QUESTION = Template("question", "Is this positive? {{sentence}} ||| {{ answer_choices[label] }}",
                    answer_choices="no ||| yes")


@pytest.mark.parametrize("kwargs,match", [
    # were accepted: held_out="false" made a held-out task (bool("false") is True), and the others were kept as
    # given, while a YAML task file refuses each of them
    ({"held_out": "false"}, r"held_out must be true or false, got 'false'"),
    ({"eval_only": 1}, r"eval_only must be true or false, got 1"),
    ({"task_type": 5}, r"task_type must be a string, got 5"),
    ({"cluster": ["nli"]}, r"cluster must be a string, got \['nli'\]"),
    # were accepted: cluster '' read as the task type (no cluster), task_type '' a task whose cluster was ''
    ({"cluster": ""}, r"cluster must be a non-empty string \(or None: the task type\), got ''"),
    ({"task_type": " "}, r"task_type must be a non-empty string, got ' '"),
    ({"splits": ["train", 1]}, r"splits must be a non-empty list of names, got \['train', 1\]"),
    ({"metrics": [None]}, r"metrics must be a list of metric names, got \[None\]"),
    # were accepted: a split read and rendered, a metric scored, once per mention
    ({"splits": ["train", "validation", "train"]}, r"splits names 'train' more than once; list each once"),
    ({"metrics": ["accuracy", "macro_f1", "accuracy"]}, r"metrics names 'accuracy' more than once"),
])
def test_task_options_of_the_wrong_type_are_named(kwargs, match):
    with pytest.raises(task_registry.TaskDefinitionError, match=rf"task 't': {match}"):
        Task("t", LocalFileSource("unused.jsonl"), [SENTIMENT], **kwargs)
    assert Task("t", LocalFileSource("unused.jsonl"), [SENTIMENT], cluster=None).cluster == "generation"


@pytest.mark.parametrize("split,whole", [("train[:10%]", "train"), ("validation[:100]", "validation"),
                                         ("train+validation", "train")])
def test_a_split_written_in_datasets_slicing_is_refused_with_what_to_write(split, whole):
    # was a split name: read from a data dir's file 'validation[:100].jsonl' ("which does not exist"), a files
    # mapping's key, or the hub's slice, which training never read (it reads the split 'train')
    with pytest.raises(task_registry.TaskDefinitionError,
                       match=rf"^task 't': splits name whole splits of the source; {re.escape(repr(split))} is "
                             rf"datasets' split slicing, which a task does not read \(training reads its split "
                             rf"'train'\): list '{whole}' and cap the rows a run reads with "
                             rf"data.max_examples_per_task \(training\), data.validation_examples, or "
                             rf"evaluation.max_examples / eval --max-examples$"):
        Task("t", HFSource("glue", "rte"), [SENTIMENT], splits=("train", split))


def numbered_rows(split, num_rows, seed):
    for i in range(num_rows):
        yield {"x": str(i)}


@pytest.mark.parametrize("count,error", [(-1, "-1"), ("3", "'3'"), (2.5, "2.5"), (True, "True")])
def test_a_row_count_that_is_not_a_number_of_rows_is_named(count, error):
    # max_examples -1 kept no row (select(range(-1))); "3" failed comparing str with int
    task = Task("g", GeneratorSource(numbered_rows, num_rows=5), [Template("t", "{{x}} ||| {{x}}")])
    with pytest.raises(task_registry.TaskDefinitionError,
                       match=rf"task 'g': max_examples must be a number of rows >= 0 or None \(all\), got {error}"):
        task.to_dataset("train", max_examples=count)
    with pytest.raises(task_registry.TaskDefinitionError, match=rf"task 'g': max_rows must be .* got {error}"):
        task.load_rows("train", max_rows=count)
    assert len(task.to_dataset("train", max_examples=np.int64(2))) == 2


def test_splits_and_metrics_given_as_generators_are_kept():
    # checking each name used up a generator, so the task kept no split and no metric (() for both, silently)
    task = Task("t", LocalFileSource("unused.jsonl"), [SENTIMENT], metrics=(m for m in ["accuracy", "f1"]),
                splits=(s for s in ["train", "test"]))
    assert (task.splits, task.metrics) == (("train", "test"), ("accuracy", "f1"))
    with pytest.raises(task_registry.TaskDefinitionError, match=r"task 't': splits must be a non-empty list"):
        Task("t", LocalFileSource("unused.jsonl"), [SENTIMENT], splits=(s for s in []))
    with pytest.raises(task_registry.TaskDefinitionError, match=r"task 't': metrics must be a list of metric names"):
        Task("t", LocalFileSource("unused.jsonl"), [SENTIMENT], metrics=None)


def lowered(row):
    return {"sentence": row["sentence"].lower()}


def test_a_function_given_as_a_preprocessor_is_named_with_how_to_make_it_a_step():
    # seqio's preprocessors are functions: one in the list got only 'preprocessors must be Preprocessor objects', and
    # one given alone raised TypeError: 'function' object is not iterable
    for given in ([lowered], lowered, (step for step in [Rename({"sentence": "text"}), lowered])):
        with pytest.raises(task_registry.TaskDefinitionError,
                           match=r"task 't': preprocessors must be Preprocessor objects \(Rename, Filter, Map\), got "
                                 r"<function lowered .*>; a function of one row is a step as Map\(lowered\) \(it "
                                 r"returns the row's new or changed fields\) or Filter\(lowered\)"):
            Task("t", LocalFileSource("unused.jsonl"), [SENTIMENT], preprocessors=given)
    for given in (5, "rename", {"sentence": "text"}):
        with pytest.raises(task_registry.TaskDefinitionError,
                           match=r"task 't': preprocessors must be a list of Preprocessor objects"):
            Task("t", LocalFileSource("unused.jsonl"), [SENTIMENT], preprocessors=given)
    task = Task("t", LocalFileSource("unused.jsonl"), [SENTIMENT], preprocessors=Map(lowered))
    rows = datasets.Dataset.from_list([{"sentence": "A Film"}])
    assert task.preprocessors[0](rows)["sentence"] == ["a film"]


def test_preprocessors_given_as_a_generator_or_one_step_are_kept():
    # the type check used a generator up, so the task kept no preprocessor (silently)
    steps = [Rename({"sentence": "text"}), Rename({"text": "sentence"})]
    task = Task("t", LocalFileSource("unused.jsonl"), [SENTIMENT], preprocessors=(step for step in steps))
    assert task.preprocessors == steps
    assert Task("t", LocalFileSource("unused.jsonl"), [SENTIMENT], preprocessors=steps[0]).preprocessors == steps[:1]


@pytest.mark.parametrize("template,why", [
    (Template("t", "say {{x}}"), r"has no `\|\|\|` separator, so it renders no target and every row would be skipped"),
    (Template("t", "{{x}} ||| {{x}}", answer_choices=" "), r"has an empty answer_choices"),
], ids=["no-separator", "empty-choices"])
def test_a_template_that_never_renders_a_target_is_refused_by_the_task(template, why):
    # a Python task accepted it (the YAML loader refused it) and to_dataset dropped every row as skipped, leaving an
    # empty dataset behind a log warning
    with pytest.raises(task_registry.TaskDefinitionError, match=rf"^task 'g': template 't' {why}"):
        Task("g", GeneratorSource(numbered_rows, num_rows=3), [QUESTION, template])
