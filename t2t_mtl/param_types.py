"""Numeric checks of the free-form parameter sections of a config (`sampling:`, `weighting:`).

Those sections are passed as keyword arguments to a class chosen by name, so their types come from the
class's constructor annotations. PyYAML reads `1e-3` (no dot) as a string and `--set k=abc` gives one, so
each numeric parameter is checked here, before it reaches arithmetic deep inside a sampler or a weighting.
"""
from __future__ import annotations

import inspect
import numbers
from typing import Any, Dict, Mapping, Type

_NUMERIC = ("int", "float")


def keyword_parameters(cls: type) -> Dict[str, inspect.Parameter]:
    """{keyword-only constructor parameter of `cls` or a base: its `inspect.Parameter`} (the nearest class's wins:
    a subclass passes the others on through **kwargs)."""
    parameters: Dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for param in inspect.signature(init).parameters.values():
            if param.kind is param.KEYWORD_ONLY and param.name not in parameters:
                parameters[param.name] = param
    return parameters


def annotation_text(param: inspect.Parameter) -> str:
    """`param`'s annotation as text (`float`, `Optional[int]`: a string annotation as `from __future__` writes it,
    others as `inspect` formats them — a user's module without that import annotates with the types themselves —,
    `typing.` left out); '' where it has none."""
    annotation = param.annotation
    if annotation is param.empty:
        return ""
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    return text.replace("typing.", "")


def _keyword_annotations(cls: type) -> Dict[str, str]:
    """{keyword-only constructor parameter of `cls` or a base: its annotation as text (`annotation_text`)}."""
    return {name: annotation_text(param) for name, param in keyword_parameters(cls).items()}


def _optional(annotation: str) -> bool:
    """Whether `annotation` admits None (`Optional[...]`, `... | None`)."""
    return annotation.startswith("Optional[") or annotation.endswith(" | None")


def numeric_params(cls: type) -> Dict[str, str]:
    """{keyword-only constructor parameter of `cls` or a base: "int" | "float"} for the numeric ones
    (annotations `int`, `float`, `Optional[...]` or `... | None` of them)."""
    kinds = {name: annotation.removeprefix("Optional[").removesuffix("]").removesuffix(" | None")
             for name, annotation in _keyword_annotations(cls).items()}
    return {name: kind for name, kind in kinds.items() if kind in _NUMERIC}


def coerce_numeric_params(config: Mapping[str, Any], cls: type, what: str,
                          error: Type[Exception] = ValueError) -> Dict[str, Any]:
    """`config` with `cls`'s numeric parameters checked: a numeric string becomes a number, an integral
    float an int where an int is expected; null only where the parameter is Optional; anything else raises
    `error` naming `what` and the key."""
    checked = dict(config)
    annotations = _keyword_annotations(cls)
    for key, kind in numeric_params(cls).items():
        value = checked.get(key)
        if value is None and key in checked and not _optional(annotations[key]):
            raise error(f"{what}: {key!r} must be {'an integer' if kind == 'int' else 'a number'}, got null "
                        f"(leave the key out for its default)")
        if value is None:
            continue
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                pass
        is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not is_number or (kind == "int" and not float(value).is_integer()):
            raise error(f"{what}: {key!r} must be {'an integer' if kind == 'int' else 'a number'}, "
                        f"got {checked[key]!r}")
        checked[key] = int(value) if kind == "int" else value
    return checked
