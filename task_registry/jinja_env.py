"""The sandboxed Jinja environment that every template renders in, with promptsource's filters and globals.

Facts taken from promptsource (`promptsource/templates.py`, v0.2.3): a default `jinja2.Environment` (no
autoescape, no trim/lstrip of blocks, trailing newline dropped), the global `zip`, the filters
`highlight` (wraps in a red `<span>`), `choice` (a random element) and `most_frequent` (the list of the
most common items, `None` for an empty input). Ours differs on purpose in three ways: the environment is a
`SandboxedEnvironment` (no access to Python internals), undefined variables raise (`StrictUndefined`)
instead of rendering as empty text, so a row that lacks a field is an error, not a silent blank, and a template
that prints a null value raises instead of writing "None" (`refusing_printed_nulls`: the dataset reader fills a
field some rows of a file lack with null, so that is the same missing field), as does one that makes text of it with
a filter (`upper`, `trim`, ...; `join` of a null item) or a `~` concatenation, or a number (`int`, `float`: 0).

`choice`, and Jinja's own `random` filter (which promptsource templates also use), draw from a per-render
`random.Random` when one is active (`seeded_choices`), so a rendering is reproducible from `(seed, row index)`;
outside that context they use the `random` module as promptsource does.
"""
from __future__ import annotations

import contextlib
import functools
import random
import re
from collections import Counter
from contextvars import ContextVar
from typing import Any, Iterator, Mapping, Optional, Sequence

import jinja2
import jinja2.nodes
from jinja2.runtime import Context, LoopContext, Macro
from jinja2.sandbox import SandboxedEnvironment

from .jinja_limits import (BoundedCodeGenerator, bounded_format_filter, bounded_padding_filter, bounded_text,
                           check_binop, check_call, check_format_widths, counted_iteration, nested_macro_call)

# promptsource truncates every substituted value to this many characters (`| string | truncate(N)`).
TEXT_VAR_LENGTH = 2048

_CLOSING = re.compile(r"(-?)\}\}")  # the end of a `{{ ... }}` expression, with optional whitespace control
_ACTIVE_RNG: ContextVar[Optional[random.Random]] = ContextVar("task_registry_choice_rng", default=None)


def highlight(text: Any) -> str:
    """Wrap `text` in promptsource's red highlight span."""
    return "<span style='color: #F08080'>" + text + "</span>"


class EmptyChoiceError(IndexError):
    """The `choice` filter was given an empty sequence (`random.choice`'s IndexError, as promptsource raises it)."""


#: the hint of the undefined value Jinja's `random` filter gives for an empty sequence
EMPTY_RANDOM = "No random item, sequence was empty."


@jinja2.pass_context  # (never folded at compile time: a constant list's draw is made at each render)
def choice(context: Any, choices: Sequence[Any]) -> Any:
    """A uniformly random element of `choices` (reproducible inside `seeded_choices`); `EmptyChoiceError` for an
    empty sequence."""
    try:
        return (_ACTIVE_RNG.get() or random).choice(choices)
    except IndexError as error:
        raise EmptyChoiceError(str(error)) from None


@jinja2.pass_context
def random_item(context: Any, items: Sequence[Any]) -> Any:
    """Jinja's `random` filter (a uniformly random item, undefined for an empty sequence), drawn like `choice`."""
    try:
        return (_ACTIVE_RNG.get() or random).choice(items)
    except IndexError:
        return context.environment.undefined(EMPTY_RANDOM)


def most_frequent(items: Sequence[Any]) -> Optional[list[Any]]:
    """All items that share the highest count, in first-seen order; `None` for an empty input."""
    if not items:
        return None
    counts = Counter(items).most_common()
    top = counts[0][1]
    return [item for item, count in counts if count == top]


class NullPrintedError(jinja2.exceptions.TemplateRuntimeError):
    """A template printed a null value while `refusing_printed_nulls` is active (`as_number`: made a number of it, as
    the `int` and `float` filters make 0 of it)."""

    def __init__(self, message: str, as_number: bool = False):
        super().__init__(message)
        self.as_number = as_number


_REFUSE_NULLS: ContextVar[bool] = ContextVar("task_registry_refuse_nulls", default=False)


@contextlib.contextmanager
def _set_within(variable: ContextVar, value: Any) -> Iterator[None]:
    """`variable` holds `value` for the duration of the block."""
    token = variable.set(value)
    try:
        yield
    finally:
        variable.reset(token)


