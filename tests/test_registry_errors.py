"""Bad input: each case raises a specific error that names what it is about (task, template, field, row, file,
line) instead of a raw traceback or a silent blank."""
from __future__ import annotations

import json
import re
import traceback

import pytest

import task_registry
from task_registry import (
    AnswerNotInChoicesError,
    DataSourceError,
    DuplicateRegistrationError,
    Filter,
    LocalFileSource,
    MissingFieldError,
    SandboxViolationError,
    Task,
    TaskDefinitionError,
    TaskFileError,
    Template,
    TemplateRenderError,
    TemplateSyntaxError,
    UnknownMixtureError,
    UnknownTaskError,
    UnknownTemplateError,
)
from task_registry.errors import close_matches
from task_registry.promptsource import import_promptsource

ECHO = Template("echo", "{{x}} ||| {{x}}")


def test_an_unknown_selection_counts_tasks_and_mixtures_apart():
    # was: "unknown task 'demo_mixx' (3 tasks registered; ...)" for `mixture show` / `tokenizer train --mixture`,
    # whose name may be a mixture: the mixtures were counted as tasks and not mentioned
    with task_registry.isolated_registry():
        for name in ("demo_a", "demo_b"):
            task_registry.register_task(Task(name, LocalFileSource("unused.jsonl"), [ECHO]))
        task_registry.register_mixture(task_registry.Mixture("demo_mix", ["demo_a", "demo_b"]))
        with pytest.raises(UnknownTaskError) as info:
            task_registry.resolve_selection("demo_mixx")
        assert str(info.value).startswith("unknown task or mixture 'demo_mixx'; did you mean 'demo_mix', ")
        tasks, mixtures = len(task_registry.list_tasks()), len(task_registry.list_mixtures())
        counts = f"({tasks} tasks and {mixtures} mixtures registered;"
        assert "? " + counts in str(info.value)
        with pytest.raises(UnknownTaskError, match=rf"^unknown task 'demo_mixx'.* \({len(task_registry.list_tasks())} "
                                                   r"tasks registered;"):
            task_registry.get_task("demo_mixx")


def test_a_mixture_given_as_a_task_and_a_task_as_a_mixture_are_named_as_such():
    # was: "unknown task 'demo_mix' (2 tasks registered; ...)" for `tasks show demo_mix`, `eval --tasks demo_mix`,
    # and "unknown mixture 'demo_a'" for `eval --mixture demo_a`, as if the name were not registered at all
    with task_registry.isolated_registry():
        for name in ("demo_a", "demo_b"):
            task_registry.register_task(Task(name, LocalFileSource("unused.jsonl"), [ECHO]))
        task_registry.register_mixture(task_registry.Mixture("demo_mix", ["demo_a", "demo_b"]))
        with pytest.raises(UnknownTaskError, match=r"^'demo_mix' is a mixture, not a task "
                                                   r"\(`t2t-mtl mixture show demo_mix` lists its tasks\)$"):
            task_registry.get_task("demo_mix")
        with pytest.raises(UnknownMixtureError, match=r"^'demo_a' is a task, not a mixture"):
            task_registry.get_mixture("demo_a")


def test_close_matches_takes_its_cutoff_and_the_substring_rule_per_caller():
    names = ["learning_rate", "lr", "warmup_steps", "super_glue_boolq"]
    assert close_matches("boolq", names) == ["super_glue_boolq"]  # by substring: the ratio is 0.48
    assert close_matches("boolq", names, substrings=False) == []
    assert close_matches("warmup", names, n=1) == ["warmup_steps"]  # ratio 2 * 6 / 18 = 0.67
    assert close_matches("warmup", names, n=1, cutoff=0.7, substrings=False) == []
    assert close_matches("LR", names, n=1, cutoff=0.6, substrings=False) == ["lr"]  # case ignored
    assert close_matches("Lr", ["LR", "lr"]) == ["LR"]  # names differing in case only: the first given


def test_unknown_task_lists_close_matches():
    with task_registry.isolated_registry():
        for name in ("demo_super_glue_rte", "demo_super_glue_cb", "demo_glue_sst2"):
            task_registry.register_task(Task(name, LocalFileSource("unused.jsonl"), [ECHO]))
        with pytest.raises(UnknownTaskError) as info:
            task_registry.get_task("demo_super_glue_rtee")
        assert isinstance(info.value, KeyError)
        assert info.value.suggestions[0] == "demo_super_glue_rte"
        assert "did you mean 'demo_super_glue_rte'" in str(info.value)
        # a name in other case, or the dataset part of a name, had no suggestion (difflib ratio below 0.5)
        assert task_registry.errors.close_matches("DEMO_GLUE_SST2", task_registry.list_tasks())[0] == "demo_glue_sst2"
        with pytest.raises(UnknownTaskError, match="did you mean 'demo_super_glue_cb'"):
            task_registry.get_task("cb")
        with pytest.raises(UnknownMixtureError, match="unknown mixture 'nope'"):
            task_registry.get_mixture("nope")
        with pytest.raises(UnknownTemplateError, match="did you mean 'echo'"):
            task_registry.get_task("demo_glue_sst2").get_template("ecko")


@pytest.mark.parametrize("templates,message", [
    ("{{x}} ||| {{x}}", "templates must be a list of Template objects, got the string '{{x}} ||| {{x}}': write "
                        "[Template('NAME', '{{x}} ||| {{x}}')]"),
    (None, "templates must be a list of Template objects, got None"),
    ({"echo": "{{x}} ||| {{x}}"}, "templates must be a list of Template objects, got {'echo': '{{x}} ||| {{x}}'}"),
])
def test_templates_that_are_no_list_of_templates_are_named_whole(templates, message):
    # was "templates must be Template objects, got '{'" for a Jinja string (its first letter) and a raw TypeError
    # ("'NoneType' object is not iterable") for None
    with pytest.raises(TaskDefinitionError) as info:
        Task("whole", LocalFileSource("a.jsonl"), templates)
    assert str(info.value) == f"task 'whole': {message}"


def test_duplicate_registration_needs_overwrite():
    with task_registry.isolated_registry():
        task_registry.register_task(Task("dup", LocalFileSource("a.jsonl"), [ECHO]))
        with pytest.raises(DuplicateRegistrationError, match="'dup' is already registered"):
            task_registry.register_task(Task("dup", LocalFileSource("b.jsonl"), [ECHO]))
        task_registry.register_task(Task("dup", LocalFileSource("b.jsonl"), [ECHO]), overwrite=True)
    with pytest.raises(task_registry.TaskDefinitionError, match="two templates are named 'echo'"):
        Task("twice", LocalFileSource("a.jsonl"), [ECHO, Template("echo", "{{y}} ||| y")])


