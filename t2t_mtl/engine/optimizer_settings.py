"""The optimizer settings a resumed run steps with: its own. DeepSpeed's load of a checkpoint gives the optimizer the
saved param groups along with its state, so a resume with another `training.betas` or `weight_decay` (or another
param of a `deepspeed.extra` optimizer), which its warning says apply from the resumed step, kept the saved ones;
`load_checkpoint` puts the run's own back (the lrs are the schedule's: `lr_schedule.RunSchedule`)."""
from __future__ import annotations

from typing import Any, Dict, List

#: param-group keys the lr schedule sets, or the momentum a cyclic one moves (`cycle_momentum`)
_SCHEDULED = frozenset({"lr", "initial_lr"})
_CYCLED = frozenset({"betas", "momentum"})


def optimizer_settings(engine: Any) -> List[Dict[str, Any]]:
    """The settings of each param group of `engine`'s optimizer (DeepSpeed's `basic_optimizer`, the one that steps):
    the keys of its constructor's `defaults` (betas, eps, weight_decay, ...) but the lr, which the schedule sets,
    and the momentum of a schedule cycling it (DeepSpeed's OneCycle, torch's OneCycleLR / CyclicLR)."""
    optimizer = getattr(engine, "basic_optimizer", None)
    if optimizer is None:
        return []
    keys = set(getattr(optimizer, "defaults", {})) - _SCHEDULED
    if getattr(getattr(engine, "lr_scheduler", None), "cycle_momentum", False):
        keys -= _CYCLED
    return [{key: group[key] for key in keys if key in group} for group in optimizer.param_groups]


def restore_optimizer_settings(engine: Any, settings: List[Dict[str, Any]]) -> None:
    """Give each param group of `engine`'s optimizer its `settings` back (`optimizer_settings`, taken before a
    checkpoint's load replaced them with the saved ones); its state (moments, steps) stays the checkpoint's."""
    optimizer = getattr(engine, "basic_optimizer", None)
    for group, own in zip(optimizer.param_groups if optimizer is not None else [], settings):
        group.update(own)
