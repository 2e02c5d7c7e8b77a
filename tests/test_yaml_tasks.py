"""YAML task files: the documented schema works end to end, directories register, problems are collected with
file and line."""
from __future__ import annotations

import json
import logging
import re
import textwrap

import pytest

import task_registry
from task_registry import TaskDefinitionError, TaskFileError, parse_task_file, validate_task_file
from task_registry import yaml_tasks


def _documented_example(promptsource_dir) -> str:
    doc = yaml_tasks.__doc__
    block = doc[doc.index("    name: my_rte"):doc.index("\nErrors name")]
    return textwrap.dedent(block).replace("../promptsource-templates", str(promptsource_dir))


def test_documented_schema_example_is_valid_and_renders(tmp_path, promptsource_dir, shared_data_dir):
    path = tmp_path / "my_rte.yaml"
    path.write_text(_documented_example(promptsource_dir))
    previous = task_registry.get_data_dir()
    task_registry.set_data_dir(shared_data_dir)
    try:
        assert validate_task_file(path) == []
        task = parse_task_file(path)
        assert (task.name, task.task_type, task.cluster, task.held_out, task.splits, task.metrics) == (
            "my_rte", "nli", "nli", False, ("train", "validation"), ("accuracy",))
        assert task.template_names == ["t5", "GPT-3 style", "can we infer"]
        rows = task.load_rows("validation")
        assert rows[0]["both"] == rows[0]["premise"] + " " + rows[0]["hypothesis"]
        t5 = task.get_template("t5").render(rows[0])
        assert t5.inputs == ("rte premise: Dana Reeve, the widow of the actor Christopher Reeve, has died of lung "
                             "cancer at age 44, according to the Christopher Reeve Foundation. hypothesis: "
                             "Christopher Reeve had an accident.")
        assert (t5.targets, t5.instruction) == ("not_entailment", "Does the premise entail the hypothesis?")
        assert t5.context == rows[0]["premise"] + " " + rows[0]["hypothesis"]
        assert task.get_template("t5").metadata.choices_in_prompt is False
        # the promptsource template imported for super_glue/rte reads `premise`/`hypothesis`, which the
        # rename preprocessor provides for glue/rte rows
        assert task.get_template("can we infer").render(rows[0]).inputs.startswith("Suppose Dana Reeve")
        assert len(task.to_dataset("validation")) == 277
    finally:
        task_registry.set_data_dir(previous)


def test_local_files_relative_to_the_yaml_and_directory_registration(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("".join(json.dumps({"q": f"q{i}", "a": f"a{i}"}) + "\n"
                                                           for i in range(3)))
    (tmp_path / "tasks").mkdir()
    for name in ("qa_one", "qa_two"):
        (tmp_path / "tasks" / f"{name}.yaml").write_text(textwrap.dedent(f"""\
            name: {name}
            splits: [train]
            cluster: closed_book
            held_out: {str(name == 'qa_two').lower()}
            source:
              files: {{train: ../data/train.jsonl}}
            templates:
              - name: plain
                jinja: "question: {{{{q}}}} ||| {{{{a}}}}"
            """))
    with task_registry.isolated_registry():
        tasks = task_registry.load_task_dir(tmp_path / "tasks")
        assert [t.name for t in tasks] == ["qa_one", "qa_two"]
        assert task_registry.list_tasks(cluster="closed_book") == ["qa_one", "qa_two"]
        assert task_registry.get_task("qa_two").held_out
        assert task_registry.get_task("qa_one").to_dataset("train")["inputs"] == ["question: q0", "question: q1",
                                                                                  "question: q2"]
    (tmp_path / "tasks" / "copy.yaml").write_text((tmp_path / "tasks" / "qa_one.yaml").read_text())
    with pytest.raises(TaskFileError) as raised:
        task_registry.load_task_dir(tmp_path / "tasks", register=False)
    tasks = tmp_path / "tasks"  # was: "task name(s) ['qa_one'] defined by more than one file", naming no file
    assert raised.value.errors == [f"{tasks / 'copy.yaml'}:1: task name 'qa_one' is defined by more than one file: "
                                   f"{tasks / 'copy.yaml'}:1, {tasks / 'qa_one.yaml'}:1"]
    with pytest.raises(TaskDefinitionError, match="qa_one.yaml is a file, not a folder"):  # was: "does not exist"
        task_registry.load_task_dir(tmp_path / "tasks" / "qa_one.yaml")


def test_validation_collects_every_problem_with_lines(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent("""\
        name: bad
        task_typ: nli
        held_out: maybe
        source:
          hf: glue
          files: x.jsonl
        preprocessors:
          - rename: {a: b}
          - drop: x
          - filter: "label !="
        templates:
          - name: one
            jinja: "{{ x } ||| y"
          - name: two
            jnja: "{{x}} ||| y"
          - name: three
            jinja: "{{x}} ||| y"
            metadata: {original: true}
        """))
    errors = validate_task_file(path)
    assert errors == [  # an unknown key at its own line (was: the line its mapping starts at, 1 and 14)
        f"{path}:2: unknown key 'task_typ' (did you mean 'task_type'?)",
        f"{path}:3: `held_out` must be a bool, got 'maybe'",
        f"{path}:4: `source` needs exactly one of ['files', 'hf'], got keys ['files', 'hf']",
        f"{path}:9: preprocessor: expected one of ['filter', 'map', 'rename', 'span_corruption'] as the only key, "
        f"got {{'drop': 'x'}}",
        f"{path}:10: filter: Jinja expression 'label !=' does not parse: unexpected 'end of template'",
        f"{path}:13: template 'one' has a Jinja syntax error (line 1 of the template): unexpected '}}'",
        f"{path}:15: unknown key 'jnja' (did you mean 'jinja'?)",
        f"{path}:14: template lacks 'jinja'",
        f"{path}:16: template 'three': unknown metadata key(s) ['original']; allowed: ['choices_in_prompt', "
        f"'languages', 'metrics', 'original_task']",
    ]
    duplicated = tmp_path / "dup.yaml"
    duplicated.write_text("name: a\nname: b\n")
    assert validate_task_file(duplicated) == [f"{duplicated}:2: not valid YAML: duplicate key 'name' (lines 1 and 2; "
                                              f"YAML would keep only the second: merge them into one)"]
    list_key = tmp_path / "list_key.yaml"  # was a raw TypeError (unhashable type: 'list')
    list_key.write_text("name: a\n? [train, validation]\n: x\n")
    assert validate_task_file(list_key) == [f"{list_key}:2: not valid YAML: a key must be a name, got "
                                            f"['train', 'validation']"]


@pytest.mark.parametrize("hf", ["42", "1.5", "true", "null", "[glue, rte]", "{path: glue}", "''", "' '"])
def test_a_hub_id_that_is_not_a_name_is_reported_at_its_line(tmp_path, hf):
    # was: AttributeError ('int' object has no attribute 'startswith') from tasks validate / --tasks-dir; '' read
    # as a hub dataset named ''
    path = tmp_path / "task.yaml"
    path.write_text(f"name: t\nsource:\n  name: rte\n  hf: {hf}\ntemplates:\n  - {{name: a, jinja: 'x ||| y'}}\n")
    [error] = validate_task_file(path)
    assert error.startswith(f"{path}:4: source: `hf` is the hub dataset id (e.g. glue, or owner/name) or a local "
                            f"folder, a non-empty string; got "), error


def test_an_unknown_key_deep_in_a_mapping_is_reported_at_its_own_line(tmp_path):
    # was: at the line its mapping starts (the task's line 1, `source:` line 3, the template's `- promptsource:`)
    path = tmp_path / "late.yaml"
    path.write_text(textwrap.dedent("""\
        name: late
        description: one
        source:
          files: x.jsonl
          split: train
        templates:
          - promptsource: ../promptsource-templates
            dataset: super_glue
            subst: rte
        held_ot: true
        """))
    assert validate_task_file(path)[:3] == [f"{path}:10: unknown key 'held_ot' (did you mean 'held_out'?)",
                                            f"{path}:5: source: unknown key 'split' (allowed: ['files'])",
                                            f"{path}:9: unknown key 'subst' (did you mean 'subset'?)"]


def test_a_yaml_merge_key_may_be_overridden_in_a_task_file(tmp_path):
    # was: "not valid YAML: duplicate key 'name'" for a template that reuses another with `<<: *base` and renames
    # itself, though `name` is written once there; a key written twice in one mapping is still refused
    (tmp_path / "rows.jsonl").write_text(json.dumps({"q": "a", "label": 1}) + "\n")
    path = tmp_path / "task.yaml"
    path.write_text(textwrap.dedent("""\
        name: merged
        splits: [train]
        source: {files: rows.jsonl}
        templates:
          - &base
            name: one
            jinja: "{{q}} ||| {{ answer_choices[label] }}"
            answer_choices: "no ||| yes"
          - <<: *base
            name: two
            answer_choices: "false ||| true"
        """))
    assert validate_task_file(path) == []
    task = parse_task_file(path)
    assert [(t.name, t.jinja, t.answer_choices) for t in task.templates] == [
        ("one", "{{q}} ||| {{ answer_choices[label] }}", "no ||| yes"),
        ("two", "{{q}} ||| {{ answer_choices[label] }}", "false ||| true")]
    twice = tmp_path / "twice.yaml"
    twice.write_text("a: &x {k: 1}\nb:\n  <<: *x\n  k: 2\n  k: 3\n")
    assert validate_task_file(twice) == [f"{twice}:5: not valid YAML: duplicate key 'k' (lines 4 and 5; YAML would "
                                         f"keep only the second: merge them into one)"]


def test_validation_renders_the_first_rows(tmp_path):
    (tmp_path / "rows.jsonl").write_text(json.dumps({"text": "t", "label": 0}) + "\n")
    path = tmp_path / "task.yaml"
    path.write_text(textwrap.dedent("""\
        name: renders
        splits: [train]
        source: {files: rows.jsonl}
        templates:
          - name: ok
            jinja: "{{text}} ||| {{ answer_choices[label] }}"
            answer_choices: "no ||| yes"
          - name: typo
            jinja: "{{txt}} ||| {{ answer_choices[label] }}"
            answer_choices: "no ||| yes"
        """))
    problems = validate_task_file(path)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}:9: split 'train', row 0: task 'renders', template 'typo': "
                                  f"field 'txt' is missing from the row")
    assert validate_task_file(path, check_rows=0) == []


