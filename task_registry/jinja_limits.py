"""Bounds on the work and memory one rendering of a template or preprocessor expression may take, beyond Jinja's
sandbox (which blocks Python internals and `range` over 100,000 items, but lets two nested loops over such ranges
run 10**10 times, `lipsum(10**6)` write for minutes and `'a' | center(10**10)` or a loop doubling a text take
all memory). A template that reaches a bound raises Jinja's `SecurityError` (reported as a `SandboxViolationError`
naming the task, template and row). The bounds are far above what a prompt needs, a dataset row's text included.

`BoundedCodeGenerator` compiles every `{% for %}` loop to iterate through `counted_iteration` and every `~` to
check its result (`bounded_text`); `jinja_env`'s sandbox calls the checks of calls (`check_call`, and
`nested_macro_call` around a macro's) and of the operators it intercepts (`check_binop`, and `bounded_text` on what
`+` built).
"""
from __future__ import annotations

import contextlib
import re
import string
from typing import Any, Iterable, Iterator

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context

#: the most loop iterations one rendering may run, all its `{% for %}` loops (nested and recursive ones) together
MAX_LOOP_ITERATIONS = 1_000_000
#: the longest text (characters) or list (items) that `~`, `+`, padding (`center`, `ljust`, `rjust`, `zfill`,
#: `indent`), `expandtabs` or `replace` may build in a rendering
MAX_BUILT_LENGTH = 1 << 26
#: the most paragraphs times words per paragraph `lipsum` may write
MAX_LIPSUM_WORDS = 1 << 16
#: the largest result `**` or a sequence `*` may build in a template (bits of an integer power, items of a
#: repeated string or list): beyond it a render, or the constant folding of a template's compilation, would hang
MAX_POWER_BITS = 1 << 16
MAX_REPEAT = 1 << 20
#: the deepest macro calls may nest in a rendering (a macro calling itself, directly or through others): below where
#: Python's recursion limit (1,000 frames, ~6 a macro call) would end the rendering with a RecursionError
MAX_MACRO_DEPTH = 100

_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})
_DIGITS = re.compile(r"\d+")
_PERCENT_WIDTHS = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\d*)(?:\.(\d*))?")


@jinja2.pass_context
def counted_iteration(context: Context, iterable: Iterable[Any]) -> Iterator[Any]:
    """`iterable`'s items, each counted against the rendering's (`context`'s) `MAX_LOOP_ITERATIONS`."""
    for item in iterable:
        context.loop_iterations = getattr(context, "loop_iterations", 0) + 1  # type: ignore[attr-defined]
        if context.loop_iterations > MAX_LOOP_ITERATIONS:  # type: ignore[attr-defined]
            raise SecurityError(f"the template's loops ran more than {MAX_LOOP_ITERATIONS:,} iterations for one row")
        yield item


@contextlib.contextmanager
def nested_macro_call(context: Context) -> Iterator[None]:
    """One macro call deeper in the rendering (`context`) for the block; SecurityError past `MAX_MACRO_DEPTH`."""
    depth = getattr(context, "macro_depth", 0) + 1
    if depth > MAX_MACRO_DEPTH:
        raise SecurityError(f"the template's macro calls nested more than {MAX_MACRO_DEPTH} deep (a recursion "
                            f"that does not end?): give a recursive macro a case that stops calling itself, e.g. "
                            f"{{% if n > 0 %}}{{{{ f(n - 1) }}}}{{% endif %}}")
    context.macro_depth = depth  # type: ignore[attr-defined]
    try:
        yield
    finally:
        context.macro_depth = depth - 1  # type: ignore[attr-defined]


def bounded_text(value: Any) -> Any:
    """`value`, the text or list a template built, if it is at most `MAX_BUILT_LENGTH` long; SecurityError else."""
    if isinstance(value, (str, list, tuple)) and len(value) > MAX_BUILT_LENGTH:
        raise SecurityError(f"the template built a {type(value).__name__} of {len(value):,} items, more than the "
                            f"{MAX_BUILT_LENGTH:,} a template may build")
    return value


def _check_width(name: str, length: Any) -> None:
    if isinstance(length, int) and length > MAX_BUILT_LENGTH:
        raise SecurityError(f"{name} would build {length:,} characters (items), more than the {MAX_BUILT_LENGTH:,} "
                            f"a template may build")


