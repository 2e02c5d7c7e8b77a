"""Determinism, resume from state_dict, distributed agreement, and per-task row streams."""
from __future__ import annotations

import io
import itertools
import json
import zlib

import numpy as np
import pytest
import torch

from t2t_mtl.sampling import STRATEGIES, EmptyTaskError, SamplingError, TaskStreams, build_sampler
from t2t_mtl.sampling.streams import resharded_state

SIZES = {"a": 5000, "b": 700, "c": 90, "d": 3}
CONFIGS = {
    "uniform": {},
    "round_robin": {},
    "proportional": {"cap": 1000},
    "temperature": {"alpha": 2.0},
    "explicit": {"rates": {"a": 1, "b": 2, "c": 3, "d": 4}},
    "annealed": {"epochs": 4},
    "dynamic_temperature": {"warmup_epochs": 2},
    "uncertainty": {"pool_per_task": 2},
    "uncertainty_ema": {"alpha": 2.0, "lam": 0.5},
    "bandit_softmax": {"tau": 0.1},
    "bandit_thompson": {},
    "worst_task": {"tau": 0.5, "floor": 0.01},
}
STATS = [{"entropy": {"a": 0.3, "b": 0.9}, "val_score": {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4},
          "val_loss": {"a": 2.0, "b": 1.0, "c": 3.0, "d": 1.5}},
         {"entropy": {"c": 0.1}, "val_score": {"a": 0.3, "b": 0.1, "c": 0.3, "d": 0.5},
          "val_loss": {"a": 1.0, "b": 1.0, "c": 2.0, "d": 1.6}}]


def test_every_strategy_is_covered():
    assert set(CONFIGS) == set(STRATEGIES)


