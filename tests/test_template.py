"""Template rendering against promptsource's semantics: golden renderings of real promptsource templates on
real rows (expected strings written out by hand from the template text and promptsource's `apply` rules),
its custom filters/globals, truncation, pipe protection, skips, compile caching and the decaNLP triple.
"""
from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import pytest

from task_registry import (AnswerNotInChoicesError, MissingFieldError, TaskDefinitionError, Template,
                           TemplateRenderError)
from task_registry.jinja_env import ENVIRONMENT, compile_template
from task_registry.promptsource import import_promptsource
from task_registry.template import PIPE_PROTECTOR


def _row(data_dir: Path, dataset: str, split: str, index: int = 0) -> dict:
    with open(data_dir / dataset / f"{split}.jsonl", encoding="utf-8") as handle:
        for position, line in enumerate(handle):
            if position == index:
                return json.loads(line)
    raise IndexError(index)


def _template(promptsource_dir: Path, dataset: str, subset, name: str) -> Template:
    templates = {t.name: t for t in import_promptsource(promptsource_dir, dataset=dataset, subset=subset)}
    return templates[name]


def test_golden_cb_gpt3_style(promptsource_dir, shared_data_dir):
    row = _row(shared_data_dir, "super_glue/cb", "validation")
    out = _template(promptsource_dir, "super_glue", "cb", "GPT-3 style").render(row)
    assert out.inputs == ("Valence the void-brain, Valence the virtuous valet. Why couldn't the figger choose his own "
                          "portion of titanic anatomy to shaft? Did he think he was helping?\n"
                          "Question: Valence was helping True, False, or Neither?")
    assert out.targets == "False"
    assert out.answer_choices == ["True", "False", "Neither"]


def test_golden_copa_choices_from_the_row(promptsource_dir, shared_data_dir):
    row = _row(shared_data_dir, "super_glue/copa", "validation")
    out = _template(promptsource_dir, "super_glue", "copa", "C1 or C2? premise, so/because…").render(row)
    # `{% else %} so {% endif %}` after "faucet. " leaves two spaces; the trailing space is stripped
    assert out.inputs == ('"The toilet filled with water." or "Water flowed from the spout."? '
                          'The man turned on the faucet.  so')
    assert out.targets == "Water flowed from the spout."
    assert out.answer_choices == ["The toilet filled with water.", "Water flowed from the spout."]


def test_golden_copa_best_option_keeps_inner_whitespace(promptsource_dir, shared_data_dir):
    row = _row(shared_data_dir, "super_glue/copa", "validation")
    out = _template(promptsource_dir, "super_glue", "copa", "best_option").render(row)
    assert out.inputs == ("The man turned on the faucet. \n\nWhat's the best option?\n"
                          "- The toilet filled with water.\n- Water flowed from the spout.\n\n"
                          "We are looking for  an effect")
    assert out.targets == "Water flowed from the spout."


def test_golden_ag_news_fixed_choices(promptsource_dir, shared_data_dir):
    row = _row(shared_data_dir, "ag_news/default", "test")
    template = _template(promptsource_dir, "ag_news", None, "classify_question_first")
    out = template.render(row)
    assert out.inputs == ("What label best describes this news article?\nUnions representing workers at Turner   "
                          "Newall say they are 'disappointed' after talks with stricken parent firm Federal Mogul.")
    assert out.targets == "Business"
    choices = ["World politics", "Sports", "Business", "Science and technology"]
    assert out.answer_choices == choices
    assert template.fixed_answer_choices == choices


def test_golden_wic_newlines_inside_if_block(promptsource_dir, shared_data_dir):
    row = _row(shared_data_dir, "super_glue/wic", "validation")
    out = _template(promptsource_dir, "super_glue", "wic", "GPT-3-prompt-with-label").render(row)
    assert out.inputs == ("An emerging professional class.\nApologizing for losing your temper, even though you were "
                          "badly provoked, showed real class.\nQuestion: Is the word 'class' used in the same sense "
                          "in the two sentences above? Yes, No?")
    assert out.targets == "No"
    assert out.answer_choices == ["No", "Yes"]


def test_golden_mrpc_conditional_template_and_skip(promptsource_dir, shared_data_dir):
    template = _template(promptsource_dir, "glue", "mrpc", "generate_paraphrase")
    kept = template.render(_row(shared_data_dir, "glue/mrpc", "train", 0))
    assert kept.inputs == ('Paraphrase the following sentence: Amrozi accused his brother, whom he called '
                           '"the witness", of deliberately distorting his evidence.')
    assert kept.targets == ('Referring to him as only "the witness", Amrozi accused his brother of deliberately '
                            'distorting his evidence.')
    assert kept.answer_choices is None and not kept.skipped
    skipped = template.render(_row(shared_data_dir, "glue/mrpc", "train", 1))  # label 0: the template renders ""
    assert (skipped.inputs, skipped.targets, skipped.skipped) == ("", "", True)


def test_golden_xquad_truncates_long_context_like_jinja_truncate(promptsource_dir, shared_data_dir):
    row = _row(shared_data_dir, "xquad/xquad.en", "validation", 400)
    assert len(row["context"]) > 2048 + 5
    out = _template(promptsource_dir, "xquad", "xquad.en", "answer_given_context_and_question").render(row)
    # jinja's truncate(2048) with leeway 5 and killwords=False: cut to 2045 chars, drop the last partial word,
    # append "..."
    truncated = row["context"][:2045].rsplit(" ", 1)[0] + "..."
    assert out.inputs == (f"{truncated}\n\nQ: {row['question']}\n\n"
                          "Referring to the passage above, the correct answer to the given question is")
    assert out.targets == "the European Parliament and the Council of the European Union"


def test_choice_filter_is_seeded_per_row(promptsource_dir, shared_data_dir):
    row = _row(shared_data_dir, "web_questions/default", "test")
    template = _template(promptsource_dir, "web_questions", None, "potential-correct-answer")
    out = template.render(row, rng=random.Random(7))
    assert out.targets == random.Random(7).choice(row["answers"])
    assert out.inputs == 'Give me a possible correct answer to the question "what does jamaican people speak?"'
    assert {template.render(row, rng=random.Random(seed)).targets for seed in range(40)} == set(row["answers"])


