"""Tables of a sampler's probabilities over epochs (for `t2t-mtl mixture show` and logs), and the tasks a run's
draws would starve."""
from __future__ import annotations

from typing import Any, Mapping

from t2t_mtl.sampling.errors import SamplingError
from t2t_mtl.sampling.factory import build_sampler


def rates_over_epochs(config: Mapping[str, Any], task_sizes: Mapping[str, int], epochs: int = 1, *,
                      seed: int = 0, draws: int = 0) -> dict[str, Any]:
    """Probabilities of every task at epochs 0..epochs-1, plus realised shares of `draws` draws per epoch.

    Returns {"tasks": [...], "epochs": [...], "probabilities": {task: [p per epoch]},
    "realised": {task: [share per epoch]} (empty lists when draws is 0)}.
    """
    if epochs < 1:
        raise SamplingError(f"epochs must be >= 1, got {epochs}")
    sampler = build_sampler(config, task_sizes, seed=seed)
    probabilities = {t: [] for t in sampler.tasks}
    realised = {t: [] for t in sampler.tasks}
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for task, p in sampler.probabilities().items():
            probabilities[task].append(p)
        if draws:
            drawn = sampler.sample_tasks(draws)
            counts = {t: 0 for t in sampler.tasks}
            for task in drawn:
                counts[task] += 1
            for task in sampler.tasks:
                realised[task].append(counts[task] / draws)
    return {"tasks": list(sampler.tasks), "epochs": list(range(epochs)), "probabilities": probabilities,
            "realised": realised}


def starved_tasks(probabilities: Mapping[str, float], draws: int) -> list[str]:
    """The tasks expected to be drawn less than once in `draws` draws at `probabilities` (p · draws < 1): a run
    would most likely never train on them."""
    return [task for task, p in probabilities.items() if p * draws < 1]
