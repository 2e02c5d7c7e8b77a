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


def test_a_micro_batch_with_some_task_losses_zero_is_not_bad():
    # a mixed micro-batch: one task's loss exactly zero (its targets fitted), another's not; bad needs every one zero
    totals = StepTotals(["a", "b"])
    loss = totals.add_micro_batch(torch.tensor(2.0), losses(a=0.0, b=2.0), tokens=4,
                                  example_task_ids=torch.tensor([0, 1]))
    assert loss.item() == 2.0
    figures = totals.reduce()
    assert figures.poisoned is False and figures.good == 1 and figures.task_loss == {"a": 0.0, "b": 2.0}


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


def _random_micro_batches(rng, names, count):
    """(weighted loss, {task: loss}, tokens, example task ids) of `count` micro-batches, a few of them bad."""
    out = []
    for _ in range(count):
        tasks = sorted(rng.sample(names, rng.randint(1, len(names))), key=names.index)
        task_losses = {t: rng.choice([0.0, rng.uniform(0.01, 9.0)]) if rng.random() < 0.2 else rng.uniform(0.01, 9.0)
                       for t in tasks}
        weighted = rng.choice([math.nan, math.inf, rng.uniform(0.0, 20.0)]) if rng.random() < 0.15 else \
            rng.uniform(0.0, 20.0)
        ids = [names.index(rng.choice(tasks)) for _ in range(rng.randint(1, 9))]
        out.append((weighted, task_losses, rng.randint(1, 400), ids))
    return out


@pytest.mark.parametrize("seed", range(12))
def test_figures_of_random_steps_equal_a_python_reference_bit_for_bit(seed, monkeypatch):
    # the figures are built in Python floats (not a tensor's item writes): pinned against sums taken in the
    # documented order (each rank's good micro-batches in order, then the ranks in rank order), over float32 losses
    import random

    rng = random.Random(seed)
    names = ["a", "b", "c", "d", "e"]
    count = rng.randint(1, 4)  # micro-batches a step, on every rank
    ranks = [_random_micro_batches(rng, names, count) for _ in range(rng.randint(1, 3))]
    per_rank = []
    for micro_batches in ranks:
        totals = StepTotals(names)
        for weighted, task_losses, tokens, ids in micro_batches:
            totals.add_micro_batch(torch.tensor(weighted), losses(**task_losses), tokens, torch.tensor(ids))
        totals.set_drawn(sum(len(ids) for *_, ids in micro_batches))
        per_rank.append(totals)
    if len(per_rank) > 1:  # a fake group: this process is rank 0
        def all_gather(parts, tensor, *args, **kwargs):
            for part, totals in zip(parts, per_rank):
                part.copy_(totals._rows())
        monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.distributed, "get_world_size", lambda *args: len(per_rank))
        monkeypatch.setattr(torch.distributed, "all_gather", all_gather)
    figures = per_rank[0].reduce()

    as32 = [[(float(torch.tensor(w, dtype=torch.float32)), {t: float(torch.tensor(v, dtype=torch.float32))
                                                             for t, v in tl.items()}, n, ids)
             for w, tl, n, ids in micro_batches] for micro_batches in ranks]
    bad = [any(not math.isfinite(mbs[k][0]) or not any(mbs[k][1].values()) for mbs in as32) for k in range(count)]
    good = [[mb for k, mb in enumerate(mbs) if not bad[k]] for mbs in as32]

    def summed(value):  # each rank's good micro-batches in order, then the ranks' sums in rank order
        total = 0.0
        for mbs in good:
            own = 0.0
            for mb in mbs:
                own += value(mb)
            total += own
        return total

    every = [mb for mbs in good for mb in mbs]
    assert figures.poisoned is any(bad)
    assert figures.good == len(every)
    assert figures.task_loss == {t: summed(lambda mb: mb[1].get(t, 0.0)) / sum(t in mb[1] for mb in every)
                                 for t in names if any(t in mb[1] for mb in every)}
    if every:
        assert figures.loss == summed(lambda mb: sum(mb[1].values()) / len(mb[1])) / len(every)
        assert figures.weighted_loss == summed(lambda mb: mb[0]) / len(every)
    else:
        assert math.isnan(figures.loss) and math.isnan(figures.weighted_loss)
    assert figures.tokens == sum(mb[2] for mb in every)
    assert figures.task_examples == {t: n for t in names if (n := sum(mb[3].count(names.index(t)) for mb in every))}
    assert figures.drawn == sum(len(ids) for mbs in ranks for *_, ids in mbs)
