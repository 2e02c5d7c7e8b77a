"""The hints of a rendering split by a `|||` of the row, or whose `choice` / `random` filter got an empty list: they
name the row's field the template reads that holds it, and no field the template does not read."""
from __future__ import annotations

import pytest

from task_registry.errors import TemplateRenderError
from task_registry.template import Template

WHERE = "task 'demo', template 't', row 3: "
SPLIT = "the rendered text has 2 `|||` separators, expected one (input ||| target)"


def _refusal(jinja: str, row: dict) -> TemplateRenderError:
    with pytest.raises(TemplateRenderError) as raised:
        Template("t", jinja).render(row, task="demo", row_index=3)
    return raised.value


@pytest.mark.parametrize("jinja, meta", [("{{ q }} ||| {{ meta.a }}", {"a": "l ||| r"}),
                                         ("{{ q }} ||| {{ meta | string }}", {"a": ["l ||| r"]})])
def test_a_separator_inside_a_record_field_is_named_with_the_filter_that_drops_its_rows(jinja, meta):
    # kills 2 mutants of separator_hint the tests let live (a record's text left unsearched: "check the template for
    # a stray `|||`" of a template with none; the filter written without `| string`, which tests a list's items, not
    # the text inside them)
    error = _refusal(jinja, {"q": "x", "meta": meta})
    assert str(error) == (
        f"{WHERE}{SPLIT}: the row's field 'meta' holds `|||` inside a list or record, which reaches the text "
        "unprotected (promptsource protects a field that is text alone) and splits it — promptsource drops such a "
        "row: replace `|||` there with a `map` preprocessor, or drop such rows with a `filter` "
        "(`\"'|||' not in (meta | string)\"`)")
    assert error.field == "meta"


def test_a_separator_in_a_field_the_template_does_not_read_is_not_blamed_for_the_templates_own():
    # kills a mutant of Template.render the tests let live: every row field searched for the `|||`, so the unread
    # `other` was named, and the template's stray `|||` not
    error = _refusal("{{ q }} ||| {{ a }} |||", {"q": "x", "a": "y", "other": ["l ||| r"]})
    assert str(error) == f"{WHERE}{SPLIT}; check the template for a stray `|||`"
    assert error.field is None


def test_an_empty_pick_names_the_empty_list_not_an_empty_text_read_before_it():
    # kills a mutant of empty_pick_problem the tests let live: any empty field named (the empty `title`)
    error = _refusal("{{ title }}{{ answers | choice }} ||| y", {"title": "", "answers": []})
    assert str(error) == (
        f"{WHERE}the `choice` filter got an empty list to pick from: field 'answers' is empty on this row "
        "(promptsource fails on it too); guard it in the template ({% if answers %}...{% endif %}) or drop such rows "
        "with a `filter` (`\"answers | length > 0\"`)")
    assert error.field == "answers"


@pytest.mark.parametrize("jinja, problem", [
    ("{{ q }} {{ [] | choice }} ||| y", "the `choice` filter got an empty list to pick from (promptsource fails on it "
                                        "too); guard it in the template or drop such rows with a `filter`"),
    ("{{ q }} ||| {{ [] | random }}", "the `random` filter got an empty list to pick from (promptsource prints "
                                      "nothing for it); guard it in the template, or `| default('')` or drop such "
                                      "rows with a `filter`"),
])
def test_an_empty_pick_of_no_field_names_no_field_not_an_empty_one_the_template_does_not_read(jinja, problem):
    # kills 2 mutants the tests let live: every row field searched for the empty list (the unread `unused` named),
    # and the `random` filter's problem without its `| default('')`
    error = _refusal(jinja, {"unused": [], "q": "x"})
    assert str(error) == WHERE + problem
    assert error.field is None