def test_choice_of_a_literal_list_is_drawn_per_row_not_at_compile_time():
    # promptsource writes `{{ ["Question", "Problem"] | choice }}`; Jinja folded that constant at compilation, so
    # every row of every seed got the one word the process's global random gave then
    options = ["Question", "Problem", "Query", "Ask"]
    template = Template("t", '{{ ["Question", "Problem", "Query", "Ask"] | choice }}: {{q}} ||| {{a}}')
    for seed in range(40):
        out = template.render({"q": "why?", "a": "because"}, rng=random.Random(seed))
        assert out.inputs == f"{random.Random(seed).choice(options)}: why?"
    assert {template.render({"q": "", "a": "x"}, rng=random.Random(s)).inputs for s in range(40)} == \
        {f"{word}:" for word in options}


def test_jinja_random_filter_is_drawn_from_the_row_rng():
    # tydiqa, conv_ai_2, meta_woz and pubmed_qa templates use Jinja's own `random` filter, which drew from the
    # process's global random: a rendering was not a function of (seed, row index), unlike `choice`
    options = ["passage", "text", "text snippet", "info"]
    template = Template("t", '{% set blank = ["passage", "text", "text snippet", "info"] | random %}'
                             'Read the {{blank}} {{ range(1, 12) | random() }}: {{q}} ||| {{a}}')
    for seed in range(40):
        rng = random.Random(seed)
        expected = f"Read the {rng.choice(options)} {rng.choice(range(1, 12))}: why?"
        assert template.render({"q": "why?", "a": "because"}, rng=random.Random(seed)).inputs == expected
    words = {template.render({"q": "", "a": "x"}, rng=random.Random(s)).inputs.rsplit(" ", 1)[0] for s in range(60)}
    assert words == {f"Read the {word}" for word in options}


def test_pipe_inside_row_values_never_splits():
    template = Template("t", "{{premise}} Question: {{hypothesis}} ||| {{ answer_choices[label] }}",
                        answer_choices="{{ premise }} ||| no")
    out = template.render({"premise": "a ||| b", "hypothesis": "c|||", "label": 1})
    assert out.inputs == "a ||| b Question: c|||"
    assert out.targets == "no"
    assert out.answer_choices == ["a ||| b", "no"]
    assert PIPE_PROTECTOR not in out.inputs + out.targets
    # promptsource un-protects the choices before handing them to the template, so a choice holding `|||`
    # splits the rendered text into three parts (promptsource returns 3 parts); we refuse it loudly
    with pytest.raises(TemplateRenderError, match="2 `|||` separators"):
        template.render({"premise": "a ||| b", "hypothesis": "c", "label": 0})


def test_answer_choices_rendered_per_row_stripped_and_exposed_as_list():
    template = Template("t",
                        "{{ answer_choices | join(', ') }} {{ answer_choices | length }} ||| {{ answer_choices[1] }}",
                        answer_choices="  {{ a }}  |||{{ b | upper }}|||  c ")
    out = template.render({"a": "x", "b": "y"})
    assert out.answer_choices == ["x", "Y", "c"]
    assert (out.inputs, out.targets) == ("x, Y, c 3", "Y")


def test_promptsource_filters_and_globals():
    rendered = Template("t", "{{ x | highlight }} {{ xs | most_frequent | join('+') }} "
                             "{% for a, b in zip(xs, ys) %}{{a}}{{b}};{% endfor %} ||| {{ empty }}")
    out = rendered.render({"x": "hi", "xs": ["a", "b", "b", "a", "c"], "ys": [1, 2, 3], "empty": []})
    assert out.inputs == "<span style='color: #F08080'>hi</span> a+b a1;b2;b3;"
    assert out.targets == "[]"
    with pytest.raises(MissingFieldError, match="the template prints a null value"):  # promptsource: "None"
        Template("t", "x ||| {{ empty | most_frequent }}").render({"empty": []})


def test_templates_and_expressions_read_the_sandbox_globals_from_one_plain_dict():
    # each render copies its template's globals into a new context: a plain dict of the environment's globals, not a
    # ChainMap over them (walking one there was a third of a render), with the same names and values
    for compiled in (compile_template("{{ x }}"), ENVIRONMENT.compile_expression("x")._template):
        assert type(compiled.globals) is dict and compiled.globals == dict(ENVIRONMENT.globals)
    template = Template("g", "{% set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% endfor %}"
                             "{{ ns.n }} {{ dict(a=7)['a'] }} {% for a, b in zip(xs, ys) %}{{ a }}{{ b }}{% endfor %}"
                             " ||| {{ joiner }}")
    out = template.render({"xs": ["p", "q"], "ys": [1, 2], "joiner": "own"})  # a row field shadows a global
    assert (out.inputs, out.targets) == ("6 7 p1q2", "own")


def test_plain_text_answer_choices_are_rendered_once_and_each_row_gets_its_own_list(monkeypatch):
    template = Template("t", "{% set _ = answer_choices.append('maybe') %}{{ answer_choices | join(',') }} {{ s }} "
                             "||| {{ answer_choices[label] }}", answer_choices=" no |||yes \n")
    run, compiled = Template._run, []
    monkeypatch.setattr(Template, "_run", lambda self, jinja, *args, **kwargs: compiled.append(jinja) or
                        run(self, jinja, *args, **kwargs))
    outs = [template.render({"s": f"row {i}", "label": i % 2}) for i in range(3)]
    # the choices' text has no Jinja markup: rendered at construction, not per row; a template that changes the
    # list it is given does not change the next row's
    assert compiled == [template._main] * 3
    assert [(o.inputs, o.targets) for o in outs] == [("no,yes,maybe row 0", "no"), ("no,yes,maybe row 1", "yes"),
                                                     ("no,yes,maybe row 2", "no")]
    assert [o.answer_choices for o in outs] == [["no", "yes", "maybe"]] * 3
    copa = Template("c", "{{ p }} ||| {{ answer_choices[label] }}", answer_choices="{{ a }} ||| {{ b }}")
    assert copa.render({"p": "x", "a": "one", "b": "two", "label": 1}).answer_choices == ["one", "two"]
    assert pickle.loads(pickle.dumps(template)).render({"s": "r", "label": 1}).answer_choices == ["no", "yes", "maybe"]


def test_one_part_and_empty_target_are_skips_more_parts_is_an_error():
    assert Template("t", "{% if keep %}in ||| out{% endif %}").render({"keep": False}).skipped
    assert Template("t", "only input").render({}).skipped
    empty_input = Template("t", "{{ q }} ||| {{ a }}").render({"q": "", "a": "x"})
    assert (empty_input.inputs, empty_input.targets, empty_input.skipped) == ("", "x", True)  # (nothing to read)
    with pytest.raises(TemplateRenderError, match="2 `|||` separators"):
        Template("t", "a ||| b ||| c").render({}, task="demo", row_index=3)


