"""The "did you mean" of a path that does not exist: the existing path a misspelt folder or file name most likely
meant (`runs/quikstart/checkpoints` → `runs/quickstart/checkpoints`). Standard library only."""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Optional, Union


def close_existing_path(path: Union[str, os.PathLike]) -> Optional[Path]:
    """The existing path `path` most likely meant: from the part where it stops existing on, each part replaced by
    the closest name in the folder above (difflib ratio at least 0.6: `rnu` → `run`), written as `path` is (relative
    or absolute). None when `path` exists, when a missing part has no close name, or when the corrected path does
    not exist."""
    path = Path(path)
    current, corrected = Path(path.anchor), False
    for part in path.parts[1:] if path.anchor else path.parts:
        candidate = current / part
        if not candidate.exists():
            names = [entry.name for entry in current.iterdir()] if current.is_dir() else []
            close = difflib.get_close_matches(part, names, n=1, cutoff=0.6)
            if not close:
                return None
            candidate, corrected = current / close[0], True
        current = candidate
    return current if corrected else None


def path_hint(path: Union[str, os.PathLike]) -> str:
    """` (did you mean 'CLOSE'?)` for the `close_existing_path` of a missing `path`, or nothing when there is none."""
    near = close_existing_path(path)
    return f" (did you mean {str(near)!r}?)" if near is not None else ""