def test_template_syntax_error_names_file_and_line(tmp_path):
    task_file = tmp_path / "task.yaml"
    task_file.write_text(
        "name: broken\nsource:\n  files: rows.jsonl\ntemplates:\n"
        "  - name: fine\n    jinja: '{{x}} ||| {{x}}'\n"
        "  - name: bad\n    jinja: |\n      {{ x }}\n      {% if x %} ||| {{ x }\n")
    with pytest.raises(TaskFileError) as info:
        task_registry.parse_task_file(task_file)
    assert info.value.errors == [
        f"{task_file}:9: template 'bad' has a Jinja syntax error (line 2 of the template): unexpected '}}'"]
    promptsource_file = tmp_path / "templates.yaml"
    promptsource_file.write_text(
        "dataset: demo\ntemplates:\n  abc: !Template\n    answer_choices: null\n    id: abc\n"
        "    jinja: '{{ premise ||| {{ label }}'\n    name: oops\n    reference: ''\n")
    with pytest.raises(TemplateSyntaxError) as error:
        import_promptsource(promptsource_file)
    assert error.value.filename == str(promptsource_file) and error.value.file_lineno == 6
    assert str(error.value).startswith(f"{promptsource_file}:6: template 'oops' has a Jinja syntax error")
    with pytest.raises(TemplateSyntaxError, match="template 'inline'.*line 1"):
        Template("inline", "{% for x in y %}{{x}} ||| y")


@pytest.fixture()
def rows_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [
        {"text": "fine", "label": 0, "extra": "e"}, {"text": "fine", "label": 1, "extra": "e"},
        {"text": "no extra", "label": 1}, {"text": "bad label", "label": 7, "extra": "e"}]))
    return path


def test_missing_field_names_task_template_field_and_row(rows_file):
    # a field absent from a row of a json file is filled with null by datasets (rendered "None", as promptsource
    # does), so the missing field here is one no row has, read only on the third row
    template = Template("uses_note", "{{text}} {% if extra is none %}{{ note }}{% endif %} ||| {{label}}")
    task = Task("rows", LocalFileSource(rows_file), [template], splits=("train",))
    with pytest.raises(MissingFieldError) as info:
        task.to_dataset("train")
    error = info.value
    assert (error.task, error.template, error.field, error.row_index) == ("rows", "uses_note", "note", 2)
    assert str(error).startswith("task 'rows', template 'uses_note', row 2: field 'note' is missing")
    assert "the row has fields ['extra', 'label', 'text']" in str(error)


def test_missing_field_on_real_rows(promptsource_dir, shared_data_dir):
    templates = import_promptsource(promptsource_dir, dataset="trec")
    task = Task("trec_ps", LocalFileSource({"test": shared_data_dir / "trec" / "default" / "test.jsonl"}),
                [t for t in templates if t.name == "fine_grained_LOC"], splits=("test",))
    with pytest.raises(MissingFieldError) as info:
        task.to_dataset("test", max_examples=3)
    assert (info.value.task, info.value.template, info.value.field, info.value.row_index) == (
        "trec_ps", "fine_grained_LOC", "label_coarse", 0)


def test_a_key_a_nested_field_lacks_is_named_with_the_keys_it_has(shared_data_dir):
    # XQuAD's `answers` is {text: [...], answer_start: [...]}; `answers.txt` was "field 'txt' is missing from the row
    # ('dict object' has no attribute 'txt'); the row has fields ['answers', 'context', 'id', 'question', ...]"
    template = Template("typo", "{{context}} {{question}} ||| {{ answers.txt | first }}")
    task = Task("xquad_typo", LocalFileSource({"validation": shared_data_dir / "xquad" / "xquad.en" /
                                               "validation.jsonl"}), [template], splits=("validation",))
    with pytest.raises(MissingFieldError) as info:
        task.to_dataset("validation", max_examples=2)
    assert (info.value.field, info.value.row_index) == ("answers.txt", 0)
    assert str(info.value) == ("task 'xquad_typo', template 'typo', row 0: field 'answers' has no key 'txt' (the "
                               "template reads answers.txt); it has the keys ['answer_start', 'text']")
    # a top-level field read as an attribute of the row is named as before
    with pytest.raises(MissingFieldError, match=r"field 'contxt' is missing from the row; the row has fields"):
        Template("t", "{{ contxt }} ||| x").render({"context": "c"}, task="t", row_index=0)


@pytest.mark.parametrize("target", ["{{ answer_choices[label] }}", "{{ answer_choices | join(', ') }}"])
def test_a_template_reading_answer_choices_it_does_not_define_says_so(target):
    # was "field '1' is missing from the row (None has no element 1)" (or a TypeError on None)
    template = Template("forgot_choices", "{{text}} ||| " + target)
    with pytest.raises(TemplateRenderError) as info:
        template.render({"text": "t", "label": 1}, task="rows", row_index=0)
    assert not isinstance(info.value, MissingFieldError) and info.value.field == "answer_choices"
    assert str(info.value).startswith("task 'rows', template 'forgot_choices', row 0: the template reads "
                                      "`answer_choices` but defines none")
    # a missing row field is still named as such
    with pytest.raises(MissingFieldError, match="field 'text' is missing"):
        template.render({"label": 1})


@pytest.mark.parametrize("jinja,row,message", [
    ("{{ choices[5] }} ||| x", {"choices": ["a", "b"]}, "index 5 is out of range of a list (list object has no "
                                                        "element 5)"),
    ("{{text}} ||| {{ answer_choices[label] }}", {"text": "t", "label": 7},
     "index 7 is out of range of a list (list object has no element 7); the answer choices are ['no', 'yes']"),
    ("{{text}} ||| {{ answer_choices[label] }}", {"text": "t", "label": None},
     "a list is indexed with a null value"),
    ("{{ scores[3] }} ||| x", {"scores": {"1": 0.5}}, "key 3 is not in a dict of the row"),
    ("{{ x[1] }} ||| x", {"x": None}, "element 1 of a null value is taken"),
])
def test_an_index_out_of_range_is_not_called_a_missing_field(jinja, row, message):
    # was MissingFieldError "field '5' is missing from the row (list object has no element 5)"
    template = Template("indexes", jinja, answer_choices="no ||| yes" if "answer_choices" in jinja else None)
    with pytest.raises(TemplateRenderError) as info:
        template.render(row, task="rows", row_index=3)
    assert not isinstance(info.value, MissingFieldError)
    assert str(info.value).startswith(f"task 'rows', template 'indexes', row 3: {message}")


@pytest.mark.parametrize("choices", ["negative, positive", "negative / positive", "negative | positive"])
def test_choices_written_as_one_indexed_past_it_say_to_separate_them_with_pipes(choices):
    # was "index 1 is out of range of a list (...); the answer choices are ['negative, positive']; check the row's
    # values against the template": the one choice joining both was not named as the cause
    template = Template("one_choice", "{{text}} ||| {{ answer_choices[label] }}", answer_choices=choices)
    with pytest.raises(TemplateRenderError) as info:
        template.render({"text": "t", "label": 1}, task="rows", row_index=2)
    assert str(info.value) == (f"task 'rows', template 'one_choice', row 2: index 1 is out of range of a list (list "
                               f"object has no element 1); the answer choices are one choice, {choices!r}: separate "
                               f"the choices with `|||` (\"no ||| yes\")")


def test_target_not_among_answer_choices_names_the_row(rows_file):
    task = Task("rows", LocalFileSource(rows_file),
                [Template("label_text", "{{text}} ||| {{ ['no', 'yes', 'maybe'][label] if label < 3 else 'other' }}",
                          answer_choices="no ||| yes")], splits=("train",))
    with pytest.raises(AnswerNotInChoicesError) as info:
        task.to_dataset("train")
    assert (info.value.task, info.value.template, info.value.row_index) == ("rows", "label_text", 3)
    assert "target 'other' is not among the answer choices ['no', 'yes']" in str(info.value)


