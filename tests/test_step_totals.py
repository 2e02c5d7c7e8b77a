"""StepTotals: a step's per-micro-batch figures summed and reduced into per-task means, counts and flags; a bad
micro-batch's loss poisoned on the device, and left out of the figures on every rank."""
import math

import pytest
import torch

from t2t_mtl.engine.step_totals import StepTotals


def losses(**values: float) -> dict:
    return {name: torch.tensor(value) for name, value in values.items()}


def test_figures_are_means_over_good_micro_batches_per_task():
    totals = StepTotals(["a", "b", "c"])
    totals.add_micro_batch(torch.tensor(5.0), losses(a=2.0, b=4.0), tokens=30, example_task_ids=torch.tensor([0, 1, 1]))
    totals.add_micro_batch(torch.tensor(1.5), losses(a=1.0), tokens=12, example_task_ids=torch.tensor([0, 0]))
    totals.set_drawn(7)
    totals.set_stop_requested(False)
    figures = totals.reduce()
    assert figures.task_loss == {"a": 1.5, "b": 4.0}  # c trained nothing: left out, not 0
    assert figures.loss == (3.0 + 1.0) / 2  # micro-batch means of their task losses, then the mean
    assert figures.weighted_loss == (5.0 + 1.5) / 2
    assert figures.good == 2 and figures.tokens == 42 and figures.drawn == 7.0
    assert figures.task_examples == {"a": 3, "b": 2}
    assert figures.stop_requested is False and figures.poisoned is False


def test_no_good_micro_batch_gives_nan_losses_and_keeps_the_draws_and_the_stop_request():
    totals = StepTotals(["a"])
    totals.set_drawn(4)
    totals.set_stop_requested(True)
    figures = totals.reduce()
    assert math.isnan(figures.loss) and math.isnan(figures.weighted_loss)
    assert figures.task_loss == {} and figures.task_examples == {} and figures.good == 0 and figures.tokens == 0
    assert figures.drawn == 4.0 and figures.stop_requested is True and figures.poisoned is False


@pytest.mark.parametrize("bad_loss,bad_tasks", [(math.nan, {"a": 1.0}), (math.inf, {"a": 1.0}),
                                                (0.0, {"a": 0.0, "b": -0.0})])
def test_a_bad_micro_batch_in_the_middle_of_a_step_is_poisoned_and_left_out(bad_loss, bad_tasks):
    # a non-finite weighted loss, or every task loss exactly zero (targets without tokens)
    totals = StepTotals(["a", "b"])
    weight = torch.tensor(2.0, requires_grad=True)
    first = totals.add_micro_batch(weight * 1.5, losses(a=1.5), tokens=10, example_task_ids=torch.tensor([0]))
    middle = totals.add_micro_batch(weight * bad_loss, losses(**bad_tasks), tokens=20,
                                    example_task_ids=torch.tensor([0, 1]))
    last = totals.add_micro_batch(weight * 2.5, losses(b=2.5), tokens=30, example_task_ids=torch.tensor([1, 1]))
    assert first.item() == 3.0 and last.item() == 5.0 and math.isnan(middle.item())
    first.backward()
    assert weight.grad.item() == 1.5  # a good micro-batch's gradient as it was
    middle.backward()
    assert math.isnan(weight.grad.item())
    totals.set_drawn(5)
    figures = totals.reduce()
    assert figures.poisoned is True and figures.good == 2
    assert figures.task_loss == {"a": 1.5, "b": 2.5} and figures.tokens == 40
    assert figures.task_examples == {"a": 1, "b": 2}
    assert figures.weighted_loss == (3.0 + 5.0) / 2 and figures.loss == (1.5 + 2.5) / 2


def test_a_weighting_giving_the_tasks_zero_weight_is_not_bad():
    # curriculum before a task's start epoch: the weighted loss is 0, the task's own loss is not
    totals = StepTotals(["a"])
    loss = totals.add_micro_batch(torch.tensor(0.0), losses(a=2.0), tokens=3, example_task_ids=torch.tensor([0]))
    assert loss.item() == 0.0
    assert totals.reduce().poisoned is False


def test_a_micro_batch_bad_on_another_rank_is_left_out_on_this_one(monkeypatch):
    # was: each micro-batch's bad flag was all-reduced before its backward (one collective per micro-batch); now
    # the step's rows are gathered once and a micro-batch bad on any rank is left out of every rank's sums
    this, other = StepTotals(["a", "b"]), StepTotals(["a", "b"])
    for totals, values in ((this, [1.0, 2.0, 3.0]), (other, [4.0, math.nan, 6.0])):
        for micro, value in enumerate(values):
            totals.add_micro_batch(torch.tensor(value), {"ab"[micro % 2]: torch.tensor(value)}, tokens=10 * (micro + 1),
                                   example_task_ids=torch.tensor([micro % 2]))
        totals.set_drawn(3)
    other.set_stop_requested(True)
    gathered = []

    def all_gather(parts, tensor, *args, **kwargs):  # a fake group of two ranks: this one is rank 0
        gathered.append(tensor)
        parts[0].copy_(tensor)
        parts[1].copy_(other._rows())

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *args: 2)
    monkeypatch.setattr(torch.distributed, "all_gather", all_gather)
    figures = this.reduce()
    assert len(gathered) == 1  # one collective for the step
    assert figures.poisoned is True and figures.good == 4  # micro-batch 2 left out on both ranks
    assert figures.task_loss == {"a": (1.0 + 3.0 + 4.0 + 6.0) / 4}
    assert figures.tokens == 2 * (10 + 30) and figures.task_examples == {"a": 4}
    assert figures.weighted_loss == figures.loss == 14.0 / 4
    assert figures.drawn == 6.0 and figures.stop_requested is True
