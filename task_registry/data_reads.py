"""What a source's split reads (`Source.read_from`), as records that two sources reading the same data compare alike:
a hub dataset read whole, a file, folder or data_files pattern of its repo, or a local file or folder (which holds the
files in it)."""
from __future__ import annotations

import os
import posixpath
import re
import sys
from dataclasses import dataclass, field
from typing import Optional

from .data_paths import PathLike


@dataclass(frozen=True)
class DataRead:
    """One thing a split's rows are read from. `dataset`: the hub dataset (`path/name`), None for a local path;
    `path`: the file or folder inside the dataset's repo ('' for the dataset read whole), or the local file or folder
    resolved (`os.path.realpath`: a symlink and what it links to are one); `folder`: whether `path` is a folder;
    `shown`: how messages name `path` (not compared)."""

    dataset: Optional[str]
    path: str
    folder: bool = False
    shown: str = field(default="", compare=False)

    @classmethod
    def hub(cls, dataset: str, path: Optional[PathLike] = None, folder: bool = False) -> DataRead:
        """The hub dataset `dataset` read whole (its repo's folder), or the file (or `folder`) `path` of its repo."""
        inside = posixpath.normpath(str(path)) if path else ""
        return cls(dataset, inside, folder=folder or not inside, shown=inside)

    @classmethod
    def local(cls, path: PathLike, folder: Optional[bool] = None) -> DataRead:
        """The local file or folder `path` (relative to the working directory), named as absolute, not resolved;
        `folder` None: whether it is one."""
        absolute = os.path.abspath(path)
        return cls(None, os.path.realpath(absolute), folder=os.path.isdir(absolute) if folder is None else folder,
                   shown=absolute)

    @property
    def whole_dataset(self) -> bool:
        """Whether this is a hub dataset read whole (the same read for every split)."""
        return self.dataset is not None and not self.path

    def shares(self, other: DataRead) -> bool:
        """Whether this and `other` read the same data. Of one hub dataset: whether a file either reads may be one the
        other reads — read whole, the dataset holds every file; else their paths as data_files patterns (a folder's
        its `path/**`, a file's its path) match a path in common (`_overlap`: `data/train-*` and
        `data/*-00000.parquet`, or `**/train.jsonl` and the folder `en`). Local: the same file or folder, or one inside
        the other folder."""
        if self.dataset != other.dataset:
            return False
        if self.dataset is not None:
            return self.whole_dataset or other.whole_dataset or _overlap(self._glob(), other._glob())
        return self._holds(other) or other._holds(self)

    def _holds(self, other: DataRead) -> bool:
        """Whether the local `other` is this file or folder, or inside this folder."""
        return self == other or (self.folder and other.path.startswith(self.path.rstrip("/") + "/"))

    def _glob(self) -> str:
        """What this reads of its hub dataset as a data_files pattern: a folder's files (`path/**`), else its path
        (a pattern, or a file's path)."""
        return f"{self.path.rstrip('/')}/**" if self.folder else self.path

    def describe(self) -> str:
        """How messages name it: `hub dataset glue/rte`, `file a/train.jsonl of hub dataset org/x`, `file /abs/x.csv`,
        `folder /abs/saved`."""
        if self.whole_dataset:
            return f"hub dataset {self.dataset}"
        of = f" of hub dataset {self.dataset}" if self.dataset is not None else ""
        return f"{'folder' if self.folder else 'file'} {self.shown}{of}"


#: a data_files pattern's wildcards: `re.split` leaves them at the odd indices of its parts
_WILDCARD = re.compile(r"(\*\*/|\*\*|\*|\?|\[!?[^]]+\])")


def _overlap(first: str, second: str) -> bool:
    """Whether some path matches both glob patterns `first` and `second` of a hub dataset's data_files, as datasets
    reads them: `**` at any depth (`**/`: no folder too), `*` and `?` within one folder, `[...]` one of the characters
    (`[!...]` none); a path without wildcards matches itself alone. Both are walked together one character at a time,
    trying one character of each set that no wildcard or character of either tells apart."""
    globs, chars = (_Glob(first), _Glob(second)), _representatives(first + second)
    start = tuple(glob.start() for glob in globs)
    seen, todo = {start}, [start]
    while todo:
        states = todo.pop()
        if all(glob.accepts(state) for glob, state in zip(globs, states)):
            return True
        for char in chars:
            after = tuple(glob.step(state, char) for glob, state in zip(globs, states))
            if all(after) and after not in seen:
                seen.add(after)
                todo.append(after)
    return False


def _representatives(text: str) -> list[str]:
    """A character of each set of characters that the patterns of `text` cannot tell apart: each of its characters
    and `/`, the next one (the first after a range `[a-c]` or a set), and the first of all."""
    codes = {min(code + step, sys.maxunicode) for code in map(ord, set(text) | {"/"}) for step in (0, 1)}
    return [chr(code) for code in sorted(codes | {0})]


class _Glob:
    """A glob pattern as a machine read a character at a time: its states are (index of a part, inside `**/`), a
    part being one character, `?`, a set `[...]` or a wildcard; a set of states is where a prefix read may stand."""

    def __init__(self, pattern: str):
        self.parts: list[tuple[str, re.Pattern]] = []  # (kind: one / any / dirs, the one character it reads)
        for index, part in enumerate(_WILDCARD.split(pattern)):
            if not index % 2:
                self.parts += [("one", re.compile(re.escape(char))) for char in part]
            elif part in ("*", "**"):
                self.parts.append(("any", re.compile("[^/]" if part == "*" else "(?s:.)")))
            elif part == "**/":  # (no folder, or folders: any characters up to a `/`)
                self.parts.append(("dirs", re.compile("(?s:.)")))
            else:
                self.parts.append(("one", re.compile("[^/]" if part == "?" else part.replace("[!", "[^", 1))))

    def start(self) -> frozenset:
        """The states before a character is read."""
        return self._closure({(0, False)})

    def accepts(self, states: frozenset) -> bool:
        """Whether the prefix read to `states` matches the whole pattern."""
        return (len(self.parts), False) in states

    def step(self, states: frozenset, char: str) -> frozenset:
        """The states after reading `char` from `states` (empty: no path with that prefix matches)."""
        after = set()
        for index, inside in states:
            if index == len(self.parts):
                continue
            kind, reads = self.parts[index]
            if not reads.fullmatch(char):
                continue
            if kind == "one":
                after.add((index + 1, False))
            elif kind == "any":
                after.add((index, False))
            else:  # (dirs: inside the folders, a `/` may end them)
                after.add((index, True))
                if char == "/":
                    after.add((index + 1, False))
        return self._closure(after)

    def _closure(self, states: set) -> frozenset:
        """`states` with those reached without reading a character: past a wildcard that matches none."""
        closed, todo = set(states), list(states)
        while todo:
            index, inside = todo.pop()
            if index < len(self.parts) and self.parts[index][0] != "one" and not inside:
                if (index + 1, False) not in closed:
                    closed.add((index + 1, False))
                    todo.append((index + 1, False))
        return frozenset(closed)
