"""What the config keys of a class chosen by name (a sampling strategy, a loss weighting) are: each key's type and
default from the constructors' signatures, its meaning from an `Args:` section of the class's docstring or a base's
(Google style: `name: meaning`, continued on deeper-indented lines; `a, b: meaning` documents both), for
`t2t-mtl list samplers` / `list weightings` and for the test that keeps every shipped key documented."""
from __future__ import annotations

import inspect
from typing import Dict, List, NamedTuple, Sequence

from t2t_mtl.param_types import annotation_text, keyword_parameters


class ParameterDoc(NamedTuple):
    """One config key of a class: `type` its annotation ('' where none), `default` its default's repr ('required'
    where it has none), `meaning` its docstring entry ('' where no `Args:` section documents it)."""

    name: str
    type: str
    default: str
    meaning: str


def summary(cls: type) -> str:
    """The first line of `cls`'s own docstring ('' where it has none)."""
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    return doc.splitlines()[0] if doc else ""


def documented_meanings(cls: type) -> Dict[str, str]:
    """{name: meaning} of the `Args:` sections of `cls`'s docstring and its bases' (the nearest class's wins)."""
    meanings: Dict[str, str] = {}
    for klass in cls.__mro__:
        for name, meaning in _args_section(klass.__dict__.get("__doc__") or "").items():
            meanings.setdefault(name, meaning)
    return meanings


def parameter_docs(cls: type, names: Sequence[str]) -> List[ParameterDoc]:
    """The `ParameterDoc` of each of `names` (config keys `cls`'s constructor, or a base's, takes as keywords)."""
    parameters, meanings = keyword_parameters(cls), documented_meanings(cls)
    docs = []
    for name in names:
        param = parameters.get(name)
        if param is None:  # (taken through **kwargs alone: no signature says more)
            kind, default = "", "?"
        else:
            kind, default = annotation_text(param), "required" if param.default is param.empty else repr(param.default)
        docs.append(ParameterDoc(name, kind, default, meanings.get(name, "")))
    return docs


def _args_section(docstring: str) -> Dict[str, str]:
    """{name: meaning} of the entries of `docstring`'s `Args:` section, continuation lines joined."""
    lines = inspect.cleandoc(docstring).splitlines()
    if "Args:" not in (line.strip() for line in lines):
        return {}
    start = [line.strip() for line in lines].index("Args:")
    base = _indent(lines[start])
    entries: List[List[str]] = []
    entry_indent = None
    for line in lines[start + 1:]:
        if not line.strip() or _indent(line) <= base:
            break
        if entry_indent is None or _indent(line) <= entry_indent:
            entry_indent = _indent(line)
            entries.append([line.strip()])
        else:
            entries[-1].append(line.strip())
    meanings = {}
    for entry in entries:
        names, _, meaning = " ".join(entry).partition(":")
        for name in names.split(","):
            meanings[name.strip()] = meaning.strip()
    return meanings


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())
