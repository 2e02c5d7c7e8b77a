"""Built-in tasks and mixtures, registered when this package is imported (`load_builtin_tasks()`).

Tasks: the 19 real datasets of the shared data folder (`real.py`, hub ids resolved offline through the
data-dir override), the 15 procedural tasks (`procedural.py`) and span corruption over AG News texts
(`denoising.py`). Mixtures:

- ``procedural``: every procedural task, equal rates; ``procedural_train``: the held-in clusters only;
  ``procedural_held_out``: the held-out ``comparison`` cluster (zero-shot evaluation);
  `register_procedural_tasks(num_rows, seed)` swaps in other sizes or another seed;
- ``real``: every real task, equal rates; ``real_train``: the held-in real tasks that have a train split,
  examples-proportional with T5's cap of 2^14 rows; ``t0_held_out``: the T0 held-out real tasks;
  ``real_train_denoising``: ``real_train`` plus the denoising tasks, rated the same way.
"""
from __future__ import annotations

from typing import List, Mapping, Optional, Sequence

from ..mixture import Mixture, rate_num_examples
from ..registry import get_mixture, get_task, register_mixture, register_task
from ..errors import UnknownMixtureError, UnknownTaskError
from ..task import Task
from .procedural import HELD_OUT_CLUSTERS as PROCEDURAL_HELD_OUT_CLUSTERS
from .denoising import denoising_tasks
from .procedural import procedural_tasks
from .real import HELD_OUT_CLUSTERS as REAL_HELD_OUT_CLUSTERS
from .real import real_tasks

T5_EXAMPLES_CAP = 2 ** 14


def _register_missing_task(task: Task) -> None:
    try:
        get_task(task.name)
    except UnknownTaskError:
        register_task(task)


def _register_missing_mixture(mixture: Mixture) -> None:
    try:
        get_mixture(mixture.name)
    except UnknownMixtureError:
        register_mixture(mixture)


def builtin_mixtures(real: Sequence[Task], procedural: Sequence[Task], denoising: Sequence[Task] = ()
                     ) -> List[Mixture]:
    """The built-in mixtures over the given real, procedural and denoising tasks (see the module docstring)."""
    real_train = [t.name for t in real if not t.held_out and "train" in t.splits]
    return [
        Mixture("procedural", [t.name for t in procedural], description="all procedural tasks"),
        Mixture("procedural_train", [t.name for t in procedural if not t.held_out],
                description=f"procedural tasks outside the held-out clusters {list(PROCEDURAL_HELD_OUT_CLUSTERS)}"),
        Mixture("procedural_held_out", [t.name for t in procedural if t.held_out],
                description="the held-out procedural cluster(s), for zero-shot evaluation"),
        Mixture("real", [t.name for t in real], description="all real tasks"),
        Mixture("real_train", real_train, default_rate=rate_num_examples(maximum=T5_EXAMPLES_CAP),
                description="held-in real tasks with a train split, examples-proportional (cap 2^14)"),
        Mixture("real_train_denoising", real_train + [t.name for t in denoising],
                default_rate=rate_num_examples(maximum=T5_EXAMPLES_CAP),
                description="real_train plus span corruption, examples-proportional (cap 2^14)"),
        Mixture("t0_held_out", [t.name for t in real if t.held_out],
                description=f"the T0 held-out clusters {list(REAL_HELD_OUT_CLUSTERS)}"),
    ]


def register_procedural_tasks(num_rows: Optional[Mapping[str, int]] = None, seed: int = 0) -> List[str]:
    """Re-register the procedural tasks with `num_rows` per split and `seed` (replacing the defaults).

    The mixtures refer to tasks by name, so they pick the new tasks up. Returns the task names.
    """
    tasks = procedural_tasks(num_rows, seed)
    for task in tasks:
        register_task(task, overwrite=True)
    return [task.name for task in tasks]


def register_builtin_tasks() -> None:
    """Register every built-in task and mixture whose name is still free (idempotent)."""
    real, procedural, denoising = real_tasks(), procedural_tasks(), denoising_tasks()
    for task in real + procedural + denoising:
        _register_missing_task(task)
    for mixture in builtin_mixtures(real, procedural, denoising):
        _register_missing_mixture(mixture)


register_builtin_tasks()