def test_target_must_be_an_answer_choice():
    template = Template("t", "q ||| {{ label_text }}", answer_choices="yes ||| no")
    assert template.render({"label_text": "yes"}).targets == "yes"
    with pytest.raises(AnswerNotInChoicesError) as info:
        template.render({"label_text": "maybe"}, task="demo", row_index=12)
    assert info.value.row_index == 12 and info.value.task == "demo" and info.value.template == "t"
    assert "'maybe'" in str(info.value) and "row 12" in str(info.value)
    assert template.render({"label_text": "maybe"}, check_answer_choices=False).targets == "maybe"


def test_answer_choices_written_as_a_list_say_how_to_write_them():
    # a YAML task's `answer_choices: [negative, positive]` was refused with only "must be a `|||`-separated Jinja
    # string, got list"
    with pytest.raises(TaskDefinitionError) as info:
        Template("t", "{{x}} ||| {{ answer_choices[label] }}", answer_choices=["negative", "positive"])
    assert str(info.value) == ("template 't': `answer_choices` must be a `|||`-separated Jinja string, got list: "
                               "write the list as one string, 'negative ||| positive'")
    with pytest.raises(TaskDefinitionError) as info:  # not a list: nothing to join
        Template("t", "{{x}} ||| {{ answer_choices[label] }}", answer_choices={"a": 1})
    assert str(info.value).endswith("must be a `|||`-separated Jinja string, got dict")


def test_a_misspelt_field_suggests_the_rows_field_it_is_close_to():
    # `{{reveiw}}` for a column `review` listed the row's fields and left the user to spot the typo
    template = Template("t", "{{reveiw}} ||| {{label}}")
    with pytest.raises(MissingFieldError) as info:
        template.render({"review": "fine", "label": "yes"}, task="demo", row_index=0)
    assert str(info.value) == ("task 'demo', template 't', row 0: field 'reveiw' is missing from the row; the row has "
                               "fields ['label', 'review']; did you mean 'review' (a misspelt name in the template)?")
    with pytest.raises(MissingFieldError) as info:  # nothing close: no guess
        Template("t", "{{zzz}} ||| {{label}}").render({"review": "fine", "label": "yes"})
    assert str(info.value).endswith("the row has fields ['label', 'review']")


def test_a_target_that_is_a_choices_index_says_to_print_the_choice():
    # a csv label column of 0/1 printed as the target (`{{label}}`) gave only "target '1' is not among the answer
    # choices ['negative', 'positive']", leaving the user to guess that `answer_choices[label]` was meant
    template = Template("t", "{{text}} ||| {{label}}", answer_choices="negative ||| positive")
    with pytest.raises(AnswerNotInChoicesError) as info:
        template.render({"text": "fine", "label": 1, "stars": 4}, task="demo", row_index=0)
    assert str(info.value) == ("task 'demo', template 't', row 0: target '1' is not among the answer choices "
                               "['negative', 'positive']; '1' is the index of the choice 'positive': print the choice, "
                               "not the index, as the target (`||| {{ answer_choices[label] }}`)")
    with pytest.raises(AnswerNotInChoicesError) as info:  # two fields hold 1: neither is guessed
        template.render({"text": "fine", "label": 1, "votes": 1}, task="demo", row_index=0)
    assert str(info.value).endswith("(`||| {{ answer_choices[FIELD] }}`)")
    for label in (2, True):  # out of range, or no number: no index hint
        with pytest.raises(AnswerNotInChoicesError) as info:
            template.render({"text": "fine", "label": label}, task="demo", row_index=0)
        assert str(info.value).endswith("is not among the answer choices ['negative', 'positive']")


def _label_error(answer_choices: str, label: str) -> str:
    """The AnswerNotInChoicesError message of rendering `label` as the target against `answer_choices`."""
    template = Template("t", "{{text}} ||| {{label}}", answer_choices=answer_choices)
    with pytest.raises(AnswerNotInChoicesError) as info:
        template.render({"text": "fine", "label": label}, task="demo", row_index=0)
    return str(info.value)


def test_a_target_differing_from_a_choice_in_case_alone_says_so():
    # labels written "Positive" against answer_choices "negative ||| positive" were only "not among the choices"
    assert _label_error("negative ||| positive", "Positive").endswith(
        "target 'Positive' is not among the answer choices ['negative', 'positive']; it differs from the choice "
        "'positive' in case or spacing alone: write the choices as the data writes its labels, or map the labels to "
        "them (e.g. `| lower` in the template)")
    lowered = Template("t", "{{text}} ||| {{label | lower}}", answer_choices="negative ||| positive")
    assert lowered.render({"text": "fine", "label": "Positive"}).targets == "positive"


def test_answer_choices_written_as_one_choice_say_to_separate_them():
    # answer_choices "negative, positive" is one choice: the error was only "target 'positive' is not among the answer
    # choices ['negative, positive']"
    assert _label_error("negative, positive", "positive").endswith(
        "target 'positive' is not among the answer choices ['negative, positive']; the answer choices are one choice, "
        "'negative, positive': separate the choices with `|||` (\"no ||| yes\")")
    fixed = Template("t", "{{text}} ||| {{label}}", answer_choices="negative ||| positive")
    assert fixed.render({"text": "fine", "label": "positive"}).answer_choices == ["negative", "positive"]


def test_unlabeled_row_index_into_answer_choices_is_refused_not_rendered_as_the_last_choice():
    template = Template("t", "{{p}} ||| {{ answer_choices[label] }}", answer_choices="yes ||| maybe ||| no")
    assert template.render({"p": "a", "label": 2}).targets == "no"
    with pytest.raises(TemplateRenderError) as info:  # promptsource would render "no" (index -1)
        template.render({"p": "a", "label": -1}, task="demo", row_index=4)
    assert info.value.field == "label" and "row 4" in str(info.value) and "label >= 0" in str(info.value)
    nested = Template("n", "{{p}} ||| {{ answer_choices[idx.label] }}", answer_choices="yes ||| no")
    with pytest.raises(TemplateRenderError, match="'idx.label' is -1"):
        nested.render({"p": "a", "idx": {"label": -1}})
    # a constant negative index and a loop variable are the template's own business
    listing = Template("l", "{{ answer_choices[:-1] | join(', ') }} or {{ answer_choices[-1] }}? "
                            "{% for i in [0] %}{{ answer_choices[i] }}{% endfor %} ||| {{ answer_choices[label] }}",
                       answer_choices="a ||| b")
    assert listing.choice_index_fields == (("label",),)
    assert listing.render({"label": 0}).inputs == "a or b? a"


