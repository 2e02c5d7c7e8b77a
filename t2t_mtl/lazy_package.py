"""A package whose public names are imported on first use (PEP 562), so that importing it loads none of the heavy
modules that define them: `lazy_exports` makes the package's module-level `__getattr__` and `__dir__`."""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, List, Mapping, Tuple


def lazy_exports(package: str, exports: Mapping[str, str]) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """(`__getattr__`, `__dir__`) for package `package` exporting each name of `exports` (name -> the module that
    defines it): a name is read from its module on its first read and kept on the package; any other name is an
    AttributeError (a submodule's too: importing it binds it on the package)."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        vars(sys.modules[package])[name] = value
        return value

    def __dir__() -> List[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
