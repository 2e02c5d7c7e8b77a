"""The gathers of a sharded evaluation, which also carry a rank's failure to the other ranks.

The ranks of a sharded evaluation meet at the same gathers in the same order: one per template (its scored outputs)
and one at the end (`RankGathers.finish`). A rank whose own step fails between two of them (its copy of a task's data
unreadable, an error while scoring) joins the others' next gather with a failure mark instead (`telling_failures`)
and raises its own error; the others raise `RankFailedError` naming it, at once. Untold, they waited in a gather it
never joined until its exit ended the gather with gloo's "Connection closed by peer" traceback, or, where it failed
after the last gather, finished as if every rank had scored. A rank gone without telling (killed, out of memory) ends
the others' gather with `CollectiveBrokenError` naming the step they were at, as the project's other collectives do
(`rank_phases`), where gloo's own error named none.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from t2t_mtl.engine.distributed import failed_ranks_wording, waiting_group
from t2t_mtl.engine.rank_phases import CollectiveBrokenError, broken_collective
from t2t_mtl.evaluation.errors import RankFailedError, RanksStoppedError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Failed:
    """What a failed rank gives to the others' gather in place of its part."""

    rank: int


class RankGathers:
    """The gathers of rank `rank` of `world_size` (through `waiting_group`, where ranks done with their shard wait for
    slower ones); with one rank each gather is its own part."""

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size

    def _parts(self, local: Any) -> list[Any]:
        parts: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(parts, local, group=waiting_group())
        return parts

    def gather(self, local: list[Any], step: str) -> list[Any]:
        """Every rank's `local` items of `step` (what the ranks gather for, e.g. a template), rank 0's first. A
        `RankFailedError` naming the ranks that failed instead, a `RanksStoppedError` where ranks are at another
        step (they evaluate other tasks or templates), or a `CollectiveBrokenError` naming `step` where the gather
        itself failed (a rank gone, the waiting group's timeout)."""
        if self.world_size == 1:
            return local
        try:
            parts = self._parts((step, local))
        except RuntimeError as error:  # (torch's DistBackendError among them)
            raise broken_collective(f"the evaluation's gather ({step})", self.rank, self.world_size, error) from error
        failed = [part.rank for part in parts if isinstance(part, _Failed)]
        if failed:
            ranks, its = failed_ranks_wording(failed, self.world_size)
            raise RankFailedError(f"{ranks} failed during the evaluation (see {its} error); this rank stopped with it")
        if len({part_step for part_step, _ in parts}) > 1:
            steps = "; ".join(f"rank {rank}: {part_step}" for rank, (part_step, _) in enumerate(parts))
            raise RanksStoppedError(f"the ranks reached different steps of the evaluation ({steps}); every rank must "
                                    f"evaluate the same tasks and templates")
        return [item for _, part in parts for item in part]

    def finish(self) -> None:
        """The last gather: returns once every rank has evaluated everything, else raises `RankFailedError`."""
        self.gather([], "the end of the evaluation")

    @contextlib.contextmanager
    def telling_failures(self) -> Iterator[None]:
        """Run the block; an error it raises on this rank alone (not a `RanksStoppedError`, which every rank raises at
        the same gather, nor a `CollectiveBrokenError`, a gather no longer joined by every rank) is first told to the
        other ranks' next gather, then raised. Where that gather fails too (a rank gone), this rank's own error is
        raised all the same."""
        try:
            yield
        except (RanksStoppedError, CollectiveBrokenError):
            raise
        except Exception:
            if self.world_size > 1:
                self._tell_failure()
            raise

    def _tell_failure(self) -> None:
        try:
            self._parts(_Failed(self.rank))
        except Exception as error:  # noqa: BLE001 (this rank's own error is the one to raise)
            logger.warning("rank %d could not tell the other ranks that it failed: %s", self.rank, error)