def test_an_unlabeled_row_that_the_template_guards_is_skipped_as_promptsource_skips_it(promptsource_dir,
                                                                                      shared_data_dir):
    # promptsource's SuperGLUE templates write `||| {% if label != -1 %}{{ answer_choices[label] }}{% endif %}`:
    # an unlabeled (test split) row renders an empty target, the skip case; it was refused before rendering
    row = {**_row(shared_data_dir, "super_glue/boolq", "validation"), "label": -1}
    templates = import_promptsource(promptsource_dir, dataset="super_glue", subset="boolq")
    assert templates and all("if label != -1" in " ".join(t.jinja.split()) for t in templates)
    assert all(template.render(row, task="demo", row_index=2).skipped for template in templates)
    mine = Template("g", "{{p}} ||| {% if label >= 0 %}{{ answer_choices[label] }}{% endif %}",
                    answer_choices="yes ||| no")
    assert mine.render({"p": "a", "label": -1}).skipped and mine.render({"p": "a", "label": 1}).targets == "no"


def test_a_text_answer_choice_index_is_named_not_reported_as_a_missing_field():
    # was: "field '0' is missing from the row ('list object' has no attribute '0')" for a label read as text (a csv
    # column with an empty cell; a JSON column mixing numbers and text), and "field None is missing" for ''
    template = Template("t", "{{p}} ||| {{ answer_choices[label] }}", answer_choices="no ||| yes")
    for label in ("1", "", "one"):
        with pytest.raises(TemplateRenderError) as info:
            template.render({"p": "a", "label": label}, task="demo", row_index=3)
        assert info.value.field == "label" and "row 3" in str(info.value)
        assert f"field 'label' is the text {label!r}, which cannot index the answer choices" in str(info.value)
    nested = Template("n", "{{p}} ||| {{ answer_choices[idx.label] }}", answer_choices="no ||| yes")
    with pytest.raises(TemplateRenderError, match="'idx.label' is the text '0'"):
        nested.render({"p": "a", "idx": {"label": "0"}})
    with pytest.raises(MissingFieldError, match="field 'label' is missing"):  # a missing field still is one
        template.render({"p": "a"})
    guarded = Template("g", "{{p}} ||| {% if label != '' %}{{ answer_choices[label] }}{% endif %}",
                       answer_choices="no ||| yes")  # the template's own guard still skips the row
    assert guarded.render({"p": "a", "label": ""}).skipped


def test_a_float_answer_choice_index_is_named_not_reported_out_of_range():
    # was: "index 1.0 is out of range of a list (list object has no element 1.0); the answer choices are ['no',
    # 'yes']" for every row of a label column that `hf: csv` read as floats (one empty cell makes it float64)
    template = Template("t", "{{p}} ||| {{ answer_choices[label] }}", answer_choices="no ||| yes")
    with pytest.raises(TemplateRenderError) as info:
        template.render({"p": "a", "label": 1.0}, task="demo", row_index=3)
    assert info.value.field == "label" and str(info.value) == (
        "task 'demo', template 't', row 3: field 'label' is the number 1.0, which cannot index the answer choices: "
        "`answer_choices[label]` needs a whole number (a csv column with an empty cell, read by `hf: csv`, holds its "
        "numbers as floats); convert it with a `map` preprocessor (`{label: \"label | int\"}`) after a `filter` "
        "dropping the rows without one, or list a local csv under `files:`")
    assert template.render({"p": "a", "label": 1}).targets == "yes"  # (an int, and a bool, still index)
    assert template.render({"p": "a", "label": False}).targets == "no"


def test_a_csv_label_column_with_an_empty_cell_read_by_the_csv_reader_is_named_as_floats(tmp_path):
    import task_registry

    (tmp_path / "rows.csv").write_text("p,label\na,1\nb,\n")
    source = task_registry.HFSource("csv", data_files={"train": str(tmp_path / "rows.csv")})
    task = task_registry.Task("floats", source, [Template("t", "{{p}} ||| {{ answer_choices[label] }}",
                                                          answer_choices="no ||| yes")], splits=["train"])
    assert task.load_rows("train").features["label"].dtype == "float64"  # (the reader's own type: the reference)
    with pytest.raises(TemplateRenderError, match=r"row 0: field 'label' is the number 1.0, which cannot index"):
        task.to_dataset("train")
    fixed = task_registry.Task(  # (as the message says)
        "fixed", source, [Template("t", "{{p}} ||| {{ answer_choices[label] }}", answer_choices="no ||| yes")],
        splits=["train"], preprocessors=[task_registry.Filter("label is not none"),
                                         task_registry.Map({"label": "label | int"})])
    assert [row["targets"] for row in fixed.to_dataset("train")] == ["yes"]


def test_truncation_rewrite_matches_promptsource_and_keeps_whitespace_control():
    from task_registry.jinja_env import with_truncation

    # promptsource's rewrite, textually: every `}}` gains `| string | truncate(2048)`
    assert with_truncation("{{a}} and {{ b }}") == ("{{a | string | truncate(2048) }} and "
                                                    "{{ b  | string | truncate(2048) }}")
    assert with_truncation("{{ a -}}") == "{{ a  | string | truncate(2048) -}}"
    assert Template("t", "{{ a -}}   ||| {{ b }}").render({"a": "x", "b": 1}).inputs == "x"
    # the filter binds to the last term, so `a + b` with numbers fails exactly as in promptsource
    with pytest.raises(TemplateRenderError, match="TypeError"):
        Template("t", "{{ a + b }} ||| x").render({"a": 1, "b": 2})


@pytest.mark.parametrize("part, expression", [
    ("jinja", "label * 5"), ("jinja", "label == 1"), ("jinja", "n - 1"), ("jinja", "x if c else n // 2"),
    ("jinja", "a + n / 2"), ("jinja", "1 < n <= 3"), ("instruction", "n ** 2"), ("context", "label != 0")])