def test_a_missing_field_is_reported_once_per_template_with_the_rows_it_hit(tmp_path):
    # was: one line per row and split (6 identical lines here), and for `answer_choices[absent]` Jinja's "list
    # object has no element Undefined" inside the message
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps({"text": f"t{i}", "label": i % 2}) + "\n"
                                                         for i in range(4)))
    path = tmp_path / "task.yaml"
    path.write_text(textwrap.dedent("""\
        name: misses
        splits: [train, test]
        source: {files: {train: train.jsonl, test: test.jsonl}}
        templates:
          - name: ok
            jinja: "{{ text }} ||| {{ answer_choices[label] }}"
            answer_choices: "no ||| yes"
          - name: typo
            jinja: "{{ text }} ||| {{ answer_choices[lable] }}"
            answer_choices: "no ||| yes"
          - name: odd_rows
            jinja: "{{ text }} ||| {% if label %}{{ gold }}{% else %}no{% endif %}"
        """))
    fields = "the row has fields ['label', 'text']"
    assert validate_task_file(path) == [
        f"{path}:9: 6 of the 6 rows checked (splits 'train', 'test'; first: split 'train', row 0): task 'misses', "
        f"template 'typo': field 'lable' is missing from the row; {fields}; did you mean 'label' (a misspelt name in "
        f"the template)?",
        f"{path}:12: 2 of the 6 rows checked (splits 'train', 'test'; first: split 'train', row 1): task 'misses', "
        f"template 'odd_rows': field 'gold' is missing from the row; {fields}"]
    assert validate_task_file(path, check_rows=1) == [
        f"{path}:9: 2 of the 2 rows checked (splits 'train', 'test'; first: split 'train', row 0): task 'misses', "
        f"template 'typo': field 'lable' is missing from the row; {fields}; did you mean 'label' (a misspelt name in "
        f"the template)?"]


