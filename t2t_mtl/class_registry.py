"""Adding a user's class to a registry of components chosen by name in a config (`sampling.strategy`,
`weighting.method`, `gradient_surgery.method`): the checks a class must pass to be registered, shared by
`register_sampler`, `register_weighting` and `register_method`, so that a class that could never be built is refused
where it is registered."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import AbstractSet, Any, Dict, Mapping, Tuple, Type


@dataclass(frozen=True)
class ClassRegistry:
    """A name → class table and what its entries must be: subclasses of `base` naming themselves by the class
    attribute `name_attr`, overriding `hook`, built as `cls(*build_args, **common, **{p: ... for p in PARAMS})`
    (the config keys of class attribute `params_attr`: a tuple of names, or a dict {name: default}).
    `shipped` names the built-in entries, which no registration replaces; `register` is the public function's
    name and `error` the exception it raises, for the messages."""

    table: Dict[str, type]
    shipped: AbstractSet[str]
    base: type
    name_attr: str
    hook: str
    build_args: Tuple[Any, ...]
    common: Mapping[str, Any]
    register: str
    error: Type[Exception]
    params_attr: str = "PARAMS"


def register_class(registry: ClassRegistry, cls: Any, *, overwrite: bool = False) -> type:
    """Add `cls` to `registry.table` under its `name_attr` and return it (so it works as a class decorator), after
    checking that it subclasses `base`, names itself, overrides `hook`, lists its config keys in `params_attr` and can
    be built from them; a shipped name, or one registered to another class (unless `overwrite`, or the same class
    imported again: same module and qualified name), is refused. Raises `registry.error` naming the class."""
    problem = _class_problem(registry, cls)
    if problem:
        raise registry.error(f"{registry.register}({class_name(cls)}): {problem}")
    name = getattr(cls, registry.name_attr)
    taken = registry.table.get(name)
    if taken is not None and taken is not cls and not overwrite and class_name(taken) != class_name(cls):
        raise registry.error(f"{registry.register}({class_name(cls)}): {registry.name_attr} {name!r} is already "
                             f"registered to {class_name(taken)}; give the class another {registry.name_attr}, or "
                             f"pass overwrite=True to replace it")
    registry.table[name] = cls
    return cls


def _class_problem(registry: ClassRegistry, cls: Any) -> str:
    """Why `cls` cannot be registered ('' when it can)."""
    base, attr = registry.base, registry.name_attr
    if isinstance(cls, base):
        return f"give the class itself, not an instance of it ({class_name(type(cls))}(...))"
    if not inspect.isclass(cls) or not issubclass(cls, base):
        return f"give a subclass of {base.__module__}.{base.__name__}, got {cls!r}"
    name = getattr(cls, attr, None)
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        return (f"set the class attribute {attr} to the name a config gives it (a non-empty string without "
                f"surrounding spaces), got {name!r}")
    if name in registry.shipped:
        inherited = "" if attr in cls.__dict__ else f" (inherited from {class_name(registry.table[name])})"
        return f"{attr} {name!r} is a built-in one{inherited}; give the class its own {attr}"
    if getattr(cls, registry.hook) is getattr(base, registry.hook):
        return f"implement {registry.hook} (the {base.__name__} method each subclass defines)"
    given, params_attr = getattr(cls, registry.params_attr, ()), registry.params_attr
    as_dict = isinstance(getattr(base, params_attr, ()), dict)
    params = (tuple(given) if isinstance(given, dict) else None) if as_dict else given
    if not isinstance(params, tuple) or not all(isinstance(p, str) and p.isidentifier() for p in params):
        return (f"{params_attr} must be a {'dict {option: default}' if as_dict else 'tuple'} of the constructor's "
                f"keyword names (its config keys), got {given!r}")
    clash = sorted(set(params) & {attr, *registry.common})
    if clash:
        return f"{params_attr} lists {', '.join(map(repr, clash))}, which every {base.__name__} takes: leave them out"
    return _constructor_problem(cls, registry.build_args, {**registry.common, **dict.fromkeys(params)}, params_attr)


def _constructor_problem(cls: type, args: Tuple[Any, ...], keywords: Mapping[str, Any], params_attr: str) -> str:
    """Why `cls(*args, **keywords)` would not bind (its signature), '' when it would; `params_attr` names where the
    class lists its config keys."""
    from task_registry.signatures import binding_error  # (here, not at the top: task_registry loads datasets)

    problem = binding_error(cls, *args, **keywords)
    if problem is None:
        return ""
    signature, error = problem
    return (f"its constructor {signature} cannot be called as a build calls it, with {len(args)} positional "
            f"argument(s) and the keywords {', '.join(keywords) or '(none)'} ({error}): take every config key "
            f"({params_attr}) as a keyword, give it a default or list it among them, and pass **kwargs on to the "
            f"base class")


def class_name(cls: Any) -> str:
    """`module.QualifiedName` of a class (its repr for anything else)."""
    return f"{cls.__module__}.{cls.__qualname__}" if inspect.isclass(cls) else repr(cls)

