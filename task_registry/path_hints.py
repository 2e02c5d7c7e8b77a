"""The "did you mean" of a path that does not exist: the existing names close to a missing one (`close_names`: a
config file's `my.yml` → `my.yaml`) and the existing path a misspelt folder or file name most likely meant
(`close_existing_path`: `runs/quikstart/checkpoints` → `runs/quickstart/checkpoints`). Standard library only (and
`errors.close_matches`, which is)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Union

from .errors import close_matches


def close_names(folder: Path, name: str, *, n: int = 1, cutoff: float = 0.6, suffixes: Sequence[str] = ()
                ) -> List[str]:
    """The names of `folder`'s entries closest to `name` (`close_matches`: difflib ratio ignoring case at least
    `cutoff`), best first, of the `n` closest; none when `folder` is no folder. With `suffixes`, files with one of
    those endings only, compared by stem with `name`'s, so that a missing or misspelt ending finds the file (`my`,
    `my.yml` → `my.yaml`; files with one stem, `my.yaml` and `my.yml`, both)."""
    if not folder.is_dir():
        return []
    entries = sorted(folder.iterdir())
    if suffixes:
        entries = [entry for entry in entries if entry.suffix in suffixes and entry.is_file()]
    key = (lambda entry: entry.stem) if suffixes else (lambda entry: entry.name)
    wanted = Path(name).stem if suffixes else name
    close = close_matches(wanted, dict.fromkeys(map(key, entries)), n=n, cutoff=cutoff, substrings=False)
    return [entry.name for match in close for entry in entries if key(entry) == match]


def close_existing_path(path: Union[str, os.PathLike]) -> Optional[Path]:
    """The existing path `path` most likely meant: from the part where it stops existing on, each part replaced by
    the closest name in the folder above (`close_names`, difflib ratio at least 0.6: `rnu` → `run`), written as
    `path` is (relative or absolute). None when `path` exists, when a missing part has no close name, or when the
    corrected path does not exist."""
    path = Path(path)
    current, corrected = Path(path.anchor), False
    for part in path.parts[1:] if path.anchor else path.parts:
        candidate = current / part
        if not candidate.exists():
            close = close_names(current, part)
            if not close:
                return None
            candidate, corrected = current / close[0], True
        current = candidate
    return current if corrected else None


def path_hint(path: Union[str, os.PathLike]) -> str:
    """` (did you mean 'CLOSE'?)` for the `close_existing_path` of a missing `path`, or nothing when there is none."""
    near = close_existing_path(path)
    return f" (did you mean {str(near)!r}?)" if near is not None else ""
