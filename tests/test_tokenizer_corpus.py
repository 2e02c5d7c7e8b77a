"""The texts a run's trained tokenizer reads (`run_tokenizer.corpus_examples`): those `Task.to_dataset` renders from
each task's first `tokenizer.train.max_examples_per_task` rows, whichever rendering they are read from."""
from __future__ import annotations

import json

import pytest

import task_registry
from task_registry import LocalFileSource, Task, Template
from t2t_mtl.config import load_config
from t2t_mtl.engine.run_tokenizer import corpus_examples
from t2t_mtl.tokenizer import rendered_texts

PER_TASK = 4


def texts_of(dataset):
    return [[row["inputs"], row["targets"], row["answer_choices"]] for row in dataset]


@pytest.fixture
def two_template_task(tmp_path):
    """10 rows; rows 1 and 8 have an empty answer, which template `y` renders as an empty target (skipped)."""
    rows = [{"x": f"word{i} other{i}", "y": "" if i in (1, 8) else f"answer{i}"} for i in range(10)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    templates = [Template("y", "« {{x}} ||| {{y}}"), Template("fixed", "» {{x}} ||| {{answer_choices[0]}}",
                                                                 answer_choices="yes ||| no")]
    with task_registry.isolated_registry():
        yield task_registry.register_task(Task("corpus_task", LocalFileSource(tmp_path / "rows.jsonl"), templates,
                                               splits=("train",)))


@pytest.mark.parametrize("overrides", [
    [],                                          # every row rendered for the streams: the head is read from it
    ["data.max_examples_per_task=6"],            # a head of 6 rows, none skipped: read from it
    ["data.max_examples_per_task=3"],            # fewer rows than the tokenizer reads: rendered on their own
    ["data.all_templates=true"],                 # each row in each template (rows skipped: rendered on their own)
    ["data.all_templates=true", "data.max_examples_per_task=6"],
    ["data.templates=[fixed]"],
    ["training.seed=7"],
])
def test_the_corpus_is_what_the_first_rows_render_to(two_template_task, overrides):
    cfg = load_config("quickstart", overrides)
    reference = two_template_task.to_dataset("train", templates=cfg.data.templates,
                                             every_template=cfg.data.all_templates, max_examples=PER_TASK,
                                             seed=cfg.training.seed)
    corpus = corpus_examples(two_template_task, cfg, PER_TASK)
    assert texts_of(corpus) == texts_of(reference)
    assert list(rendered_texts(corpus)) == list(rendered_texts(reference))


def test_each_row_in_every_template_is_read_from_the_streams_rendering_that_skips_none(tmp_path):
    # (the fixture's task skips rows, so with data.all_templates its corpus is rendered on its own)
    rows = [{"x": f"word{i}", "y": f"answer{i}"} for i in range(10)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    templates = [Template("y", "« {{x}} ||| {{y}}"), Template("z", "» {{x}} ||| {{y}}!")]
    cfg = load_config("quickstart", ["data.all_templates=true"])
    with task_registry.isolated_registry():
        task = task_registry.register_task(Task("every_template", LocalFileSource(tmp_path / "rows.jsonl"), templates,
                                                splits=("train",)))
        reference = task.to_dataset("train", every_template=True, max_examples=PER_TASK, seed=cfg.training.seed)
        corpus = corpus_examples(task, cfg, PER_TASK)
        assert task.render_stats["train"].skipped == 0  # (read from the streams' rendering of every row)
    assert len(corpus) == 2 * PER_TASK and texts_of(corpus) == texts_of(reference)


def test_a_builtin_task_reads_its_head_from_the_streams_rendering():
    task_registry.load_builtin_tasks()
    task = task_registry.get_task("sort_words")
    cfg = load_config("quickstart", [])
    reference = task.to_dataset("train", max_examples=50, seed=cfg.training.seed)
    corpus = corpus_examples(task, cfg, 50)
    assert len(corpus) == 50 and texts_of(corpus) == texts_of(reference)


def test_without_datasets_caching_the_corpus_is_rendered_on_its_own(two_template_task, monkeypatch):
    # the streams could not reuse a larger rendering, so the tokenizer renders only the rows it reads
    import datasets

    monkeypatch.setattr(datasets, "is_caching_enabled", lambda: False)
    calls = []
    render = two_template_task.to_dataset

    def counted_render(*args, **kwargs):
        calls.append(kwargs["max_examples"])
        return render(*args, **kwargs)

    monkeypatch.setattr(two_template_task, "to_dataset", counted_render)
    cfg = load_config("quickstart", [])
    corpus = corpus_examples(two_template_task, cfg, PER_TASK)
    assert calls == [PER_TASK]
    assert texts_of(corpus) == texts_of(render("train", max_examples=PER_TASK, seed=cfg.training.seed))