def refusing_printed_nulls() -> contextlib.AbstractContextManager:
    """Inside the block, printing a null value (`{{ x }}`, `x | string`) raises `NullPrintedError` instead of
    writing "None" into the text: a template's rendering, where a null is a field a row of a file lacks (the
    dataset reader fills it with null) or a null of the data. Preprocessor expressions are not affected."""
    return _set_within(_REFUSE_NULLS, True)


def _refuse_null(value: Any) -> Any:
    if value is None and _REFUSE_NULLS.get():
        raise NullPrintedError("a null value is printed")
    return value


_JINJA_STRING = jinja2.filters.FILTERS["string"]


def string(value: Any) -> str:
    """Jinja's `string` filter, refusing a null inside `refusing_printed_nulls`."""
    return _JINJA_STRING(_refuse_null(value))


#: Jinja's filters that make text of their input (`None | upper` is 'NONE'), and `join`, whose items they make text of:
#: inside `refusing_printed_nulls` a null there is refused, as one printed is
_TEXT_FILTERS = ("capitalize", "center", "e", "escape", "forceescape", "indent", "join", "lower", "replace",
                 "striptags", "title", "trim", "truncate", "upper", "urlize", "wordcount", "wordwrap")


def refusing_null_number(filter_function: Any) -> Any:
    """Jinja's `int` or `float` filter, raising `NullPrintedError` for a null inside `refusing_printed_nulls` instead
    of making 0 of it (a row without a label would index the first answer choice)."""
    @functools.wraps(filter_function)
    def refusing(value: Any, *args: Any, **kwargs: Any) -> Any:
        if value is None and _REFUSE_NULLS.get():
            raise NullPrintedError("a null value is made a number", as_number=True)
        return filter_function(value, *args, **kwargs)

    return refusing


def refusing_null_text(filter_function: Any) -> Any:
    """The Jinja filter `filter_function` of `_TEXT_FILTERS`, raising `NullPrintedError` for a null input (`join`: a
    null item) inside `refusing_printed_nulls` instead of making "None" of it; Jinja's mark of what it passes first
    (`pass_eval_context`) kept."""
    passes_first = hasattr(filter_function, "jinja_pass_arg")
    joins = filter_function is jinja2.filters.FILTERS["join"]

    @functools.wraps(filter_function)
    def refusing(*args: Any, **kwargs: Any) -> Any:
        at = 1 if passes_first else 0
        value = args[at]
        if joins and not isinstance(value, str) and _REFUSE_NULLS.get():
            value = list(value)
            for item in value:
                _refuse_null(item)
            args = (*args[:at], value, *args[at + 1:])
        elif not joins:
            _refuse_null(value)
        return filter_function(*args, **kwargs)

    return refusing


class _NullRefusingCodeGenerator(BoundedCodeGenerator):
    """`jinja_limits`' code generator with each operand of a `~` concatenation made text by the `string` filter, which
    refuses a null inside `refusing_printed_nulls` (Jinja's `str` of it writes "None"): the template's tree is
    rewritten before its code is written, so the filter is among those the code looks up."""

    def visit_Template(self, node: jinja2.nodes.Template, frame: Any = None) -> None:
        for concat in list(node.find_all(jinja2.nodes.Concat)):
            concat.nodes = [jinja2.nodes.Filter(operand, "string", [], [], None, None, lineno=operand.lineno)
                            for operand in concat.nodes]
        super().visit_Template(node, frame)


def seeded_choices(rng: Optional[random.Random]) -> contextlib.AbstractContextManager:
    """Make the `choice` and `random` filters draw from `rng` for the duration of the block."""
    return _set_within(_ACTIVE_RNG, rng)