def test_a_template_whose_checked_rows_of_a_labelled_split_all_render_no_target_is_a_problem(tmp_path):
    # was: valid, though every row of train and validation would be dropped as a skipped one (the target reads a
    # field these rows hold empty); a test split's empty targets are how test splits come
    rows = [{"text": f"review {i}", "label": i % 2, "gold": ""} for i in range(4)]
    for split in ("train", "validation", "test"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "task.yaml"
    path.write_text(textwrap.dedent("""\
        name: empty_gold
        splits: [train, validation, test]
        source: {files: {train: train.jsonl, validation: validation.jsonl, test: test.jsonl}}
        templates:
          - name: ok
            jinja: "{{ text }} ||| {{ answer_choices[label] }}"
            answer_choices: "no ||| yes"
          - name: reads_gold
            jinja: "{{ text }} ||| {{ gold }}"
          - name: skips_all
            jinja: "{% if gold %}{{ text }} ||| {{ gold }}{% endif %}"
        """))
    expected = [f"{path}:9: split {split!r}: task 'empty_gold', template 'reads_gold': all 3 checked rows render an "
                f"empty target (the Jinja after '|||', reading 'gold'), so training and evaluation would drop every "
                f"one; make the target render the answer (a test split's empty targets are not checked)"
                for split in ("train", "validation")]
    assert validate_task_file(path) == expected  # (skips_all skips whole rows, input too: promptsource's skip case)
    assert validate_task_file(path, check_rows=1) == [message.replace("all 3", "all 1") for message in expected]
    rows[2]["gold"] = "positive"  # one checked row with a target: its template may skip the others on purpose
    for split in ("train", "validation"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert validate_task_file(path) == []


def test_a_missing_default_split_says_that_splits_default_to_train_and_validation(tmp_path):
    # was only "no split 'validation'", with nothing about where that split came from
    (tmp_path / "train.jsonl").write_text(json.dumps({"q": "q", "a": "a"}) + "\n")
    (tmp_path / "only_train.yaml").write_text("name: only_train\nsource: {files: {train: train.jsonl}}\n"
                                              "templates:\n  - {name: t, jinja: '{{q}} ||| {{a}}'}\n")
    path = tmp_path / "only_train.yaml"
    message = (f"{path}:2: `source: files:` has no file for the split(s) ['validation']; it has ['train'] (`splits` "
               f"default to [train, validation]: list the ones the files hold)")
    assert validate_task_file(path) == [message]  # named no line (found only by reading the rows)
    assert validate_task_file(path, check_rows=0) == [message]  # was not found at all
    with pytest.raises(TaskFileError) as raised:  # loading it refuses it as validate does (was: left to the
        parse_task_file(path)                  # split's first use, so `tasks list --tasks-dir` listed it)
    assert raised.value.errors == [message]
    path.write_text(path.read_text().replace("name: only_train\n", "name: only_train\nsplits: [train, test]\n"))
    assert validate_task_file(path, check_rows=0) == [message.replace("['validation']", "['test']")]


def test_a_split_that_a_file_readers_data_files_lack_is_a_problem_of_the_file(tmp_path):
    # `hf: csv` with `data_files: {train: ...}` and the default splits loaded, trained, and only failed after
    # training, reading the validation split: "hub dataset csv split 'validation' could not be loaded", naming
    # neither the task nor the file
    (tmp_path / "train.csv").write_text("q,a\nx,y\n")
    path = tmp_path / "reader.yaml"
    path.write_text("name: reader\nsource: {hf: csv, data_files: {train: train.csv}}\n"
                    "templates:\n  - {name: t, jinja: '{{q}} ||| {{a}}'}\n")
    message = (f"{path}:2: `source: data_files:` has no file for the split(s) ['validation']; it has ['train'] "
               f"(`splits` default to [train, validation]: list the ones the files hold)")
    assert validate_task_file(path, check_rows=0) == [message]
    with pytest.raises(TaskFileError) as raised:
        parse_task_file(path)
    assert raised.value.errors == [message]
    path.write_text("splits: [train]\n" + path.read_text())
    assert parse_task_file(path).load_rows("train")[0] == {"q": "x", "a": "y"}
    path.write_text(path.read_text().replace("{train: train.csv}", "[train.csv]"))  # one list: datasets' 'train'
    assert validate_task_file(path) == []
    path.write_text(path.read_text().replace("splits: [train]\n", ""))  # was: the same failure after training
    assert validate_task_file(path, check_rows=0) == [
        f"{path}:2: `source: data_files:` as a path or a list is datasets' split 'train' alone, but the task has the "
        f"splits ['train', 'validation'] (`splits` default to [train, validation]): map each split to its files "
        f"(`data_files: {{train: ..., validation: ...}}`) or set `splits: [train]`"]


def test_a_tsv_file_given_to_the_csv_reader_is_a_problem_saying_to_list_it_under_files(tmp_path):
    # `hf: csv` split each line of a .tsv file at commas: its rows had one column 'q\ta' (and pandas' index), and
    # the problem reported was a missing field 'q' at every row
    (tmp_path / "rows.tsv").write_text("q\ta\nx, y\tz\n")
    path = tmp_path / "tsv.yaml"
    path.write_text("name: tsv\nsplits: [train]\nsource: {hf: csv, data_files: {train: rows.tsv}}\n"
                    "templates:\n  - {name: t, jinja: '{{q}} ||| {{a}}'}\n")
    assert validate_task_file(path) == [
        f"{path}:3: source: data file {str(tmp_path / 'rows.tsv')!r} is tab-separated, but the csv reader splits lines "
        f"at commas: in a task file list it under `files:`, which reads .tsv files tab-separated (in Python: "
        f"LocalFileSource, or HFSource(..., sep='\\t'))"]
    path.write_text(path.read_text().replace("{hf: csv, data_files: {train: rows.tsv}}", "{files: {train: rows.tsv}}"))
    assert parse_task_file(path).load_rows("train")[0] == {"q": "x, y", "a": "z"}


@pytest.mark.parametrize("reader, files, problem", [
    ("json", {"train": "rows.csv"}, "data file 'rows.csv' is a csv file, but `json` is the reader named: name the "
                                    "`csv` reader (`hf: csv` in a task file)"),
    ("csv", ["a.csv", "b.jsonl.gz"], "data file 'b.jsonl.gz' is a json file, but `csv` is the reader named"),
    ("parquet", "rows.tsv", "data file 'rows.tsv' is a csv file, but `parquet` is the reader named"),
])
def test_a_data_file_of_another_format_than_its_reader_is_refused(reader, files, problem):
    with pytest.raises(TaskDefinitionError, match=re.escape(problem)):
        task_registry.HFSource(reader, data_files=files)
    task_registry.HFSource("text", data_files=files)  # the text reader reads any file's lines
    task_registry.HFSource("csv", data_files="rows.tsv", sep="\t")  # told how to split


def test_a_data_file_path_written_relative_to_the_working_directory_says_how_to_write_it(tmp_path, monkeypatch,
                                                                                        caplog):
    # `files: {train: data/rows.jsonl}` beside `tasks/` and `data/`, meant from the working directory, was read as
    # tasks/data/rows.jsonl: validate and train said only that this file (or, for `hf: json`, datasets' "Unable to
    # find ...") did not exist, not that paths are relative to the YAML file, nor what to write
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.jsonl").write_text(json.dumps({"q": "a", "a": "b"}) + "\n")
    (tmp_path / "tasks").mkdir()
    path = tmp_path / "tasks" / "mine.yaml"
    monkeypatch.chdir(tmp_path)
    wrong, right = f"'{tmp_path / 'tasks' / 'data' / 'rows.jsonl'}'", "'../data/rows.jsonl'"
    for source, key in (("{files: {train: data/rows.jsonl}}", "files"),
                        ("{hf: json, data_files: {train: data/rows.jsonl}}", "data_files")):
        path.write_text(f"name: mine\nsplits: [train]\nsource: {source}\n"
                        f"templates:\n  - {{name: t, jinja: '{{{{q}}}} ||| {{{{a}}}}'}}\n")
        message = (f"{path}:3: source: {key}: the file 'data/rows.jsonl' does not exist relative to the YAML file's "
                   f"folder, where paths are read from ({wrong}); it exists relative to the working directory: "
                   f"write {right} (relative to the YAML file) or '{tmp_path / 'data' / 'rows.jsonl'}'")
        assert validate_task_file(path) == [message]  # (not also the load error of each split it repeats)
        with task_registry.isolated_registry(), caplog.at_level("WARNING"):
            caplog.clear()
            assert [t.name for t in task_registry.load_task_dirs(tmp_path / "tasks")] == ["mine"]  # a warning
        assert [r.getMessage() for r in caplog.records] == [message]
        path.write_text(path.read_text().replace("data/rows.jsonl", "../data/rows.jsonl"))
        assert validate_task_file(path) == []
        assert parse_task_file(path).load_rows("train")[0] == {"q": "a", "a": "b"}
    path.write_text(path.read_text().replace("../data/rows.jsonl", str(tmp_path / "absent.jsonl")))
    assert validate_task_file(path) == [f"{path}:3: source: data_files: the file "
                                        f"'{tmp_path / 'absent.jsonl'}' does not exist"]
    path.write_text(path.read_text().replace(str(tmp_path / "absent.jsonl"), "../data/*.jsonl"))
    assert validate_task_file(path) == []  # a pattern: datasets finds its files


@pytest.mark.parametrize("jinja", ["{{q}} ||| {{a}}", "{{q}}|||{{a}}", "Question: {{q}} ||| {{a}}",
                                   "{% if q %}{{q}} ||| {{a}}{% endif %}"])
def test_unquoted_jinja_is_a_yaml_error_saying_to_quote_it(tmp_path, jinja):
    # `jinja: {{q}} ||| {{a}}` unquoted gave only YAML's "expected chomping or indentation indicators, but found
    # '|'" (or "a key must be a name", "mapping values are not allowed here")
    path = tmp_path / "t.yaml"
    path.write_text(f"name: t\nsplits: [train]\nsource: {{files: rows.jsonl}}\ntemplates:\n  - name: plain\n"
                    f"    jinja: {jinja}\n")
    problems = validate_task_file(path)
    assert len(problems) == 1 and problems[0].startswith(f"{path}:6: not valid YAML: ")
    assert problems[0].endswith(f'; Jinja in a YAML value must be quoted: write jinja: "{jinja}"')
    (tmp_path / "rows.jsonl").write_text(json.dumps({"q": "x", "a": "y"}) + "\n")
    path.write_text(path.read_text().replace(f"jinja: {jinja}", f'jinja: "{jinja}"'))  # as advised
    assert parse_task_file(path).templates[0].jinja == jinja
    path.write_text(path.read_text() + "    context: {{q}}\n")  # read as the mapping {{'q': None}: None}
    assert validate_task_file(path) == [f"{path}:7: not valid YAML: a key must be a name, got {{'q': None}}; Jinja "
                                        f'in a YAML value must be quoted: write context: "{{{{q}}}}"']


def test_problems_that_the_task_finds_are_reported_at_the_line_of_their_key(tmp_path):
    # a hub config name of the wrong type was accepted (and read as the folder "['rte']" of the data dir); a
    # repeated template name was reported at line 1 (the task's), not at the template that repeats it
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nsource: {hf: glue, name: [rte]}\ntemplates:\n  - {name: a, jinja: 'x ||| y'}\n"
                    "  - {name: a, jinja: 'y ||| x'}\n")
    assert validate_task_file(path) == [
        f"{path}:2: source: `name` is the hub config name, a string, got ['rte']",
        f"{path}:5: a second template named 'a': template names must be unique within a task"]


def test_a_single_promptsource_name_may_be_written_as_a_string(tmp_path, promptsource_dir):
    text = _documented_example(promptsource_dir).replace("names: [GPT-3 style, can we infer]", "names: GPT-3 style")
    path = tmp_path / "one_name.yaml"
    path.write_text(text)
    assert parse_task_file(path).template_names == ["t5", "GPT-3 style"]


def test_a_yaml_template_declares_its_gold_references(tmp_path):
    (tmp_path / "qa.jsonl").write_text(json.dumps({"q": "where?", "answers": ["Paris", "France"]}) + "\n")
    body = textwrap.dedent("""\
        name: yaml_qa
        splits: [validation]
        metrics: [squad_exact_match]
        source: {files: {validation: qa.jsonl}}
        templates:
          - name: all
            jinja: "{{ q }} ||| {{ answers[0] }}"
            %s
        """)
    path = tmp_path / "qa.yaml"
    path.write_text(body % "references: \"{{ answers | join(' ||| ') }}\"")
    assert validate_task_file(path) == []
    task = parse_task_file(path)
    assert task.to_dataset("validation")[0]["references"] == ["Paris", "France"]
    # promptsource's `reference` (a free-text note) holding Jinja is almost surely a misspelt `references`
    path.write_text(body % "reference: \"{{ answers | join(' ||| ') }}\"")
    problems = validate_task_file(path)
    assert len(problems) == 1 and "qa.yaml:6: `reference` is promptsource's free-text note" in problems[0] \
        and "use `references`" in problems[0]
    path.write_text(body % "references: ''")
    assert "`references` must be a non-empty" in validate_task_file(path)[0]


def test_a_yaml_task_declares_the_groups_that_group_metrics_score(tmp_path, capsys):
    from t2t_mtl.cli import main as cli_main

    rows = [{"idx": {"question": q}, "answer": a, "label": 1} for q, a in [(0, "x"), (0, "y"), (1, "z")]]
    (tmp_path / "mrc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    body = textwrap.dedent("""\
        name: yaml_mrc
        splits: [validation]
        metrics: [group_exact_match]
        %s
        source: {files: {validation: mrc.jsonl}}
        templates:
          - {name: t, jinja: "{{ answer }}? ||| {{ answer_choices[label] }}", answer_choices: "no ||| yes"}
        """)
    path = tmp_path / "mrc.yaml"
    path.write_text(body % "group_by: idx.question")
    assert validate_task_file(path) == [] and cli_main(["tasks", "validate", str(path)]) == 0
    task = parse_task_file(path)
    rows_loaded = task.load_rows("validation")
    assert [task.group_key(rows_loaded[i], i) for i in range(3)] == ["0", "0", "1"]
    path.write_text(body % "group_by: 3")
    assert "`group_by` must be a str" in validate_task_file(path)[0]
    path.write_text(body % "group_by: 'idx.question +'")
    assert validate_task_file(path) == [  # was reported at line 1, the task's, not at the line of `group_by`
        f"{path}:4: `group_by`: Jinja expression 'idx.question +' does not parse: unexpected 'end of template'"]
    path.write_text(body % "")
    capsys.readouterr()
    assert cli_main(["tasks", "validate", str(path)]) == 1
    assert "metric 'group_exact_match' scores groups of examples and the task has no `group_by`" in \
        capsys.readouterr().err
    path.write_text(body % "group_by: idx.paragraph")
    with pytest.raises(task_registry.TemplateRenderError, match="task 'yaml_mrc': group_by, row 0: expression "
                                                                "'idx.paragraph' uses a missing field"):
        parse_task_file(path).group_key(rows_loaded[0], 0)


def test_validation_evaluates_group_by_and_postprocess_on_the_rows_it_checks(tmp_path):
    # was: both passed tasks validate; a missing field in group_by failed once evaluation grouped the rows, a name
    # other than `text` in postprocess once held-in validation scored the targets, after training
    rows = [{"idx": {"question": q}, "answer": a} for q, a in [(0, "x"), (1, "y")]]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    body = "name: exprs\nsplits: [validation]\nsource: {files: {validation: rows.jsonl}}\n%s\n%s\n" \
           "templates:\n  - {name: t, jinja: '{{ answer }}? ||| {{ answer }}'}\n"
    path = tmp_path / "exprs.yaml"
    path.write_text(body % ("group_by: idx.question", "postprocess: text | trim"))
    assert validate_task_file(path) == []
    path.write_text(body % ("group_by: idx.paragraph", "postprocess: output | trim"))
    group_by, postprocess = validate_task_file(path)
    assert group_by.startswith(f"{path}:4: 2 of the 2 rows checked (split 'validation'; first: split 'validation', "
                               f"row 0): task 'exprs': group_by, row 0: expression 'idx.paragraph' uses a missing "
                               f"field"), group_by
    assert postprocess.startswith(f"{path}:5: 2 of the 2 rows checked (split 'validation'; first: split "
                                  f"'validation', row 0): task 'exprs': postprocess failed on 'x'"), postprocess


def test_a_yaml_task_declares_its_postprocess_as_a_jinja_expression_over_text(tmp_path):
    # was: `postprocess` only as a Python function, so a YAML task could not score a GSM8K solution's final number
    (tmp_path / "sums.jsonl").write_text(json.dumps({"q": "1 + 1", "a": "1 and 1 make 2 #### 2"}) + "\n")
    body = textwrap.dedent("""\
        name: yaml_sums
        splits: [validation]
        metrics: [exact_match]
        %s
        source: {files: {validation: sums.jsonl}}
        templates:
          - {name: t, jinja: "{{ q }} ||| {{ a }}"}
        """)
    path = tmp_path / "sums.yaml"
    path.write_text(body % "postprocess: \"text.split('####')[-1] | trim if '####' in text else ''\"")
    assert validate_task_file(path) == []
    task = parse_task_file(path)
    texts = ["0 and 0 make 0. #### 0", "I think #### 3 ", "2 + 2 = 4\n#### 4", "no idea", ""]
    expected = [text.rsplit("####", 1)[1].strip() if "####" in text else "" for text in texts]  # as in Python
    assert task.postprocessed(texts) == expected == ["0", "3", "4", "", ""]
    assert task.describe()["postprocess"] == "text.split('####')[-1] | trim if '####' in text else ''"
    digest = task.definition_digest()
    path.write_text(body % "postprocess: \"text | trim\"")
    assert parse_task_file(path).definition_digest() != digest  # the expression is part of the definition
    path.write_text(body % "postprocess: 3")
    assert "`postprocess` must be a str" in validate_task_file(path)[0]
    path.write_text(body % "postprocess: 'text +'")
    assert validate_task_file(path) == [
        f"{path}:4: `postprocess`: Jinja expression 'text +' does not parse: unexpected 'end of template'"]
    path.write_text(body % "postprocess: output | trim")  # a name other than `text`: an error, not ''
    with pytest.raises(TaskDefinitionError, match="task 'yaml_sums': postprocess failed on 'x' .*'output' is "
                                                  "undefined"):
        parse_task_file(path).postprocessed(["x"])


@pytest.mark.parametrize("entry, problem", [
    ("{name: t, jinja: 'x ||| y', instruction: 5}", "template 't': `instruction` must be a string, got 5"),
    ("{name: t, jinja: 'x ||| y', context: [a]}", "template 't': `context` must be a string, got ['a']"),
    ("{name: t, jinja: 'x ||| y', id: 5}", "template 't': `id` must be a string, got 5"),
    ("{name: t, jinja: 'x ||| y', metadata: {metrics: Accuracy}}",
     "template 't': metadata `metrics` must be a list of strings, got 'Accuracy'"),
    ("{name: t, jinja: 'x ||| y', metadata: {original_task: 'yes'}}",
     "template 't': metadata `original_task` must be true or false, got 'yes'"),
    ("{promptsource: PS, dataset: super_glue, subset: rte, names: 5}",
     "promptsource: `names` must be a template name or a list of them, got 5"),
    # was accepted: the entry imported no template, without a word
    ("{promptsource: PS, dataset: super_glue, subset: rte, names: []}",
     "promptsource: `names` is an empty list, which imports no template: name the templates to import, or leave "
     "`names` out for all of them"),
    ("{promptsource: PS, dataset: 5}", "promptsource: `dataset` must be a string, got 5"),
    ("{promptsource: null}", "promptsource: `promptsource` must be a string, got None"),
])
def test_a_template_entry_of_the_wrong_type_is_a_problem_with_its_line(tmp_path, promptsource_dir, entry, problem):
    # each raised a raw TypeError (or was kept, e.g. metrics: "Accuracy" read as the metrics 'A', 'c', ...)
    path = tmp_path / "typed.yaml"
    path.write_text("name: typed\nsource: {hf: glue, name: rte}\ntemplates:\n  - "
                    + entry.replace("PS", str(promptsource_dir)) + "\n")
    assert validate_task_file(path) == [f"{path}:4: {problem}"]


@pytest.mark.parametrize("preprocessor, problem", [
    ("rename: {q: 5}", "rename maps column names to column names (non-empty strings), got 'q': 5"),
    ("map: {5: q}", "map: field names must be non-empty strings, got [5]"),
    ("span_corruption: {field: q, inputs_field: 5}", "span_corruption inputs_field must be the name of a new field, "
                                                     "got 5"),
    ("span_corruption: {field: q, targets_field: corrupted}", "span_corruption inputs_field and targets_field must "
                                                              "differ, both are 'corrupted'"),
])
def test_a_preprocessor_of_the_wrong_type_is_a_problem_with_its_line(tmp_path, preprocessor, problem):
    # each parsed and then failed with a raw TypeError (or a datasets error) once the rows were loaded
    (tmp_path / "rows.jsonl").write_text(json.dumps({"q": "a b c", "a": "x"}) + "\n")
    path = tmp_path / "typed.yaml"
    path.write_text("name: typed\nsplits: [train]\nsource: {files: rows.jsonl}\npreprocessors:\n  - "
                    + preprocessor + "\ntemplates:\n  - {name: t, jinja: '{{q}} ||| {{a}}'}\n")
    assert validate_task_file(path) == [f"{path}:5: {problem}"]


def test_file_paths_in_a_yaml_task_expand_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "data").mkdir(parents=True)
    (tmp_path / "home" / "data" / "rows.jsonl").write_text(json.dumps({"q": "a", "a": "b"}) + "\n")
    path = tmp_path / "tilde.yaml"
    path.write_text("name: tilde\nsplits: [train]\nsource: {files: ~/data/rows.jsonl}\n"
                    "templates:\n  - {name: t, jinja: '{{q}} ||| {{a}}'}\n")
    assert validate_task_file(path) == []  # was: <yaml folder>/~/data/rows.jsonl, "does not exist"
    assert parse_task_file(path).load_rows("train")[0]["q"] == "a"


def test_data_files_of_a_file_reader_are_relative_to_the_yaml(tmp_path, monkeypatch):
    # `hf: json` with `data_files: {train: rows.jsonl}` was resolved against the working directory, not the YAML
    # file (as `files:` is), and validation never rendered its rows
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "rows.jsonl").write_text(json.dumps({"q": "a", "a": "b"}) + "\n")
    path = tmp_path / "tasks" / "reader.yaml"
    path.write_text("name: reader\nsplits: [train]\nsource: {hf: json, data_files: {train: rows.jsonl}}\n"
                    "templates:\n  - {name: t, jinja: '{{q}} ||| {{a}}'}\n")
    monkeypatch.chdir(tmp_path)
    task = parse_task_file(path)
    assert task.source.data_files == {"train": str(tmp_path / "tasks" / "rows.jsonl")}
    assert task.load_rows("train")[0] == {"q": "a", "a": "b"}
    path.write_text(path.read_text().replace("{{a}}", "{{answer}}"))
    assert "field 'answer' is missing" in "\n".join(validate_task_file(path))
    # a hub repo's data_files name files inside the repo: kept as written
    path.write_text("name: hub\nsplits: [train]\nsource: {hf: someone/repo, data_files: [data/train.csv]}\n"
                    "templates:\n  - {name: t, jinja: '{{q}} ||| {{a}}'}\n")
    assert parse_task_file(path).source.data_files == ["data/train.csv"]
    path.write_text(path.read_text().replace("[data/train.csv]", "[3]"))
    assert validate_task_file(path) == [f"{path}:3: source: file paths must be strings, got 3"]


@pytest.mark.parametrize("written, reader", [("jsonl", "json"), ("JSONL", "json"), ("jsn", "json"), ("tsv", "csv"),
                                             ("txt", "text"), ("parquett", "parquet")])
def test_a_misspelt_file_reader_with_data_files_is_named_with_the_reader_to_write(tmp_path, written, reader):
    # was: `hf: jsonl` passed validation (a hub id, its rows not rendered) and loading said only "Couldn't reach
    # 'jsonl' on the Hub ... its data_files are loaded as given", with no word of the `json` reader
    from task_registry.file_formats import misspelt_reader
    from task_registry.sources import DataSourceError, HFSource

    (tmp_path / "rows.jsonl").write_text(json.dumps({"q": "a", "a": "b"}) + "\n")
    problem = (f"{written!r} is not one of datasets' file readers (json, csv, parquet, text, arrow, ...), so "
               f"load_dataset looks for a hub dataset {written!r}: to read the data_files, name the `{reader}` reader "
               f"(`hf: {reader}` in a task file, HFSource({reader!r}, data_files=...) in Python)")
    with pytest.raises(DataSourceError) as raised:
        HFSource(written, data_files={"train": str(tmp_path / "rows.jsonl")}).load("train")
    assert str(raised.value).endswith(f"); {problem}")
    path = tmp_path / "reader.yaml"
    path.write_text(f"name: reader\nsplits: [train]\nsource:\n  hf: {written}\n  data_files: {{train: rows.jsonl}}\n"
                    f"templates:\n  - {{name: t, jinja: '{{{{q}}}} ||| {{{{a}}}}'}}\n")
    assert validate_task_file(path) == [f"{path}:4: source: hf: {problem}"]
    # a reader, a hub repo, and a hub id close to no reader are left as they are
    assert [misspelt_reader(path) for path in ("json", "someone/jsonl", "glue", "squad")] == [None] * 4


def test_a_file_pattern_of_a_yaml_task_is_read_and_one_matching_nothing_is_a_problem_at_its_line(tmp_path):
    # `files: {train: shards/*.jsonl}` passed validation unrendered and failed to load: "expects the file
    # '.../shards/*.jsonl', which does not exist"; a pattern matching nothing was not reported by validation
    (tmp_path / "shards").mkdir()
    for i in range(2):
        (tmp_path / "shards" / f"part-{i}.jsonl").write_text(json.dumps({"q": f"q{i}", "a": f"a{i}"}) + "\n")
    path = tmp_path / "shards.yaml"
    path.write_text("name: shards\nsplits: [train]\nsource:\n  files: {train: 'shards/*.jsonl'}\n"
                    "templates:\n  - {name: t, jinja: '{{q}} ||| {{a}}'}\n")
    assert validate_task_file(path) == []
    assert [dict(r) for r in parse_task_file(path).load_rows("train")] == [{"q": "q0", "a": "a0"},
                                                                            {"q": "q1", "a": "a1"}]
    for key in ("files", "data_files"):
        source = "  files:" if key == "files" else "  hf: json\n  data_files:"
        path.write_text(path.read_text().replace("  files:", source).replace("shards/*", "shard/*"))
        assert validate_task_file(path) == [
            f"{path}:{4 + (key == 'data_files')}: source: {key}: the pattern 'shard/*.jsonl' matches no file; check "
            f"its folder ('shard') and its names (`*` matches within one folder, `**` at any depth; a hidden file only "
            f"when the pattern names it) (relative to the YAML file's folder: '{tmp_path}/shard/*.jsonl')"]


def test_a_folder_saved_by_save_to_disk_is_a_source_under_files_and_a_problem_under_hf(tmp_path):
    # `files: saved` was refused as an "unsupported extension"; `hf: saved` passed validation (a hub dataset, rows
    # not rendered without a data dir) and failed to load: "Couldn't find any data file", "point --data-dir"
    import datasets

    rows = datasets.Dataset.from_list([{"q": f"q{i}", "a": f"a{i}"} for i in range(4)])
    (tmp_path / "tasks").mkdir()
    datasets.DatasetDict({"train": rows.select(range(3)), "validation": rows.select([3])}).save_to_disk(
        str(tmp_path / "saved"))
    path = tmp_path / "tasks" / "saved.yaml"
    path.write_text("name: saved\nsource:\n  files: ../saved\ntemplates:\n  - {name: t, jinja: '{{q}} ||| {{a}}'}\n")
    assert validate_task_file(path) == []
    assert [dict(r) for r in parse_task_file(path).load_rows("validation")] == [{"q": "q3", "a": "a3"}]
    path.write_text(path.read_text().replace("name: saved\n", "name: saved\nsplits: [train, test]\n"))
    assert validate_task_file(path, check_rows=0) == [
        f"{path}:2: `source: files:` has no file for the split(s) ['test']; it has ['train', 'validation'] "
        f"(`splits` default to [train, validation]: list the ones the files hold)"]
    path.write_text(path.read_text().replace("splits: [train, test]\n", "").replace("files:", "hf:"))
    assert validate_task_file(path) == [
        f"{path}:3: source: `hf:` names a hub dataset, but '../saved' is a folder saved by save_to_disk "
        f"('{tmp_path}/tasks/../saved'): write `files: ../saved` (relative to the YAML file)"]


def test_a_saved_folders_splits_of_other_names_are_shown_mapped_to_the_tasks(tmp_path):
    # a DatasetDict saved with splits 'training' and 'valid': the problem said to list the splits the folder holds,
    # with which the task had no train split to train on, and nothing said that each split's folder reads as any split
    import datasets

    rows = datasets.Dataset.from_list([{"q": f"q{i}", "a": f"a{i}"} for i in range(3)])
    (tmp_path / "tasks").mkdir()
    datasets.DatasetDict({"training": rows.select([0, 1]), "valid": rows.select([2])}).save_to_disk(
        str(tmp_path / "saved"))
    path = tmp_path / "tasks" / "saved.yaml"
    path.write_text("name: saved\nsource:\n  files: ../saved\ntemplates:\n  - {name: t, jinja: '{{q}} ||| {{a}}'}\n")
    assert validate_task_file(path, check_rows=0) == [
        f"{path}:2: `source: files:` has no file for the split(s) ['train', 'validation']; it has ['training', "
        f"'valid'] (`splits` default to [train, validation]: list the ones the files hold, or read a split's folder "
        f"as a split of the task: files: {{train: ../saved/training, validation: ../saved/valid}})"]
    path.write_text(path.read_text().replace("files: ../saved", "files: {train: ../saved/training, validation: "
                                                                "../saved/valid}"))
    assert validate_task_file(path) == []
    assert [dict(r) for r in parse_task_file(path).load_rows("validation")] == [{"q": "q2", "a": "a2"}]


def test_a_split_written_in_datasets_slicing_is_one_problem_at_the_splits_line(tmp_path):
    # `splits: [train, 'validation[:100]']` over a files mapping was reported as a split the files lack
    (tmp_path / "rows.jsonl").write_text(json.dumps({"q": "a", "a": "b"}) + "\n")
    path = tmp_path / "sliced.yaml"
    path.write_text("name: sliced\nsplits: [train, 'validation[:100]']\n"
                    "source: {files: {train: rows.jsonl, validation: rows.jsonl}}\n"
                    "templates:\n  - {name: t, jinja: '{{q}} ||| {{a}}'}\n")
    problems = validate_task_file(path)
    assert len(problems) == 1 and problems[0].startswith(
        f"{path}:2: splits name whole splits of the source; 'validation[:100]' is datasets' split slicing")


def test_a_streaming_source_is_refused_saying_how_rows_are_read(tmp_path):
    # was "unknown key 'streaming' (allowed: ['data_files', 'hf', 'name'])", which read as a misspelling
    path = tmp_path / "stream.yaml"
    path.write_text("name: stream\nsource:\n  hf: glue\n  name: rte\n  streaming: true\n  nmae: x\n"
                    "templates:\n  - {name: t, jinja: '{{q}} ||| {{a}}'}\n")
    assert validate_task_file(path, check_rows=0) == [
        f"{path}:5: source: `streaming` is not supported: training reads each task's rows map-style, tokenized and "
        f"cached by datasets; drop it (in Python, Task.to_dataset(split, streaming=True) streams a task's rows)",
        f"{path}:6: source: unknown key 'nmae' (did you mean 'name'?)"]


def test_a_local_folder_under_hf_is_relative_to_the_yaml_and_read_under_a_data_dir_too(tmp_path, monkeypatch,
                                                                                        shared_data_dir):
    # `hf: ../data` was read from the working directory (`files:` and `data_files:` from the YAML file's folder),
    # validation left its rows unrendered ("hub datasets are read only from a data dir"), a data dir mapped it to
    # <data dir>/../data/default/train.jsonl, and a failure hinted to point --data-dir at it
    (tmp_path / "data").mkdir()
    (tmp_path / "tasks").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text(json.dumps({"q": "a", "a": "b"}) + "\n")
    path = tmp_path / "tasks" / "folder.yaml"
    path.write_text("name: folder\nsplits: [train]\nsource: {hf: ../data}\n"
                    "templates:\n  - {name: t, jinja: '{{q}} ||| {{answer}}'}\n")
    monkeypatch.chdir(tmp_path / "data")
    problems = validate_task_file(path)
    assert len(problems) == 1 and "field 'answer' is missing" in problems[0]
    path.write_text(path.read_text().replace("{{answer}}", "{{a}}"))
    task_registry.set_data_dir(shared_data_dir)
    try:
        assert validate_task_file(path) == []
        assert [dict(r) for r in parse_task_file(path).load_rows("train")] == [{"q": "a", "a": "b"}]
    finally:
        task_registry.set_data_dir(None)
    path.write_text(path.read_text().replace("../data", "../nodata"))
    assert validate_task_file(path) == [
        f"{path}:3: source: hf: '../nodata' is read as a local folder (it starts with '.', '/' or '~', or has more "
        f"than one '/'), and '{tmp_path}/tasks/../nodata' is not one; a hub id is 'name' or 'owner/name'"]
    (tmp_path / "nodata").mkdir()
    with pytest.raises(task_registry.DataSourceError, match=r"'.*/nodata' is a local path, read by load_dataset as a "
                                                            r"folder of data files"):
        parse_task_file(path).load_rows("train")


def test_a_yaml_task_importing_promptsource_renames_hyphenated_columns(tmp_path):
    # promptsource_task renames `question-text` to `question_text` (promptsource's removeHyphen) before its
    # templates render; a YAML task importing the same templates did not, so every row missed `question_text`
    (tmp_path / "ps" / "hy").mkdir(parents=True)
    (tmp_path / "ps" / "hy" / "templates.yaml").write_text(
        "dataset: hy\ntemplates:\n  x1: !Template\n    id: x1\n    jinja: '{{ question_text }} ||| {{ answer }}'\n"
        "    name: plain\n")
    (tmp_path / "rows.jsonl").write_text(json.dumps({"question-text": "q1", "answer": "a1"}) + "\n")
    path = tmp_path / "hy.yaml"
    path.write_text("name: hy\nsplits: [train]\nsource: {files: rows.jsonl}\npreprocessors:\n"
                    "  - map: {answer: \"answer ~ '!'\"}\ntemplates:\n  - promptsource: ps\n    dataset: hy\n")
    assert validate_task_file(path) == []
    task = parse_task_file(path)
    assert [p.describe() for p in task.preprocessors][0] == "hyphens_to_underscores()"
    assert [(r["inputs"], r["targets"]) for r in task.to_dataset("train")] == [("q1", "a1!")]
    # a task of inline templates only keeps its columns as they are
    path.write_text("name: inline\nsplits: [train]\nsource: {files: rows.jsonl}\n"
                    "templates:\n  - {name: t, jinja: '{{ answer }} ||| x'}\n")
    assert parse_task_file(path).preprocessors == []


def test_a_task_name_defined_in_two_folders_names_both_files_and_lines(tmp_path):
    # load_task_dirs (--tasks-dir, data.tasks_dir) said only "task name(s) ['qa'] defined by more than one file"
    (tmp_path / "train.jsonl").write_text('{"q": "q0", "a": "a0"}\n')
    body = ("source:\n  files: {train: ../train.jsonl}\nsplits: [train]\n"
            "templates:\n  - name: plain\n    jinja: '{{q}} ||| {{a}}'\n")
    for folder, head in (("one", "name: qa\n"), ("two", "description: the same name again\nname: qa\n")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "qa.yaml").write_text(head + body)
    one, two = tmp_path / "one" / "qa.yaml", tmp_path / "two" / "qa.yaml"
    with task_registry.isolated_registry(), pytest.raises(TaskFileError) as raised:
        task_registry.load_task_dirs([tmp_path / "one", tmp_path / "two"])
    assert raised.value.errors == [f"{one}:1: task name 'qa' is defined by more than one file: {one}:1, {two}:2"]


def test_data_files_without_datasets_list_of_file_readers_is_a_problem_of_the_file(tmp_path, monkeypatch):
    # sources imported datasets' private _PACKAGED_DATASETS_MODULES at module level: a datasets without it made
    # `import task_registry` fail; now only a source that needs it (`hf:` with `data_files`) is refused, by line
    from task_registry import file_formats

    monkeypatch.setattr(file_formats, "_PACKAGED_DATASETS_MODULES", None)
    path = tmp_path / "reader.yaml"
    path.write_text("name: reader\nsplits: [train]\nsource: {hf: json, data_files: {train: rows.jsonl}}\n"
                    "templates:\n  - {name: t, jinja: '{{q}} ||| {{a}}'}\n")
    [problem] = validate_task_file(path)
    assert problem.startswith(f"{path}:3: source: cannot tell whether 'json' is one of datasets' file readers")
    assert "has no datasets.packaged_modules._PACKAGED_DATASETS_MODULES" in problem
    path.write_text(path.read_text().replace(", data_files: {train: rows.jsonl}", ", name: rte"))
    assert validate_task_file(path, check_rows=0) == []  # a hub id without data_files does not need the list


def test_a_folder_without_yaml_task_files_is_refused_by_name(tmp_path):
    # was: registered nothing, silently (a typo'd or wrong folder then failed later as an unknown task)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a task")
    (empty / "nested").mkdir()
    (empty / "nested" / "task.yaml").write_text("name: nested\n")  # files are read from the folder itself only
    expected = f"task directory {empty} holds no YAML task files (*.yaml / *.yml)"
    with pytest.raises(TaskDefinitionError) as caught:
        task_registry.load_task_dir(empty)
    assert str(caught.value).startswith(expected)
    with pytest.raises(TaskFileError) as caught:
        task_registry.load_task_dirs([empty])
    assert len(caught.value.errors) == 1 and caught.value.errors[0].startswith(expected)


def test_a_yaml_task_replacing_a_registered_one_of_another_origin_is_warned_about(tmp_path, caplog):
    # was: a YAML task named like a built-in (or a task of another folder, loaded earlier) replaced it silently
    (tmp_path / "train.jsonl").write_text('{"q": "q0", "a": "a0"}\n')
    body = ("source:\n  files: {train: ../train.jsonl}\nsplits: [train]\n"
            "templates:\n  - name: plain\n    jinja: '{{q}} ||| {{a}}'\n")
    for folder, name in (("mine", "parity"), ("other", "parity")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "t.yaml").write_text(f"name: {name}\n" + body)
    mine, other = tmp_path / "mine" / "t.yaml", tmp_path / "other" / "t.yaml"
    with task_registry.isolated_registry():
        task_registry.load_builtin_tasks()
        with caplog.at_level("WARNING", logger="task_registry.yaml_tasks"):
            task_registry.load_task_dirs(tmp_path / "mine")
            assert [r.getMessage() for r in caplog.records] == [
                f"{mine}:1: task 'parity' replaces the built-in one (or one registered from Python) of that name; "
                f"rename it to keep both"]
            caplog.clear()
            task_registry.load_task_dirs(tmp_path / "mine")  # the same file again (the next run in one process)
            assert caplog.records == []
            task_registry.load_task_dirs(tmp_path / "other")
            assert [r.getMessage() for r in caplog.records] == [
                f"{other}:1: task 'parity' replaces the one from {mine} of that name; rename it to keep both"]


@pytest.mark.parametrize("rank", ["0", "1"])
def test_registering_a_jobs_tasks_warns_on_the_launchers_rank_0_alone(tmp_path, caplog, monkeypatch, rank):
    # was: every rank of a torchrun job registers the run's --tasks-dir / data.tasks_dir and logged the same warnings
    from t2t_mtl.registration import register_tasks

    (tmp_path / "train.jsonl").write_text('{"q": "q0", "a": "a0"}\n')
    templates = "templates:\n  - name: plain\n    jinja: '{{q}} ||| {{a}}'\n"
    (tmp_path / "parity.yaml").write_text("name: parity\nsource:\n  files: {train: train.jsonl}\nsplits: [train]\n"
                                          + templates)
    (tmp_path / "gone.yaml").write_text("name: gone_rows\nsource:\n  files: {train: gone.jsonl}\nsplits: [train]\n"
                                        + templates)
    monkeypatch.setenv("RANK", rank)
    with task_registry.isolated_registry(), caplog.at_level("WARNING"):
        task_registry.load_builtin_tasks()
        register_tasks(str(tmp_path))
        assert task_registry.get_task("gone_rows") and "parity" in task_registry.yaml_task_file("parity").name
        warned = [record.getMessage() for record in caplog.records]
        assert len(warned) == (2 if rank == "0" else 0), warned
        assert rank != "0" or ("gone.jsonl" in warned[0] and "task 'parity' replaces the built-in one" in warned[1])
        assert logging.getLogger("task_registry").level == logging.NOTSET  # (as it was)
        (tmp_path / "broken.yaml").write_text("name: broken\n")
        with pytest.raises(TaskFileError, match="broken.yaml"):  # (an error, on every rank)
            register_tasks(str(tmp_path))


def test_a_jsonl_row_lacking_a_field_the_template_prints_is_an_error_naming_it(tmp_path):
    # was: the json reader fills the field with null and the prompt read "question: None"
    (tmp_path / "train.jsonl").write_text('{"q": "q0", "a": "a0"}\n{"a": "a1"}\n')
    path = tmp_path / "qa.yaml"
    path.write_text("name: qa_null\nsplits: [train]\nsource: {files: {train: train.jsonl}}\n"
                    "preprocessors:\n  - map: {shown: 'q | string'}\n"
                    "templates:\n  - {name: plain, jinja: 'question: {{q}} ||| {{a}}'}\n"
                    "  - {name: shown, jinja: 'question: {{shown}} ||| {{a}}'}\n")
    task = parse_task_file(path)
    with pytest.raises(task_registry.MissingFieldError) as raised:
        task.to_dataset("train", templates=["plain"])
    assert (raised.value.task, raised.value.template, raised.value.row_index, raised.value.field) == (
        "qa_null", "plain", 1, "q")
    # preprocessor expressions are not templates: their `| string` of a null still gives "None"
    assert task.to_dataset("train", templates=["shown"])["inputs"] == ["question: q0", "question: None"]


def test_a_yaml_task_keeps_eval_only_and_a_templates_reference_note(tmp_path):
    (tmp_path / "rows.jsonl").write_text(json.dumps({"q": "where?", "a": "here"}) + "\n")
    path = tmp_path / "note.yaml"
    path.write_text(textwrap.dedent("""\
        name: yaml_note
        eval_only: true
        splits: [validation]
        source: {files: {validation: rows.jsonl}}
        templates:
          - name: plain
            jinja: "{{ q }} ||| {{ a }}"
            reference: from a survey
        """))
    task = parse_task_file(path)
    assert task.eval_only is True
    assert task.templates[0].reference == "from a survey"


def test_an_empty_splits_list_is_a_problem(tmp_path):
    (tmp_path / "rows.jsonl").write_text(json.dumps({"q": "where?", "a": "here"}) + "\n")
    path = tmp_path / "nosplits.yaml"
    path.write_text(textwrap.dedent("""\
        name: yaml_nosplits
        splits: []
        source: {files: rows.jsonl}
        templates:
          - name: plain
            jinja: "{{ q }} ||| {{ a }}"
        """))
    assert any("nosplits.yaml:2: `splits` must be a list of strings, got []" in p for p in validate_task_file(path))
    path.write_text(path.read_text().replace("splits: []", "splits: [train, train]"))  # was accepted
    assert any("nosplits.yaml:2: `splits` names 'train' more than once; list each once" in p
               for p in validate_task_file(path))


def test_words_yaml_reads_as_bools_are_shown_as_written(tmp_path):
    # YAML reads unquoted yes/no/on/off as bools: `answer_choices: [yes, no, maybe]` was told to write the string
    # 'True ||| False ||| maybe', whose targets render True and False, and `cluster: on` was "got True"
    (tmp_path / "rows.jsonl").write_text(json.dumps({"q": "ok?", "label": 0}) + "\n")
    path = tmp_path / "bools.yaml"
    path.write_text(textwrap.dedent("""\
        name: yaml_bools
        cluster: on
        task_type: No
        splits: [train]
        source: {files: rows.jsonl}
        templates:
          - name: yn
            jinja: "{{ q }} ||| {{ answer_choices[label] }}"
            answer_choices: [yes, no, maybe]
        """))
    assert validate_task_file(path) == [
        f"{path}:3: `task_type` must be a str, got False (YAML reads an unquoted No as a bool: write 'No')",
        f"{path}:2: `cluster` must be a str, got True (YAML reads an unquoted on as a bool: write 'on')",
        f"{path}:7: template 'yn': `answer_choices` must be a `|||`-separated Jinja string, got list: write the list "
        f"as one string, 'yes ||| no ||| maybe'"]


def test_a_labelled_split_its_filters_leave_no_row_of_is_a_problem(tmp_path):
    # `tasks validate` said "ok: 1 task file valid" of a task whose filter dropped every row, which `train` then
    # refused ("has no 'train' examples after rendering")
    rows = [{"q": "a", "gold": 1}, {"q": "b", "gold": 2}]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    path = tmp_path / "none_left.yaml"
    path.write_text(textwrap.dedent("""\
        name: yaml_none_left
        splits: [train, validation, test]
        source: {files: rows.jsonl}
        preprocessors:
          - filter: "gold == 7"
        templates:
          - name: plain
            jinja: "{{ q }} ||| {{ gold }}"
        """))
    assert validate_task_file(path) == [
        f"{path}: split {split!r}: task 'yaml_none_left' has no rows after its preprocessors (of its 2 rows, "
        f"filter(gold == 7) dropped 2), so training and evaluation would read none: check them against the rows (a "
        f"test split's rows are not checked)" for split in ("train", "validation")]
    path.write_text(path.read_text().replace("gold == 7", "gold == 2"))
    assert validate_task_file(path) == []
