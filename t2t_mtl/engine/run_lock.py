"""One live run per run folder. While a run trains, its rank 0 holds an exclusive lock on `<run_dir>/run.lock`
(`fcntl.flock`, which the kernel drops when the process ends, by kill -9 too), so a second run started into the
folder — most often a resume of a run whose ranks outlived a launcher killed with kill -9 — is refused, naming the
process that trains there, instead of training beside it into the same logs and checkpoints."""
from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from typing import IO, Optional

from t2t_mtl.engine.checkpoint import CheckpointError
from t2t_mtl.engine.distributed import DistEnv, failed_ranks

#: the lock's file in a run folder (it holds the holder's process id and host)
LOCK_FILE = "run.lock"


class RunLock:
    """A run folder's lock, taken by `take` and held until `release` (or the process's end)."""

    def __init__(self) -> None:
        self.handle: Optional[IO[str]] = None

    def take(self, run_dir: Path) -> None:
        """Hold `run_dir`'s lock and write this process's id and host in it (nothing where this lock holds one
        already, or `run_dir` does not exist yet, cannot be written or cannot be locked). A CheckpointError naming the
        holder where another process holds it (as for a folder holding another run's checkpoints:
        `refuse_other_run`)."""
        if self.handle is not None or not Path(run_dir).is_dir():
            return
        path = Path(run_dir) / LOCK_FILE
        try:
            handle = open(path, "a+", encoding="utf-8")
        except OSError:  # (a folder it cannot write: the run's own check of training.output_dir names it)
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise CheckpointError(f"training.output_dir {run_dir} is being trained by {holder} (it holds {path}): "
                                  f"stop that run first — a launcher killed with kill -9 leaves its ranks running, "
                                  f"end them by their process ids — or train into another training.output_dir"
                                  ) from None
        except OSError:  # (a filesystem without flock, as Lustre mounted without it: the run goes on unlocked)
            handle.close()
            return
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self.handle = handle

    def release(self) -> None:
        """Let the folder's lock go (nothing where none is held)."""
        if self.handle is not None:
            self.handle.close()  # (closing the file drops its flock)
            self.handle = None


def take_together(lock: RunLock, run_dir: Path, env: DistEnv) -> None:
    """Collective: rank 0 takes `lock` on `run_dir` (`RunLock.take`) once the process group exists; where another
    process holds it (one started into the same new folder at the same time), every rank stops: rank 0 with the
    CheckpointError naming the holder, the others with one naming rank 0's refusal (they would wait for it for ever)."""
    refused = None
    if env.is_main:
        try:
            lock.take(run_dir)
        except CheckpointError as err:
            refused = err
    if failed_ranks(refused is not None, env, "the run folder's lock taken"):
        raise refused or CheckpointError(f"rank 0 of {env.world_size} found training.output_dir {run_dir} trained by "
                                         f"another process (see its error): stop that run first, or train into "
                                         f"another training.output_dir")
