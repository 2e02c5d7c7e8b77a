"""Modules imported on first use: `datasets` and `pyarrow` take a second or more to import, which listing, showing or
checking tasks never needs (only loading, rendering and tokenizing rows do)."""
from __future__ import annotations

import importlib
from typing import Any


class LazyModule:
    """Stands for the module `name`: it is imported at the first attribute read, and every read is the module's.
    Neither it nor `sys.modules` holds the module before then."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._name), attribute)

    def __reduce__(self) -> tuple:
        """Pickled and copied as the module's name: a copy stands for the same module. (The default rebuilds an
        empty instance, whose `__setstate__` lookup goes to `__getattr__`, which reads the unset name: recursion.)"""
        return LazyModule, (self._name,)

    def __repr__(self) -> str:
        return f"<module {self._name!r}, imported on first use>"
