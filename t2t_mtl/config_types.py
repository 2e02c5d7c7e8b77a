"""Checking config values against the schema's type hints: `build_dataclass` turns a nested dict into a section
dataclass, refusing unknown keys (with the closest known names) and values of the wrong type (naming the key, the
expected type and the value, with a quoting hint for text YAML read as a number or boolean, and how to write a
section given as a name alone, `gradient_surgery: pcgrad`, or as true or false, `gradient_surgery: true`)."""
from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Union

from t2t_mtl.config_errors import ConfigTypeError, UnknownConfigKeyError
from t2t_mtl.config_layers import SELECTOR_KEYS

__all__ = ["FLOAT_RE", "build_dataclass", "unknown_key_message"]

FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, List):
        (arg,) = typing.get_args(tp) or (Any,)
        return f"list of {_type_name(arg)}"
    if origin in (dict, Dict):
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _takes_text(tp: Any) -> bool:
    """Whether `tp` (or one of its Union members or list elements) is str."""
    origin = typing.get_origin(tp)
    return tp is str or (origin in (Union, list, List) and any(_takes_text(arg) for arg in typing.get_args(tp)))


def _quote_hint(tp: Any, value: Any, key: str) -> str:
    """For text that YAML read as a number or boolean (`output_dir: 2024`, `--set data.templates=[1]`): how to
    write it as a string; else ""."""
    items = value if isinstance(value, list) else [value]
    if not _takes_text(tp) or not any(isinstance(v, (bool, int, float)) for v in items):
        return ""
    text = value if isinstance(value, (int, float)) and not isinstance(value, bool) else "2024"
    return (f"; YAML reads unquoted numbers and yes/no/on/off as numbers and booleans: quote text, e.g. "
            f"{key.split('.')[-1]}: \"{text}\" in a file, --set '{key}=\"{text}\"'")


def _takes_list(tp: Any) -> bool:
    """Whether `tp` (or one of its Union members) is a list."""
    origin = typing.get_origin(tp)
    return origin in (list, List) or (origin is Union and any(_takes_list(arg) for arg in typing.get_args(tp)))


def _list_hint(tp: Any, value: Any, key: str) -> str:
    """For text where a list is expected (`--set data.held_out_clusters=nli`, `a,b`): how to write it as a YAML list;
    else ""."""
    if not isinstance(value, str) or not _takes_list(tp):
        return ""
    items = "[" + ", ".join(item.strip() for item in value.split(",")) + "]"
    return f"; write a YAML list, e.g. {key.split('.')[-1]}: {items} in a file, --set '{key}={items}'"


def _name_hint(value: Any, key: str) -> str:
    """For a section given as its class's name alone (`gradient_surgery: pcgrad`): how to write it; else ""."""
    if key not in SELECTOR_KEYS or not isinstance(value, str):
        return ""
    name = SELECTOR_KEYS[key]
    return f"; write {key}: {{{name}: {value}}} in a file, --set {key}.{name}={value}"


def _takes(tp: Any, kind: Any) -> bool:
    """Whether `tp` (or one of its Union members) is `kind`: dict (a mapping) or NoneType (null)."""
    origin = typing.get_origin(tp)
    if origin is Union:
        return any(_takes(arg, kind) for arg in typing.get_args(tp))
    return tp is kind or (kind is dict and origin in (dict, Dict))


#: a key of each mapping section true may be meant to turn on, with a value, for the switch hint's example
SWITCH_EXAMPLES = {"sampling": ("strategy", "temperature"), "weighting": ("method", "equal"),
                   "gradient_surgery": ("method", "pcgrad"), "model.moe": ("num_experts", "8"),
                   "evaluation": ("held_out", "true")}


