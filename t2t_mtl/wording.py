"""Counts, quoted library messages and close names as our messages write them."""
from __future__ import annotations

import collections
from typing import Hashable, Iterable, Optional


def counted(count: int, noun: str, plural: Optional[str] = None) -> str:
    """`count` and `noun`, the noun in the plural (`plural`, else noun + "s") unless the count is 1: "1 task",
    "0 tasks", "3 tasks"."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def one_line(message: object) -> str:
    """`message` (a library's error, say) with its line breaks and runs of spaces turned into single spaces, to be
    quoted inside a one-line `error: ...`."""
    return " ".join(str(message).split())


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """' Did you mean 'a', 'b'?' naming the at most three of `valid` closest to `name` (`close_matches`: cutoff 0.6,
    no names merely containing it), to follow an error's sentence; empty when none is close."""
    from task_registry.errors import close_matches  # (loads the task registry with the first hint, not before)

    close = close_matches(name, valid, n=3, cutoff=0.6, substrings=False)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def repeated_items(items: Iterable[Hashable]) -> list:
    """The items that occur more than once in `items`, each once, sorted: the names of a list given twice."""
    counts = collections.Counter(list(items))  # (a mapping: its keys, not its values as counts)
    return sorted(item for item, count in counts.items() if count > 1)