@pytest.mark.parametrize("payload", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ joiner.__init__.__globals__.__builtins__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ x.__class__.__base__ }}",
    "{{ zip.__self__ }}",
    "{{ (x|attr('__class__')).__mro__ }}",
    "{% set c = ''.__class__ %}{{ c.__mro__ }}",
    "{{ ''.format.__globals__ }}",
    "{{ '{0.__class__}'.format(x) }}",
    "{{ self.__init__.__globals__ }}",
    "{{ x.upper.__func__ }}",
])
def test_sandbox_escapes_are_refused(payload):
    template = Template("evil", payload + " ||| y")
    with pytest.raises(TemplateRenderError) as info:
        template.render({"x": "s"}, task="attack", row_index=0)
    assert isinstance(info.value, (SandboxViolationError, MissingFieldError))
    assert "attack" in str(info.value)


@pytest.mark.parametrize("payload,message", [
    ("{% if (x|length)**(99**(9**9)) > 1 %}big{% endif %}", r"99 \*\* 387420489 is too large"),  # was: a hang at
    ("{{ ('ab' * (10**9)) }}", "repeating a sequence of 2 items 1000000000 times"),        # compile time
    ("{{ ([0] * (x|length * 10**7)) | length }}", "repeating a sequence of 1 items 10000000 times"),
])
def test_huge_powers_and_repeats_are_refused_not_computed(payload, message):
    with pytest.raises(SandboxViolationError, match=message):
        Template("big", payload + " ||| y").render({"x": "s"})
    ordinary = Template("small", "{{ (2**10) }} {{ ('ab' * 3) }} {{ (3 * 4) }} {{ (2.0 ** 3) }} ||| y")
    assert ordinary.render({}).inputs == "1024 ababab 12 8.0"


def test_the_power_limit_is_at_65536_result_bits():
    # 2 has 2 bits: 2 ** 32768 (2 * 32768 = 65536 bits) is allowed, 2 ** 32769 is not; 2 ** 32768 = 4 (mod 7)
    assert Template("p", "{{ ((2 ** 32768) % 7) }} ||| y").render({}).inputs == "4"
    with pytest.raises(SandboxViolationError, match=r"2 \*\* 32769 is too large"):
        Template("p", "{{ ((2 ** 32769) % 7) }} ||| y").render({})


def test_sandbox_also_guards_answer_choices_and_preprocessor_expressions(rows_file):
    with pytest.raises(SandboxViolationError):
        Template("evil", "{{x}} ||| y", answer_choices="{{ ''.__class__.__mro__ }} ||| b").render({"x": 1})
    task = Task("rows", LocalFileSource(rows_file), [ECHO], preprocessors=[Filter("text.__class__.__mro__")],
                splits=("train",))
    with pytest.raises(TemplateRenderError, match="sandbox"):
        task.load_rows("train")


def test_missing_split_file_and_split_are_named(tmp_path):
    task = Task("nofile", LocalFileSource({"train": tmp_path / "absent.jsonl"}), [ECHO], splits=("train",))
    with pytest.raises(DataSourceError, match="absent.jsonl"):
        task.load_rows("train")
    with pytest.raises(DataSourceError, match="no split 'test'"):
        task.load_rows("test")


def _failing_rows(split, num_rows, seed):
    yield {"x": "first row"}
    raise ZeroDivisionError("the user's bug")


def _rows_with_changing_fields(split, num_rows, seed):
    yield from ({"x": "a"}, {"y": "b"})


@pytest.mark.parametrize("streaming", [False, True])
def test_generator_exception_names_generator_and_split_and_chains_the_original(streaming):
    task = Task("gen_fails", task_registry.GeneratorSource(_failing_rows, num_rows=3), [ECHO], splits=("train",))
    with pytest.raises(DataSourceError) as info:
        list(task.to_dataset("train", streaming=streaming))
    assert str(info.value) == (f"task 'gen_fails': generator {__name__}._failing_rows failed on split 'train': "
                               f"ZeroDivisionError: the user's bug")
    original = info.value.__cause__
    assert isinstance(original, ZeroDivisionError) and info.value.__suppress_context__
    frames = traceback.extract_tb(original.__traceback__)
    assert (frames[-1].name, frames[-1].line) == ("_failing_rows", 'raise ZeroDivisionError("the user\'s bug")')
    if not streaming:  # no frames from inside datasets above the error, nor a DatasetGenerationError around it
        assert all("/datasets/" not in frame.filename for frame in traceback.extract_tb(info.value.__traceback__))


def test_generator_rows_that_cannot_be_stored_name_the_generator():
    source = task_registry.GeneratorSource(_rows_with_changing_fields, num_rows=2)
    with pytest.raises(DataSourceError, match=r"_rows_with_changing_fields: the rows of split 'validation' could "
                                              r"not be stored \(KeyError: 'x'\)") as info:
        source.load("validation")
    assert isinstance(info.value.__cause__, KeyError)


def _rows_of_n(split, n):
    yield from ({"x": str(i)} for i in range(n))


def _rows_for_task(split, num_rows, seed, task):
    yield {"x": task}


@pytest.mark.parametrize("fn, gen_kwargs, problem, definition", [
    (_rows_of_n, {}, "missing a required argument: 'n'", "_rows_of_n(split, num_rows, seed)"),
    (_rows_for_task, {}, "missing a required argument: 'task'", "_rows_for_task(split, num_rows, seed)"),
    (_rows_for_task, {"task": "a", "size": 2}, "got an unexpected keyword argument 'size'",
     "_rows_for_task(split, num_rows, seed, task, size)"),
])
def test_a_generator_of_the_wrong_signature_is_refused_naming_the_task_and_the_signature(fn, gen_kwargs, problem,
                                                                                          definition):
    # was accepted, and loading failed with Python's own text: "task 'gen_sig': generator ..._rows_of_n failed on
    # split 'train': TypeError: _rows_of_n() got an unexpected keyword argument 'num_rows'"
    source = task_registry.GeneratorSource(fn, num_rows=3, gen_kwargs=gen_kwargs)
    with pytest.raises(TaskDefinitionError) as info:
        Task("gen_sig", source, [ECHO], splits=("train",))
    assert str(info.value) == (
        f"task 'gen_sig': generator {__name__}.{fn.__name__} cannot take the arguments GeneratorSource calls it "
        f"with, split, num_rows and seed as keywords{' and its gen_kwargs' if gen_kwargs else ''} ({problem}); "
        f"define it as def {definition}, or add **kwargs")


def test_a_generator_taking_its_arguments_as_keywords_is_accepted():
    def rows(**kwargs):
        yield {"x": kwargs["split"]}

    def rows_with_default(split, num_rows, seed, size=1):
        yield {"x": split}

    for fn in (rows, rows_with_default, _rows_for_task):
        Task("gen_ok", task_registry.GeneratorSource(fn, num_rows=1, gen_kwargs={"task": "t"}
                                                      if fn is _rows_for_task else None), [ECHO], splits=("train",))