def test_an_operator_the_truncation_rewrite_gives_text_is_refused_with_the_parenthesised_fix(part, expression):
    # was: `{{ label * 5 }}` rendered '55' for label 2 (label * '5', as in promptsource) and `{{ label == 1 }}` 'False',
    # silently; `n - 1` failed on every row with a bare TypeError
    texts = {"jinja": "q ||| a", "instruction": None, "context": None}
    texts[part] = f"{{{{ {expression} }}}} ||| a" if part == "jinja" else f"{{{{ {expression} }}}}"
    with pytest.raises(TaskDefinitionError) as raised:
        Template("t", texts.pop("jinja"), **texts, source_file="tasks/t.yaml", source_line=3)
    message = str(raised.value)
    assert message.startswith("tasks/t.yaml:3: template 't': ") and f"write `{{{{ ({expression}) }}}}`" in message
    assert "| string | truncate(2048)" in message and "last operand" in message


def test_a_parenthesised_expression_or_a_text_operand_renders_what_it_computes():
    row = {"label": 2, "n": 7, "x": "yes", "s": "Word"}
    assert Template("t", "{{ (label * 5) }} {{ (label == 1) }} {{ (n - 1) }} {{ (n // 2) }} ||| a").render(
        row).inputs == f"{2 * 5} {2 == 1} {7 - 1} {7 // 2}"
    # an operand that is already text is unchanged by `| string` (promptsource's piqa lowers a first letter so)
    assert Template("t", "{{ 3 * 'ab' }} {{ x == 'yes' }} {{ s[0].lower() + s[1:] }} {{ s ~ n }} ||| a").render(
        row).inputs == "ababab True word Word7"


@pytest.mark.parametrize("expression, value", [("label + 1", 1 + 1), ("label % 2", 1 % 2)])
def test_a_plus_or_modulo_of_numbers_fails_naming_the_parenthesised_fix(expression, value):
    # (`+` and `%` join or format text in promptsource's templates: not refused, named where a number makes it fail)
    with pytest.raises(TemplateRenderError) as raised:
        Template("t", f"{{{{ {expression} }}}} ||| x").render({"label": 1})
    assert "unsupported operand" in str(raised.value) and f"write `{{{{ ({expression}) }}}}`" in str(raised.value)
    assert Template("t", f"{{{{ ({expression}) }}}} ||| x").render({"label": 1}).inputs == str(value)


def _misbound_message(expression: str, operator: str, consequence: str = "") -> str:
    return (f"`{{{{ {expression} }}}}`: promptsource's truncation rewrite appends `| string | truncate(2048)` inside "
            f"every `{{{{ }}}}`, and Jinja binds it to the last operand alone, so {operator} gets that operand as "
            f"text{consequence}; write `{{{{ ({expression}) }}}}` to compute the whole expression first")


@pytest.mark.parametrize("jinja, expression, operator, consequence", [
    ("{{ label * 5 }}", "label * 5", "`*`", " (`label * 5` repeats the text '5')"),
    ("{{ n ** 2 }}", "n ** 2", "`**`", ""),
    ("{{ label == 1 }}", "label == 1", "a comparison", " (`label == 1` compares with the text '1': false)"),
    ("{{- label * 5 -}}", "label * 5", "`*`", " (`label * 5` repeats the text '5')"),
    ("{{ '}}' }} {{ n - 1 }}", "n - 1", "`-`", ""),
    ("{{ n\n - 1 }}", "n\n - 1", "`-`", "")])
def test_the_misbound_refusal_names_the_expression_as_written_its_operator_and_what_it_computes(
        jinja, expression, operator, consequence):
    # (mut44: each of these passed the test above: the consequence or the operator's backticks left out, whitespace
    # control kept in the expression named, a text holding `}}` in a string or an expression over two lines
    # stopping the scan; and a file named without its line shown as 'file:None')
    with pytest.raises(TaskDefinitionError) as raised:
        Template("t", f"{jinja} ||| a", source_file="tasks/t.yaml")
    assert str(raised.value) == "template 't': " + _misbound_message(expression, operator, consequence)


def test_a_modulo_of_numbers_fails_naming_the_parenthesised_fix():
    # (mut44: `%` left out of the operators named where a rendering fails passed every test)
    with pytest.raises(TemplateRenderError) as raised:
        Template("t", "{{ label % 2 }} ||| x").render({"label": 3})
    assert str(raised.value).endswith(": " + _misbound_message("label % 2", "`%`"))


def test_reserved_answer_choices_field_is_refused():
    with pytest.raises(TemplateRenderError, match="answer_choices"):
        Template("t", "{{x}} ||| y").render({"x": 1, "answer_choices": "a"})


def test_decanlp_triple_from_explicit_parts_or_whole_input():
    template = Template("nli", "{{p}} Does it follow that {{h}}? ||| {{ answer_choices[label] }}",
                        answer_choices="yes ||| no", instruction="Does it follow that {{h}}?", context="{{p}}")
    out = template.render({"p": "It rains.", "h": "it is wet", "label": 0})
    assert (out.instruction, out.context, out.answer) == ("Does it follow that it is wet?", "It rains.", "yes")
    plain = Template("plain", "sst2 sentence: {{s}} ||| {{t}}").render({"s": "good", "t": "positive"})
    assert (plain.instruction, plain.context, plain.answer) == ("sst2 sentence: good", "", "positive")


def test_templates_compile_once_and_survive_pickling():
    import pickle

    first = Template("a", "{{x}} ||| {{y}}")
    second = Template("b", "{{x}} ||| {{y}}")
    assert first._main is second._main  # the compiled template comes from the cache
    hits = compile_template.cache_info().hits
    Template("c", "{{x}} ||| {{y}}")
    assert compile_template.cache_info().hits > hits
    clone = pickle.loads(pickle.dumps(first))
    assert clone.render({"x": 1, "y": 2}) == first.render({"x": 1, "y": 2})


def test_references_list_every_acceptable_answer_and_default_to_the_target():
    template = Template("qa", "Q: {{ question }} ||| {{ answers[0] }}", references="{{ answers | join(' ||| ') }}")
    out = template.render({"question": "who?", "answers": ["Jamaican English ", "Jamaican Creole", "a ||| b"]})
    assert out.targets == "Jamaican English"
    # split on `|||` and stripped, like answer choices (a list value is not pipe-protected, as in promptsource)
    assert out.references == ["Jamaican English", "Jamaican Creole", "a", "b"] == out.gold_references
    plain = Template("plain", "Q: {{ question }} ||| {{ answers[0] }}").render({"question": "q", "answers": ["x"]})
    assert plain.references is None and plain.gold_references == ["x"]
    # a skipped row renders no references (the expression is not even evaluated)
    skipping = Template("skip", "{% if answers %}{{ question }} ||| {{ answers[0] }}{% endif %}",
                        references="{{ answers[5] }}")
    assert skipping.render({"question": "q", "answers": []}).references is None
    with pytest.raises(TemplateRenderError, match="task 't'.*template 'qa'.*row 4.*`references` rendered an empty"):
        template.render({"question": "q", "answers": ["x", " "]}, task="t", row_index=4)
    assert "answers" in template.variables
    restored = pickle.loads(pickle.dumps(template))
    assert restored.render({"question": "q", "answers": ["x", "y"]}).references == ["x", "y"]


