"""What a source's split reads (`Source.read_from`), as records that two sources reading the same data compare alike:
a hub dataset read whole, a file, folder or data_files pattern of its repo, or a local file or folder (which holds the
files in it)."""
from __future__ import annotations

import os
import posixpath
import re
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

    def holds(self, other: DataRead) -> bool:
        """Whether what `other` reads is among what this reads: the same file, dataset or folder, one inside this
        folder (a hub dataset read whole is its repo's folder), or a file of a hub dataset this data_files pattern
        matches."""
        if self == other:
            return True
        inside = self.whole_dataset or (self.folder and other.path.startswith(self.path.rstrip("/") + "/"))
        matched = self.dataset is not None and _matches(self.path, other.path)
        return self.dataset == other.dataset and (inside or matched)

    def shares(self, other: DataRead) -> bool:
        """Whether this and `other` read the same data: either holds the other (`holds`)."""
        return self.holds(other) or other.holds(self)

    def describe(self) -> str:
        """How messages name it: `hub dataset glue/rte`, `file a/train.jsonl of hub dataset org/x`, `file /abs/x.csv`,
        `folder /abs/saved`."""
        if self.whole_dataset:
            return f"hub dataset {self.dataset}"
        of = f" of hub dataset {self.dataset}" if self.dataset is not None else ""
        return f"{'folder' if self.folder else 'file'} {self.shown}{of}"


def _matches(pattern: str, path: str) -> bool:
    """Whether the glob `pattern` of a hub dataset's data_files matches the file `path` of its repo as datasets reads
    it: `**` at any depth, `*` and `?` within one folder, `[...]` one of the characters (`[!...]` none); False for a
    `pattern` without `*`, `?` or `[` (a file's path)."""
    if not any(c in pattern for c in "*?["):
        return False
    wildcards = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    parts = re.split(r"(\*\*/|\*\*|\*|\?|\[!?[^]]+\])", pattern)
    regex = "".join(wildcards.get(part, part.replace("[!", "[^", 1)) if index % 2 else re.escape(part)
                    for index, part in enumerate(parts))  # (the wildcards split out, at odd indices)
    return re.fullmatch(regex, path) is not None
