"""Writes that a crash or a power loss cannot leave half done: a text file replaced atomically
(`write_text_atomic`), and files and folders flushed to disk, a folder's entries included (`fsync_path`,
`fsync_tree`), before a rename makes them visible."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` (written to a temporary beside it, fsynced, renamed over it, the folder
    fsynced): a crash or power loss leaves the old file or the new one, never a cut-short one."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def fsync_path(path: Union[str, Path]) -> None:
    """Flush the file or folder `path` to disk; for a folder, its entries (files created, renamed or replaced in
    it): until then a power loss may undo a rename that the files' own fsyncs made safe to do."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file under `root`, then every folder (deepest first: their entries for those files)."""
    for dirpath, _, files in os.walk(root, topdown=False):
        for name in files:
            fsync_path(os.path.join(dirpath, name))
        fsync_path(Path(dirpath))
