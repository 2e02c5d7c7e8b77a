"""Peak resident memory of one call on CPU, for the benchmarks beside this file (glibc, Linux).

Timed calls run under `steady_policy`: glibc's own dynamic policy at the state a process reaches once it has freed a
block of 32 MiB (smaller blocks come from the heap, whose pages stay resident from call to call; larger ones are
mapped), fixed so that the times do not depend on what the process freed before. `peak_resident_bytes` runs the call
whose memory is measured in a thread of its own, which glibc gives an arena of its own (without the free heap blocks
of the timed calls, whose pages would count neither a block served from them nor the end of a freed one), with every
block from 64 KiB mapped afresh and unmapped on free and the free pages of every arena given back first (a thread can
be handed an arena with free blocks: without it, 1 measure in 2 of TorchJD's 4 MB output read 0): the resident set
then follows the live allocations. Forcing that policy on the timed calls instead made them fault every block in
again (2-5x their time).
"""
from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_STEADY = (32 << 20, 64 << 20)  # (mmap threshold, trim threshold): glibc's dynamic maxima (64-bit)
_FRESH = (64 << 10, 64 << 10)
Result = TypeVar("Result")


def _set(mmap_threshold: int, trim_threshold: int) -> None:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
    libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)


def steady_policy() -> None:
    """Fix glibc's policy at its steady state for the calls that are timed (module docstring)."""
    _set(*_STEADY)


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def peak_resident_bytes(fn: Callable[[], Result]) -> tuple[int, Result]:
    """(growth of the process's peak resident set during one call of `fn`, its result); `fn` runs in a thread of
    its own with every block from 64 KiB mapped afresh, the free heap given back (module docstring), and
    `steady_policy` holds after."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = fn()
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error

    _set(*_FRESH)
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set to the current one
        base = _status_bytes("VmRSS")
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        peak = _status_bytes("VmHWM") - base
    finally:
        steady_policy()
    if "error" in outcome:
        raise outcome["error"]
    return peak, outcome["result"]