def _no_rows(split, num_rows, seed):
    yield from ()


def test_a_generator_without_rows_says_so():
    # was "could not be stored (SchemaInferenceError: ...); every row needs the same fields"
    source = task_registry.GeneratorSource(_no_rows, num_rows=2)
    with pytest.raises(DataSourceError, match=rf"^generator {__name__}._no_rows yielded no rows for split 'train' "
                                              r"\(num_rows=2\); yield rows or drop the split$"):
        source.load("train")


@pytest.mark.parametrize("preprocessor,message", [
    (Filter("label > 'a'"), r"task 'rows': split 'train': filter, row 0: expression \"label > 'a'\" failed "
                            r"\(TypeError: '>' not supported"),
    (Filter("lable"), r"task 'rows': split 'train': filter, row 0: expression 'lable' uses a missing field "
                      r"\('lable' is undefined\); the row has fields \['extra', 'label', 'text'\]"),
    (task_registry.Map({"both": "lable"}), r"task 'rows': split 'train': map field 'both', row 0: expression 'lable' "
                                           r"uses a missing field"),
    # was "uses a missing field (str object has no element 99)"
    (task_registry.Map({"letter": "text[99]"}), r"task 'rows': split 'train': map field 'letter', row 0: expression "
                                                r"'text\[99\]' failed: index 99 is out of range of a str \(str object "
                                                r"has no element 99\); the row is \{'text': 'fine'"),
])
def test_preprocessor_expressions_that_fail_on_a_row_name_task_split_row_and_expression(rows_file, preprocessor,
                                                                                        message):
    task = Task("rows", LocalFileSource(rows_file), [ECHO], preprocessors=[preprocessor], splits=("train",))
    with pytest.raises(TemplateRenderError, match=message):
        task.load_rows("train")
    # streamed, the preprocessors fail while the rows are iterated (the task and split were not named)
    with pytest.raises(TemplateRenderError, match=message):
        list(task.to_dataset("train", streaming=True))
    with pytest.raises(TemplateRenderError, match=message):  # nor when the streamed rows were read directly
        list(task.load_rows("train", streaming=True))


def _upper_label_text(row):
    return {"label_text": row["label_text"].upper()}  # (no row has label_text)


def _shorter_than(row):
    return len(row["text"]) < 7 / (row["label"] - 1)  # (ZeroDivisionError on the row of label 1)


@pytest.mark.parametrize("preprocessor,message,cause", [
    (task_registry.Map(_upper_label_text), r"^task 'rows': split 'train': map\(_upper_label_text\), row 0: the "
                                           r"function raised KeyError: 'label_text'; the row is \{'text': 'fine', "
                                           r"'label': 0, 'extra': 'e'\}$", KeyError),
    (Filter(_shorter_than), r"^task 'rows': split 'train': filter\(_shorter_than\), row 1: the function raised "
                            r"ZeroDivisionError: division by zero; the row is \{'text': 'fine', 'label': 1, ",
     ZeroDivisionError),
])
def test_preprocessor_functions_that_fail_on_a_row_name_task_split_row_and_function(rows_file, preprocessor, message,
                                                                                    cause):
    # was the function's bare KeyError / ZeroDivisionError from inside datasets' map, naming no task, split or row
    task = Task("rows", LocalFileSource(rows_file), [ECHO], preprocessors=[preprocessor], splits=("train",))
    for read in (lambda: task.load_rows("train"), lambda: list(task.to_dataset("train", streaming=True))):
        with pytest.raises(TemplateRenderError, match=message) as info:
            read()
        assert type(info.value.__cause__) is cause  # (its traceback ends at the function's line)


_LABEL_TEXT = Template("label_text", "{{ text }} ||| {{ label_text }}")


def _rendered_label_text(row):
    return {"target": _LABEL_TEXT.render(row)[1]}  # (a task_registry error: no row has label_text)


def test_a_preprocessor_function_raising_a_template_error_itself_is_named_with_its_step_and_row(rows_file):
    # was passed on bare, as if named already: "task 'rows': split 'train': template 'label_text': ..." named
    # neither the map step nor the row, which the README promises for any exception a Map or Filter function raises
    from task_registry.errors import MissingFieldError

    task = Task("rows", LocalFileSource(rows_file), [ECHO], preprocessors=[task_registry.Map(_rendered_label_text)],
                splits=("train",))
    message = (r"^task 'rows': split 'train': map\(_rendered_label_text\), row 0: the function raised "
               r"MissingFieldError: .*label_text.*; the row is \{'text': 'fine', 'label': 0, 'extra': 'e'\}$")
    for read in (lambda: task.load_rows("train"), lambda: list(task.to_dataset("train", streaming=True))):
        with pytest.raises(TemplateRenderError, match=message) as info:
            read()
        assert type(info.value.__cause__) is MissingFieldError


def _upper_text_in_place(row):
    row["text"] = row["text"].upper()  # (and no `return row`)


def _upper_text_returned(row):
    _upper_text_in_place(row)
    return row


@pytest.mark.parametrize("fn,returned", [
    (_upper_text_in_place, "None"),
    (lambda row: row["text"] * 60, "str '" + "fine" * 24 + "fin…"),
    (lambda row: [row], "list [{'text': 'fine', 'label': 0, 'extra': 'e'}]"),
])
def test_a_map_function_returning_no_mapping_names_the_task_the_step_and_the_row(rows_file, fn, returned):
    # was: a function editing the row in place without returning it left every row unchanged when loaded (datasets
    # takes a None result for a side effect) and raised a bare "TypeError: 'NoneType' object is not a mapping"
    # streamed; a str or list result was datasets' TypeError naming no task
    task = Task("rows", LocalFileSource(rows_file), [ECHO], preprocessors=[task_registry.Map(fn)], splits=("train",))
    step = task_registry.Map(fn).describe()
    message = (f"task 'rows': split 'train': {step}, row 0: the function returned {returned}, not the row's fields: "
               "return the row (`return row` after editing it) or a dict of the fields to add or replace")
    for read in (lambda: task.load_rows("train"), lambda: list(task.load_rows("train", streaming=True))):
        with pytest.raises(TaskDefinitionError) as info:
            read()
        assert str(info.value) == message
    returned_rows = Task("rows", LocalFileSource(rows_file), [ECHO], splits=("train",),
                         preprocessors=[task_registry.Map(_upper_text_returned)]).load_rows("train")
    assert returned_rows["text"] == ["FINE", "FINE", "NO EXTRA", "BAD LABEL"]


def _every_read_fails(task: Task, split: str, pattern: str) -> None:
    """Loading, streaming and streaming the rendered `split` of `task` each raise a DataSourceError matching
    `pattern`."""
    with pytest.raises(DataSourceError, match=pattern):
        task.load_rows(split)
    with pytest.raises(DataSourceError, match=pattern):
        list(task.load_rows(split, streaming=True))
    with pytest.raises(DataSourceError, match=pattern):
        list(task.to_dataset(split, streaming=True))


