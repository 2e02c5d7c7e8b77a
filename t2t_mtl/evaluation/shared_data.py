"""Evaluated tasks, not trained themselves, that read the data a trained task trains on: a user's `my_rte` reading
glue/rte trains the model on the dataset whose validation rows the built-in held-out `glue_rte` scores, so that score
is not a held-out one. Found by where each task's rows come from (`Source.read_from`'s records, `DataRead.shares`: a
hub dataset by path and config, or the data_files or data_dir of it a task names; a local file or folder by its
resolved path; a folder, or a hub dataset read whole, holding the files in it), not by name. Likewise two evaluated
tasks reading the same data (`repeated_data_warnings`), which the decaScore and macro average count twice."""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence

if TYPE_CHECKING:
    from task_registry import Task
    from task_registry.data_reads import DataRead

#: the split a trained task trains on
TRAIN_SPLIT = "train"


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
            split = "" if shared.whole_dataset else f" (its {reads[shared]} split)"
            warnings.append(f"evaluated task {name!r} reads {shared.describe()}{split}, which trained task {other!r} "
                            f"trains on: the model has seen that data, so its score is not a held-out one; {remedy}")
    return warnings


def repeated_data_warnings(evaluated: Sequence[str], remedy: str) -> List[str]:
    """A warning for each task of `evaluated` (registered) that reads, for any of its splits, what an earlier one of
    them reads, naming both tasks and what they share, ending in `remedy` (what to do, worded by the caller): a
    user's `my_rte` and the built-in `glue_rte` of one held-out cluster score RTE twice, each counted in the decaScore
    and macro average."""
    import task_registry

    registered = set(task_registry.list_tasks())
    earlier: Dict[str, Dict[DataRead, str]] = {}
    warnings = []
    for name in dict.fromkeys(evaluated):
        if name not in registered:
            continue
        reads = _reads(task_registry.get_task(name))
        for other, other_reads in earlier.items():
            shared = next(filter(None, (_read_alike(what, other_reads) for what in reads)), None)
            if shared is not None:
                warnings.append(f"evaluated tasks {other!r} and {name!r} both read {shared.describe()}: the decaScore "
                                f"and macro average count that data once for each; {remedy}")
                break
        earlier[name] = reads
    return warnings


def _reads(task: Task) -> Dict[DataRead, str]:
    """What each split of `task` reads (`Source.read_from`), mapped to the first of its splits that reads it."""
    reads: Dict[DataRead, str] = {}
    for split in task.splits:
        for what in task.source.read_from(split):
            reads.setdefault(what, split)
    return reads


def _read_alike(what: DataRead, reads: Mapping[DataRead, str]) -> Optional[DataRead]:
    """The one of `reads` that reads the data `what` reads (`DataRead.shares`), `what` itself first; None where
    there is none."""
    alike = [read for read in reads if read.shares(what)]
    return next((read for read in alike if read == what), alike[0] if alike else None)