def check_percent_format(text: Any) -> None:
    """SecurityError where `%`-formatting with `text` (`text % values`, the `format` filter) writes a width or
    precision past `MAX_BUILT_LENGTH`."""
    for match in _PERCENT_WIDTHS.finditer(text) if isinstance(text, str) else ():
        for number in match.groups():
            if number and (len(number) > 9 or int(number) > MAX_BUILT_LENGTH):
                raise SecurityError(f"the % format {match.group()!r} would write a text longer than the "
                                    f"{MAX_BUILT_LENGTH:,} characters a template may build")


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_binop(operator: str, left: Any, right: Any) -> None:
    """SecurityError where `left operator right` would pass a bound: an integer `**` past `MAX_POWER_BITS`, a
    sequence repeated by `*` past `MAX_REPEAT` items, a `%` format writing a width past `MAX_BUILT_LENGTH` (what `+`
    built is checked after it, by `bounded_text`)."""
    if operator == "%":
        check_percent_format(left)
    if operator == "**" and _integer(left) and _integer(right) and abs(left) > 1 and \
            right * abs(left).bit_length() > MAX_POWER_BITS:
        raise SecurityError(f"{left} ** {right} is too large to compute in a template")
    if operator == "*":
        count, sequence = (right, left) if _integer(right) else (left, right)
        if _integer(count) and isinstance(sequence, (str, list, tuple)) and len(sequence) * count > MAX_REPEAT:
            raise SecurityError(f"repeating a sequence of {len(sequence)} items {count} times is too large for a "
                                f"template")


def check_format_widths(text: str, args: tuple, kwargs: dict) -> None:
    """SecurityError where `text.format(*args, **kwargs)` (or `.format_map(args[0])`) writes a width or precision
    past `MAX_BUILT_LENGTH`: one written in a replacement field's spec, or any integer value given where a spec takes
    one from the values (`{:{}}`)."""
    values = [*args, *kwargs.values(), *(value for arg in args if isinstance(arg, dict) for value in arg.values())]
    try:
        specs = [spec for _, field, spec, _ in string.Formatter().parse(text) if field is not None and spec]
    except ValueError:  # (a malformed format: the call raises its own error)
        return
    for spec in specs:
        nested = [value for value in values if isinstance(value, int)] if "{" in spec else []
        for number in [int(n) if len(n) <= 18 else 10 ** 18 for n in _DIGITS.findall(spec)] + nested:
            _check_width("a format's width", number)


def check_call(function: Any, args: tuple, kwargs: dict) -> None:
    """SecurityError where calling `function` with `args` would build a text or list past `MAX_BUILT_LENGTH` (a
    string's padding, `expandtabs` or `replace`, a list's `extend`) or `lipsum` would write more than
    `MAX_LIPSUM_WORDS` words."""
    owner, name = getattr(function, "__self__", None), getattr(function, "__name__", "")
    if isinstance(owner, str) and args:
        if name in _PADDING_METHODS:
            _check_width(f"str.{name}", args[0])
        elif name == "expandtabs":
            _check_width("str.expandtabs", args[0] * max(owner.count("\t"), 1) if isinstance(args[0], int) else 0)
        elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
            count = owner.count(args[0]) if args[0] else len(owner) + 1
            _check_width("str.replace", len(owner) + count * (len(args[1]) - len(args[0])))
    elif isinstance(owner, list) and name == "extend" and args and hasattr(args[0], "__len__"):
        _check_width("list.extend", len(owner) + len(args[0]))
    elif function is jinja2.utils.generate_lorem_ipsum:
        bound = dict(zip(("n", "html", "min", "max"), args), **kwargs)
        paragraphs, words = bound.get("n", 5), bound.get("max", 100)
        if isinstance(paragraphs, int) and isinstance(words, int) and paragraphs * words > MAX_LIPSUM_WORDS:
            raise SecurityError(f"lipsum({paragraphs}, max={words}) would write more than {MAX_LIPSUM_WORDS:,} words")


def bounded_padding_filter(name: str, filter_function: Any) -> Any:
    """Jinja's padding filter `name` (`center`, `indent`) refusing a width (times the lines `indent` pads) past
    `MAX_BUILT_LENGTH`."""
    def padded(value: Any, *args: Any, **kwargs: Any) -> Any:
        width = args[0] if args else kwargs.get("width", 0)
        lines = str(value).count("\n") + 1 if name == "indent" else 1
        _check_width(name, (width if isinstance(width, int) else len(str(width))) * lines)
        return filter_function(value, *args, **kwargs)

    padded.__name__ = padded.__qualname__ = name
    return padded


def bounded_format_filter(filter_function: Any) -> Any:
    """Jinja's `format` filter refusing a % format whose width or precision is past `MAX_BUILT_LENGTH`."""
    def formatted(value: Any, *args: Any, **kwargs: Any) -> Any:
        check_percent_format(value)
        return filter_function(value, *args, **kwargs)

    formatted.__name__ = formatted.__qualname__ = "format"
    return formatted


class BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator with every loop's items drawn through `environment.counted_iteration` and every `~`
    concatenation's result passed through `environment.bounded_text`."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        counted = nodes.Call(nodes.EnvironmentAttribute("counted_iteration"), [node.iter], [], None, None,
                             lineno=node.iter.lineno)
        super().visit_For(nodes.For(node.target, counted, node.body, node.else_, node.test, node.recursive,
                                    lineno=node.lineno), frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_text(")
        super().visit_Concat(node, frame)
        self.write(")")
