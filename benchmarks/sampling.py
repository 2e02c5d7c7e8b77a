"""Sampler throughput and the sampler's share of a tiny training step.

Prints, for every static strategy, task draws per second through `next_task()` (one call per draw, the
homogeneous path) and through `sample_task_indices(n)` / `sample_tasks(n)` (vectorised, the mixed path),
against the 1M draws/s target; then times a tiny T5 forward/backward/AdamW step and the sampler work of
one step as the engine does it (set_epoch, task choice, `TaskStreams.next_indices`, `update`) for static and
adaptive strategies, and prints the sampler's share (target < 1%). Model threads default to 1: on a shared
2-core machine more threads oversubscribe the cores.

Run: `python benchmarks/sampling.py [--tasks 64] [--steps 20]`.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from transformers import T5Config, T5ForConditionalGeneration

from t2t_mtl.sampling import TaskStreams, build_sampler

STATIC = {
    "uniform": {},
    "proportional": {"cap": 65536},
    "temperature": {"alpha": 2.0, "cap": 65536},
    "explicit": None,  # rates filled in from the sizes
    "annealed": {"epochs": 10},
    "dynamic_temperature": {"alpha_0": 1.0, "alpha_max": 5.0, "warmup_epochs": 5},
}
TINY_T5 = {"vocab_size": 1024, "d_model": 128, "d_kv": 32, "d_ff": 512, "num_layers": 2,
           "num_decoder_layers": 2, "num_heads": 4, "dropout_rate": 0.0}


def task_sizes(num_tasks: int) -> dict[str, int]:
    rng = np.random.default_rng(0)
    return {f"task_{i:03d}": int(n) for i, n in enumerate(rng.lognormal(9, 2, num_tasks).astype(int) + 1)}


def best_rate(fn, count: int, repeats: int = 3) -> float:
    """Draws per second of `fn()` producing `count` draws, best of `repeats`."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return count / best


def bench_draws(sizes: dict[str, int], draws: int) -> None:
    print(f"task draws per second ({len(sizes)} tasks, {draws:,} draws, target >= 1,000,000/s)")
    print(f"{'strategy':<22}{'next_task':>14}{'indices(n)':>14}{'tasks(n)':>14}")
    for strategy, params in STATIC.items():
        params = {"rates": {t: 1.0 + i % 7 for i, t in enumerate(sizes)}} if params is None else params
        sampler = build_sampler({"strategy": strategy, **params}, sizes, seed=0)

        def one_by_one():
            next_task = sampler.next_task
            for _ in range(draws):
                next_task()

        homogeneous = best_rate(one_by_one, draws)
        indices = best_rate(lambda: sampler.sample_task_indices(draws), draws)
        names = best_rate(lambda: sampler.sample_tasks(draws), draws)
        print(f"{strategy:<22}{homogeneous:>14,.0f}{indices:>14,.0f}{names:>14,.0f}")


STEP_STRATEGIES = {
    "temperature": {"alpha": 2.0},
    "annealed": {"epochs": 10},
    "uncertainty_ema": {"alpha": 2.0},
    "bandit_softmax": {"metric": "loss"},
    "bandit_thompson": {"metric": "loss"},
    "worst_task": {"metric": "loss", "tau": 0.1},
}


def sampler_step_seconds(sizes: dict[str, int], strategy: str, mode: str, steps: int, batch: int) -> float:
    """Mean seconds of one training step's sampler work, as the engine does it: set_epoch(fractional),
    task choice(s), row indices from TaskStreams, and update() with the step's per-task losses (+ entropy)."""
    sampler = build_sampler({"strategy": strategy, "mode": mode, **STEP_STRATEGIES[strategy]}, sizes, seed=0)
    streams = TaskStreams(sizes, seed=0)
    total = sum(sizes.values())
    rng = np.random.default_rng(0)
    fake_losses = rng.uniform(0.5, 3.0, size=(steps, 4))
    start = time.perf_counter()
    for step in range(steps):
        sampler.set_epoch(step * batch / total)
        if mode == "homogeneous":
            tasks = [sampler.next_task()]
            rows = streams.next_indices(tasks[0], batch)
        else:
            tasks = sampler.sample_tasks(batch)
            rows = [streams.next_indices(task, 1)[0] for task in tasks]
        present = dict.fromkeys(tasks[:4])
        losses = {t: float(v) for t, v in zip(present, fake_losses[step])}
        sampler.update({"loss": losses, "entropy": losses})
        assert len(rows) == batch
    return (time.perf_counter() - start) / steps


def model_step_seconds(steps: int, batch: int, source_len: int, target_len: int) -> float:
    """Mean seconds of a tiny T5 forward/backward/AdamW step (after 2 warm-up steps)."""
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                                                **TINY_T5))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    input_ids = torch.randint(2, TINY_T5["vocab_size"], (batch, source_len))
    labels = torch.randint(2, TINY_T5["vocab_size"], (batch, target_len))
    for step in range(steps + 2):
        if step == 2:
            start = time.perf_counter()
        loss = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / steps


def bench_step_share(sizes: dict[str, int], steps: int, batch: int, source_len: int, target_len: int) -> None:
    step = model_step_seconds(steps, batch, source_len, target_len)
    print(f"model step {1e3 * step:.2f} ms (mean of {steps})")
    print(f"{'strategy':<18}{'mode':<13}{'sampler us/step':>16}{'share of step':>15}   (target < 1%)")
    for strategy in STEP_STRATEGIES:
        for mode in ("homogeneous", "mixed"):
            # many steps, so that each task's per-epoch shuffle is amortised as it is in training
            sampler = sampler_step_seconds(sizes, strategy, mode, 5_000, batch)
            print(f"{strategy:<18}{mode:<13}{1e6 * sampler:>16.1f}{100 * sampler / (sampler + step):>14.4f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--draws", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the model step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = task_sizes(args.tasks)
    bench_draws(sizes, args.draws)
    params = sum(p.numel() for p in T5ForConditionalGeneration(T5Config(**TINY_T5)).parameters())
    print(f"\ntiny T5 step ({params / 1e6:.2f}M parameters, batch {args.batch}, lengths 64/16, fp32, "
          f"{torch.get_num_threads()} threads)")
    bench_step_share(sizes, args.steps, args.batch, 64, 16)


if __name__ == "__main__":
    main()
