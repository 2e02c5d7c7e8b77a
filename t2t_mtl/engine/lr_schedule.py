"""The run's learning-rate schedule: warmup, then constant, linear or cosine decay (`training.schedule`), handed to
`deepspeed.initialize` as its `lr_scheduler`, and restored from a checkpoint by its step alone."""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Dict, List, Optional

import torch

from t2t_mtl.config import Config, ConfigError


def lr_factor(step: int, schedule: str, warmup: int, steps: int) -> float:
    """The multiple of `training.lr` applied at optimizer step `step` (0-based): linear warmup from 0 over
    `warmup` steps, then constant, linear decay towards 0 at `steps`, or half-cosine decay to 0 at `steps`
    (the formulas of transformers' get_{constant,linear,cosine}_schedule_with_warmup)."""
    if step < warmup:
        return step / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))


class RunSchedule(torch.optim.lr_scheduler.LambdaLR):
    """The run's `lr_factor` schedule. A checkpoint restores only its step: the lrs follow the resumed run's own
    training.lr / schedule / warmup / steps (LambdaLR restored the saved base lrs, so a resume with another
    training.lr kept training at the old one)."""

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore the step only (also from a DeepSpeed warmup scheduler's state) and `apply` this run's lrs."""
        if "last_epoch" in state_dict:
            self.last_epoch = state_dict["last_epoch"]
        else:  # a checkpoint of DeepSpeed's own warmup schedulers (runs before 2026-12-03): k steps taken = k - 1
            self.last_epoch = state_dict["last_batch_iteration"] + 1
        self.apply()

    def apply(self) -> None:
        """Set the optimizer's lrs to the schedule's at the current step (the lrs of the next optimizer step)."""
        self._last_lr = [base * factor(self.last_epoch) for base, factor in zip(self.base_lrs, self.lr_lambdas)]
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr


def extra_base_lrs(engine: Any) -> Optional[List[float]]:
    """The base lrs of `engine`'s torch scheduler of `deepspeed.extra` (None for the run's own `RunSchedule`, a
    DeepSpeed scheduler or none): taken before a checkpoint's load, which restores the saved ones."""
    schedule = getattr(engine, "lr_scheduler", None)
    if isinstance(schedule, torch.optim.lr_scheduler.LRScheduler) and not isinstance(schedule, RunSchedule):
        return list(schedule.base_lrs)
    return None


def rebase_extra_schedule(engine: Any, base_lrs: Optional[List[float]]) -> None:
    """After a checkpoint's load: give `engine`'s torch scheduler of `deepspeed.extra` the run's own base lrs back
    (`extra_base_lrs`, taken before the load; the load restored the saved ones, so a resume with another
    training.lr kept the old), the optimizer's lrs scaled with them from the restored ones: the lrs of the resumed
    step on the new base (exact for the schedules proportional to their base lr: StepLR, ExponentialLR,
    LambdaLR, ...)."""
    schedule = getattr(engine, "lr_scheduler", None)
    if base_lrs is None or list(schedule.base_lrs) == base_lrs:
        return
    for group, new, saved in zip(schedule.optimizer.param_groups, base_lrs, schedule.base_lrs):
        group["lr"] = group["lr"] * new / saved if saved else new
    schedule.base_lrs = list(base_lrs)
    schedule._last_lr = [group["lr"] for group in schedule.optimizer.param_groups]


def lr_scheduler(cfg: Config) -> Optional[Callable[[Any], Any]]:
    """The schedule of `training.schedule` / `warmup` as DeepSpeed's `lr_scheduler` argument (a callable on the
    optimizer), or None where the DeepSpeed config names its own scheduler (a whole `deepspeed.config` JSON,
    `deepspeed.extra.scheduler`). DeepSpeed's warmup schedulers cannot express it: WarmupDecayLR decays from
    the warmup's start lr (without warmup the lr stayed constant), every warmup lasted at least 2 steps and the
    first step ran at the start lr (lr 0 with cosine even without warmup)."""
    if cfg.deepspeed.config is not None:
        return None
    if "scheduler" in cfg.deepspeed.extra:
        scheduler = cfg.deepspeed.extra["scheduler"]
        if not (isinstance(scheduler, dict) and scheduler.get("type")):  # DeepSpeed would run without any
            raise ConfigError(f"deepspeed.extra.scheduler replaces training.schedule by one of DeepSpeed's schedulers: "
                              f"give its type and params (e.g. {{type: WarmupDecayLR, params: {{...}}}}), or remove "
                              f"it; got {scheduler!r}")
        return None
    t = cfg.training
    factor = functools.partial(lr_factor, schedule=t.schedule, warmup=t.warmup, steps=t.steps)
    return lambda optimizer: RunSchedule(optimizer, factor)
