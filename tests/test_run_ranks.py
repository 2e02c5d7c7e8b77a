"""tests/engine_helpers.py's rank launcher (`_run_ranks`, behind spawn_ranks and forked_ranks): no rank it started
outlives it, however it ends, so a failed multi-process test cannot leave processes behind to hang the suite."""
from __future__ import annotations

import multiprocessing
import time
from typing import Any, List

import pytest

from engine_helpers import _run_ranks


class _Recording:
    """A multiprocessing context that keeps the processes it makes, for the test to look at afterwards; with
    `interrupt`, each process's timed wait raises KeyboardInterrupt (as a Ctrl-C while the launcher waits)."""

    def __init__(self, interrupt: bool = False) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.interrupt = interrupt
        self.made: List[Any] = []

    def Process(self, target: Any, args: tuple) -> Any:
        process = self.context.Process(target=target, args=args)
        self.made.append(process)
        return _InterruptedWait(process) if self.interrupt else process


class _InterruptedWait:
    def __init__(self, process: Any) -> None:
        self._process = process

    def __getattr__(self, name: str) -> Any:
        return getattr(self._process, name)

    def join(self, timeout: Any = None) -> None:
        if timeout is not None:
            raise KeyboardInterrupt
        self._process.join()


def _reaped(processes: List[Any]) -> List[bool]:
    """Whether each started process is gone (killed and waited for); the test's own cleanup kills any left."""
    started = [p for p in processes if p.pid is not None]
    gone = [not p.is_alive() for p in started]
    for p in started:
        if p.is_alive():
            p.kill()
            p.join()
    return gone


def test_a_rank_that_fails_to_start_leaves_none_of_the_started_ones_running():
    context = _Recording()
    with pytest.raises(Exception, match="pickle"):  # the second rank's lambda cannot be sent to a spawned process
        _run_ranks(context, time.sleep, [(60,), (lambda: 60,)], timeout=60)
    assert _reaped(context.made) == [True]
    assert context.made[0].exitcode == -9


def test_an_interrupted_wait_leaves_no_rank_running():
    context = _Recording(interrupt=True)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        _run_ranks(context, time.sleep, [(60,), (60,)], timeout=60)
    assert _reaped(context.made) == [True, True]
    assert [p.exitcode for p in context.made] == [-9, -9]
    assert time.monotonic() - started < 30


def test_ranks_that_end_in_time_give_their_exit_codes_and_one_past_the_timeout_is_killed():
    assert _run_ranks(multiprocessing.get_context("spawn"), time.sleep, [(0,), (60,)], timeout=3) == [0, -9]
