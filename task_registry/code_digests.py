"""The hash of the Python source a function is defined in (`code_digest`), which the cache keys of its results hold
beside its name: datasets alone keys a function imported from a module by its name, so an edited generator or
preprocessor would be served its old rows (and a task's definition digest holds its postprocess's)."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any, Callable


def code_digest(fn: Callable[..., Any]) -> str:
    """A hash of the Python source `fn` is defined in: every `.py` file of its top-level package (the helpers it
    calls are most often beside it), or its module's file; "" for a function without one (typed into an
    interpreter or a notebook, or of a script read from standard input: datasets hashes such a function's code
    itself)."""
    module = sys.modules.get(getattr(getattr(fn, "func", fn), "__module__", None) or "")  # (func: a partial's)
    top = sys.modules.get(getattr(module, "__name__", "").partition(".")[0])
    if getattr(top, "__path__", None):  # named relative to the package: a clone elsewhere keeps the key
        files = sorted((file.relative_to(folder).as_posix(), file) for folder in map(Path, top.__path__)
                       for file in folder.rglob("*.py"))
    else:
        source = Path(getattr(module, "__file__", None) or "")
        files = [(source.name, source)] if source.is_file() else []  # (not '<stdin>', of a script piped to python)
    digest = hashlib.sha256()
    for name, file in files:
        digest.update(f"{name}\0".encode() + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16] if files else ""
