"""The promptsource importer: every `templates.yaml` of the shared collection loads, and every template whose
dataset rows exist under `shared_data_dir` renders on the first rows of each split.

Rows map from promptsource's (dataset, subset) to `<data>/<dataset>/<subset or default>/<split>.jsonl`.
Templates that legitimately need fields our rows lack are listed in NEEDS_MISSING_FIELDS with the reason;
the test fails if any other template errors, and also if a listed one stops erroring (list kept exact).
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

import task_registry
from task_registry import (AnswerNotInChoicesError, MissingFieldError, TaskDefinitionError, Template,
                           TemplateRenderError)
from task_registry.promptsource import (HyphensToUnderscores, import_promptsource, load_promptsource_collection,
                                       promptsource_task)

FIRST_ROWS = 5
# The shared trec rows follow the current hub schema (`coarse_label` only; README: "no fine labels"), while
# promptsource's trec templates were written for the old schema with `label_coarse` and `label_fine`.
_TREC_OLD_SCHEMA = "trec rows have `coarse_label` only; the template reads the old fields label_coarse/label_fine"
NEEDS_MISSING_FIELDS = {
    ("trec", None, name): _TREC_OLD_SCHEMA for name in (
        "what_category_best_describe", "fine_grained_LOC", "fine_grained_NUM_context_first", "fine_grained_ENTY",
        "fine_grained_NUM", "pick_the_best_descriptor", "fine_grained_open_context_first",
        "fine_grained_LOC_context_first", "which_category_best_describes", "fine_grained_DESC", "trec1",
        "fine_grained_ABBR", "fine_grained_ABBR_context_first", "trec2", "fine_grained_HUM", "fine_grained_open",
        "fine_grained_HUM_context_first", "fine_grained_DESC_context_first")
}


@pytest.fixture(scope="module")
def collection(promptsource_dir):
    return load_promptsource_collection(promptsource_dir)


def test_every_templates_file_loads(promptsource_dir, collection):
    files = sorted(Path(promptsource_dir).rglob("templates.yaml"))
    assert len(files) == 279
    assert len(collection) == 279
    # independent count: the `!Template` tags in the raw text
    tags = sum(len(re.findall(r"!Template\s*$", f.read_text(encoding="utf-8"), flags=re.M)) for f in files)
    assert sum(len(templates) for templates in collection.values()) == tags
    for (dataset, subset), templates in collection.items():
        assert templates, (dataset, subset)
        assert all(isinstance(t, Template) and t.name and t.jinja for t in templates)
        assert len({t.name for t in templates}) == len(templates), (dataset, subset)


def test_a_dataset_without_subsets_is_keyed_by_subset_none(collection):
    # snli's and multi_nli's headers say `subset: None`, which YAML reads as the text "None": they were keyed
    # ("snli", "None") while the other datasets without subsets are keyed (dataset, None)
    assert ("snli", None) in collection and ("multi_nli", None) in collection and ("ag_news", None) in collection
    assert not any(subset == "None" for _, subset in collection)


def test_metadata_and_ids_are_imported(promptsource_dir):
    templates = {t.name: t for t in import_promptsource(promptsource_dir, dataset="super_glue", subset="cb")}
    gpt3 = templates["GPT-3 style"]
    assert gpt3.id == "75db2bc2-3caa-4956-9653-13c7dd6255df"
    assert gpt3.answer_choices == "True ||| False ||| Neither"
    assert gpt3.metadata.original_task is True and gpt3.metadata.choices_in_prompt is True
    assert gpt3.metadata.metrics == ["Accuracy"]
    assert gpt3.source_file.endswith("super_glue/cb/templates.yaml") and gpt3.source_line > 0
    # the file itself and its folder give the same templates
    folder = Path(promptsource_dir) / "super_glue" / "cb"
    from_file = import_promptsource(folder / "templates.yaml")
    assert [t.name for t in import_promptsource(folder)] == [t.name for t in from_file]


def test_templates_with_shared_rows_render(collection, shared_data_dir):
    rendered, failed, failures = 0, 0, {}
    for (dataset, subset), templates in collection.items():
        folder = Path(shared_data_dir) / dataset / (subset or "default")
        if not folder.is_dir():
            continue
        for split_file in sorted(folder.glob("*.jsonl")):
            with open(split_file, encoding="utf-8") as handle:
                rows = [json.loads(line) for line, _ in zip(handle, range(FIRST_ROWS))]
            for template in templates:
                for index, row in enumerate(rows):
                    try:
                        template.render(row, task=f"{dataset}/{subset}", row_index=index)
                        rendered += 1
                    except MissingFieldError as error:
                        failed += 1
                        failures[(dataset, subset, template.name)] = error
    assert set(failures) == set(NEEDS_MISSING_FIELDS), {k: str(v) for k, v in failures.items()
                                                        if k not in NEEDS_MISSING_FIELDS}
    assert {error.field for error in failures.values()} <= {"label_coarse", "label_fine"}
    # 15 dataset configs with rows, 130 templates, 24 (config, split) files; trec's 18 fail on both splits
    assert (rendered, failed) == (890, 18 * 2 * FIRST_ROWS)


def test_promptsource_task_end_to_end(promptsource_dir, shared_data_dir):
    previous = task_registry.get_data_dir()
    task_registry.set_data_dir(shared_data_dir)
    try:
        task = promptsource_task("ps_cb", promptsource_dir, "super_glue", "cb", template_names=["GPT-3 style"],
                                 task_type="nli")
        dataset = task.to_dataset("validation", max_examples=4)
        assert dataset[0]["targets"] == "False" and dataset[0]["answer_choices"] == ["True", "False", "Neither"]
        assert dataset[0]["inputs"].endswith("Question: Valence was helping True, False, or Neither?")
        with pytest.raises(TaskDefinitionError, match="no template"):
            promptsource_task("x", promptsource_dir, "super_glue", "cb", template_names=["GPT 3 style"])
    finally:
        task_registry.set_data_dir(previous)


def test_a_template_that_cannot_render_names_its_file_line_and_id(promptsource_dir, shared_data_dir):
    # trec's `trec1` reads `label_coarse`, which the shared rows lack: the error named the task (the user's name,
    # not the dataset) and the template's name only, not the file it came from nor its promptsource id
    path = Path(promptsource_dir) / "trec" / "templates.yaml"
    text = path.read_text(encoding="utf-8")
    starts = [m.start() for m in re.finditer(r"!Template\s*$", text, flags=re.M)] + [len(text)]
    start, end = next((a, b) for a, b in zip(starts, starts[1:]) if re.search(r"^ +name: trec1$", text[a:b], re.M))
    template_id = re.search(r"^ +id: (\S+)$", text[start:end], flags=re.M).group(1)
    jinja_line = text[:start + re.search(r"^ +jinja:", text[start:end], flags=re.M).start()].count("\n") + 1
    previous = task_registry.get_data_dir()
    task_registry.set_data_dir(shared_data_dir)
    try:
        task = promptsource_task("ps_questions", promptsource_dir, "trec", template_names=["trec1"],
                                 splits=("train", "test"))
        with pytest.raises(MissingFieldError) as raised:
            task.to_dataset("test", max_examples=2)
    finally:
        task_registry.set_data_dir(previous)
    assert f"template 'trec1' (from {path}:{jinja_line}, id {template_id}), row 0: " in str(raised.value)
    assert raised.value.template == "trec1" and raised.value.field == "label_coarse"


def test_a_choice_longer_than_the_truncation_says_the_target_was_cut_short(promptsource_dir, shared_data_dir):
    # promptsource cuts every `{{ }}` to 2048 characters but not the answer choices, so `{{answer_choices[label]}}`
    # of a longer choice is no choice: the error said only that the target is not among the choices
    template = next(t for t in import_promptsource(promptsource_dir, "super_glue", "copa") if t.name == "best_option")
    with open(Path(shared_data_dir) / "super_glue" / "copa" / "validation.jsonl", encoding="utf-8") as handle:
        row = json.loads(handle.readline())
    long_choice = " ".join([row["choice1"]] * 120)
    assert len(long_choice) > 2048 + 5  # beyond Jinja's truncate leeway
    with pytest.raises(AnswerNotInChoicesError) as raised:
        template.render({**row, "choice1": long_choice, "label": 0}, task="copa", row_index=0)
    cut = long_choice[:2048 - 3].rsplit(" ", 1)[0] + "..."  # Jinja's truncate(2048): whole words, then "..."
    assert f"target {cut!r} is not among the answer choices" in str(raised.value)
    assert "cut short by promptsource's truncation of every `{{ }}` to 2048 characters" in str(raised.value)


def test_promptsource_task_renames_hyphenated_columns(tmp_path):
    _write_one_row_collection(tmp_path, "demo_hyphen", {"first-sentence": "a", "label": 1},
                              "{{first_sentence}} ||| {{answer_choices[label]}}")
    previous = task_registry.get_data_dir()
    task_registry.set_data_dir(tmp_path / "data")
    try:
        task = promptsource_task("hyphen", tmp_path / "templates", "demo_hyphen", splits=("train",))
        assert task.to_dataset("train")[0] == {"inputs": "a", "targets": "yes", "answer_choices": ["no", "yes"],
                                               "references": ["yes"], "task": "hyphen", "template": "t"}
    finally:
        task_registry.set_data_dir(previous)


def test_unknown_dataset_names_close_matches(promptsource_dir):
    with pytest.raises(TaskDefinitionError, match="did you mean 'super_glue/cb'"):
        import_promptsource(promptsource_dir, dataset="super_glue", subset="cbb")


def test_loader_refuses_python_object_tags(tmp_path):
    bad = tmp_path / "templates.yaml"
    bad.write_text("dataset: x\ntemplates:\n  a: !!python/object/apply:os.system ['echo owned']\n")
    with pytest.raises(TaskDefinitionError, match="not valid promptsource YAML"):
        import_promptsource(bad)


def test_a_template_id_repeated_in_one_file_is_refused_with_its_line(tmp_path):
    entry = ("  {key}: !Template\n    answer_choices: no ||| yes\n    id: {key}\n"
             "    jinja: '{{{{x}}}} ||| {{{{answer_choices[label]}}}}'\n    name: {name}\n    reference: ''\n")
    bad = tmp_path / "templates.yaml"
    bad.write_text("dataset: x\ntemplates:\n" + entry.format(key="a1", name="first")
                   + entry.format(key="a1", name="second"))  # YAML alone would keep only "second"
    with pytest.raises(TaskDefinitionError, match=r"duplicate key 'a1' (?s:.*)line 9, column 3"):
        import_promptsource(bad)


def test_two_files_with_the_same_header_are_refused_naming_both(tmp_path):
    # the collection is keyed by the headers' (dataset, subset): a copied folder whose header was not edited
    # replaced the original's templates without a word (promptsource keys by folder and keeps both)
    entry = ("dataset: glue\nsubset: rte\ntemplates:\n  a1: !Template\n    id: a1\n"
             "    jinja: '{{{{x}}}} ||| {{{{y}}}}'\n    name: {name}\n    reference: ''\n")
    for folder, name in (("rte", "original"), ("rte_copy", "copy")):
        (tmp_path / "glue" / folder).mkdir(parents=True)
        (tmp_path / "glue" / folder / "templates.yaml").write_text(entry.format(name=name))
    first, second = tmp_path / "glue" / "rte" / "templates.yaml", tmp_path / "glue" / "rte_copy" / "templates.yaml"
    with pytest.raises(TaskDefinitionError, match=rf"^{re.escape(str(second))}: (?s:.*){re.escape(str(first))}"):
        load_promptsource_collection(tmp_path)


def test_a_malformed_template_entry_names_the_file(tmp_path):
    # was "template 'one': `answer_choices` must be ..." with no word of which templates.yaml holds it
    bad = tmp_path / "templates.yaml"
    bad.write_text("dataset: x\ntemplates:\n  a1: !Template\n    answer_choices: [no, yes]\n    id: a1\n"
                   "    jinja: '{{x}} ||| {{y}}'\n    name: one\n    reference: ''\n")
    with pytest.raises(TaskDefinitionError, match=rf"^{re.escape(str(bad))}: template 'one': `answer_choices` must be"):
        import_promptsource(bad)


_HAND_WRITTEN = """subset: sub
templates:
  k1: !Template
    id: abc
    jinja: |-
      {{text}}
      ||| {{label}}
    name: first
    reference: from a paper
  k2: !Template
    jinja: '{{text}} ||| x'
    name: second
