"""StepTotals: a step's per-micro-batch figures summed and reduced into per-task means, counts and flags."""
import math

import torch

from t2t_mtl.engine.step_totals import StepTotals


def test_figures_are_means_over_good_micro_batches_per_task():
    totals = StepTotals(["a", "b", "c"])
    totals.add_micro_batch({"a": 2.0, "b": 4.0}, weighted_loss=5.0, tokens=30, example_task_ids=torch.tensor([0, 1, 1]))
    totals.add_micro_batch({"a": 1.0}, weighted_loss=1.5, tokens=12, example_task_ids=torch.tensor([0, 0]))
    totals.set_drawn(7)
    totals.set_stop_requested(False)
    figures = totals.reduce()
    assert figures.task_loss == {"a": 1.5, "b": 4.0}  # c trained nothing: left out, not 0
    assert figures.loss == (3.0 + 1.0) / 2  # micro-batch means of their task losses, then the mean
    assert figures.weighted_loss == (5.0 + 1.5) / 2
    assert figures.good == 2 and figures.tokens == 42 and figures.drawn == 7.0
    assert figures.task_examples == {"a": 3, "b": 2}
    assert figures.stop_requested is False


def test_no_good_micro_batch_gives_nan_losses_and_keeps_the_draws_and_the_stop_request():
    totals = StepTotals(["a"])
    totals.set_drawn(4)
    totals.set_stop_requested(True)
    figures = totals.reduce()
    assert math.isnan(figures.loss) and math.isnan(figures.weighted_loss)
    assert figures.task_loss == {} and figures.task_examples == {} and figures.good == 0 and figures.tokens == 0
    assert figures.drawn == 4.0 and figures.stop_requested is True
