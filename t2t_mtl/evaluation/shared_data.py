"""Evaluated tasks, not trained themselves, that read the data a trained task trains on: a user's `my_rte` reading
glue/rte trains the model on the dataset whose validation rows the built-in held-out `glue_rte` scores, so that score
is not a held-out one. Found by where each task's rows come from (`Source.read_from`: a hub dataset by path and config,
or the data_files of it a task names; a file by its absolute path), not by name."""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence

if TYPE_CHECKING:
    from task_registry import Task

#: the split a trained task trains on
TRAIN_SPLIT = "train"
#: how `Source.read_from` words a hub dataset read whole, and a data file of it a task names
HUB_DATASET, OF_HUB_DATASET = "hub dataset ", " of hub dataset "


def shared_data_warnings(evaluated: Sequence[str], trained: Sequence[str], remedy: str) -> List[str]:
    """A warning for each task of `evaluated` (registered, not among `trained`) that reads, for any of its splits,
    what a registered task of `trained` reads for its train split, naming both tasks, what they share and (for a
    file) the evaluated task's split reading it, ending in `remedy` (what to do, worded by the caller)."""
    import task_registry

    registered = set(task_registry.list_tasks())
    training = {name: task_registry.get_task(name).source.read_from(TRAIN_SPLIT)
                for name in trained if name in registered}
    warnings = []
    for name in evaluated:
        if name in training or name not in registered:
            continue
        reads = _reads(task_registry.get_task(name))
        for other, sources in training.items():
            shared = next(filter(None, (_read_alike(what, reads) for what in sources)), None)
            if shared is None:
                continue
            split = "" if shared.startswith(HUB_DATASET) else f" (its {reads[shared]} split)"
            warnings.append(f"evaluated task {name!r} reads {shared}{split}, which trained task {other!r} trains on: "
                            f"the model has seen that data, so its score is not a held-out one; {remedy}")
    return warnings


def _reads(task: Task) -> Dict[str, str]:
    """What each split of `task` reads (`Source.read_from`), mapped to the first of its splits that reads it."""
    reads: Dict[str, str] = {}
    for split in task.splits:
        for what in task.source.read_from(split):
            reads.setdefault(what, split)
    return reads


def _read_alike(what: str, reads: Mapping[str, str]) -> Optional[str]:
    """The one of `reads` that reads the data `what` names: `what` itself, or, where one of the two is a hub dataset
    read whole, a data file of that dataset (either way round); None where there is none."""
    if what in reads:
        return what
    if what.startswith(HUB_DATASET):
        part = OF_HUB_DATASET + what[len(HUB_DATASET):]
        return next((read for read in reads if read.endswith(part)), None)
    whole = HUB_DATASET + what.partition(OF_HUB_DATASET)[2] if OF_HUB_DATASET in what else None
    return whole if whole in reads else None