def test_references_must_be_a_jinja_string():
    from task_registry.errors import TaskDefinitionError

    for bad in ("  ", ["a"]):
        with pytest.raises(TaskDefinitionError, match="template 'qa': `references` must be a non-empty"):
            Template("qa", "{{ q }} ||| {{ a }}", references=bad)
    # templates without references keep their ids
    assert Template("qa", "{{ q }} ||| {{ a }}").id != Template("qa", "{{ q }} ||| {{ a }}", references="{{ a }}").id


def test_a_printed_null_names_the_row_by_its_values():
    # was: "task 'qa', template 't', row 2: field 'answer' is null on this row ...": an index among the rows left by
    # the task's filters, counted from 0, with which the row was not found in a file of thousands
    template = Template("t", "{{ question }} ||| {{ answer }}")
    with pytest.raises(MissingFieldError) as raised:
        template.render({"question": "color of sky?", "answer": None, "difficulty": 2}, task="qa", row_index=2)
    assert str(raised.value).startswith("task 'qa', template 't', row 2 ({'question': 'color of sky?', 'answer': "
                                        "None, 'difficulty': 2}): field 'answer' is null on this row")
    assert raised.value.describe(with_row=False).startswith("task 'qa', template 't': field 'answer' is null")
    with pytest.raises(MissingFieldError) as raised:
        template.render({"question": "q" * 300, "answer": None}, row_index=0)
    assert f"row 0 ({{'question': '{'q' * 186}…}}): field" in str(raised.value)  # (a long row cut at 200 characters)


def test_a_printed_null_is_refused_naming_the_field_and_a_guarded_one_renders():
    # was: a null (a field some rows of a jsonl lack: the reader fills it with null) was written as "None" into
    # the prompt, although a row lacking a field is an error by design (StrictUndefined)
    template = Template("t", "{{ question }} ||| {{ answer }}")
    with pytest.raises(MissingFieldError) as raised:
        template.render({"question": None, "answer": "a"}, task="demo", row_index=7)
    assert raised.value.field == "question" and "row 7" in str(raised.value)
    assert "field 'question' is null on this row and the template prints it" in str(raised.value)
    guarded = Template("t", "{{ question or 'n/a' }}{% if hint %} {{ hint }}{% endif %} ||| {{ answer }}")
    assert guarded.render({"question": None, "hint": None, "answer": "a"}).inputs == "n/a"
    assert Template("t", "{{ x if x is not none else 'none' }} ||| y").render({"x": None}).inputs == "none"


@pytest.mark.parametrize("row", [None, ["a", "b"], "x: 1"])
def test_a_row_that_is_not_a_mapping_is_named(row):
    # were raw AttributeError ('list' object has no attribute 'items') and TypeError (argument of type 'NoneType')
    template = Template("t", "{{x}} ||| {{y}}")
    with pytest.raises(TemplateRenderError, match=rf"task 'k', template 't', row 3: a row must be a mapping of field "
                                                   rf"names to values, got {type(row).__name__}"):
        template.render(row, task="k", row_index=3)


def test_a_pandas_row_renders_as_its_dict():
    # refused since rows are checked ('a row must be a mapping ..., got Series'), though a DataFrame's rows
    # (iterrows) rendered as their dicts before
    import pandas as pd

    template = Template("t", "{{sentence}} ||| {{ answer_choices[label] }}", answer_choices="no ||| yes")
    frame = pd.DataFrame([{"sentence": "good", "label": 1}, {"sentence": "bad", "label": 0}])
    assert [(out.inputs, out.targets) for out in (template.render(row) for _, row in frame.iterrows())] == \
        [("good", "yes"), ("bad", "no")]


def test_instruction_and_context_are_truncated_stripped_and_pipe_unprotected():
    # like the main text: the truncation rewrite, `|||` of row text kept as text, surrounding whitespace dropped;
    # jinja's truncate(2048) of a 3000-char word: the first 2045 chars and "..." (no space to cut at)
    template = Template("t", "{{p}} ||| {{y}}", instruction="  Q: {{p}}  ", context=" {{c}} ")
    out = template.render({"p": "a ||| b", "c": "x" * 3000, "y": "z"})
    assert out.instruction == "Q: a ||| b"
    assert out.context == "x" * 2045 + "..."
    long = Template("t", "{{p}} ||| {{y}}", instruction="{{c}}").render({"p": "a", "c": "w" * 3000, "y": "z"})
    assert long.instruction == "w" * 2045 + "..."
    piped = Template("t", "{{p}} ||| {{y}}", context="{{c}}").render({"p": "a", "c": "b ||| c", "y": "z"})
    assert piped.context == "b ||| c"


def test_references_keep_row_pipes_as_text():
    template = Template("qa", "{{ q }} ||| {{ a }}", references="{{ a }} ||| {{ b }}")
    assert template.render({"q": "q", "a": "x ||| y", "b": "B"}).references == ["x ||| y", "B"]


def test_template_id_depends_on_its_answer_choices():
    assert Template("t", "{{x}} ||| {{y}}", answer_choices="a ||| b").id != \
        Template("t", "{{x}} ||| {{y}}", answer_choices="a ||| c").id



def test_fixed_answer_choices_only_when_they_read_no_row_field():
    assert Template("t", "{{x}} ||| {{y}}", answer_choices=" yes ||| no ").fixed_answer_choices == ["yes", "no"]
    assert Template("t", "{{x}} ||| {{y}}", answer_choices="{{a}} ||| {{b}}").fixed_answer_choices is None


def test_random_of_an_empty_list_is_undefined_as_in_jinja():
    # jinja's `random` filter gives an undefined value for an empty sequence: `default` replaces it, printing it fails
    template = Template("t", "{{ items | random | default('none') }} ||| x")
    assert template.render({"items": []}).inputs == "none"
    with pytest.raises(TemplateRenderError):
        Template("t", "{{ items | random }} ||| x").render({"items": []})


