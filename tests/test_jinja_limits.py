"""A template or expression from someone else cannot hang a rendering or take all memory: loops, text building,
padding, `%` formats and `lipsum` are bounded per rendering (task_registry.jinja_limits), the refusal naming the
task and template; templates within the bounds render as Jinja's own sandbox renders them."""
from __future__ import annotations

import jinja2
import pytest
from jinja2.sandbox import SandboxedEnvironment

from task_registry import SandboxViolationError
from task_registry import jinja_limits
from task_registry.jinja_env import compile_template
from task_registry.template import Template


def _refusal(payload: str, row: dict | None = None) -> str:
    with pytest.raises(SandboxViolationError) as caught:
        Template("evil", payload + " ||| y").render(row or {"x": "s"}, task="attack", row_index=3)
    message = str(caught.value)
    assert message.startswith("task 'attack', template 'evil'") and "row 3" in message
    return message


@pytest.mark.parametrize("payload, message", [  # each was a hang of minutes to hours, or all memory
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
     "loops ran more than 1,000,000 iterations"),
    ("{{ 'a' | center(10**10) }}", "center would build 10,000,000,000 characters"),
    ("{{ x.ljust(10**10) }}", "str.ljust would build 10,000,000,000 characters"),
    ("{{ 'a\nb' | indent(10**10) }}", "indent would build 20,000,000,000 characters"),
    ("{{ ('a' * 1000000).replace('a', 'b' * 1000) }}", "str.replace would build 1,000,000,000 characters"),
    ("{{ ('%10000000000d' % 1) }}", "the % format '%10000000000' would write"),  # (was folded when compiled)
    ("{{ '%10000000000s' | format(x) }}", "the % format '%10000000000' would write"),
    ("{{ '{:>10000000000}'.format(x) }}", "a format's width would build 10,000,000,000 characters"),
    ("{{ ('{0:{1}' ~ '}').format(x, 10**10) }}", "a format's width would build 10,000,000,000 characters"),
    ("{{ ('{a:>{w}' ~ '}').format_map({'a': 1.5, 'w': 10**10}) }}", "a format's width would build 10,000,000,000"),
    ("{{ lipsum(10**6) }}", "lipsum(1000000, max=100) would write more than 65,536 words"),
])
def test_unbounded_work_is_refused_naming_task_and_template(payload, message):
    assert message in _refusal(payload)


@pytest.mark.parametrize("payload", [
    "{% set s = namespace(v='ab') %}{% for i in range(64) %}{% set s.v = s.v ~ s.v %}{% endfor %}",
    "{% set s = namespace(v='ab') %}{% for i in range(64) %}{% set s.v = s.v + s.v %}{% endfor %}",
    "{% set s = namespace(v=[1, 2]) %}{% for i in range(64) %}{% set s.v = s.v + s.v %}{% endfor %}",
    "{% set l = [1, 2] %}{% for i in range(64) %}{% set _ = l.extend(l) %}{% endfor %}",
])
def test_doubling_a_text_or_list_stops_at_the_built_length(payload, monkeypatch):
    monkeypatch.setattr(jinja_limits, "MAX_BUILT_LENGTH", 1000)
    assert "more than the 1,000 a template may build" in _refusal(payload)


def test_the_loop_budget_counts_every_loop_of_one_rendering(monkeypatch):
    monkeypatch.setattr(jinja_limits, "MAX_LOOP_ITERATIONS", 1000)
    nested = Template("n", "{% for i in range(n) %}{% for j in items %}.{% endfor %}{% endfor %} ||| y")
    assert len(nested.render({"n": 30, "items": list(range(30))}).inputs) == 900  # 30 + 900 iterations
    assert len(nested.render({"n": 30, "items": list(range(30))}).inputs) == 900  # a new rendering, a new budget
    assert "more than 1,000 iterations" in _refusal(nested.jinja.split(" |||")[0], {"n": 40, "items": range(40)})
    recursive = "{% for node in [tree] recursive %}{{ node.v }}{{ loop(node.kids) }}{% endfor %}"
    tree = {"v": 0, "kids": [{"v": 1, "kids": []}] * 2000}
    assert "more than 1,000 iterations" in _refusal(recursive, {"tree": tree})


@pytest.mark.parametrize("payload", [
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "{% macro f(n) %}{{ g(n + 1) }}{% endmacro %}{% macro g(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",  # mutual
    "{% macro f(n) %}{% for i in [n] %}{{ f(i) }}{% endfor %}{% endmacro %}{{ f(1) }}",  # in a loop's body
])
def test_a_macro_recursion_without_end_is_refused_saying_what_to_do(payload):
    # was: "rendering failed with RecursionError: maximum recursion depth exceeded", after ~160 calls (Python's
    # recursion limit), saying neither which bound nor what to change
    message = _refusal(payload)
    assert f"the template's macro calls nested more than {jinja_limits.MAX_MACRO_DEPTH} deep" in message
    assert "give a recursive macro a case that stops calling itself" in message


def test_macro_depth_counts_nested_calls_of_one_rendering(monkeypatch):
    monkeypatch.setattr(jinja_limits, "MAX_MACRO_DEPTH", 10)
    countdown = "{% macro f(n) %}{{ n }}{% if n > 1 %}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(depth) }}"
    template = Template("t", countdown + "{% for i in range(20) %}{{ f(3) }}{% endfor %} ||| y")
    assert template.render({"depth": 10}).inputs == "10987654321" + "321" * 20  # siblings and loops: not nested
    assert template.render({"depth": 10}).inputs.startswith("10987654321")  # a new rendering starts at depth 0
    assert "macro calls nested more than 10 deep" in _refusal(countdown, {"depth": 11})


@pytest.mark.parametrize("source", [
    "{% for c in choices if c != 'b' %}{{ loop.index }}{{ c }}/{{ loop.length }}{{ ',' if not loop.last }}"
    "{% else %}none{% endfor %}",
    "{% for k, v in row | dictsort %}{{ k ~ '=' ~ v }};{% endfor %}{% for x in [] %}x{% else %}empty{% endfor %}",
    "{% for node in [tree] recursive %}({{ node.v }}{{ loop(node.kids) }}){% endfor %}",
    "{{ 'ab' | center(6) }}|{{ 'a\nb' | indent(2, true) }}|{{ text.replace('a', 'xy') }}|{{ text.ljust(5) }}|"
    "{{ text.zfill(6) }}|{{ '%5.2f' % 3.14159 }}|{{ '%-4s|' | format(text) }}{{ ('a' + 'b') ~ ([1] + [2]) }}",
    "{{ lipsum(2, html=false, min=3, max=5) | wordcount > 5 }}",
    "{{ ('{:>6}|{:.3f}|{a:{w}' ~ '}|{:,}').format(text, 3.14159, 1234567, a='x', w=4) }}{{ '{0}'.format(7) }}",
    "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{% endif %}{{ n }}{% endmacro %}{{ f(99) }}",  # 100 deep
    "{% macro box(c) %}[{{ caller(c) }}]{% endmacro %}{% call(v) box(text) %}{{ v | upper }}{% endcall %}",
])
def test_templates_within_the_bounds_render_as_jinjas_sandbox_does(source):
    row = {"choices": ["a", "b", "c"], "row": {"q": 1, "a": "x"}, "text": "banana",
           "tree": {"v": 1, "kids": [{"v": 2, "kids": []}, {"v": 3, "kids": [{"v": 4, "kids": []}]}]}}
    reference = SandboxedEnvironment(undefined=jinja2.StrictUndefined).from_string(source).render(row)
    assert compile_template(source).render(row) == reference
