"""Paths a command will write to, checked (and their folders created) before any work is done."""
from __future__ import annotations

import errno
from pathlib import Path
from typing import Optional, Union

PathLike = Union[str, Path]


class OutputPathError(ValueError):
    """An output path cannot be written: it (or a folder above it) is a file, or a file path is a folder."""


def nearest_existing(path: PathLike) -> Optional[Path]:
    """`path` or the nearest folder above it that exists (what creating it would write into), or None."""
    out = Path(path)
    return next((p for p in (out, *out.parents) if p.exists()), None)


def prepare_output_dir(path: PathLike, option: str, create: bool = True) -> Path:
    """`path` as a folder to write into, created (unless `create` is false: checked only); `OutputPathError`
    naming `option` when it, or a folder above it, exists and is not a folder, or when it cannot be created."""
    out = Path(path)
    blocker = nearest_existing(out)
    if blocker is not None and not blocker.is_dir():
        raise OutputPathError(f"{option} {out}: {blocker} exists and is not a folder; choose another output folder")
    if create:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # permissions, a read-only disk, a place no folder can be made (/proc)
            raise OutputPathError(f"{option} {out}: the folder could not be created ({error}); choose another "
                                  f"output folder") from None
    return out


def refuse_non_empty_dir(path: PathLike, option: str, flag: str = "--overwrite") -> None:
    """`OutputPathError` naming `option`, the folder and `flag` (the option that allows it) when `path` is a folder
    holding anything: an earlier output that writing into it would overwrite. A missing or empty folder passes."""
    refusal = non_empty_dir_refusal(path, option, flag)
    if refusal:
        raise OutputPathError(refusal)


def non_empty_dir_refusal(path: PathLike, option: str, flag: str = "--overwrite") -> str:
    """`refuse_non_empty_dir`'s message for `path`; empty for a missing or empty folder."""
    out = Path(path)
    held = sorted(entry.name for entry in out.iterdir()) if out.is_dir() else []
    if not held:
        return ""
    listed = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
    return (f"{option} {out} is not empty (it holds {listed}); writing into it would overwrite what is there: choose "
            f"another folder, or pass {flag} to write into it anyway")


def is_full_disk(error: OSError) -> bool:
    """Whether `error` is a full disk or quota: the work failed (exit 1, `t2t_mtl.cli.main` says so in one line), not
    an output place that cannot be written (a bad option, exit 2)."""
    return error.errno in (errno.ENOSPC, errno.EDQUOT)


def unwritten_output(error: OSError, option: str, path: PathLike, what: str) -> str:
    """The one-line message for `what` (e.g. "the report") that writing to `option` `path` failed on with `error`
    (permissions, a read-only disk: a bad output option); a full disk or quota (`is_full_disk`) is raised again
    instead: the work failed (exit 1)."""
    if is_full_disk(error):
        raise error
    return f"{option} {path}: {what} could not be written ({error})"


def prepare_output_file(path: PathLike, option: str, example: str) -> Path:
    """`path` as a file to write, its folder created; `OutputPathError` naming `option` when it is a folder (with
    `example`, a file name in it, as what to give instead) or a folder above it is a file."""
    out = Path(path)
    if out.is_dir():
        raise OutputPathError(f"{option} {out} is a folder; give a file name (e.g. {out / example})")
    prepare_output_dir(out.parent, option)
    return out