def test_render_digest_changes_with_what_the_rendered_rows_hold_only():
    # a resume compares each training template's digest with its checkpoint's (`template_change_warnings`)
    base = dict(name="t", jinja="{{ q }} ||| {{ answer_choices[label] }}", answer_choices="no ||| yes")
    digest = Template(**base).render_digest()
    assert len(digest) == 16 and Template(**base).render_digest() == digest
    for edit in ({"jinja": "Q: {{ q }} ||| {{ answer_choices[label] }}"}, {"answer_choices": "No ||| Yes"},
                 {"references": "{{ answer_choices[label] }}"}):
        assert Template(**{**base, **edit}).render_digest() != digest, edit
    # what no rendered row holds: the prompt's source note, its metadata, the decaNLP instruction/context split
    for edit in ({"reference": "from the paper"}, {"metadata": {"original_task": True}}, {"id": "another-id"},
                 {"instruction": "{{ q }}", "context": ""}):
        assert Template(**{**base, **edit}).render_digest() == digest, edit
    assert Template(**{**base, "name": "u"}).render_digest() == digest  # (the checkpoint keys it by name)


def test_a_printed_nulls_row_is_shown_whole_up_to_200_characters():
    template = Template("t", "{{ question }} ||| {{ answer }}")
    for size, ending in ((168, "None}"), (169, "None…}")):  # (the row's repr: 200 characters, then 201, cut at 200)
        row = {"question": "q" * size, "answer": None}
        assert len(repr(row)) == size + 32
        with pytest.raises(MissingFieldError) as raised:
            template.render(row, row_index=0)
        shown = f"{{'question': '{'q' * size}', 'answer': {ending}"
        assert str(raised.value).startswith(f"template 't', row 0 ({shown}): field 'answer' is null")


def test_a_field_whose_name_a_template_cannot_write_says_to_rename_it():
    # a column `a.b` (or `c-d`) read as `{{ a.b }}` (`{{ (c-d) }}`) was "field 'a' is missing ...; did you mean 'a.b'
    # (a misspelt name in the template)?": the name it suggested is one no template can write (Jinja reads `a.b` as
    # key b of a field a, `c-d` as c minus d)
    row = {"a.b": "x", "c-d": 1, "col name": "y", "label": "yes"}
    fields = "the row has fields ['a.b', 'c-d', 'col name', 'label']"
    for jinja, field, name, written in (("{{ a.b }} ||| {{label}}", "a", "a.b", "a_b"),
                                        ("{{ (c-d) }} ||| {{label}}", "c", "c-d", "c_d"),
                                        ("{{ col }} ||| {{label}}", "col", "col name", "col_name"),
                                        ("{{ colname }} ||| {{label}}", "colname", "col name", "col_name")):
        with pytest.raises(MissingFieldError) as info:
            Template("t", jinja).render(row, task="demo", row_index=0)
        assert str(info.value) == (
            f"task 'demo', template 't', row 0: field {field!r} is missing from the row; {fields}; the row's field "
            f"{name!r} has a name Jinja cannot write (it reads `a.b` as the key b of a field a, `c-d` as c "
            f"minus d): rename it with a `rename` preprocessor (YAML: `- rename: {{{name!r}: {written}}}`) and "
            f"write {written}"), jinja
    with pytest.raises(MissingFieldError) as info:  # a field that can be written is still suggested as before
        Template("t", "{{ lable }} ||| x").render({"a.b": "x", "label": "yes"})
    assert str(info.value).endswith("did you mean 'label' (a misspelt name in the template)?")


def test_a_null_field_through_a_text_filter_a_join_or_a_concatenation_is_refused_naming_it():
    # a null printed as it is was refused, but through a filter or `~` it was written into the text as promptsource
    # writes it: `{{ text | upper }}` rendered 'NONE', `{{ text | lower }}` 'none', `{{ q ~ '?' }}` 'None?',
    # `{{ tags | join(', ') }}` of ['a', None] 'a, None'
    null = "is null on this row and the template prints it"
    for jinja, row, field in (("{{ text | upper }} ||| x", {"text": None}, "text"),
                              ("{{ text | lower }} ||| x", {"text": None}, "text"),
                              ("{{ text | title }} ||| x", {"text": None}, "text"),
                              ("{{ text | capitalize }} ||| x", {"text": None}, "text"),
                              ("{{ text | trim }} ||| x", {"text": None}, "text"),
                              ("{{ text | replace('a', 'b') }} ||| x", {"text": None}, "text"),
                              ("{{ text | wordcount }} ||| x", {"text": None}, "text"),
                              ("{{ text | truncate(3) }} ||| x", {"text": None}, "text"),
                              ("{{ q ~ '?' }} ||| x", {"q": None}, "q"),
                              ("{% set s = 'Q: ' ~ q %}{{ s }} ||| x", {"q": None}, "q"),
                              ("{{ meta.src | upper }} ||| x", {"meta": {"src": None}}, "meta.src"),
                              ("x ||| {{ answer | upper }}", {"answer": None}, "answer")):
        with pytest.raises(MissingFieldError) as info:
            Template("t", jinja).render(row, task="demo", row_index=0)
        assert f"field {field!r} {null}" in str(info.value), jinja
    with pytest.raises(MissingFieldError) as info:
        Template("t", "{{ tags | join(', ') }} ||| x").render({"tags": ["a", None]}, task="demo", row_index=0)
    assert "field 'tags' holds a null item on this row and the template prints it" in str(info.value)
    # text, and the same filters outside a template (a preprocessor's expression), as before
    out = Template("t", "{{ a | upper }} {{ a ~ '?' }} {{ [a, 'b'] | join('+') }} ||| {{ n | string | trim }}")
    assert out.render({"a": "x", "n": 0}).inputs == "X x? x+b"
    assert ENVIRONMENT.compile_expression("a | upper ~ '?'")(a=None) == "NONE?"


