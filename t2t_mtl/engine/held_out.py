"""The held-out checks on the tasks a run would train on, shared by the engine and `t2t-mtl affinity`.

Each check raises a typed `ConfigError` that carries the offending names, so a front end can word its own
fix (`data.*` keys in a config, `--set` flags on a command line) without repeating the logic.
"""
from __future__ import annotations

from typing import Iterable, List, Mapping, Sequence

from t2t_mtl.config import ConfigError


class HeldOutClusterTaskError(ConfigError):
    """A task named for training sits in one of `data.held_out_clusters`."""

    def __init__(self, message: str, *, task: str, cluster: str, held_out_clusters: List[str]) -> None:
        super().__init__(message)
        self.task, self.cluster, self.held_out_clusters = task, cluster, held_out_clusters


class UnapprovedHeldOutTaskError(ConfigError):
    """Tasks flagged `held_out` would be trained although `data.train_held_out` does not name them."""

    def __init__(self, message: str, *, tasks: List[str], clusters: List[str]) -> None:
        super().__init__(message)
        self.tasks, self.clusters = tasks, clusters


def refuse_unknown_held_out_clusters(held_out_clusters: Iterable[str], note: str = "",
                                     where: str = "data.held_out_clusters") -> None:
    """Raise a ConfigError naming `where` (the config key, or the option that gave them) when one of
    `held_out_clusters` has no registered task (a typo would hold nothing out, so the run would train on its
    zero-shot targets), with the closest registered cluster and `note` (e.g. that YAML tasks need data.tasks_dir)
    at the end."""
    import task_registry
    from task_registry.errors import close_matches

    clusters = sorted({task_registry.get_task(n).cluster for n in task_registry.list_tasks()})
    for cluster in held_out_clusters:
        if cluster not in clusters:
            close = close_matches(cluster, clusters, n=1, cutoff=0.6, substrings=False)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"{where}: no registered task is in cluster {cluster!r}; {hint}"
                              f"registered clusters: {', '.join(clusters)}{note}")


def refuse_held_out_cluster(name: str, held_out_clusters: Iterable[str]) -> None:
    """Raise `HeldOutClusterTaskError` when registered task `name` is in a held-out cluster."""
    import task_registry

    held_out = sorted(held_out_clusters)
    cluster = task_registry.get_task(name).cluster
    if cluster in held_out:
        raise HeldOutClusterTaskError(
            f"data.tasks names {name!r}, whose cluster {cluster!r} is held out (never trained on: "
            f"data.held_out_clusters {held_out}); drop {name!r} from data.tasks or {cluster!r} from "
            f"data.held_out_clusters", task=name, cluster=cluster, held_out_clusters=held_out)


def refuse_unapproved_held_out(names: Sequence[str], train_held_out: Iterable[str], source: str) -> None:
    """Raise `UnapprovedHeldOutTaskError` when any of `names` is flagged `held_out` and not in `train_held_out`.

    `source` names where the tasks came from (`data.tasks`, `data.mixture 'x'`) for the message.
    """
    import task_registry

    allowed = set(train_held_out)
    flagged = [t for t in names if task_registry.get_task(t).held_out and t not in allowed]
    if not flagged:
        return
    clusters = sorted({task_registry.get_task(t).cluster for t in flagged})
    removable = " or remove them from data.tasks" if source == "data.tasks" else ""
    raise UnapprovedHeldOutTaskError(
        f"{source} would train on task(s) {flagged}, flagged held_out (kept for zero-shot evaluation): set "
        f"data.train_held_out: {flagged} to train on them deliberately, or hold out their cluster(s) "
        f"{clusters} in data.held_out_clusters{removable}", tasks=flagged, clusters=clusters)


def refuse_untrained_held_out(train_held_out: Sequence[str], rates: Mapping[str, float], source: str,
                              held_out_clusters: Sequence[str]) -> None:
    """ConfigError naming `data.train_held_out`'s tasks that the run does not train (not among `rates`, the tasks
    of `source`): naming one there trains nothing, so a misspelt or forgotten task would pass unnoticed."""
    import task_registry

    idle = [name for name in train_held_out if name not in rates]
    if not idle:
        return
    held = sorted({task_registry.get_task(n).cluster for n in idle} & set(held_out_clusters))
    why = f"; data.held_out_clusters holds out {held}" if held else ""
    it = "it" if len(idle) == 1 else "them"
    raise ConfigError(f"data.train_held_out names {idle}, which this run does not train ({source} does not include "
                      f"{it}{why}): add {it} to data.tasks to train on {it}, or drop {it} from data.train_held_out")