def test_a_malformed_file_read_streamed_fails_as_when_it_is_loaded(tmp_path):
    # streamed, the reader's own error came out of the iteration (pyarrow's ArrowInvalid "JSON parse error: ...")
    # naming neither the source nor the file
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{"text": "b" "c": 3}\n')
    task = Task("malformed", LocalFileSource(bad), [ECHO], splits=("train",))
    named = rf"^task 'malformed': local files source: could not load \['{bad}'\] for split 'train': .*JSON parse error"
    _every_read_fails(task, "train", named)
    good, other = tmp_path / "good.jsonl", tmp_path / "other.jsonl"
    good.write_text('{"text": "c"}\n')
    other.write_text('{"text": "d"}\n')
    both = LocalFileSource({"train": [good, other]})  # several files are read once each, streamed or not
    assert [dict(r) for r in both.load("train", streaming=True)] == [dict(r) for r in both.load("train")] == [
        {"text": "c"}, {"text": "d"}]


def test_a_hub_datasets_read_error_names_the_dataset_and_split_loaded_or_streamed(tmp_path, monkeypatch):
    # streamed, the reader's error came out of the iteration (pyarrow's "JSON parse error: ...") naming neither the
    # dataset nor the split; loaded, the message kept datasets' generic wrapper only, not the parse error
    import datasets

    from task_registry import HFSource, sources

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{"text": "b" "c": 3}\n')
    task = Task("malformed", HFSource("json", data_files={"train": str(bad)}), [ECHO], splits=("train",))
    named = (r"^task 'malformed': hub dataset json split 'train' could not be loaded \(.*JSON parse error.*\); its "
             r"data_files")
    _every_read_fails(task, "train", named)

    def broken_stream(*args, **kwargs):
        def rows():
            yield {"text": "a"}
            raise ConnectionError("the hub went away")
        return datasets.IterableDataset.from_generator(rows)

    monkeypatch.setattr(datasets, "load_dataset", broken_stream)
    monkeypatch.setattr(sources, "_data_dir", None)  # the hub path: no data dir set by an earlier test or the env
    monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
    with pytest.raises(DataSourceError, match=r"^hub dataset some/set/cfg split 'validation' could not be loaded "
                                              r"\(ConnectionError: the hub went away\); offline, point --data-dir"):
        list(HFSource("some/set", "cfg").load("validation", streaming=True))


@pytest.mark.parametrize("name, text", [
    ("rows.jsonl", '{"x": "plain"}\n{"x": "caf\u00e9"}\n'),
    ("rows.jsonl.gz", '{"x": "plain"}\n{"x": "caf\u00e9"}\n'),
    ("rows.csv", "x\nplain\ncaf\u00e9\n"),
])
def test_a_data_file_in_windows_1252_is_an_error_naming_the_file_and_line(tmp_path, name, text):
    # a Windows-1252 jsonl file loaded, then failed at the first row read with a bare UnicodeDecodeError traceback
    # naming no task or file (the json reader stores the bytes unchecked); a csv one said "could not load [...]:
    # UnicodeDecodeError: 'utf-8' codec can't decode ..." without what to do
    import gzip

    from task_registry import HFSource

    data = text.encode("cp1252")  # é is the single byte 0xe9 there, invalid in UTF-8 (line 2 of every file here)
    bad = tmp_path / name
    bad.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    line = 3 if name.endswith(".csv") else 2  # (the csv's header is line 1)
    reader = "csv" if name.endswith(".csv") else "json"
    for source, what in ((LocalFileSource({"train": str(bad)}), "local files source"),
                         (HFSource(reader, data_files={"train": str(bad)}), f"hub dataset {reader}")):
        task = Task("latin", source, [ECHO], splits=("train",))
        named = (rf"^{what}: '{re.escape(str(bad))}' \(split 'train'\) is not UTF-8 text: line {line} holds the byte "
                 rf"0xe9 \(invalid continuation byte\); save it as UTF-8")
        with pytest.raises(DataSourceError, match=named):
            source.load("train")
        with pytest.raises(DataSourceError, match=named):
            list(source.load("train", streaming=True))
    bad.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())  # UTF-8: read as is
    assert [row["x"] for row in task.load_rows("train")] == ["plain", "caf\u00e9"]


def test_an_error_reading_a_tasks_rows_names_the_task(tmp_path):
    # `t2t-mtl train` / `tasks preview` of a task whose data file was missing said only "hub dataset csv split
    # 'train' could not be loaded (FileNotFoundError: ...)": which of the run's tasks it was went unsaid
    from task_registry import HFSource

    missing = tmp_path / "absent.csv"
    for source in (LocalFileSource({"train": str(missing)}), HFSource("csv", data_files={"train": str(missing)})):
        task = Task("mine", source, [ECHO], splits=("train",))
        _every_read_fails(task, "train", rf"^task 'mine': .*{re.escape(str(missing))}")


def test_a_csv_cell_read_as_null_by_the_csv_reader_says_how_to_keep_it(tmp_path):
    # `hf: csv` reads a review "None" as null; the error said only that "a row of a file that lacks a field others
    # have gets null there", which the user's file (every row has the field) does not do
    from task_registry import HFSource

    rows = tmp_path / "rows.csv"
    rows.write_text("x\nNone\n")
    task = Task("cells", HFSource("csv", data_files={"train": str(rows)}), [ECHO], splits=("train",))
    with pytest.raises(MissingFieldError) as raised:
        task.to_dataset("train")
    assert ("field 'x' is null on this row and the template prints it: a row of a file that lacks a field others have "
            "gets null there, as does a csv cell that is empty or, read by `hf: csv`, says NA, None or null (list a "
            "local csv under `files:` to keep such cells as text)") in str(raised.value)
    kept = Task("cells", LocalFileSource({"train": str(rows)}), [ECHO], splits=("train",)).to_dataset("train")
    assert kept[0]["inputs"] == kept[0]["targets"] == "None"


@pytest.mark.parametrize("name, text, joined", [
    ("rows.csv", "x;y\na;b\n", "x;y"),      # European Excel's csv
    ("rows.csv", "x\ty\na\tb\n", "x\ty"),  # a tab-separated file named .csv
    ("rows.tsv", "x,y\na,b\n", "x,y"),      # a comma-separated file named .tsv
])
def test_a_file_split_at_the_wrong_separator_says_so(tmp_path, name, text, joined):
    # the file's one column 'x;y' made `{{x}}` "missing from the row", with nothing about the separator
    path = tmp_path / name
    path.write_text(text)
    separator = joined[1]
    task = Task("seps", LocalFileSource({"train": str(path)}), [ECHO], splits=("train",))
    with pytest.raises(MissingFieldError) as raised:
        task.to_dataset("train")
    assert str(raised.value).endswith(
        f"the row has fields [{joined!r}]; the row's field {joined!r} holds several column names: the file is "
        f"separated by {separator!r}, which its reader does not split at (a .csv file is read comma-separated, a .tsv "
        f"file listed under `files:` tab-separated: save or name the file accordingly)")


