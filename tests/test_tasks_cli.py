"""`t2t-mtl tasks list|show|preview|validate`, run through `t2t_mtl.cli.main`."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import task_registry
from t2t_mtl.cli import main

TASK_YAML = """\
name: cli_qa
task_type: closed_book_qa
cluster: cli_cluster
splits: [train, validation]
source:
  hf: cli_demo
templates:
  - name: plain
    jinja: "question: {{q}} ||| {{a}}"
  - name: polite
    jinja: "Please answer: {{q}} ||| {{a}}"
"""


@pytest.fixture()
def workspace(tmp_path):
    """A data dir with the hub id `cli_demo` and a folder with one YAML task on it."""
    for split, n in (("train", 3), ("validation", 2)):
        folder = tmp_path / "data" / "cli_demo" / "default"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{split}.jsonl").write_text("".join(json.dumps({"q": f"{split} q{i}", "a": f"{split} a{i}"}) + "\n"
                                                       for i in range(n)))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "cli_qa.yaml").write_text(TASK_YAML)
    previous = task_registry.get_data_dir()
    with task_registry.isolated_registry():
        yield tmp_path
    task_registry.set_data_dir(previous)


def test_list_filters_by_cluster_and_type(workspace, capsys):
    args = ["--data-dir", str(workspace / "data"), "--tasks-dir", str(workspace / "tasks")]
    assert main(["tasks", "list", *args]) == 0
    everything = capsys.readouterr().out
    assert "cli_qa" in everything and "closed_book_qa" in everything
    for name in task_registry.list_tasks():
        assert name in everything
    assert main(["tasks", "list", "--cluster", "cli_cluster", *args]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 3 and rows[2].split()[:3] == ["cli_qa", "closed_book_qa", "cli_cluster"]
    assert main(["tasks", "list", "--type", "no_such_type", *args]) == 0
    out = capsys.readouterr().out.strip()  # the filter matched nothing: say what there is
    assert out.startswith("(no tasks) — clusters: ") and "cli_cluster" in out and "task types: " in out
    assert main(["tasks", "list", "--cluster", "cli_clustr", *args]) == 0  # was: no hint for a near miss
    assert capsys.readouterr().out.startswith("(no tasks; did you mean 'cli_cluster'")



def test_list_filters_that_each_name_something_but_match_no_task_together_get_no_hint(workspace, capsys):
    # mutation testing: the hint suggesting a filter value that is registered passed every test, whose empty lists
    # came of one unknown value; cli_cluster and nli both exist, but no nli task is in cli_cluster
    args = ["--data-dir", str(workspace / "data"), "--tasks-dir", str(workspace / "tasks")]
    assert main(["tasks", "list", "--cluster", "cli_cluster", "--type", "nli", *args]) == 0
    out = capsys.readouterr().out
    assert out.startswith("(no tasks) — clusters: ") and "cli_cluster" in out and "did you mean" not in out, out

def test_list_flags_held_out_and_eval_only_tasks_each_by_its_own_flag(workspace, capsys):
    # mutation testing: the flags column naming a held_out task eval_only and the other way round passed every test,
    # none of which listed a flagged task's row
    data = str(workspace / "data" / "rows.jsonl")
    for name, flags in (("cli_held", {"held_out": True}), ("cli_eval", {"eval_only": True})):
        task_registry.register_task(task_registry.Task(
            name, task_registry.LocalFileSource({"validation": data}), task_registry.Template("t", "{{q}} ||| {{a}}"),
            task_type="closed_book_qa", cluster="cli_flags", splits=("validation",), **flags))
    assert main(["tasks", "list", "--cluster", "cli_flags"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()[2:]
    assert [row.split()[:5] for row in rows] == [["cli_eval", "closed_book_qa", "cli_flags", "1", "eval_only"],
                                                 ["cli_held", "closed_book_qa", "cli_flags", "1", "held_out"]], rows

def test_tasks_dir_repeats_at_either_level(workspace, capsys):
    # was: only the last --tasks-dir was kept (and a subcommand's replaced the group's)
    (workspace / "more").mkdir()
    (workspace / "more" / "cli_qa_2.yaml").write_text(TASK_YAML.replace("name: cli_qa", "name: cli_qa_2"))
    folders = [str(workspace / "tasks"), str(workspace / "more")]
    data = ["--data-dir", str(workspace / "data")]
    for argv in (["tasks", "--tasks-dir", folders[0], "--tasks-dir", folders[1], "list", *data],
                 ["tasks", "--tasks-dir", folders[0], "list", "--tasks-dir", folders[1], *data]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "cli_qa " in out and "cli_qa_2" in out, argv


def test_show_prints_the_task_as_yaml(workspace, capsys):
    assert main(["tasks", "--tasks-dir", str(workspace / "tasks"), "show", "cli_qa"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown == task_registry.get_task("cli_qa").describe()
    assert [t["name"] for t in shown["templates"]] == ["plain", "polite"] and shown["source"] == {"hf": "cli_demo"}


def test_unknown_task_exits_2_with_suggestions(workspace, capsys):
    assert main(["tasks", "show", "cli_q", "--tasks-dir", str(workspace / "tasks")]) == 2
    assert "did you mean 'cli_qa'" in capsys.readouterr().err


def test_an_unknown_task_without_tasks_dir_says_yaml_tasks_need_it(workspace, capsys):
    # `tasks show cli_qa` (a YAML task) without --tasks-dir was only "unknown task 'cli_qa'"
    note = ("; a YAML task file's task is registered by --tasks-dir FOLDER (a Python module's by --task-module "
            "MODULE)\n")
    assert main(["tasks", "show", "cli_qa"]) == 2
    assert capsys.readouterr().err.endswith(note)
    assert main(["mixture", "show", "cli_qa"]) == 2
    assert capsys.readouterr().err.endswith(note)
    assert main(["tasks", "show", "cli_q", "--tasks-dir", str(workspace / "tasks")]) == 2  # a typo then: no note
    assert not capsys.readouterr().err.endswith(note)


def test_preview_side_by_side(workspace, capsys):
    code = main(["tasks", "preview", "cli_qa", "--template", "polite", "-n", "2", "--split", "validation",
                 "--data-dir", str(workspace / "data"), "--tasks-dir", str(workspace / "tasks")])
    assert code == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "── cli_qa / validation / row 0 / template 'polite'"
    assert lines[1].split(" | ") == ["INPUTS".ljust(len(lines[1].split(" | ")[0])), "TARGETS"]
    assert [part.strip() for part in lines[2].split(" | ")] == ["Please answer: validation q0", "validation a0"]
    assert [part.strip() for part in lines[5].split(" | ")] == ["Please answer: validation q1", "validation a1"]
    assert len(lines) == 6


SKIPPING_TASK_YAML = TASK_YAML.replace("name: cli_qa", "name: cli_skip") + """\
  - name: short
    jinja: "{{q}} ||| {% if not q.endswith('q0') %}{{a}}{% endif %}"