class _LimitedSandbox(SandboxedEnvironment):
    """The sandbox with `**`, `*`, `+` and `%` intercepted (so never folded at compile time) and bounded,
    `jinja_limits`' bounds on loops, `~`, padding, format widths, `lipsum` and macro call depth, and a null refused
    as an operand of `~` inside `refusing_printed_nulls`."""

    intercepted_binops = frozenset({"**", "*", "+", "%"})
    code_generator_class = _NullRefusingCodeGenerator
    counted_iteration = staticmethod(counted_iteration)
    bounded_text = staticmethod(bounded_text)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (Jinja's)
        """Jinja's sandboxed call, with `jinja_limits`' checks; a recursive loop's `loop(items)` counts its items, a
        macro's call its depth."""
        if isinstance(__obj, LoopContext) and args:
            args = (counted_iteration(__context, args[0]), *args[1:])
        check_call(__obj, args, kwargs)
        if isinstance(__obj, Macro):
            with nested_macro_call(__context):
                return super().call(__context, __obj, *args, **kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Optional[Any]:
        """Jinja's sandboxed `str.format` / `format_map` of a template, refusing a width past
        `jinja_limits.MAX_BUILT_LENGTH`; None for any other value, as Jinja's."""
        sandboxed = super().wrap_str_format(value)
        if sandboxed is None:
            return None

        def bounded(*args: Any, **kwargs: Any) -> str:
            check_format_widths(value.__self__, args, kwargs)
            return sandboxed(*args, **kwargs)

        return functools.update_wrapper(bounded, value)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right)
        result = super().call_binop(context, operator, left, right)
        return bounded_text(result) if operator == "+" else result

    def make_globals(self, d: Optional[Any] = None) -> dict:
        """A template's globals as one plain dict (this environment's, then `d`'s), not Jinja's `ChainMap` over
        them: every render copies its template's globals into a new context, twice walking a `ChainMap` there was
        about a third of a row's rendering time. The same names and values; the environment's globals are all set
        when it is built (`_build_environment`), before any template is compiled (as Jinja asks)."""
        return {**self.globals, **(d or {})}


def _build_environment() -> SandboxedEnvironment:
    env = _LimitedSandbox(loader=jinja2.BaseLoader(), undefined=jinja2.StrictUndefined, autoescape=False,
                          finalize=_refuse_null)
    env.globals["zip"] = zip
    env.filters["string"] = string
    env.filters["highlight"] = highlight
    env.filters["choice"] = choice
    env.filters["random"] = random_item
    env.filters["most_frequent"] = most_frequent
    for name in ("center", "indent"):
        env.filters[name] = bounded_padding_filter(name, env.filters[name])
    env.filters["format"] = bounded_format_filter(env.filters["format"])
    for name in _TEXT_FILTERS:
        env.filters[name] = refusing_null_text(env.filters[name])
    for name in ("int", "float"):
        env.filters[name] = refusing_null_number(env.filters[name])
    return env


ENVIRONMENT = _build_environment()

#: the version of this module's sandbox, filters and globals: raise it when one of them changes what a template or
#: expression yields, so results cached under the old behaviour are not reused
SANDBOX_VERSION = 6


def environment_version() -> str:
    """What a rendered template or a preprocessor expression's result depends on beyond its inputs: the jinja2
    release and `SANDBOX_VERSION`. Part of every cache key of such results (preprocessors, rendering)."""
    return f"jinja2 {jinja2.__version__}, sandbox v{SANDBOX_VERSION}"


# Jinja's message for a subscript that found nothing: `list object has no element 5`, `None has no element 1`
_NO_ELEMENT = re.compile(r"^(.+?) has no element (.+)$")


def subscript_problem(message: str) -> Optional[str]:
    """What a subscript that found nothing went wrong with, from Jinja's undefined-error `message`: an index out
    of range, a key a mapping lacks, a null value or index; None when `message` is about something else (an
    undefined name, also one used as the index, is a missing field)."""
    match = _NO_ELEMENT.search(message)
    if match is None or match.group(2) == "Undefined":
        return None
    kind, key = match.groups()
    if key == "None":
        what = f"a {kind.split()[0]} is indexed with a null value"
    elif kind in ("list object", "tuple object", "str object"):
        what = f"index {key} is out of range of a {kind.split()[0]}"
    elif kind == "None":
        what = f"element {key} of a null value is taken"
    else:
        what = f"key {key} is not in a {kind.split()[0]} of the row"
    return f"{what} ({message})"


def with_truncation(jinja: str, length: int = TEXT_VAR_LENGTH) -> str:
    """promptsource's default `apply(truncate=True)` rewrite: every `}}` becomes `| string | truncate(N) }}`.

    The rewrite is textual, exactly as promptsource does it, so the filter binds to the last term of the
    expression (`{{ a if c else b }}` truncates `b` only). One extension: a whitespace-control `-}}` becomes
    `| string | truncate(N) -}}` (promptsource's plain rewrite would make it a syntax error).
    """
    return _CLOSING.sub(lambda m: f" | string | truncate({length}) {m.group(1)}}}}}", jinja)


_EXPRESSION = re.compile(r"\{\{-?(.*?)-?\}\}", re.S)  # a `{{ ... }}` expression of the text as written
# operators that, given the string the rewrite makes of their last operand, compute something else silently
# (`label * '5'` repeats text, `label == '1'` is false) or always fail (`3 - '1'`); `+` and `%` stay: promptsource
# templates join strings with them
MISBOUND = {jinja2.nodes.Mul: "*", jinja2.nodes.Sub: "-", jinja2.nodes.Div: "/", jinja2.nodes.FloorDiv: "//",
            jinja2.nodes.Pow: "**", jinja2.nodes.Compare: "a comparison"}
# operators a number given that string makes fail (`label + 1`: int + str), named where a rendering fails so
MISBOUND_IF_NUMBERS = {jinja2.nodes.Add: "+", jinja2.nodes.Mod: "%"}
_CONSEQUENCES = {jinja2.nodes.Mul: " (`label * 5` repeats the text '5')",
                 jinja2.nodes.Compare: " (`label == 1` compares with the text '1': false)"}


def misbound_truncation(jinja: str, operators: Mapping[type, str] = MISBOUND) -> Optional[str]:
    """Why `with_truncation` changes what an expression of `jinja` computes, or None: the rewrite's filter binds
    to the last operand alone, so the operator before it (one of `operators`: `label * 5`, `label == 1`, `n - 1`,
    `a if c else n * 2`) gets a string unless that operand is already text; `{{ (label * 5) }}` is left as it is."""
    for match in _EXPRESSION.finditer(jinja):
        try:
            node = ENVIRONMENT.parse(with_truncation("{{" + match.group(1) + "}}")).body[0].nodes[0]
        except (jinja2.TemplateSyntaxError, IndexError, AttributeError):
            continue  # (not an expression on its own, e.g. `}}` inside a string: compiling the template says so)
        while node is not None and not _is_truncation(node):
            last = node.ops[-1].expr if isinstance(node, jinja2.nodes.Compare) else getattr(node, "right", None)
            last = getattr(node, "expr2", None) if last is None else last  # (a if c else b: b)
            operator = operators.get(type(node))
            if operator and _is_truncation(last) and not _is_text(last.node.node):
                expression = match.group(1).strip()
                return (f"`{{{{ {expression} }}}}`: promptsource's truncation rewrite appends `| string | "
                        f"truncate({TEXT_VAR_LENGTH})` inside every `{{{{ }}}}`, and Jinja binds it to the last "
                        f"operand alone, so {operator if len(operator) > 2 else f'`{operator}`'} gets that operand as "
                        f"text{_CONSEQUENCES.get(type(node), '')}; write `{{{{ ({expression}) }}}}` to compute the "
                        f"whole expression first{_hyphenated_column_hint(expression)}")
            node = last
    return None


def _hyphenated_column_hint(expression: str) -> str:
    """For an expression written as one hyphenated word (`c-d`, read as c minus d), what to write where it is a
    column's name; else ""."""
    if not re.fullmatch(r"[^\W\d]\w*(-\w+)+", expression):
        return ""
    return (f"; or, where `{expression}` is a column's name (Jinja reads it as {' minus '.join(expression.split('-'))}"
            f"), rename the column {rename_step(expression)}")


def rename_step(column: str) -> str:
    """How to read the row field `column`, whose name no template can write (`a.b`, `c-d`, `col name`): the `rename`
    step giving it a name with `_` for each character that is not one of a name's (`f_` before it where it would
    not start one), and that name to write."""
    written = re.sub(r"\W", "_", column)
    written = written if written.isidentifier() else f"f_{written}"
    return f"with a `rename` preprocessor (YAML: `- rename: {{{column!r}: {written}}}`) and write {written}"


def _is_truncation(node: Any) -> bool:
    """Whether `node` is the `| string | truncate(N)` that `with_truncation` appended."""
    return isinstance(node, jinja2.nodes.Filter) and node.name == "truncate" and \
        isinstance(node.node, jinja2.nodes.Filter) and node.node.name == "string"


def _is_text(node: Any) -> bool:
    """Whether `node` is a string literal (which `| string` leaves as it is)."""
    return isinstance(node, jinja2.nodes.Const) and isinstance(node.value, str)


@functools.lru_cache(maxsize=8192)
def compile_template(source: str) -> jinja2.Template:
    """Parse and compile `source` once; later calls with the same text return the cached template.

    Raises `jinja2.TemplateSyntaxError` (callers wrap it with the template name and file).
    """
    return ENVIRONMENT.from_string(source)


def parse_uncached(source: str) -> jinja2.Template:
    """Parse and compile `source` without the cache (the naive baseline in `benchmarks/render.py`)."""
    return ENVIRONMENT.from_string(source)
