"""The phase each rank gives with its flag in the project's own collectives, checked to be the same on every rank.

`distributed.barrier` and `distributed.failed_ranks` (start-up, checkpoints, the start of `eval`) name their call site,
e.g. "the run's tokenizer trained", and every rank gathers every rank's phase and flag in one gather. Ranks at different
phases (a rank that skipped a barrier another waits at: a bug) used to pair one rank's barrier with another's, or wait
in collectives of different groups, until the process group's timeout (10 minutes, or the waiting group's 24 hours),
with no word of where each rank was; they now stop at the first gather where their phases differ, every rank raising
`RanksAtDifferentPhasesError` naming each rank's phase. A gather that fails (a rank gone, a group's timeout) raises
`CollectiveBrokenError` naming the phase this rank was at.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch

# the longest phase, in UTF-8 bytes: a rank gives 1 + PHASE_BYTES bytes to each gather
PHASE_BYTES = 64


class RanksAtDifferentPhasesError(RuntimeError):
    """Ranks met in a collective from different places of t2t-mtl (a bug in it); raised on every rank."""


class CollectiveBrokenError(RuntimeError):
    """A rank's collective ended without the others (a rank gone, a group's timeout); names where this rank was."""


def encoded(phase: str, flag: bool) -> torch.Tensor:
    """The bytes a rank gives to a gather: `flag`, then `phase` in UTF-8, zero-padded to PHASE_BYTES. A ValueError
    for an empty phase or a longer one (a call site's label, not input)."""
    data = phase.encode()
    if not data or len(data) > PHASE_BYTES:
        raise ValueError(f"a collective's phase must be 1 to {PHASE_BYTES} bytes of UTF-8, not {phase!r}")
    row = torch.zeros(1 + PHASE_BYTES, dtype=torch.uint8)
    row[0] = int(flag)
    row[1:1 + len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return row


def decoded(row: torch.Tensor) -> Tuple[str, bool]:
    """(phase, flag) of a row `encoded` made."""
    data = bytes(row.cpu().tolist())
    return data[1:].rstrip(b"\0").decode(errors="replace"), bool(data[0])


def flags_at_phase(phase: str, flag: bool, group: Optional[object], device: torch.device) -> List[bool]:
    """Collective of `group` (None: the default group), which takes tensors on `device`: every rank's `flag`, in rank
    order, once every rank has reached it; `RanksAtDifferentPhasesError` on every rank where a rank gave another
    `phase` than the others, `CollectiveBrokenError` naming `phase` where the gather failed (a rank gone)."""
    import torch.distributed as dist

    row = encoded(phase, flag).to(device)
    parts = [torch.empty_like(row) for _ in range(dist.get_world_size(group))]
    try:
        dist.all_gather(parts, row, group=group)
    except RuntimeError as err:  # (torch's DistBackendError among them)
        raise broken_collective(f"'{phase}'", dist.get_rank(), len(parts), err) from err
    reached = [decoded(part) for part in parts]
    if len({phase for phase, _ in reached}) > 1:
        raise RanksAtDifferentPhasesError(mismatch_message([phase for phase, _ in reached]))
    return [flag for _, flag in reached]


def broken_collective(where: str, rank: int, world_size: int, error: Exception) -> CollectiveBrokenError:
    """What rank `rank` of `world_size` raises where its collective at `where` (a phase in quotes, a gather's step)
    ended on `error` (gloo's or NCCL's words, which vary by run, kept whole)."""
    return CollectiveBrokenError(f"rank {rank} of {world_size} was at {where} when the other ranks were lost "
                                 f"({error}): another rank stopped (see its error) or waits in another collective")


def mismatch_message(phases: List[str]) -> str:
    """What ranks at `phases` (rank order) are told: each phase with the ranks at it, in the order first reached."""
    ranks: Dict[str, List[int]] = {}
    for rank, phase in enumerate(phases):
        ranks.setdefault(phase, []).append(rank)
    where = ", ".join(f"{'rank' if len(at) == 1 else 'ranks'} {', '.join(map(str, at))} at '{phase}'"
                      for phase, at in ranks.items())
    return (f"the ranks met in a collective from different places ({where}): a bug in t2t-mtl, which would have left "
            f"them waiting for each other until the process group's timeout; please report it with this message")