def drive(sampler, steps):
    """A fixed interleaving of homogeneous draws, mixed draws, epochs and stats."""
    out = []
    for step in range(steps):
        out.append(sampler.next_task())
        if step % 7 == 0:
            out.extend(sampler.sample_tasks(13))
        if step % 97 == 50:
            sampler.update(STATS[(step // 97) % 2])
        if step % 60 == 59:  # fractional epochs, as the engine sets them; schedules move at whole epochs
            sampler.set_epoch(sampler.epoch + 0.35)
    return out


@pytest.mark.parametrize("strategy", sorted(CONFIGS))
def test_resume_continues_identically(strategy):
    config = {"strategy": strategy, "block_size": 256, **CONFIGS[strategy]}
    reference = build_sampler(config, SIZES, seed=11)
    drive(reference, 321)
    state = reference.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)  # plain Python types: loads with torch's weights_only unpickler and as JSON
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == state
    state = json.loads(json.dumps(state))
    expected = drive(reference, 700)

    resumed = build_sampler(config, SIZES, seed=999)  # the seed comes back from the state
    resumed.load_state_dict(state)
    assert drive(resumed, 700) == expected
    assert resumed.drawn() == reference.drawn()
    assert resumed.probabilities() == reference.probabilities()


@pytest.mark.parametrize("strategy", sorted(CONFIGS))
def test_same_seed_same_sequence_different_seed_differs(strategy):
    config = {"strategy": strategy, **CONFIGS[strategy]}
    first = drive(build_sampler(config, SIZES, seed=3), 300)
    assert drive(build_sampler(config, SIZES, seed=3), 300) == first
    if strategy != "worst_task":  # its distribution can be nearly deterministic
        assert drive(build_sampler(config, SIZES, seed=4), 300) != first


def test_ranks_agree_on_homogeneous_tasks_and_split_mixed_batches():
    config = {"strategy": "temperature", "alpha": 2.0}
    ranks = [build_sampler(config, SIZES, seed=5, rank=r, world_size=3) for r in range(3)]
    single = build_sampler(config, SIZES, seed=5)
    for _ in range(50):
        tasks = {s.next_task() for s in ranks}
        assert len(tasks) == 1 and tasks == {single.next_task()}
    shares = [s.sample_tasks(8) for s in ranks]
    assert sum(shares, []) == single.sample_tasks(24)  # the global batch, split by rank
    assert len({tuple(s) for s in shares}) > 1
    # drawn() counts the global draws, the same on every rank (a checkpoint saves rank 0's; the ranks compare them)
    assert all(s.drawn() == single.drawn() for s in ranks)


def test_load_state_dict_refuses_another_strategy_or_tasks():
    state = build_sampler({"strategy": "uniform"}, SIZES, seed=0).state_dict()
    with pytest.raises(SamplingError, match="strategy"):
        build_sampler({"strategy": "temperature"}, SIZES, seed=0).load_state_dict(state)
    with pytest.raises(SamplingError, match="tasks"):
        build_sampler({"strategy": "uniform"}, {"a": 1}, seed=0).load_state_dict(state)


@pytest.mark.parametrize("strategy, was, now", [("bandit_softmax", "val_score", "loss"),
                                                 ("bandit_thompson", "val_score", "val_loss"),
                                                 ("worst_task", "val_loss", "loss")])
def test_a_resume_with_another_feedback_metric_starts_its_baselines_anew(strategy, was, now):
    # was: the first value of the new metric was compared with the last of the old one (a bandit rewarded every task
    # by e.g. its exact match minus its loss; worst_task divided a training loss by a first validation loss)
    sizes = {"a": 10, "b": 10}
    first = build_sampler({"strategy": strategy, "metric": was}, sizes, seed=0)
    first.update({was: {"a": 0.5, "b": 0.25}})
    first.update({was: {"a": 0.75, "b": 0.125}})
    resumed = build_sampler({"strategy": strategy, "metric": now}, sizes, seed=0)
    resumed.load_state_dict(first.state_dict())
    fresh = build_sampler({"strategy": strategy, "metric": now}, sizes, seed=0)
    for sampler in (resumed, fresh):
        sampler.update({now: {"a": 2.0, "b": 3.0}})
    if strategy == "worst_task":  # its losses are all its state: it goes on as a run started in the new metric
        assert resumed.probabilities() == fresh.probabilities()
    else:  # the first new values are baselines, no rewards: the estimates stay the saved ones
        assert resumed.state_dict()["extra"]["last_scores"] == {"a": 2.0, "b": 3.0}
        estimates = ("q", "alpha", "beta")
        assert [resumed.state_dict()["extra"].get(k) for k in estimates] == \
            [first.state_dict()["extra"].get(k) for k in estimates]


# ----- TaskStreams -----
def test_streams_ranks_disjoint_and_cover_each_epoch():
    sizes = {"x": 101, "y": 10}
    streams = [TaskStreams(sizes, seed=1, rank=r, world_size=3) for r in range(3)]
    first_epoch = [s.next_indices("x", 34) for s in streams]  # ⌈101 / 3⌉ each: the order padded by 1 row
    flat = sum(first_epoch, [])
    order = streams[0].permutation("x", 0).tolist()
    assert sorted(flat) == sorted(list(range(101)) + order[:1])  # complete, one row repeated
    assert all(s.epochs()["x"] == 1 for s in streams)
    second = streams[0].next_indices("x", 34)
    assert sorted(second) == sorted(streams[0].permutation("x", 1)[0::3].tolist())
    assert second != first_epoch[0]  # reshuffled
    assert streams[0].seen() == {"x": 68, "y": 0}


@pytest.mark.parametrize("size", [3, 5, 7, 10])
def test_ranks_stay_in_one_epoch_and_never_draw_the_same_row_at_once(size):
    # was: rank r took every W-th row of the order, so with W not dividing the size rank 1's share was shorter,
    # it ran into later epochs (9 epochs to rank 0's 4 after 9 draws of a 3-row task) and drew the row rank 0
    # was drawing at the same step (4 of those 9 steps)
    streams = [TaskStreams({"t": size}, seed=0, rank=r, world_size=2) for r in range(2)]
    per_epoch = -(-size // 2)
    for epoch in range(6):
        drawn = [[s.next_indices("t", 1)[0] for s in streams] for _ in range(per_epoch)]
        assert all(a != b for a, b in drawn)
        assert {i for step in drawn for i in step} == set(range(size))  # every row, every epoch
        assert [s.epochs()["t"] for s in streams] == [epoch + 1, epoch + 1]


def _order(task: str, n: int, seed: int, epoch: int) -> list:
    """Task `task`'s global order in `epoch`, as the module docstring defines it."""
    return np.random.default_rng([seed, zlib.crc32(task.encode()), epoch]).permutation(n).tolist()


def test_a_resume_on_one_rank_trains_what_two_ranks_left_of_their_epochs_first():
    # was: every task restarted at the beginning of its next epoch: the rest of the interrupted epoch was never
    # trained, and rows drawn but not yet trained (a batch builder's micro-batches) were dropped
    old = [TaskStreams({"x": 10}, seed=3, rank=r, world_size=2) for r in range(2)]
    waiting = old[0].next_indices("x", 3)[1:]  # rank 0: positions 0, 2, 4 of epoch 0, the last two not trained
    old[1].next_indices("x", 7)  # rank 1: positions 1, 3, 5, 7, 9 of epoch 0, then 1 and 3 of epoch 1
    state = resharded_state([s.state_dict() for s in old], [("x", i) for i in waiting], rank=0, world_size=1)
    new = TaskStreams({"x": 10}, seed=3)
    new.load_state_dict(state)
    epoch0, epoch1 = _order("x", 10, 3, 0), _order("x", 10, 3, 1)
    expected = (waiting + [epoch0[6], epoch0[8]] + [epoch1[i] for i in (0, 2, 4, 5, 6, 7, 8, 9)]
                + _order("x", 10, 3, 2))
    assert new.next_indices("x", 3) == expected[:3]
    again = TaskStreams({"x": 10}, seed=3)  # a checkpoint in the middle of the rest continues it
    again.load_state_dict(new.state_dict())
    assert again.next_indices("x", len(expected) - 3) == expected[3:]


def test_a_resume_on_more_ranks_deals_the_rest_of_the_epoch_then_goes_on_as_usual():
    one = TaskStreams({"x": 9}, seed=4)
    one.next_indices("x", 4)
    rest = _order("x", 9, 4, 0)[4:]
    two = [TaskStreams({"x": 9}, seed=4, rank=r, world_size=2) for r in range(2)]
    for stream in two:
        stream.load_state_dict(resharded_state([one.state_dict()], [], rank=stream.rank, world_size=2))
    assert two[0].next_indices("x", 1) == rest[:1]
    three = [TaskStreams({"x": 9}, seed=4, rank=r, world_size=3) for r in range(3)]  # resharded again mid-rest
    for stream in three:
        stream.load_state_dict(resharded_state([s.state_dict() for s in two], [], rank=stream.rank, world_size=3))
    dealt = [s.next_indices("x", 2) for s in three]
    assert sorted(sum(dealt, [])) == sorted(rest[1:] + rest[1:3])  # every row left once, padded by the first two
    assert [s.epochs()["x"] for s in three] == [1, 1, 1]
    following = [s.next_indices("x", 3) for s in three]
    assert following == [_order("x", 9, 4, 1)[r::3] for r in range(3)]


@pytest.mark.parametrize("draws, rest0, taken1", [((3, 6), [6, 8], 1), ((6, 2), [5, 7], 0)])
def test_a_resume_of_two_ranks_of_an_odd_task_skips_exactly_the_positions_they_handed_out(draws, rest0, taken1):
    # 9 rows on 2 ranks: the order is padded to 10 (position 9 repeats position 0's row); rank 0 takes positions
    # 0, 2, 4, 6, 8, rank 1 takes 1, 3, 5, 7, 9. (3, 6): rank 1 took all five and position 1 of epoch 1;
    # (6, 2): rank 0 took all five and position 0 of epoch 1. Worked out by hand from those positions.
    old = [TaskStreams({"x": 9}, seed=5, rank=r, world_size=2) for r in range(2)]
    for stream, n in zip(old, draws):
        stream.next_indices("x", n)
    new = TaskStreams({"x": 9}, seed=5)
    new.load_state_dict(resharded_state([s.state_dict() for s in old], [], rank=0, world_size=1))
    epoch0, epoch1 = _order("x", 9, 5, 0), _order("x", 9, 5, 1)
    expected = [epoch0[i] for i in rest0] + [row for i, row in enumerate(epoch1) if i != taken1]
    assert new.next_indices("x", len(expected)) == expected
    assert new.epochs()["x"] == 2


def test_a_second_resharding_reads_each_epoch_in_its_own_order():
    # one rank drew 2 of 5 rows; two ranks deal the other 3 (a, b, c, padded to a, b, c, a): rank 0 takes a and c and
    # goes on into epoch 1 (its position 0), rank 1 takes b and stays in the dealt rest. Resharded onto one rank,
    # the rest is done and epoch 1 goes on in its own permutation after position 0
    one = TaskStreams({"x": 5}, seed=1)
    one.next_indices("x", 2)
    two = [TaskStreams({"x": 5}, seed=1, rank=r, world_size=2) for r in range(2)]
    for stream in two:
        stream.load_state_dict(resharded_state([one.state_dict()], [], rank=stream.rank, world_size=2))
    epoch0, epoch1 = _order("x", 5, 1, 0), _order("x", 5, 1, 1)
    assert two[0].next_indices("x", 3) == [epoch0[2], epoch0[4], epoch1[0]]
    assert two[1].next_indices("x", 1) == [epoch0[3]]
    new = TaskStreams({"x": 5}, seed=1)
    new.load_state_dict(resharded_state([s.state_dict() for s in two], [], rank=0, world_size=1))
    assert new.next_indices("x", 4) == epoch1[1:]


def test_a_resharded_task_gets_its_own_untrained_rows_only():
    old = TaskStreams({"x": 6, "y": 4}, seed=2)
    old.next_indices("x", 2)
    held = old.next_indices("y", 3)[2]
    new = TaskStreams({"x": 6, "y": 4}, seed=2)
    new.load_state_dict(resharded_state([old.state_dict()], [("y", held)], rank=0, world_size=1))
    assert new.next_indices("x", 4) == _order("x", 6, 2, 0)[2:]
    assert new.next_indices("y", 2) == [held, _order("y", 4, 2, 0)[3]]


def test_resharded_ranks_keep_the_examples_seen_of_their_rank_number():
    old = [TaskStreams({"x": 8}, seed=0, rank=r, world_size=2) for r in range(2)]
    for stream, n in zip(old, (1, 3)):
        stream.next_indices("x", n)
    seen = [resharded_state([s.state_dict() for s in old], [], rank=r, world_size=3)["seen"] for r in range(3)]
    assert seen == [{"x": 1}, {"x": 3}, {"x": 0}]


def test_resharding_needs_every_rank_of_the_old_world_in_order():
    old = [TaskStreams({"x": 6}, seed=0, rank=r, world_size=3).state_dict() for r in range(3)]
    for states in ([], old[:2], [old[1], old[0], old[2]]):
        with pytest.raises(SamplingError, match="every rank in rank order"):
            resharded_state(states, [], rank=0, world_size=1)


def test_loading_a_state_forgets_the_rows_dealt_before():
    ahead = TaskStreams({"x": 10}, seed=0)
    ahead.next_indices("x", 12)  # epoch 1, position 2
    stream = TaskStreams({"x": 10}, seed=0)
    stream.next_indices("x", 3)  # its epoch-0 rows dealt
    stream.load_state_dict(ahead.state_dict())
    assert stream.next_indices("x", 3) == _order("x", 10, 0, 1)[2:5]


def test_stream_orders_depend_on_the_seed_the_task_and_the_epoch():
    # an order is a permutation of the task's rows fixed by (seed, task name, epoch): another seed reshuffles every
    # task (a run's seed must change its data order), and two tasks of one size are not shuffled alike
    sizes = {"x": 50, "y": 50}
    orders = {seed: {(t, e): TaskStreams(sizes, seed=seed).permutation(t, e).tolist() for t in sizes for e in range(2)}
              for seed in (0, 1)}
    assert orders[0] == {(t, e): TaskStreams(sizes, seed=0).permutation(t, e).tolist() for t in sizes for e in range(2)}
    assert all(sorted(order) == list(range(50)) for order in orders[0].values())
    assert len({tuple(order) for seeded in orders.values() for order in seeded.values()}) == 8  # all different


def test_streams_cross_epochs_and_resume():
    stream = TaskStreams({"x": 7, "y": 1000}, seed=2)
    taken = stream.next_indices("x", 10)
    assert sorted(taken[:7]) == list(range(7)) and stream.epochs()["x"] == 1
    stream.next_indices("y", 123)
    state = json.loads(json.dumps(stream.state_dict()))
    expected = [stream.next_indices("x", 5), stream.next_indices("y", 900)]
    resumed = TaskStreams({"x": 7, "y": 1000}, seed=2)
    resumed.load_state_dict(state)
    assert [resumed.next_indices("x", 5), resumed.next_indices("y", 900)] == expected
    assert resumed.seen() == stream.seen() == {"x": 15, "y": 1023}
    assert resumed.epochs() == {"x": 2, "y": 1}


def test_streams_errors():
    with pytest.raises(EmptyTaskError, match="'tiny' has 1 row, fewer than the 2 ranks"):
        TaskStreams({"tiny": 1}, seed=0, rank=0, world_size=2)
    with pytest.raises(EmptyTaskError, match="'empty'"):
        TaskStreams({"empty": 0}, seed=0)
    with pytest.raises(SamplingError, match="'nope'"):
        TaskStreams({"x": 3}, seed=0).next_indices("nope", 1)
    with pytest.raises(SamplingError, match="seed"):
        TaskStreams({"x": 3}, seed=1).load_state_dict(TaskStreams({"x": 3}, seed=0).state_dict())
    with pytest.raises(SamplingError, match="rank 2 is not in"):
        TaskStreams({"x": 3}, seed=0, rank=2, world_size=2)
    with pytest.raises(SamplingError, match=r"negative number of rows \(-1\)"):
        TaskStreams({"x": 3}, seed=0).next_indices("x", -1)
    for key, state in (("world_size", TaskStreams({"x": 3}, seed=0, world_size=2).state_dict()),
                       ("rank", TaskStreams({"x": 3}, seed=0, rank=1, world_size=2).state_dict()),
                       ("task_sizes", TaskStreams({"x": 4}, seed=0).state_dict())):
        with pytest.raises(SamplingError, match=f"stream state has {key}="):
            TaskStreams({"x": 3}, seed=0).load_state_dict(state)


def test_a_negative_seed_is_refused_by_name():
    # numpy's generators refuse negative seeds with a bare "expected non-negative integer"
    with pytest.raises(SamplingError, match=r"training.seed\) must be an integer >= 0, got -1"):
        build_sampler({"strategy": "uniform"}, SIZES, seed=-1)
    with pytest.raises(SamplingError, match=r"training.seed\) must be an integer >= 0, got -1"):
        TaskStreams({"x": 3}, seed=-1)


@pytest.mark.parametrize("strategy", ["bandit_softmax", "bandit_thompson", "worst_task", "uncertainty_ema"])
def test_a_state_saved_after_an_update_dropped_the_block_resumes_identically(strategy):
    # a validation step's update() that moves the probabilities drops the buffered block, and a checkpoint is often
    # written at that very step: the state then holds no block to redraw, only the generator's state past the draws
    # made so far, which the resumed sampler must take over (not the fresh generator of the seed it was built with)
    config = {"strategy": strategy, "block_size": 64, **CONFIGS[strategy]}
    reference = build_sampler(config, SIZES, seed=11)
    drive(reference, 100)
    reference.update(STATS[0])
    reference.update(STATS[1])
    state = json.loads(json.dumps(reference.state_dict()))
    assert state["block_rng_state"] is None  # the case under test: nothing buffered
    expected = drive(reference, 300)
    resumed = build_sampler(config, SIZES, seed=11)
    resumed.load_state_dict(state)
    assert drive(resumed, 300) == expected


@pytest.mark.parametrize("size, old_world", [(3, 2), (4, 2), (5, 2), (5, 3), (7, 3)])
def test_every_resharding_of_small_tasks_deals_each_row_left_then_the_next_epochs(size, old_world):
    """Every way `old_world` ranks can stand in their first two epochs of a `size`-row task, resharded onto 1 to 3
    ranks: the new ranks go on in the latest epoch an old rank reached, first together drawing exactly the rows of
    the epochs from the earliest one on that no old rank drew (padded by the first of them), then each epoch's
    permutation as usual. There is always such a row: the branch for none (the next epoch) was dropped."""
    share = -(-size // old_world)
    for draws in itertools.product(range(2 * share), repeat=old_world):
        old = [TaskStreams({"x": size}, seed=6, rank=r, world_size=old_world) for r in range(old_world)]
        drawn = [{} for _ in range(2)]  # epoch: rows some old rank drew of it
        for stream, n in zip(old, draws):
            for k, row in enumerate(stream.next_indices("x", n)):
                drawn[k // share].setdefault(row, True)
        last = max(n // share for n in draws)
        left = [row for epoch in range(min(n // share for n in draws), last + 1)
                for row in _order("x", size, 6, epoch) if row not in drawn[epoch]]
        assert left, draws
        for world in range(1, 4):
            new = [TaskStreams({"x": size}, seed=6, rank=r, world_size=world) for r in range(world)]
            for stream in new:
                stream.load_state_dict(resharded_state([s.state_dict() for s in old], [], rank=stream.rank,
                                                       world_size=world))
            assert [s.epochs()["x"] for s in new] == [last] * world
            dealt = [row for s in new for row in s.next_indices("x", -(-len(left) // world))]
            assert sorted(dealt) == sorted(np.resize(left, len(dealt)).tolist()), (draws, world)  # padded as usual
            assert [s.epochs()["x"] for s in new] == [last + 1] * world
            assert [s.next_indices("x", 1)[0] for s in new] == _order("x", size, 6, last + 1)[:world], (draws, world)