def test_rows_nested_under_one_key_of_a_json_file_say_so(tmp_path):
    # {"data": [{...}, ...]} is read as one row whose field 'data' holds the records: `{{x}}` was "missing from the
    # row; the row has fields ['data']"
    path = tmp_path / "rows.json"
    path.write_text(json.dumps({"data": [{"x": "a"}, {"x": "b"}]}))
    task = Task("nested", LocalFileSource({"train": str(path)}), [ECHO], splits=("train",))
    with pytest.raises(MissingFieldError) as raised:
        task.to_dataset("train")
    assert str(raised.value).endswith(
        "the row has fields ['data']; the row's field 'data' is a list of records holding 'x': if those are the rows, "
        "the file nests them under 'data'; write one record per row instead (a .jsonl file, one JSON object a line, "
        "or a .json file holding a list of objects)")
    path.write_text(json.dumps([{"x": "a"}, {"x": "b"}]))  # as advised
    assert task.to_dataset("train")["inputs"] == ["a", "b"]


def test_a_group_by_index_out_of_range_says_so(rows_file):
    task = Task("rows", LocalFileSource(rows_file), [ECHO], splits=("train",), group_by="[label, label][label + 1]")
    with pytest.raises(TemplateRenderError, match=r"^task 'rows': group_by, row 1: expression .* failed: index 2 is "
                                                  r"out of range of a list"):
        task.group_key(task.load_rows("train")[1], 1)


def test_a_map_expression_that_is_not_a_string_is_refused():
    # was: compiled as Jinja from its text, so YAML's unquoted `2020-11-12` (a date) became 2020 - 11 - 12 = 1997 and
    # `map: {x: 5}` was taken while `filter: 5` was refused
    import datetime

    for value in (datetime.date(2020, 1, 1), 5, None, ["a"]):
        with pytest.raises(task_registry.TaskDefinitionError,
                           match=rf"^map field 'x': a Jinja expression must be a string, got {re.escape(repr(value))}"):
            task_registry.Map({"x": value})


def test_a_map_whose_values_change_type_across_rows_is_named(tmp_path):
    path = tmp_path / "many.jsonl"  # more rows than one write batch of datasets, the last one negative
    path.write_text("".join(json.dumps({"label": i if i < 1500 else -1}) + "\n" for i in range(1501)))
    task = Task("mixed", LocalFileSource(path), [ECHO], splits=("train",),
                preprocessors=[task_registry.Map({"n": "label if label >= 0 else 'neg'"})])
    with pytest.raises(task_registry.TaskDefinitionError,
                       match=r"task 'mixed': split 'train': map\(.*\): the new values do not share one type"):
        task.load_rows("train")


def test_malformed_and_empty_data_files_say_why(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{"a": 2 "b": 3}\n')
    with pytest.raises(DataSourceError, match=r"bad.jsonl.*JSON parse error"):
        LocalFileSource(bad).load("train")
    columns = tmp_path / "cols.csv"
    columns.write_text("a,label\nx,0\ny,1,extra\n")
    with pytest.raises(DataSourceError, match=r"cols.csv.*Expected 2 fields in line 3, saw 3"):
        LocalFileSource(columns).load("train")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataSourceError, match=r"empty.jsonl'\] \(split 'train'\) has no rows"):
        LocalFileSource(empty).load("train")
    # a csv header alone or an empty JSON list said only 'Instruction "train" corresponds to no data!'
    for name, text in (("header.csv", "a,label\n"), ("header.tsv", "a\tlabel\r\n"), ("empty.json", "[]")):
        (tmp_path / name).write_text(text)
        with pytest.raises(DataSourceError, match=rf"{name}'\] \(split 'train'\) has no rows; add rows or drop"):
            LocalFileSource(tmp_path / name).load("train")


def test_an_empty_jsonl_file_has_no_rows_as_datasets_before_5_reports_it(tmp_path, monkeypatch):
    # was, with datasets 3.3-4.x (setup.py's floor is 3.3): "could not load [...]: DatasetGenerationError: An error
    # occurred while generating the dataset ← SchemaInferenceError: Please pass `features` ...", where datasets 5
    # reads the file as no rows; the load raises here what those versions raise for an empty jsonl file
    import datasets
    from datasets.arrow_writer import SchemaInferenceError

    def empty_file_of_datasets_4(*args, **kwargs):
        try:
            raise SchemaInferenceError("Please pass `features` or at least one example when writing data")
        except SchemaInferenceError as error:
            raise datasets.exceptions.DatasetGenerationError("An error occurred while generating the dataset") \
                from error

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    monkeypatch.setattr(datasets, "load_dataset", empty_file_of_datasets_4)
    no_rows = r"empty.jsonl'\] \(split 'train'\) has no rows; add rows or drop the split$"
    with pytest.raises(DataSourceError, match=no_rows) as raised:
        LocalFileSource(empty).load("train")
    assert raised.value.__cause__ is None


def test_an_unknown_filter_is_not_blamed_on_the_truncation_rewrite():
    with pytest.raises(TemplateSyntaxError) as info:
        Template("t", "{{ a | nosuchfilter }} ||| x")
    assert "No filter named 'nosuchfilter'" in str(info.value) and "rewrite" not in str(info.value)


def test_task_files_that_can_never_render_a_target_or_are_not_utf8_are_reported(tmp_path, rows_file):
    def task_file(name, body, encoding="utf-8"):
        path = tmp_path / f"{name}.yaml"
        path.write_bytes((f"name: {name}\nsource: {{files: {rows_file}}}\nsplits: [train]\n" + body).encode(encoding))
        return path

    no_pipe = task_file("no_pipe", "templates:\n  - {name: t, jinja: '{{text}} only'}\n")
    assert task_registry.validate_task_file(no_pipe) == [
        f"{no_pipe}:5: template 't' has no `|||` separator, so it renders no target and every row would be skipped: "
        "write it as `input ||| target`"]
    empty_choices = task_file("empty_choices", "templates:\n  - {name: t, jinja: '{{text}} ||| x', "
                                               "answer_choices: ''}\n")
    assert "template 't' has an empty answer_choices" in task_registry.validate_task_file(empty_choices)[0]
    latin = task_file("latin", "templates:\n  - {name: t, jinja: '{{text}} é ||| x'}\n", encoding="latin-1")
    problems = task_registry.validate_task_file(latin)
    assert len(problems) == 1 and problems[0].startswith(f"{latin}: not UTF-8 text")


def test_yml_task_files_are_loaded_like_yaml_ones(tmp_path, rows_file):
    (tmp_path / "short.yml").write_text(f"name: yml_task\nsource: {{files: {rows_file}}}\nsplits: [train]\n"
                                        "templates:\n  - {name: t, jinja: '{{text}} ||| {{label}}'}\n")
    with task_registry.isolated_registry():
        assert [t.name for t in task_registry.load_task_dir(tmp_path)] == ["yml_task"]
        assert task_registry.get_task("yml_task").to_dataset("train")[0]["targets"] == "0"