def test_a_null_field_read_as_a_record_list_or_text_is_named_as_null():
    # a null record read for a key was "field 'k' is missing from the row ('None' has no attribute 'k')", naming a key
    # as the row's field; a null list or text used as one was "rendering failed with TypeError: 'NoneType' object is
    # not iterable", naming no field
    guidance = (": a row of a file that lacks a field others have gets null there, as does a csv cell that is empty "
                "or, read by `hf: csv`, says NA, None or null (list a local csv under `files:` to keep such cells as "
                "text); give every row a value, drop such rows with a `filter` preprocessor, or guard it in the "
                "template ({% if x %}...{% endif %}, {{ x or '' }})")
    for jinja, row, what in (
            ("{{ nested.k.v | length }} ||| x", {"nested": None}, "field 'nested' is null on this row and the "
                                                                  "template reads nested.k from it"),
            ("{{ answers.text[0] }} ||| x", {"answers": None}, "field 'answers' is null on this row and the template "
                                                               "reads answers.text from it"),
            ("{{ meta.src.name }} ||| x", {"meta": {"src": None}}, "field 'meta.src' is null on this row and the "
                                                                   "template reads meta.src.name from it"),
            ("{{ tags | join(', ') }} ||| x", {"tags": None}, "field 'tags' is null on this row and the template "
                                                              "uses it (TypeError: 'NoneType' object is not iterable)"),
            ("{% for t in tags %}{{ t }}{% endfor %} ||| x", {"tags": None},
             "field 'tags' is null on this row and the template uses it (TypeError: 'NoneType' object is not "
             "iterable)"),
            ("{{ tags | length }} ||| x", {"tags": None}, "field 'tags' is null on this row and the template uses it "
                                                          "(TypeError: object of type 'NoneType' has no len())"),
            ("{{ text[:5] }} ||| x", {"text": None}, "field 'text' is null on this row and the template uses it "
                                                     "(TypeError: 'NoneType' object is not subscriptable)"),
            ("{{ meta.tags | join }} ||| x", {"meta": {"tags": None}},
             "field 'meta.tags' is null on this row and the template uses it (TypeError: 'NoneType' object is not "
             "iterable)")):
        with pytest.raises(MissingFieldError) as info:
            Template("t", jinja).render(row, task="demo", row_index=0)
        assert str(info.value) == f"task 'demo', template 't', row 0 ({row!r}): {what}{guidance}", jinja
        assert info.value.field == what.split("'")[1]
    with pytest.raises(MissingFieldError) as info:  # a record that is there without the key: as before
        Template("t", "{{ nested.k }} ||| x").render({"nested": {"j": 1}}, task="demo", row_index=0)
    assert "field 'nested' has no key 'k' (the template reads nested.k); it has the keys ['j']" in str(info.value)
    with pytest.raises(TemplateRenderError) as info:  # a null the template guards is not blamed for another failure
        Template("t", "{% if z %}{{ z }}{% endif %}{{ (xs | most_frequent | join) }} ||| x").render(
            {"xs": [], "z": None})
    assert str(info.value) == "template 't': rendering failed with TypeError: 'NoneType' object is not iterable"


def test_a_hyphenated_name_refused_as_a_subtraction_also_says_to_rename_such_a_column():
    # a column `c-d` written `{{ c-d }}` was told only to write `{{ (c-d) }}`, which subtracts d from c too
    with pytest.raises(TaskDefinitionError) as raised:
        Template("t", "{{ c-d }} ||| x")
    assert str(raised.value) == (
        "template 't': " + _misbound_message("c-d", "`-`") + "; or, where `c-d` is a column's name (Jinja reads it as "
        "c minus d), rename the column with a `rename` preprocessor (YAML: `- rename: {'c-d': c_d}`) and write c_d")
    with pytest.raises(TaskDefinitionError) as raised:  # a subtraction written with spaces: as before
        Template("t", "{{ n - 1 }} ||| x")
    assert str(raised.value) == "template 't': " + _misbound_message("n - 1", "`-`")


def test_a_nested_field_read_by_a_subscript_is_named_as_one_read_as_an_attribute_is():
    # `{{ nested['k'] }}` of a null `nested`, or of one without `k`, was "field 'k' is missing from the row", naming a
    # key as the row's field, where `{{ nested.k }}` names the record
    for row, what in (({"nested": None}, "field 'nested' is null on this row and the template reads nested.k from it"),
                      ({"nested": {"j": 1}}, "field 'nested' has no key 'k' (the template reads nested.k); it has the "
                                             "keys ['j']")):
        for jinja in ("{{ nested['k'] }} ||| x", "{{ nested.k }} ||| x"):
            with pytest.raises(MissingFieldError) as info:
                Template("t", jinja).render(row, task="demo", row_index=0)
            assert what in str(info.value), jinja


def test_a_template_reading_another_template_file_is_refused_where_it_is_built():
    # `{% include 'x.j2' %}` was taken, and then every row failed: "rendering failed with TemplateNotFound: x.j2"
    for jinja, tag in (("{% include 'x.j2' %} ||| y", "include"), ("{% import 'm' as m %}{{ q }} ||| y", "import"),
                       ("{% from 'm' import f %}{{ q }} ||| y", "from ... import"), ("{% extends 'b' %} ||| y",
                                                                                      "extends")):
        with pytest.raises(TaskDefinitionError) as raised:
            Template("t", jinja, source_file="tasks/t.yaml", source_line=3)
        assert str(raised.value) == (
            f"tasks/t.yaml:3: template 't': `{{% {tag} %}}` reads another template file, and a task's template reads "
            f"none (each renders on its own, in a sandbox): write that text into this one, or a macro "
            f"(`{{% macro %}}`) defined in it"), jinja
    with pytest.raises(TaskDefinitionError, match=r"^template 't': `\{% include %\}` reads another template file"):
        Template("t", "{{ q }} ||| {{ a }}", context="{% include 'c.j2' %}")


def test_a_null_field_made_a_number_is_refused_naming_it():
    # Jinja's `int` and `float` filters make 0 of a null: `{{ answer_choices[label | int] }}` rendered the first choice
    # as the target of a row without a label
    for jinja, field in (("{{ q }} ||| {{ answer_choices[label | int] }}", "label"),
                         ("{{ q }} {{ (score | float) }} ||| yes", "score")):
        with pytest.raises(MissingFieldError) as info:
            Template("t", jinja, answer_choices="no ||| yes").render({"q": "?", "label": None, "score": None},
                                                                     task="demo", row_index=0)
        assert f"field {field!r} is null on this row and the template makes a number of it (Jinja's `int` and " \
               f"`float` make 0 of a null)" in str(info.value), jinja
    assert Template("t", "{{ ((n | int) + 1) }} ||| x").render({"n": "2"}).inputs == "3"
    assert ENVIRONMENT.compile_expression("n | int")(n=None) == 0  # (a preprocessor's expression: as before)
