"""Two real processes (spawn, each with its own hash seed): ranks agree on tasks and split the rows."""
from __future__ import annotations

import json
import multiprocessing

import pytest

from t2t_mtl.sampling import TaskStreams, build_sampler

SIZES = {"alpha": 501, "beta": 40, "gamma": 7}
WORLD = 2
STEPS = 120


def _rank_worker(rank: int, out_path: str) -> None:
    homogeneous = build_sampler({"strategy": "bandit_softmax", "tau": 0.1}, SIZES, seed=17, rank=rank,
                                world_size=WORLD)
    mixed = build_sampler({"strategy": "temperature", "alpha": 2.0, "mode": "mixed"}, SIZES, seed=17, rank=rank,
                          world_size=WORLD)
    streams = TaskStreams(SIZES, seed=17, rank=rank, world_size=WORLD)
    tasks, rows, mixed_tasks = [], [], []
    for step in range(STEPS):
        task = homogeneous.next_task()
        tasks.append(task)
        rows.append([task, streams.next_indices(task, 4)])
        mixed_tasks.extend(mixed.sample_tasks(3))
        if step % 10 == 9:  # identical (all-reduced) stats on every rank
            homogeneous.update({"val_score": {"alpha": step / 100, "beta": -step / 100, "gamma": 0.0}})
    with open(out_path, "w") as f:
        json.dump({"tasks": tasks, "rows": rows, "mixed": mixed_tasks, "epochs": streams.epochs()}, f)


@pytest.mark.slow
def test_two_processes_agree_on_tasks_and_get_disjoint_rows(tmp_path):
    context = multiprocessing.get_context("spawn")
    paths = [str(tmp_path / f"rank{r}.json") for r in range(WORLD)]
    procs = [context.Process(target=_rank_worker, args=(r, paths[r])) for r in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    results = [json.load(open(p)) for p in paths]
    assert results[0]["tasks"] == results[1]["tasks"]  # every homogeneous step: the same task on all ranks

    # within each epoch of each task, the two ranks' rows cover the task and are disjoint but for the rows that
    # pad an odd size to equal shares
    for task, size in SIZES.items():
        per_rank = [[i for t, idx in r["rows"] if t == task for i in idx] for r in results]
        shard = -(-size // WORLD)
        first_epoch = [rows[:shard] for rows in per_rank]
        if all(len(rows) >= shard for rows in per_rank):
            assert set(first_epoch[0] + first_epoch[1]) == set(range(size))
            assert len(set(first_epoch[0]) & set(first_epoch[1])) == -size % WORLD
        else:
            assert not set(per_rank[0]) & set(per_rank[1])

    # mixed batches: the ranks' slices are the two halves of one global draw
    single = build_sampler({"strategy": "temperature", "alpha": 2.0, "mode": "mixed"}, SIZES, seed=17)
    expected = [single.sample_tasks(3 * WORLD) for _ in range(STEPS)]
    assert [results[0]["mixed"][3 * s:3 * s + 3] + results[1]["mixed"][3 * s:3 * s + 3] for s in range(STEPS)] \
        == expected