"""


def test_a_hand_written_file_keeps_ids_references_lines_and_its_folder_dataset(tmp_path):
    path = tmp_path / "ds" / "sub" / "templates.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(_HAND_WRITTEN)
    first, second = load_promptsource_collection(tmp_path)[("ds", "sub")]  # no `dataset:` header: the folder's
    assert (first.id, first.reference, first.source_line) == ("abc", "from a paper", 6)  # a block's text: line 6
    assert (second.id, second.reference, second.source_line) == ("k2", "", 11)


def test_hyphens_become_underscores_before_the_tasks_own_preprocessors(tmp_path):
    (tmp_path / "templates" / "ds" / "sub").mkdir(parents=True)
    (tmp_path / "templates" / "ds" / "sub" / "templates.yaml").write_text(_HAND_WRITTEN)
    (tmp_path / "data" / "ds" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "ds" / "sub" / "train.jsonl").write_text(json.dumps({"my-text": "hi", "label": 1}) + "\n")
    previous = task_registry.get_data_dir()
    task_registry.set_data_dir(tmp_path / "data")
    try:
        task = promptsource_task("ps_hyphens", tmp_path / "templates", "ds", "sub", template_names=["first"],
                                 preprocessors=[task_registry.Rename({"my_text": "text"})], splits=("train",))
        assert list(task.load_rows("train")) == [{"text": "hi", "label": 1}]
    finally:
        task_registry.set_data_dir(previous)


def _first_row(shared_data_dir, *parts: str) -> dict:
    with open(Path(shared_data_dir).joinpath(*parts), encoding="utf-8") as handle:
        return json.loads(handle.readline())


def test_a_separator_in_a_rows_answer_list_is_named_not_blamed_on_the_template(promptsource_dir, shared_data_dir):
    # promptsource protects `|||` in a field that is text, not in text inside a list: an answer of WebQuestions'
    # `answers` holding one splits the rendering in three (promptsource drops the row); the error said "check the
    # template for a stray `|||`", of a template with none
    template = next(t for t in import_promptsource(promptsource_dir, "web_questions") if t.name == "question-answer")
    row = _first_row(shared_data_dir, "web_questions", "default", "test.jsonl")
    template.render(row, task="wq", row_index=0)  # (as the data is: renders)
    row["answers"] = [answer.replace(" ", " ||| ", 1) for answer in row["answers"]]
    with pytest.raises(TemplateRenderError) as raised:
        template.render(row, task="wq", row_index=0, rng=random.Random(0))
    message = str(raised.value)
    assert "the rendered text has 2 `|||` separators, expected one (input ||| target): the row's field 'answers' " \
           "holds `|||` inside a list or record, which reaches the text unprotected" in message
    assert "promptsource drops such a row" in message and "check the template" not in message
    assert raised.value.field == "answers"


def test_a_separator_in_an_answer_choice_is_named_not_blamed_on_the_template(promptsource_dir, shared_data_dir):
    # COPA's choices are its rows' `choice1` / `choice2`: the choices are un-protected before the template prints
    # one as the target, so a choice holding `|||` splits the rendering (promptsource drops the row)
    template = next(t for t in import_promptsource(promptsource_dir, "super_glue", "copa") if t.name == "best_option")
    row = _first_row(shared_data_dir, "super_glue", "copa", "validation.jsonl")
    row.update(choice1="left ||| right", label=0)
    with pytest.raises(TemplateRenderError) as raised:
        template.render(row, task="copa", row_index=0)
    message = str(raised.value)
    assert ": the answer choice 'left ||| right' holds `|||` (the row's field 'choice1'), which reaches the text " \
           "unprotected" in message
    assert "promptsource drops such a row" in message and "check the template" not in message
    assert raised.value.field == "choice1"


def _write_one_row_collection(root: Path, dataset: str, row: dict, jinja: str) -> None:
    """`root/data/<dataset>/default/train.jsonl` holding `row`, and `root/templates/<dataset>/templates.yaml` holding
    one template `t` (answer choices `no ||| yes`) of `jinja`."""
    folder = root / "data" / dataset / "default"
    folder.mkdir(parents=True)
    (folder / "train.jsonl").write_text(json.dumps(row) + "\n")
    (root / "templates" / dataset).mkdir(parents=True)
    (root / "templates" / dataset / "templates.yaml").write_text(
        f"dataset: {dataset}\ntemplates:\n  x1: !Template\n    answer_choices: no ||| yes\n    id: x1\n"
        f"    jinja: '{jinja}'\n    name: t\n    reference: ''\n")


def test_columns_that_hyphens_to_underscores_would_merge_are_refused_naming_both(tmp_path):
    # `label-coarse` beside `label_coarse`: promptsource's renaming makes one name of two columns (its row dict keeps
    # the later one's value); the rename gave a table with two `label_coarse` fields, which failed when the rows were
    # rendered with pyarrow's KeyError 'Field "label_coarse" exists 2 times in schema', a traceback naming no task
    _write_one_row_collection(tmp_path, "demo_merge", {"label-coarse": 1, "label_coarse": 0, "text": "hi"},
                              "{{text}} ||| {{answer_choices[label_coarse]}}")
    previous = task_registry.get_data_dir()
    task_registry.set_data_dir(tmp_path / "data")
    try:
        task = promptsource_task("merged", tmp_path / "templates", "demo_merge", splits=("train",))
        for streaming in (False, True):
            with pytest.raises(TaskDefinitionError) as raised:
                list(task.to_dataset("train", streaming=streaming))
            assert str(raised.value).startswith(
                "task 'merged': split 'train': columns 'label-coarse' and 'label_coarse' would both be 'label_coarse' "
                "once promptsource's `-` in column names becomes `_`"), streaming
    finally:
        task_registry.set_data_dir(previous)


def test_choice_of_an_empty_answer_list_names_the_field_and_the_guard(promptsource_dir, shared_data_dir):
    # WebQuestions' templates print `answers | choice`; a row with no answer (promptsource fails on it too, with
    # random's IndexError) was "rendering failed with IndexError: Cannot choose from an empty sequence", no field named
    template = next(t for t in import_promptsource(promptsource_dir, "web_questions") if t.name == "question-answer")
    row = {**_first_row(shared_data_dir, "web_questions", "default", "test.jsonl"), "answers": []}
    with pytest.raises(TemplateRenderError) as raised:
        template.render(row, task="wq", row_index=4)
    assert str(raised.value).endswith(
        "row 4: the `choice` filter got an empty list to pick from: field 'answers' is empty on this row (promptsource "
        "fails on it too); guard it in the template ({% if answers %}...{% endif %}) or drop such rows with a `filter` "
        "(`\"answers | length > 0\"`)")
    assert raised.value.field == "answers"


def test_random_of_an_empty_answer_list_names_the_field_not_a_missing_field_none(shared_data_dir):
    # Jinja's `random` gives an undefined value for an empty list, which printing refuses: the error said "field None
    # is missing from the row (No random item, sequence was empty.)"
    row = {**_first_row(shared_data_dir, "web_questions", "default", "test.jsonl"), "answers": []}
    with pytest.raises(TemplateRenderError) as raised:
        Template("any_answer", "{{ question }} ||| {{ answers | random }}").render(row, task="wq", row_index=4)
    assert str(raised.value).endswith(
        "row 4: the `random` filter got an empty list to pick from: field 'answers' is empty on this row (promptsource "
        "prints nothing for it); guard it in the template ({% if answers %}...{% endif %}, or `| default('')`) or drop "
        "such rows with a `filter` (`\"answers | length > 0\"`)")
    assert raised.value.field == "answers"


def test_a_yaml_entry_naming_a_collection_root_is_told_to_add_its_dataset_key(tmp_path, promptsource_dir):
    # the message was the Python call's, "... is a folder without templates.yaml; pass dataset= (and subset=) to pick
    # one from a collection", in a YAML file, whose `promptsource:` entry takes `dataset:` and `subset:` keys
    path = tmp_path / "ps_cb.yaml"
    path.write_text(f"name: ps_cb\nsource: {{hf: super_glue, name: cb}}\ntemplates:\n"
                    f"  - promptsource: {promptsource_dir}\n")
    assert task_registry.validate_task_files([path], check_rows=0) == [
        f"{path}:4: promptsource: {promptsource_dir} is a collection of promptsource templates (a templates.yaml per "
        f"dataset or subset): add `dataset:` (and `subset:`) beside `promptsource:` naming the one to import, e.g. "
        f"`dataset: super_glue` and `subset: cb`"]


def _old_trec_rows(split: str, num_rows: int, seed: int, path: str, also: str = ""):
    """The shared trec rows in the hub's old schema, whose `label-coarse` promptsource's templates read as
    `label_coarse` (and a field `also` holding the label too)."""
    with open(path, encoding="utf-8") as handle:
        for line, _ in zip(handle, range(num_rows)):
            row = json.loads(line)
            yield {"text": row["text"], "label-coarse": row["coarse_label"], **({also: 0} if also else {})}


def test_a_stream_whose_columns_are_unknown_gets_hyphens_as_underscores_too(promptsource_dir, shared_data_dir):
    # a streamed generator (as a hub dataset streamed from raw files) names no columns before its rows are read: the
    # renaming, which read the column names, did nothing, and every row failed on `label_coarse` (map-style rendered)
    path = str(Path(shared_data_dir) / "trec" / "default" / "test.jsonl")
    templates = [t for t in import_promptsource(promptsource_dir, "trec") if t.name == "trec1"]
    task = task_registry.Task("old_trec", task_registry.GeneratorSource(_old_trec_rows, num_rows=6,
                                                                        gen_kwargs={"path": path}),
                              templates, preprocessors=[HyphensToUnderscores()], splits=("test",))
    assert task.load_rows("test", streaming=True).column_names is None
    mapped = task.to_dataset("test").to_list()
    assert len(mapped) == 6 and mapped[0]["targets"] in mapped[0]["answer_choices"]
    assert list(task.to_dataset("test", streaming=True)) == mapped
    merged = task_registry.Task("old_trec_merged", task_registry.GeneratorSource(
        _old_trec_rows, num_rows=6, gen_kwargs={"path": path, "also": "label_coarse"}), templates,
        preprocessors=[HyphensToUnderscores()], splits=("test",))
    with pytest.raises(TaskDefinitionError, match="columns 'label-coarse' and 'label_coarse' would both be"):
        list(merged.to_dataset("test", streaming=True))