def test_strings_where_lists_belong_are_not_read_as_letters():
    with pytest.raises(task_registry.TaskDefinitionError, match=r"got the string 'ta' \(write \['ta'\]\)"):
        task_registry.Mixture("m", "ta")
    with pytest.raises(task_registry.TaskDefinitionError, match="rate of 'x' must be a finite number"):
        task_registry.Mixture("m", {"x": True})
    # metrics="accuracy" was kept as the metrics 'a', 'c', 'c', ... (evaluation: "unknown metric 'a'")
    with pytest.raises(task_registry.TaskDefinitionError, match=r"task 't': metrics must be a list of metric names, "
                                                                r"got the string 'accuracy' \(write \['accuracy'\]\)"):
        Task("t", LocalFileSource("unused.jsonl"), [ECHO], metrics="accuracy")
    with task_registry.isolated_registry():
        for name, cluster in (("kept", "qa"), ("nli_task", "nli")):
            task_registry.register_task(Task(name, LocalFileSource("unused.jsonl"), [ECHO], cluster=cluster))
        mixture = task_registry.Mixture("both", ["kept", "nli_task"])
        assert task_registry.training_rates(mixture, held_out_clusters="nli") == {"kept": 1.0}


def test_a_rate_function_giving_nan_for_a_sub_mixture_is_refused():
    with task_registry.isolated_registry():
        task_registry.register_task(Task("only", LocalFileSource("unused.jsonl"), [ECHO]))
        inner = task_registry.Mixture("inner", ["only"])
        outer = task_registry.Mixture("outer", [(inner, lambda _: float("nan"))])
        with pytest.raises(task_registry.TaskDefinitionError, match="rate function gave nan for mixture 'inner'"):
            outer.flatten()


def test_renaming_onto_an_existing_column_is_refused(rows_file):
    task = Task("rows", LocalFileSource(rows_file), [ECHO], splits=("train",),
                preprocessors=[task_registry.Rename({"extra": "label"})])
    with pytest.raises(task_registry.TaskDefinitionError, match=r"task 'rows': split 'train': rename .*column\(s\) "
                                                                r"\['label'\] exist already"):
        task.load_rows("train")
    swapped = Task("rows", LocalFileSource(rows_file), [ECHO], splits=("train",),
                   preprocessors=[task_registry.Rename({"text": "label", "label": "text"})])
    assert swapped.load_rows("train")[0]["label"] == "fine"  # a swap replaces nothing


@pytest.mark.parametrize("steps,message", [
    ([], None),
    ([task_registry.Map({"x": "text"})], None),  # a streamed map leaves the columns unknown
    ([task_registry.Map({"x": "text"}), task_registry.Rename({"x": "label"})],
     r"column\(s\) \['label'\] exist already"),
    ([task_registry.Map({"x": "text"}), task_registry.Rename({"y": "z"})], r"column\(s\) \['y'\] do not exist"),
])
def test_a_streamed_rename_acts_and_fails_as_the_map_style_one(rows_file, steps, message):
    # streamed, the swap below raised datasets' ValueError "... columns {'extra'} are already in the dataset", and
    # a rename after a map raised that ValueError (naming the wrong columns) instead of the TaskDefinitionError
    renames = [task_registry.Rename({"text": "label", "label": "text"})] if message is None else []
    task = Task("rows", LocalFileSource(rows_file), [ECHO], splits=("train",), preprocessors=steps + renames)
    if message is None:
        streamed = [dict(row) for row in task.load_rows("train", streaming=True)]
        assert streamed == [dict(row) for row in task.load_rows("train")] and streamed[0]["label"] == "fine"
        return
    for streaming in (False, True):
        with pytest.raises(task_registry.TaskDefinitionError, match=r"task 'rows': split 'train': rename.*" + message):
            list(task.to_dataset("train", streaming=streaming))


@pytest.mark.parametrize("change,message", [
    ({"target_scores": {"a": float("nan"), "b": 0}}, "target score of 'a' is nan, not a finite number"),
    ({"append_choices_to_input": "false"}, "'append_choices_to_input' must be true or false, got 'false'"),
])
def test_bigbench_scores_and_flags_are_checked(tmp_path, change, message):
    from task_registry.bigbench import load_bigbench_task

    example = {"input": "q", "target_scores": change.get("target_scores", {"a": 1, "b": 0})}
    data = {"name": "t", "examples": [example], **{k: v for k, v in change.items() if k != "target_scores"}}
    (tmp_path / "task.json").write_text(json.dumps(data))
    with pytest.raises(task_registry.TaskDefinitionError, match=message):
        load_bigbench_task(tmp_path)


@pytest.mark.parametrize("path,name,split,tail", [
    # a hub dataset of one config (conll2003's is "conll2003") loads without a name online, not from a data dir
    ("conll2003", None, "train", "without a config name it reads the folder 'default', and the data dir holds the "
                                 "configs ['conll2003'] of 'conll2003': name one as the config (e.g. `name: "
                                 "conll2003` in a task file)"),
    ("glue", "rtee", "train", "config 'rtee' is not there, and the data dir holds the configs ['cola', 'mrpc', "
                              "'rte', 'sst2', 'wnli'] of 'glue': name one as the config (e.g. `name: rte` in a task "
                              "file)"),
    ("glue", "rte", "test", "holds the split(s) ['train', 'validation']"),
    ("no_such_hub_id", None, "train", "the data dir has no folder 'no_such_hub_id' for this dataset"),
    # a misspelt hub id names the close one the data dir holds (was: only that it has no such folder)
    ("ag_new", None, "train", "the data dir has no folder 'ag_new' for this dataset; did you mean 'ag_news'?"),
    ("superglue", "cb", "train", "the data dir has no folder 'superglue' for this dataset; did you mean "
                                 "'super_glue'?"),
    ("bentrevett/multi30", None, "train", "the data dir has no folder 'bentrevett/multi30' for this dataset; did you "
                                          "mean 'bentrevett/multi30k'?"),
])
def test_a_file_missing_from_the_data_dir_says_which_configs_and_splits_it_holds(shared_data_dir, path, name, split,
                                                                                tail):
    # was only "split 'train' expects the file '.../conll2003/default/train.jsonl', which does not exist"
    previous = task_registry.get_data_dir()
    task_registry.set_data_dir(shared_data_dir)
    try:
        with pytest.raises(DataSourceError) as raised:
            task_registry.HFSource(path, name).load(split)
    finally:
        task_registry.set_data_dir(previous)
    expected = shared_data_dir / path / (name or "default") / f"{split}.jsonl"
    assert str(raised.value).startswith(f"hub dataset {path}{'/' + name if name else ''} (data dir {shared_data_dir}): "
                                        f"split {split!r} expects the file {str(expected)!r}, which does not exist; ")
    assert str(raised.value).endswith(tail)


def test_a_data_dir_one_level_above_the_datasets_names_the_subfolder_that_holds_them(tmp_path):
    # was: only "the data dir has no folder 'glue' for this dataset" for `--data-dir ../shared` (the README's
    # `../shared/data` less its last part), with the datasets one folder down
    (tmp_path / "shared" / "data" / "glue" / "rte").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "glue" / "rte" / "train.jsonl").write_text('{"x": 1}\n')
    (tmp_path / "shared" / "tokenizers").mkdir()
    previous = task_registry.get_data_dir()
    task_registry.set_data_dir(tmp_path / "shared")
    try:
        with pytest.raises(DataSourceError) as raised:
            task_registry.HFSource("glue", "rte").load("train")
    finally:
        task_registry.set_data_dir(previous)
    assert str(raised.value).endswith(f"the data dir has no folder 'glue' for this dataset (its subfolder 'data' has "
                                      f"one: make {tmp_path / 'shared' / 'data'} the data dir)")