"""


def test_preview_every_template_shows_each_row_in_every_template(workspace, capsys, t5_tokenizer_dir):
    # there was no way to see a row as data.all_templates trains it: in each of its task's templates
    (workspace / "tasks" / "cli_skip.yaml").write_text(SKIPPING_TASK_YAML)
    args = ["tasks", "preview", "cli_skip", "-n", "2", "--split", "validation", "--every-template",
            "--data-dir", str(workspace / "data"), "--tasks-dir", str(workspace / "tasks")]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    headers = [line for line in lines if line.startswith("──")]
    assert headers == ["── cli_skip / validation / row 0 / template 'plain'",
                       "── cli_skip / validation / row 0 / template 'polite'",
                       "── cli_skip / validation / row 0 / template 'short': skipped (it renders an empty target "
                       "or input for this row)",
                       "── cli_skip / validation / row 1 / template 'plain'",
                       "── cli_skip / validation / row 1 / template 'polite'",
                       "── cli_skip / validation / row 1 / template 'short'"]
    pairs = [[part.strip() for part in line.split(" | ")] for line in lines
             if " | " in line and not line.startswith(("──", "INPUTS"))]
    assert pairs == [["question: validation q0", "validation a0"], ["Please answer: validation q0", "validation a0"],
                     ["question: validation q1", "validation a1"], ["Please answer: validation q1", "validation a1"],
                     ["validation q1", "validation a1"]]
    assert lines[-1] == ("(1 of 6 examples (2 rows x 3 templates) skipped: 1 empty target, 0 empty input, by "
                         "template {'short': 1})")
    # the JSON lines: each kept example, a row's in template order, with the keys of the plain preview
    assert main([*args, "--jsonl", "--template", "short", "--template", "plain"]) == 0
    examples = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["template"], e["inputs"], e["targets"]) for e in examples] == [
        ("plain", "question: validation q0", "validation a0"), ("short", "validation q1", "validation a1"),
        ("plain", "question: validation q1", "validation a1")]
    assert all(list(e) == ["inputs", "targets", "answer_choices", "references", "task", "template"] for e in examples)
    assert main([*args, "--tokenizer", str(t5_tokenizer_dir)]) == 0
    headers = [line for line in capsys.readouterr().out.splitlines() if line.startswith("──")]
    assert [bool(re.search(r"tokens: \d+ in, \d+ out$", line)) for line in headers] == [True, True, False, True,
                                                                                         True, True]


@pytest.mark.parametrize("every, effect", [
    (["--every-template"], "--every-template renders each row once in each template named"),
    # was: accepted, each row's template drawn from ['plain', 'plain', 'polite']: plain shown twice as often as
    # training (which refuses a data.templates that repeats a name) draws it
    ([], "each row's template is drawn from the names given, so a repeated one would be drawn more often than "
         "training draws it")])
def test_preview_refuses_a_template_named_twice(every, effect, workspace, capsys):
    args = ["tasks", "preview", "cli_qa", "-n", "2", *every, "--template", "plain", "--template", "polite",
            "--template", "plain", "--data-dir", str(workspace / "data"), "--tasks-dir", str(workspace / "tasks")]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"error: --template 'plain' given more than once: {effect}; name " \
                                                  f"each template once\n"


def test_preview_renders_the_tasks_first_split_without_split(workspace, capsys):
    # mutation testing: the preview defaulting to the task's last split passed every test, whose previews named
    # theirs; cli_qa's splits are [train, validation]
    assert main(["tasks", "preview", "cli_qa", "-n", "1", "--data-dir", str(workspace / "data"),
                 "--tasks-dir", str(workspace / "tasks")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("── cli_qa / train / row 0 / template ") and "train a0" in out, out

def test_preview_labels_an_example_with_the_row_it_renders(workspace, capsys):
    # was: examples were numbered as shown, so after a skipped row 0 the rendering of row 1 was labelled "row 0"
    (workspace / "tasks" / "cli_skip.yaml").write_text(SKIPPING_TASK_YAML)
    assert main(["tasks", "preview", "cli_skip", "-n", "2", "--split", "validation", "--template", "short",
                 "--data-dir", str(workspace / "data"), "--tasks-dir", str(workspace / "tasks")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "── cli_skip / validation / row 1 / template 'short'"
    assert lines[-1] == "(1 of 2 rows skipped: 1 empty target, 0 empty input, by template {'short': 1})"


def test_preview_shows_token_lengths_as_training_tokenizes(workspace, capsys, t5_tokenizer_dir, t5_tokenizer):
    # there was no way to see an input's length in tokens before training (to choose data.max_input_length): the
    # truncation counts came only once a run had tokenized every task
    args = ["tasks", "preview", "cli_qa", "-n", "2", "--split", "validation", "--data-dir", str(workspace / "data"),
            "--tasks-dir", str(workspace / "tasks")]
    assert main([*args, "--tokenizer", str(t5_tokenizer_dir)]) == 0
    shown = [tuple(map(int, re.search(r"tokens: (\d+) in, (\d+) out$", line).groups()))
             for line in capsys.readouterr().out.splitlines() if line.startswith("──")]
    task_registry.set_data_dir(workspace / "data")  # (the command's --data-dir held for the command alone)
    rendered = task_registry.get_task("cli_qa").to_dataset("validation", max_examples=2)
    tokenized = task_registry.tokenize_dataset(rendered, t5_tokenizer, 512, 512, append_eos=True, keep_in_memory=True)
    assert shown == [(len(row["input_ids"]), len(row["labels"])) for row in tokenized] and len(shown) == 2
    capsys.readouterr()
    assert main([*args, "--tokenizer", str(workspace / "no_tokenizer")]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: --tokenizer: could not load tokenizer") and captured.out == ""


def test_preview_shows_an_example_with_unknown_tokens_as_tokenized(workspace, capsys, t5_tokenizer_dir):
    # T5's vocabulary has no '{' nor '<': such text trains as <unk> (a GSM8K target's '<<48/2=24>>'), and the preview
    # showed only the lengths, never what the model reads and learns to write
    folder = workspace / "data" / "cli_braces" / "default"
    folder.mkdir(parents=True)
    rows = [{"q": "what is {x}?", "a": "<<2>> 2"}, {"q": "plain", "a": "text"}]
    (folder / "validation.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (workspace / "tasks" / "cli_braces.yaml").write_text(TASK_YAML.replace("cli_qa", "cli_braces")
                                                         .replace("cli_demo", "cli_braces"))
    assert main(["tasks", "preview", "cli_braces", "-n", "2", "--split", "validation", "--template", "plain",
                 "--data-dir", str(workspace / "data"), "--tasks-dir", str(workspace / "tasks"),
                 "--tokenizer", str(t5_tokenizer_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    headers = [line for line in lines if line.startswith("──")]
    assert re.search(r"tokens: \d+ in, \d+ out; 3 unknown tokens \(shown as <unk> below\)$", headers[0])
    assert re.search(r"tokens: \d+ in, \d+ out$", headers[1])  # nothing unknown: no decoded copy
    assert [line.split(" | ")[0].strip() for line in lines].count("INPUTS AS TOKENIZED") == 1
    seen = lines[lines.index(next(line for line in lines if line.startswith("INPUTS AS TOKENIZED"))) + 1]
    assert [part.strip() for part in seen.split(" | ")] == ["question: what is <unk>x<unk>?", "<unk>2>> 2"]


def test_preview_shows_a_target_as_its_tasks_postprocess_scores_it(workspace, capsys):
    # seqio's postprocess_fn: the metrics compare the target as postprocessed (GSM8K's number after ####), which the
    # preview never showed
    (workspace / "tasks" / "cli_post.yaml").write_text(TASK_YAML.replace("cli_qa", "cli_post") +
                                                       "  - name: choices\n    jinja: \"{{q}} ||| {{a}}\"\n"
                                                       "    answer_choices: \"{{a}} ||| none\"\n"
                                                       "postprocess: \"text.split(' ')[-1] | upper\"\n")
    args = ["tasks", "preview", "-n", "2", "--split", "validation", "--template", "plain", "--data-dir",
            str(workspace / "data"), "--tasks-dir", str(workspace / "tasks")]
    assert main([*args, "cli_post"]) == 0
    scored = [line.split(" | ")[1] for line in capsys.readouterr().out.splitlines() if "scored as" in line]
    assert scored == ["scored as (postprocess): A0", "scored as (postprocess): A1"]  # of 'validation a0', '... a1'
    assert main([*args, "cli_qa"]) == 0
    assert "scored as" not in capsys.readouterr().out  # no postprocess
    assert main([*("choices" if arg == "plain" else arg for arg in args), "cli_post"]) == 0
    assert "scored as" not in capsys.readouterr().out  # ranked over its choices: postprocess is for generation


def test_preview_shows_every_answer_a_templates_references_accept(workspace, capsys):
    # a template's `references` (WebQuestions' and XQuAD's every gold answer) are what the text metrics score
    # against, and the side-by-side rows showed the target alone; postprocessed as the metrics see them
    (workspace / "tasks" / "cli_refs.yaml").write_text(
        TASK_YAML.replace("cli_qa", "cli_refs") + "    references: \"{{a}} ||| alt\"\n"
        "  - name: same\n    jinja: \"{{q}} ||| {{a}}\"\n    references: \"{{a}}\"\n"
        "postprocess: \"text | upper\"\n")
    args = ["tasks", "preview", "cli_refs", "-n", "2", "--split", "validation", "--data-dir", str(workspace / "data"),
            "--tasks-dir", str(workspace / "tasks")]
    for template, expected in (("polite", ["VALIDATION A0 ||| ALT", "VALIDATION A1 ||| ALT"]),
                               ("same", []), ("plain", [])):  # (references as the target's, or none)
        assert main([*args, "--template", template]) == 0
        out = capsys.readouterr().out
        assert [line.split("scored against (references): ")[1] for line in out.splitlines()
                if "scored against" in line] == expected


def test_preview_refuses_token_lengths_it_would_not_show_in_json_lines(workspace, capsys, t5_tokenizer_dir):
    # was: --tokenizer with --jsonl loaded the tokenizer and printed the JSON lines without any length, exit 0
    args = ["tasks", "preview", "cli_qa", "-n", "2", "--split", "validation", "--data-dir", str(workspace / "data"),
            "--tasks-dir", str(workspace / "tasks"), "--jsonl"]
    assert main([*args, "--tokenizer", str(t5_tokenizer_dir)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("error: --tokenizer shows token lengths") and "--jsonl" in captured.err


def test_data_dir_from_environment(workspace, capsys, monkeypatch):
    monkeypatch.setenv(task_registry.DATA_DIR_ENV, str(workspace / "data"))
    task_registry.set_data_dir(None)
    assert main(["tasks", "preview", "cli_qa", "-n", "1", "--template", "plain",
                 "--tasks-dir", str(workspace / "tasks")]) == 0
    assert "question: train q0" in capsys.readouterr().out


def test_validate_exit_codes(workspace, tmp_path, capsys):
    assert main(["tasks", "validate", str(workspace / "tasks" / "cli_qa.yaml"),
                 "--data-dir", str(workspace / "data")]) == 0
    assert capsys.readouterr().out.strip() == "ok: 1 task file valid"  # was: "1 task file(s)"
    broken = tmp_path / "broken.yaml"
    broken.write_text(textwrap.dedent("""\
        name: broken
        source: {hf: cli_demo}
        templates:
          - name: t
            jinja: "{{ q ||| {{a}}"
        """))
    assert main(["tasks", "validate", str(broken)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {broken}:5: template 't' has a Jinja syntax error (line 1 of the template): "
                   f"expected token 'name', got '|'"]
    assert main(["tasks", "validate", str(tmp_path / "missing.yaml")]) == 2  # nothing to check: bad input
    assert "no such YAML task file" in capsys.readouterr().err


def test_validate_says_which_tasks_rows_it_could_not_render(workspace, capsys, monkeypatch):
    # was: "ok: 1 task file valid" without a data dir for a template reading a field its rows lack ({{question}} for
    # `q`): the rows of a hub dataset were never rendered, and only training found the missing field
    path = str(workspace / "tasks" / "cli_qa.yaml")
    (workspace / "tasks" / "cli_qa.yaml").write_text(TASK_YAML.replace("{{q}} ||| {{a}}\"\n  - name: polite",
                                                                       "{{question}} ||| {{a}}\"\n  - name: polite"))
    monkeypatch.delenv(task_registry.DATA_DIR_ENV, raising=False)
    task_registry.set_data_dir(None)
    assert main(["tasks", "validate", path]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "ok: 1 task file valid", "rows not rendered for cli_qa: their hub datasets are read only from a data dir "
        "here; pass --data-dir DIR (or set $T2T_MTL_DATA_DIR) to check their templates against rows"]
    assert main(["tasks", "validate", path, "--data-dir", str(workspace / "data")]) == 1
    assert "field 'question' is missing from the row" in capsys.readouterr().err
    assert main(["tasks", "validate", path, "--rows", "0"]) == 0  # rendering skipped on request: nothing to say
    assert capsys.readouterr().out.splitlines() == ["ok: 1 task file valid"]


def test_validate_says_a_hub_repos_data_files_are_not_read_from_a_data_dir(workspace, capsys, monkeypatch):
    # was: "rows not rendered for hub_files: their hub datasets are read only from a data dir here; pass --data-dir
    # DIR" with --data-dir given: a hub repo's data_files are loaded as given, from the hub, never from a data dir
    (workspace / "tasks" / "hub_files.yaml").write_text(
        "name: hub_files\nsplits: [train]\nsource:\n  hf: myorg/reviews\n  data_files: {train: data/train-*.parquet}\n"
        "templates:\n  - {name: t, jinja: '{{q}} ||| {{a}}'}\n")
    monkeypatch.delenv(task_registry.DATA_DIR_ENV, raising=False)
    task_registry.set_data_dir(None)
    for data_dir in ([], ["--data-dir", str(workspace / "data")]):
        assert main(["tasks", "validate", str(workspace / "tasks"), *data_dir]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[-1] == (
            "rows not rendered for hub_files: their data_files are files of a hub dataset's repository, read from the "
            "hub alone (a data dir does not apply to them); `t2t-mtl tasks preview TASK` renders them where the hub "
            "is reachable")
        assert ("rows not rendered for cli_qa" in "\n".join(lines)) is not bool(data_dir)


def test_validate_refuses_a_negative_rows_count(workspace, capsys):
    # was: --rows -1 checked no rows and printed "ok", as --rows 0 does
    path = str(workspace / "tasks" / "cli_qa.yaml")
    assert main(["tasks", "validate", path, "--rows", "-1", "--data-dir", str(workspace / "data")]) == 2
    assert capsys.readouterr().err.strip() == "error: --rows must be at least 0 (0: skip rendering rows), got -1"


def test_validate_refuses_tasks_dir(workspace, capsys):
    # was: accepted and ignored (validate checks PATH only), even a folder that does not exist
    path = str(workspace / "tasks" / "cli_qa.yaml")
    for argv in (["tasks", "validate", path, "--tasks-dir", str(workspace / "nowhere")],
                 ["tasks", "--tasks-dir", str(workspace / "tasks"), "validate", path]):
        assert main(argv) == 2
        assert capsys.readouterr().err.startswith("error: --tasks-dir registers tasks for list, show and preview")
    # was: `tasks validate --help` offered it as "a folder of YAML task files to register on top of the built-in
    # tasks", the help of list, show and preview, though validate refuses it
    with pytest.raises(SystemExit):
        main(["tasks", "validate", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--tasks-dir DIR refused here: validate checks PATH alone" in shown and "to register" not in shown


def test_validate_reports_an_unknown_metric_name(workspace, capsys):
    path = workspace / "tasks" / "cli_qa.yaml"
    path.write_text(TASK_YAML.replace("splits:", "metrics: [exact_match, acuracy]\nsplits:"))
    assert main(["tasks", "validate", str(path), "--data-dir", str(workspace / "data")]) == 1
    err = capsys.readouterr().err
    assert f"{path}:4: task 'cli_qa': unknown metric 'acuracy'" in err and "accuracy" in err  # the metrics line
    assert "exact_match'" not in err
    # how a function of one's own becomes a metric here, where no training config is read (was: only "e.g. in a
    # data.task_modules module", though `tasks validate` registers it by --task-module)
    assert "or a command's --task-module imports" in " ".join(err.split())


def test_validate_reports_a_task_name_that_two_files_of_the_folder_define(workspace, capsys):
    # validate said "ok: 2 task file(s) valid" for a folder that --tasks-dir / data.tasks_dir then refused
    tasks = workspace / "tasks"
    (tasks / "copy.yml").write_text(TASK_YAML)
    assert main(["tasks", "validate", str(tasks), "--data-dir", str(workspace / "data")]) == 1
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")] == [
        f"error: {tasks / 'cli_qa.yaml'}:1: task name 'cli_qa' is defined by more than one file: "
        f"{tasks / 'cli_qa.yaml'}:1, {tasks / 'copy.yml'}:1"]
    with pytest.raises(task_registry.TaskFileError) as raised:
        task_registry.load_task_dirs(tasks)
    assert raised.value.errors == [f"{tasks / 'cli_qa.yaml'}:1: task name 'cli_qa' is defined by more than one "
                                   f"file: {tasks / 'cli_qa.yaml'}:1, {tasks / 'copy.yml'}:1"]


def test_an_empty_tasks_dir_is_an_error_naming_the_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["tasks", "list", "--tasks-dir", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: task directory {tmp_path / 'empty'} holds no YAML task files (*.yaml / *.yml)")
    assert err.count("\n") == 1


@pytest.mark.parametrize("old, new", [
    ('jinja: "question: {{q}} ||| {{a}}"', 'jinja: "question: {{q}}"'),  # a template that renders no target
    ("splits:", "metrics: [acuracy]\nsplits:"),  # a metric evaluation does not ship
    ("splits:", "metrics: [group_exact_match]\nsplits:"),  # a group metric without group_by
])
def test_list_refuses_a_tasks_dir_that_validate_rejects_with_the_same_message(workspace, capsys, old, new):
    # `tasks list --tasks-dir` registered (and listed) the task that `tasks validate` rejected
    path = workspace / "tasks" / "cli_qa.yaml"
    path.write_text(TASK_YAML.replace(old, new, 1))
    data = ["--data-dir", str(workspace / "data")]
    assert main(["tasks", "validate", str(workspace / "tasks"), "--rows", "0", *data]) == 1
    rejected = capsys.readouterr().err.splitlines()
    assert len(rejected) == 1 and rejected[0].startswith(f"error: {path}:")
    assert main(["tasks", "list", "--tasks-dir", str(workspace / "tasks"), *data]) == 2
    assert capsys.readouterr().err.splitlines() == rejected
    assert "cli_qa" not in task_registry.list_tasks()


def test_validate_reads_each_task_file_once(workspace, capsys, monkeypatch):
    # validate parsed each file three times (its checks, its metrics, the folder's duplicate names)
    from task_registry import yaml_parse

    (workspace / "tasks" / "other.yaml").write_text(TASK_YAML.replace("name: cli_qa", "name: cli_other"))
    reads = []
    parse = yaml_parse.TaskFileParser.parse
    monkeypatch.setattr(yaml_parse.TaskFileParser, "parse", lambda self: reads.append(self.path.name) or parse(self))
    assert main(["tasks", "validate", str(workspace / "tasks"), "--data-dir", str(workspace / "data")]) == 0
    assert sorted(reads) == ["cli_qa.yaml", "other.yaml"]


FILE_TASKS = {"cli_csv_reader": "source:\n  hf: csv\n  data_files: {train: ../data/x.csv, validation: ../data/v.csv}\n",
              "cli_csv_files": "source:\n  files: {train: ../data/x.csv, validation: [../data/v.csv]}\n"}


@pytest.fixture()
def file_tasks(tmp_path):
    """Two YAML tasks reading `data/x.csv` and `data/v.csv` beside their folder `tasks/`: through `hf: csv` and
    through `files:`."""
    (tmp_path / "data").mkdir()
    for name in ("x", "v"):
        (tmp_path / "data" / f"{name}.csv").write_text("q,a\nwhat,that\n")
    (tmp_path / "tasks").mkdir()
    for name, source in FILE_TASKS.items():
        (tmp_path / "tasks" / f"{name}.yaml").write_text(
            f"name: {name}\n{source}templates:\n  - name: t\n    jinja: '{{{{q}}}} ||| {{{{a}}}}'\n")
    with task_registry.isolated_registry():
        yield tmp_path


def test_list_shows_the_files_a_file_reader_reads(file_tasks, capsys):
    # was: `csv` alone for the hf: csv task (which files it reads was not shown), and `tasks/../data/x.csv`
    assert main(["tasks", "list", "--tasks-dir", str(file_tasks / "tasks")]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("cli_csv")}
    files = f"train: [{str(file_tasks / 'data' / 'x.csv')!r}], validation: [{str(file_tasks / 'data' / 'v.csv')!r}]"
    assert rows["cli_csv_files"].endswith(f"  {files}")
    assert rows["cli_csv_reader"].endswith(f"  csv: {files}")


def test_show_prints_data_file_paths_normalised(file_tasks, capsys):
    # was: `.../tasks/../data/x.csv`, the YAML folder joined with the path as written
    data = file_tasks / "data"
    shown = {"train": [str(data / "x.csv")], "validation": [str(data / "v.csv")]}
    for name, key in (("cli_csv_reader", "data_files"), ("cli_csv_files", "files")):
        assert main(["tasks", "show", name, "--tasks-dir", str(file_tasks / "tasks")]) == 0
        assert yaml.safe_load(capsys.readouterr().out)["source"][key] == shown
    # the source keeps and reads the paths as stored
    stored = str(file_tasks / "tasks" / ".." / "data" / "x.csv")
    assert task_registry.get_task("cli_csv_reader").source.to_config()["data_files"]["train"] == stored
    assert task_registry.get_task("cli_csv_files").source.to_config()["files"]["train"] == [stored]
    assert task_registry.get_task("cli_csv_reader").to_dataset("train")["inputs"] == ["what"]


def test_definition_digests_name_each_data_file_once_however_the_tasks_dir_is_written(file_tasks, monkeypatch):
    # was: the digest hashed the paths as joined with --tasks-dir, so a transfer study started with `--tasks-dir
    # tasks` refused to resume under `--tasks-dir /abs/tasks` (same files), and resumed from another working
    # directory with the same relative spelling (other files) as unchanged
    def digests(tasks_dir: str) -> dict:
        with task_registry.isolated_registry():
            assert main(["tasks", "list", "--tasks-dir", tasks_dir]) == 0
            return {name: task_registry.get_task(name).definition_digest() for name in FILE_TASKS}

    absolute = digests(str(file_tasks / "tasks"))
    monkeypatch.chdir(file_tasks)
    assert digests("tasks") == absolute == digests(str(file_tasks / "data" / ".." / "tasks"))
    (file_tasks / "elsewhere" / "tasks").mkdir(parents=True)
    for name in FILE_TASKS:
        (file_tasks / "elsewhere" / "tasks" / f"{name}.yaml").write_text((file_tasks / "tasks" / f"{name}.yaml")
                                                                          .read_text())
    monkeypatch.chdir(file_tasks / "elsewhere")
    other = digests("tasks")  # the same task files' text, naming other data files (elsewhere/data/x.csv)
    assert all(other[name] != absolute[name] for name in FILE_TASKS)


def test_help_and_tasks_list_do_not_load_torch():
    # was: `t2t-mtl mixture` imported t2t_mtl.sampling at the top, whose entropy and uncertainty modules import
    # torch, and every command builds every parser: --help took ~3 s of CPU, ~90 % of it loading torch
    code = ("import sys; from t2t_mtl.cli import main; main(['tasks', 'list']); "
            "print('torch' in sys.modules, file=sys.stderr)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stderr.splitlines()[-1] == "False", done.stderr
    assert "parity" in done.stdout
