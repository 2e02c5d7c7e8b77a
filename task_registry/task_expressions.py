"""A task's own Jinja expressions, `group_by` and `postprocess`: each compiled once (cached by its text and the
place its errors name), a row's group key, and a postprocess expression's value for a text."""
from __future__ import annotations

import functools
import json
from typing import Any, Mapping

import jinja2

from .errors import TemplateRenderError
from .preprocessors import compile_expression, evaluate_expression
from .render_hints import row_preview


@functools.lru_cache(maxsize=256)
def compiled_expression(expression: str, where: str):
    """`expression` compiled by `compile_expression` (its errors naming `where`), once for each expression and place."""
    return compile_expression(expression, where)


def group_key(task: str, group_by: str, row: Mapping[str, Any], row_index: int) -> str:
    """`group_by` evaluated on a row of `task`, as JSON text (see `Task.group_key`); a null value is a
    `TemplateRenderError` naming the row (it would pool the row with every other row of a null group)."""
    where = f"task {task!r}: group_by"
    value = evaluate_expression(compiled_expression(group_by, where), row, row_index, where, group_by)
    if value is None:
        raise TemplateRenderError(f"{where}, row {row_index}: expression {group_by!r} gave null, which would put the "
                                  f"row in one group with every other row it gives null for: give every row its group "
                                  f"(a row of a file that lacks a field others have gets null there), or drop such "
                                  f"rows with a `filter` preprocessor; the row is {row_preview(row)}")
    return json.dumps(value, sort_keys=True, default=str)


def expression_value(compiled: Any, text: str) -> Any:
    """A postprocess expression's value for `text`; one naming anything but `text` raises (Jinja's Undefined would
    read as an empty string)."""
    value = compiled(text=text)
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    return value