@pytest.mark.parametrize("members", [5, None, 2.5])
def test_mixture_members_that_are_not_a_collection_are_named(members):
    # were raw TypeErrors ("'int' object is not iterable")
    with pytest.raises(task_registry.TaskDefinitionError,
                       match=rf"mixture 'm': members must be a list or a \{{name: rate\}} mapping, got {members!r}"):
        task_registry.Mixture("m", members)


@pytest.mark.parametrize("name,shown", [(["rte"], r"\['rte'\]"), (2, "2")])
def test_a_hub_config_name_that_is_not_a_string_is_refused(name, shown):
    # was accepted: loading then looked for <data dir>/glue/['rte']/<split>.jsonl (or passed it to load_dataset)
    with pytest.raises(task_registry.TaskDefinitionError,
                       match=rf"^HFSource 'glue': the config name must be a string or None, got {shown}"):
        task_registry.HFSource("glue", name)
    assert task_registry.HFSource("glue", "rte").name == "rte" and task_registry.HFSource("trec").name is None


@pytest.mark.parametrize("length", [98, 99])
def test_a_map_function_s_result_is_shown_whole_up_to_100_characters(rows_file, length):
    # its repr of 100 characters (a str of 98 and its quotes) is shown whole; one more is cut to 100 and '…'
    cut = task_registry.Map(lambda row: (row["text"] * 25)[:length])
    task = Task("rows", LocalFileSource(rows_file), [ECHO], preprocessors=[cut], splits=("train",))
    text = repr(("fine" * 25)[:length])
    shown = text if length == 98 else text[:100] + "…"
    assert len(text) == length + 2 and shown.endswith("'" if length == 98 else "…")
    with pytest.raises(TaskDefinitionError) as info:
        task.load_rows("train")
    assert f"the function returned str {shown}, not the row's fields" in str(info.value)


def test_a_group_by_that_gives_null_is_refused_naming_the_row(tmp_path):
    # a row whose group_by gave null (its file lacks the field there) got the group 'null', one group with every other
    # such row: group_exact_match scored them as one question, and few-shot kept each from the others' demonstrations
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"x": "a", "q": 1}) + "\n" + json.dumps({"x": "b"}) + "\n")
    task = Task("grouped", LocalFileSource({"train": str(path)}), [ECHO], splits=("train",), group_by="q")
    rows = task.load_rows("train")
    assert task.group_key(rows[0], 0) == "1"
    with pytest.raises(TemplateRenderError) as raised:
        task.group_key(rows[1], 1)
    assert str(raised.value) == (
        "task 'grouped': group_by, row 1: expression 'q' gave null, which would put the row in one group with every "
        "other row it gives null for: give every row its group (a row of a file that lacks a field others have gets "
        "null there), or drop such rows with a `filter` preprocessor; the row is {'x': 'b', 'q': None}")


def test_renaming_onto_an_existing_column_says_to_rename_that_one_too_in_the_step(rows_file):
    # was "...exist already; rename or drop them first": no preprocessor drops a column, and a rename in an earlier
    # step was not needed (a swap in one step is taken)
    task = Task("rows", LocalFileSource(rows_file), [ECHO], splits=("train",),
                preprocessors=[task_registry.Rename({"extra": "label"})])
    with pytest.raises(task_registry.TaskDefinitionError) as raised:
        task.load_rows("train")
    assert str(raised.value) == (
        "task 'rows': split 'train': rename {'extra': 'label'}: column(s) ['label'] exist already; to keep them, "
        "rename them in the same step, e.g. {'extra': 'label', 'label': 'label_original'} (columns are ['text', "
        "'label', 'extra'])")
    kept = Task("rows", LocalFileSource(rows_file), [ECHO], splits=("train",),
                preprocessors=[task_registry.Rename({"extra": "label", "label": "label_original"})])
    assert (kept.load_rows("train")[0]["label"], kept.load_rows("train")[0]["label_original"]) == ("e", 0)


def test_a_misspelt_or_unwritable_field_in_a_preprocessor_expression_is_named_as_in_a_template(tmp_path):
    # a filter or map expression's missing field listed the row's fields alone, where a template's names the one it
    # is close to, or the column to rename
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"text": "a", "label": 1, "a.b": 2}) + "\n")
    fields = "the row has fields ['a.b', 'label', 'text']"
    for step, expression, hint in (
            (task_registry.Filter("lable != 7"), "lable != 7", "did you mean 'label' (a misspelt name in the "
                                                               "expression)?"),
            (task_registry.Map({"x": "lable + 1"}), "lable + 1", "did you mean 'label' (a misspelt name in the "
                                                                 "expression)?"),
            (task_registry.Filter("a.b == 2"), "a.b == 2", "the row's field 'a.b' has a name Jinja cannot write (it "
                                                           "reads `a.b` as the key b of a field a, `c-d` as c minus "
                                                           "d): rename it with a `rename` preprocessor (YAML: `- "
                                                           "rename: {'a.b': a_b}`) and write a_b")):
        task = Task("rows", LocalFileSource({"train": str(path)}), [ECHO], splits=("train",), preprocessors=[step])
        with pytest.raises(TemplateRenderError) as raised:
            task.load_rows("train")
        assert str(raised.value).endswith(f"row 0: expression {expression!r} uses a missing field "
                                          f"('{expression.split(' ')[0].split('.')[0]}' is undefined); {fields}; "
                                          f"{hint}"), expression


def test_a_json_file_the_reader_fails_on_is_named_with_its_line_that_is_no_json_object(tmp_path):
    # was "could not load [...]: DatasetGenerationError: ... ← ArrowInvalid: JSON parse error: Column() changed from
    # object to string in row 0 ← ValueError: Trailing data at position 22" for a jsonl file whose second line is an
    # array: a row 0 that is fine, and no line
    cases = (("array.jsonl", '{"q": "a"}\n\n[1, 2]\n', "line 3 is a JSON array, not an object: write one JSON object "
                                                       "a line"),
             ("comma.jsonl", '{"q": "a"}\n{"q": "b" "c": 3}\n', "line 2 is not valid JSON (Expecting ',' delimiter "
                                                                "at column 11): write one JSON object a line"),
             ("doc.json", '[\n  {"q": "a"},\n  {"q": "b"\n]\n', "is not valid JSON (Expecting ',' delimiter at line "
                                                                "4 column 1)"))
    for name, text, problem in cases:
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(DataSourceError) as raised:
            LocalFileSource(path).load("train")
        assert str(raised.value).startswith(f"local files source: could not load ['{path}'] for split 'train': "
                                            f"'{path}' {problem}; the reader: "), name


def test_a_json_file_readers_data_file_is_named_with_its_line_that_is_no_json_object(tmp_path):
    # as a local file's: `hf: json` with data_files said only the reader's "Column() changed from object to array"
    from task_registry import HFSource

    path = tmp_path / "array.jsonl"
    path.write_text('{"q": "a"}\n[1, 2]\n')
    with pytest.raises(DataSourceError) as raised:
        HFSource("json", data_files={"train": str(path)}).load("train")
    assert str(raised.value).startswith(f"hub dataset json split 'train' could not be loaded ('{path}' line 2 is a "
                                        f"JSON array, not an object: write one JSON object a line; the reader: ")
