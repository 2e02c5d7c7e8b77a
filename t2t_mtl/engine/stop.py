"""Stop requests from signals during training: SIGTERM, SIGUSR1 (SLURM's `--signal=USR1@T` before the time limit)
and a first SIGINT (Ctrl-C) ask the loop to finish the step in progress, save a checkpoint and return; a second
SIGINT aborts at once (KeyboardInterrupt, nothing saved). The loop all-reduces `requested` with its step
figures, so a signal on any one rank stops every rank at the same step."""
from __future__ import annotations

import os
import signal
import sys
from typing import Any, Dict


class StopSignals:
    """Installs the SIGTERM / SIGUSR1 / SIGINT handlers on `install()` and puts the previous ones back on
    `restore()`. Only an `announce`ing instance (rank 0) prints the Ctrl-C notice. It names no step: a request is
    seen at the step's stop vote, so one that comes after it stops at the next step, and under torchrun the vote of
    another rank that the SIGINT reached earlier may stop every rank a step before this rank's next vote; the loop
    names the step it saves at."""

    def __init__(self, *, announce: bool):
        self.requested = False
        self._announce = announce
        self._interrupts = 0
        self._previous: Dict[int, Any] = {}

    def install(self) -> "StopSignals":
        """Install the handlers (keeping the previous ones); returns self."""
        for signum, handler in ((signal.SIGTERM, self._on_terminate), (signal.SIGUSR1, self._on_terminate),
                                (signal.SIGINT, self._on_interrupt)):
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, handler)
        return self

    def restore(self) -> None:
        """Put back the handlers `install` replaced."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_terminate(self, signum: int, frame: Any) -> None:
        self.requested = True

    def _on_interrupt(self, signum: int, frame: Any) -> None:
        self._interrupts += 1
        if self._interrupts > 1:
            raise KeyboardInterrupt
        self.requested = True
        if self._announce:
            text = ("interrupted: saving a checkpoint when the step in progress or the next one ends; interrupt again "
                    "(Ctrl-C; in a notebook, interrupt the kernel) to abort without saving\n")
            try:
                sys.stderr.write(text)
                sys.stderr.flush()
            except RuntimeError:  # the signal came in the middle of a write to stderr (the progress bar's)
                os.write(2, text.encode())


def ignore_stop_signals() -> None:
    """Ignore SIGTERM and SIGUSR1 from now on, in a rank of several that has saved its interrupted run and is exiting:
    the first rank to exit with `train`'s interrupted exit code makes its launcher terminate the others (srun
    --kill-on-bad-exit, the deepspeed launcher, torchrun), and a rank terminated in its last moments reported 143
    (128 + SIGTERM) instead, which srun then gave as the job's code. Each exits by itself in moments."""
    for signum in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)