def _switch_hint(tp: Any, value: Any, key: str) -> str:
    """For true or false where a mapping section is expected (`gradient_surgery: true`): what to write instead (its
    keys, null for none, or nothing for its defaults); else ""."""
    if not isinstance(value, bool) or not _takes(tp, dict):
        return ""
    if not value:
        if _takes(tp, type(None)):
            return f"; for no {key}, write {key}: null in a file, --set {key}=null"
        return f"; {key} is set by its keys, not false: leave it out for its defaults"
    if key not in SWITCH_EXAMPLES:
        return f"; {key} is set by its keys, not true: write them under it (t2t_mtl/configs/default.yaml lists them)"
    name, example = SWITCH_EXAMPLES[key]
    return (f"; {key} is set by its keys, not true: write them under it, e.g. {key}: {{{name}: {example}}} in a file, "
            f"--set {key}.{name}={example}")


def _wrong_type(tp: Any, value: Any, key: str) -> str:
    """"config key KEY must be TYPE, got VALUE (ITS TYPE)", with whichever hint says how to write what was meant."""
    return (f"config key {key!r} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})"
            + _quote_hint(tp, value, key) + _list_hint(tp, value, key) + _name_hint(value, key)
            + _switch_hint(tp, value, key))


def _check_value(tp: Any, value: Any, key: str) -> Any:
    """Return `value` (ints widened to float where a float is expected) or raise ConfigTypeError."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Union:
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _check_value(arg, value, key)
            except ConfigTypeError as err:
                errors.append(err)
        raise ConfigTypeError(_wrong_type(tp, value, key))
    if tp is type(None):
        if value is None:
            return None
    elif origin is Literal:
        if value in typing.get_args(tp):
            return value
        from task_registry.errors import close_matches

        close = close_matches(str(value), [str(a) for a in typing.get_args(tp)], n=1, cutoff=0.6, substrings=False)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigTypeError(f"config key {key!r} must be {_type_name(tp)}, got {value!r}{hint}")
    elif origin in (list, List):
        if isinstance(value, (list, tuple)):
            (arg,) = typing.get_args(tp) or (Any,)
            return [_check_value(arg, v, f"{key}[{i}]") for i, v in enumerate(value)]
    elif origin in (dict, Dict):
        if isinstance(value, dict):
            args = typing.get_args(tp)
            if args and args[1] is not Any:
                return {k: _check_value(args[1], v, f"{key}.{k}") for k, v in value.items()}
            return dict(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and FLOAT_RE.fullmatch(value.strip()):
            return float(value)  # PyYAML reads `3e-4` (no dot) as a string
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigTypeError(_wrong_type(tp, value, key))


def unknown_key_message(section: str, data: Mapping[str, Any], known: Sequence[str]) -> Optional[str]:
    """"unknown key SECTION.KEY; did you mean ...?" (or the known keys) for the first key of `data` not in
    `known`, or None when every key is known — for the sections other components own (`model.moe`, ...)."""
    for key in data:
        if key not in known:
            from task_registry.errors import close_matches

            close = close_matches(str(key), known, n=1, cutoff=0.6, substrings=False)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
            return f"unknown key {section}.{key}{hint}"
    return None


def build_dataclass(cls: type, data: Dict[str, Any], prefix: str) -> Any:
    """An instance of dataclass `cls` from `data`, nested dataclass fields built from their mappings (None: all
    defaults) and every other value checked against its field's type; keys are named as `prefix` + key in errors.
    Raises `UnknownConfigKeyError` for a key `cls` lacks (with close matches), `ConfigTypeError` for a value of
    the wrong type."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        from task_registry.errors import close_matches

        lines = []
        for key in unknown:
            close = close_matches(str(key), names, n=3, substrings=False)
            hint = f" — did you mean {', '.join(repr(prefix + c) for c in close)}?" if close else ""
            lines.append(f"  {prefix}{key}{hint}")
        section = prefix.rstrip(".") or "top level"
        raise UnknownConfigKeyError(
            f"unknown config key(s) in {section}:\n" + "\n".join(lines)
            + f"\nvalid keys there: {', '.join(names)}"
        )
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        value, tp, key = data[name], hints[name], prefix + name
        if dataclasses.is_dataclass(tp):
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ConfigTypeError(f"config key {key!r} must be a mapping, got {value!r}"
                                      + _switch_hint(dict, value, key))  # (null: its defaults, as left out)
            kwargs[name] = build_dataclass(tp, value, key + ".")
        else:
            kwargs[name] = _check_value(tp, value, key)
    return cls(**kwargs)
