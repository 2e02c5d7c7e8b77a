"""The resume contract of a registered sampler or loss weighting, checked before a run starts: what the class keeps
in its `state_dict()` survives a checkpoint (pickled, as `torch.save` writes it) and, loaded by `load_state_dict`
into a freshly built instance, makes it go on as the original does. A shipped class is tested for it; a class of
a user's module (`register_sampler`, `register_weighting`) would otherwise show it only in a resumed run's drift."""
from __future__ import annotations

import contextlib
import pickle
import traceback
from typing import Any, Callable, Dict, Iterator, List

import torch

from t2t_mtl.config_errors import ConfigError

#: draws compared after each of the check's updates (several of a sampler's blocks when they are small)
DRAWS = 64
#: what the check's message calls each stat's per-task values
_STAT_VALUES = {"trained": "examples", "val_loss": "loss", "val_score": "score"}


def check_sampler_resumes(build: Callable[[], Any], what: str) -> None:
    """Refuse (ConfigError naming `what`) a sampler built by `build` whose draws after a checkpoint round trip of
    its state differ from the original's: fed a step's stats as training feeds them (the per-task losses and examples
    trained, and the entropies or validation results where it declares `needs_entropy` / `needs_validation`), drawn
    from, saved and loaded into a new build, both are fed other such stats and must draw the same tasks. An error its
    code raises on the way is a ConfigError naming it and where it was raised."""
    fed = ", then ".join("{" + ", ".join(f"'{key}': {{task: {_STAT_VALUES.get(key, key)}}}" for key in update) + "}"
                         for update in _step_stats(build(), {}))
    with _named(what, f"fed {fed} as training feeds it after each step, and drawn from"):
        _check_sampler(build, what)


def _step_stats(sampler: Any, values: Dict[str, float]) -> List[Dict[str, Dict[str, float]]]:
    """The updates training makes after a step, each stat's value per task taken from `values`: the losses with the
    examples trained (4 × the value, rounded), then the entropies (`needs_entropy`), then the validation results
    (`needs_validation`)."""
    updates = [{"loss": values, "trained": {task: round(4 * value) for task, value in values.items()}}]
    if sampler.needs_entropy:
        updates.append({"entropy": {task: value / (1 + value) for task, value in values.items()}})
    if sampler.needs_validation:
        updates.append({"val_loss": values, "val_score": {task: 1 / (1 + value) for task, value in values.items()}})
    return updates


def _check_sampler(build: Callable[[], Any], what: str) -> None:
    original = build()
    losses = {task: 1.0 + i for i, task in enumerate(original.tasks)}
    for stats in _step_stats(original, losses):
        original.update(stats)
    for _ in range(3):
        original.next_task()
    resumed = build()
    _load(resumed, _round_trip(original.state_dict(), what), what)
    for updates in ([{}], _step_stats(original, {task: 1.0 / value for task, value in losses.items()})):
        for stats in updates:
            original.update(stats)
            resumed.update(stats)
        drawn, redrawn = _draws(original), _draws(resumed)
        if drawn != redrawn:
            raise ConfigError(f"{what} does not resume as it runs: loaded with its own state_dict(), a new sampler "
                              f"draws {redrawn[:8]} where the saved one draws {drawn[:8]}; keep everything its "
                              f"probabilities depend on in _extra_state() and restore it in _load_extra_state(state)")


def check_weighting_resumes(build: Callable[[], Any], what: str) -> None:
    """Refuse (ConfigError naming `what`) a loss weighting built by `build` whose loss after a checkpoint round trip
    of its state differs from the original's: called on a step's per-task losses (with stats {"kpi": ...}, as after
    a validation, where it declares `needs_validation`), saved and loaded into a new build, both are called on other
    losses with stats {} and must give the same loss. An error its code raises on the way is a ConfigError naming
    it and where it was raised."""
    fed = "{'kpi': {task: score}}, then {}" if build().needs_validation else "{}"
    with _named(what, f"called on {{task: scalar loss}} with stats {fed} as training calls it"):
        _check_weighting(build, what)


def _check_weighting(build: Callable[[], Any], what: str) -> None:
    original = build()
    tasks = original.task_names
    stats = {"kpi": {task: 1.0 / (2 + i) for i, task in enumerate(tasks)}} if original.needs_validation else {}
    original({task: torch.tensor(1.0 + i) for i, task in enumerate(tasks)}, epoch=0.0, stats=stats)
    resumed = build()
    _load(resumed, _round_trip(original.state_dict(), what), what)
    losses = {task: torch.tensor(2.0 / (1 + i)) for i, task in enumerate(tasks)}
    with torch.no_grad():
        loss, reloaded = original(losses, epoch=1.0, stats={}), resumed(losses, epoch=1.0, stats={})
    if not torch.equal(loss, reloaded):
        raise ConfigError(f"{what} does not resume as it runs: loaded with its own state_dict(), a new weighting gives "
                          f"the loss {float(reloaded):.6g} where the saved one gives {float(loss):.6g}; keep what it "
                          f"learns in parameters or buffers (register_buffer), or in get_extra_state() / "
                          f"set_extra_state(state)")


@contextlib.contextmanager
def _named(what: str, how: str) -> Iterator[None]:
    """Turn an error other than a ConfigError into one naming `what`, `how` it was used and where it raised."""
    try:
        yield
    except ConfigError:
        raise
    except Exception as error:
        frames = traceback.extract_tb(error.__traceback__)
        at = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
        raise ConfigError(f"{what}: {how} (the run's checks try its resume on placeholder tasks), it raised "
                          f"{type(error).__name__}: {error}{at}") from error


def _round_trip(state: Any, what: str) -> Any:
    """`state` as a checkpoint gives it back (pickled and unpickled)."""
    try:
        return pickle.loads(pickle.dumps(state))
    except Exception as error:
        raise ConfigError(f"{what}: its state_dict() cannot be saved in a checkpoint ({type(error).__name__}: "
                          f"{error}); keep plain values (numbers, strings, lists, dicts, arrays, tensors) in it"
                          ) from None


def _load(part: Any, state: Any, what: str) -> None:
    """`part.load_state_dict(state)`, a failure named as `what`'s."""
    try:
        part.load_state_dict(state)
    except Exception as error:
        raise ConfigError(f"{what}: load_state_dict cannot read back its own state_dict() ({type(error).__name__}: "
                          f"{error}), so a resumed run would stop there") from None


def _draws(sampler: Any) -> List[str]:
    return [sampler.next_task() for _ in range(DRAWS)]
