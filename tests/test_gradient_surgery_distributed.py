"""GradientSurgery across 2 processes (torch.multiprocessing spawn, gloo, CPU): partitioned gradients (each rank
holds a slice of every task row, as under ZeRO-2) and replicated gradients (each rank's own data, as under
ZeRO-0/1) give the same combined gradient as one rank holding everything."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from t2t_mtl.gradients import GradientMethodError, GradientSurgery

TASKS = ["nli", "qa", "summarize"]
METHOD_CFGS = [
    {"method": "pcgrad", "seed": 11},
    {"method": "gradvac", "per_layer": True, "beta": 0.5, "seed": 2},
    {"method": "cagrad", "c": 0.5},
    {"method": "mgda"},
    {"method": "nashmtl"},
    {"method": "mean"},
]
STEPS = 2  # two steps so GradVac's EMA targets and PCGrad's generator carry over
WORLD = 2


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()


def _task_loss(model: torch.nn.Module, step: int, task: int, rank: int) -> torch.Tensor:
    """The loss of `task`'s micro-batch on `rank` at `step` (each rank sees different examples; the tasks share
    inputs but pull the outputs apart, so their gradients conflict)."""
    gen = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    y = 3.0 * torch.randn(4, 3, generator=gen, dtype=torch.float64) * (-1) ** task + task
    return ((model(x) - y) ** 2).mean()


def _flat_grad(model: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(model.parameters()))])


def _bounds(num_params: int, rank: int) -> tuple[int, int]:
    per_rank = -(-num_params // WORLD)
    return min(num_params, rank * per_rank), min(num_params, (rank + 1) * per_rank)


def _local_segments(global_segments: list[int], lo: int, hi: int) -> list[int]:
    """The global segments clipped to this rank's slice [lo, hi) (empty ones kept)."""
    return [min(max(o, lo), hi) - lo for o in global_segments]


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        model = _model()
        num_params = sum(p.numel() for p in model.parameters())
        lo, hi = _bounds(num_params, rank)
        results = {}
        for cfg in METHOD_CFGS:
            # partitioned: this rank keeps only [lo, hi) of every averaged task row
            partition = torch.zeros(hi - lo, dtype=torch.float64)
            segments = GradientSurgery(cfg, model.named_parameters(), TASKS).segment_offsets  # the default: layers
            part = GradientSurgery(cfg, [partition], TASKS, distribution="partitioned",
                                   segment_offsets=_local_segments(segments, lo, hi))
            # replicated: every rank fills full rows from its own data through the backward
            repl = GradientSurgery(cfg, model.named_parameters(), TASKS, distribution="replicated")
            combined_part, combined_repl, weights = [], [], []
            for step in range(STEPS):
                part.zero_()
                repl.zero_()
                for t in range(len(TASKS)):
                    row = _flat_grad(model, _task_loss(model, step, t, rank))
                    dist.all_reduce(row)
                    part.row(t).copy_(row[lo:hi] / WORLD)
                    with repl.accumulate(t):
                        _task_loss(model, step, t, rank).backward()
                per_rank = -(-num_params // WORLD)
                local = torch.zeros(per_rank, dtype=torch.float64)  # gloo gathers equal sizes: pad the slice
                part.combine_into(local[:hi - lo])
                pieces = [torch.empty(per_rank, dtype=torch.float64) for _ in range(WORLD)]
                dist.all_gather(pieces, local)
                combined_part.append(torch.cat(pieces)[:num_params])
                combined_repl.append(repl.combine_into())
                weights.append(torch.as_tensor(part.last_weights))
            results[cfg["method"]] = {"partitioned": combined_part, "replicated": combined_repl,
                                      "weights": weights, "stats": part.stats()}
        # rows are slots taken in arrival order: ranks that ran the tasks in different orders are refused
        mixed = GradientSurgery("pcgrad", [torch.zeros(4, dtype=torch.float64)], TASKS, distribution="partitioned")
        for t in ((0, 1) if rank == 0 else (1, 0)):
            mixed.row(t).fill_(1.0)
        try:
            mixed.gram()
        except GradientMethodError as error:
            results["mismatch"] = str(error)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _single_rank(cfg: dict) -> list[torch.Tensor]:
    """One process holding the whole model and the average of both ranks' task gradients."""
    model = _model()
    surgery = GradientSurgery(cfg, model.named_parameters(), TASKS)
    combined = []
    for step in range(STEPS):
        surgery.zero_()
        for t in range(len(TASKS)):
            surgery.row(t).copy_(sum(_flat_grad(model, _task_loss(model, step, t, r)) for r in range(WORLD)) / WORLD)
        combined.append(surgery.combine_into())
    return combined


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_match_one_rank(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for cfg in METHOD_CFGS:
        name = cfg["method"]
        expected = _single_rank(cfg)
        for r in range(WORLD):
            got = ranks[r][name]
            for step in range(STEPS):
                torch.testing.assert_close(got["partitioned"][step], expected[step], rtol=1e-7, atol=1e-10,
                                           msg=f"{name} partitioned rank {r} step {step}")
                torch.testing.assert_close(got["replicated"][step], expected[step], rtol=1e-7, atol=1e-10,
                                           msg=f"{name} replicated rank {r} step {step}")
                torch.testing.assert_close(got["weights"][step], ranks[0][name]["weights"][step], rtol=0, atol=0)
        assert ranks[0][name]["stats"]["grad_cosine"] == ranks[1][name]["stats"]["grad_cosine"]
    assert all("the ranks hold different tasks in this step" in rank.get("mismatch", "") for rank in ranks)
    # the methods really differ from the plain mean here (so the comparison is not vacuous)
    mean = ranks[0]["mean"]["partitioned"][0]
    assert float((ranks[0]["pcgrad"]["partitioned"][0] - 3 * mean).norm()) > 1e-6


# ---------------------------------------------------------------- DeepSpeed ZeRO training with the step hook

DS_TASKS = ["up", "down", "mix"]
DS_STEPS = 20


def _ds_batch(step: int, micro: int, rank: int) -> tuple[str, torch.Tensor, torch.Tensor]:
    """Micro-batch `micro` on `rank` (the same every step, so the loss curve is not sampling noise): one task per
    micro-batch (the same task on every rank), with targets that pull the shared body in conflicting directions."""
    task = DS_TASKS[micro % len(DS_TASKS)]
    gen = torch.Generator().manual_seed(10 * micro + rank)
    x = torch.randn(8, 6, generator=gen)
    base = x[:, :3].sum(1, keepdim=True)
    y = {"up": base, "down": -0.5 * base, "mix": x[:, 3:4] - x[:, 4:5]}[task].expand(8, 3)
    return task, x, y


DS_SETUPS = [(0, "fp32"), (1, "fp32"), (2, "fp32"), (2, "bf16"), (3, "fp32"), (3, "bf16")]  # (stage, precision)


def _ds_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_SIZE=str(WORLD), DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    import deepspeed

    from t2t_mtl.engine.distributed import init_distributed
    from t2t_mtl.gradients import build_step_hook

    init_distributed()  # DeepSpeed's gloo group (and no /dev/shm buffer left behind)
    try:
        results = {}
        runs = [(setup, label, cfg) for setup in DS_SETUPS
                for label, cfg in [("none", None), ("sum", {"method": "sum"}),
                                   ("pcgrad", {"method": "pcgrad", "seed": 1})]]
        for (stage, precision), label, cfg in runs:
            torch.manual_seed(0)
            model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
            ds_config = {"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": len(DS_TASKS),
                         "zero_optimization": {"stage": stage}, "steps_per_print": 10 ** 6,
                         "zero_allow_untested_optimizer": True, "bf16": {"enabled": precision == "bf16"}}
            engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.2),
                                              config=ds_config)
            hook = build_step_hook(cfg, engine, DS_TASKS) if cfg else None
            losses = []
            for step in range(DS_STEPS):
                if hook:
                    hook.begin_step(engine)
                step_loss = 0.0
                for micro in range(len(DS_TASKS)):
                    task, x, y = _ds_batch(step, micro, rank)
                    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
                    loss = ((engine(x.to(dtype)).float() - y) ** 2).mean()
                    step_loss += float(loss.detach()) / len(DS_TASKS)
                    engine.backward(loss)
                    if hook:
                        hook.after_backward(engine, task)
                    if hook and micro == len(DS_TASKS) - 1:
                        hook.before_optimizer_step(engine)
                    engine.step()
                losses.append(step_loss)
            with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):  # ZeRO-3: whole tensors
                params = [p.detach().float().clone() for p in engine.module.parameters()]
            results[stage, precision, label] = {"losses": losses, "params": params,
                              "stats": hook.stats() if hook else None}
            if hook:
                hook.remove()
        torch.save(results, Path(out_dir) / f"ds_rank{rank}.pt")
        dist.barrier()  # both ranks are done with every collective before either tears the group down
    finally:
        dist.destroy_process_group()
    # the results are saved: skip the interpreter's teardown, where a thread of DeepSpeed's CPU communication
    # backend was seen to abort the process ("terminate called without an active exception") once in many runs
    os._exit(0)


@pytest.fixture(scope="module")
def ds_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds")
    mp.spawn(_ds_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"ds_rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.slow
@pytest.mark.parametrize("stage,precision", DS_SETUPS)
def test_deepspeed_zero_training_with_surgery(ds_results, stage, precision):
    ranks = [{label: run for (s, p, label), run in rank.items() if (s, p) == (stage, precision)}
             for rank in ds_results]
    # method `sum` reproduces DeepSpeed's own step: the capture and hand-back lose nothing (bf16: up to a few
    # bf16 roundings of the gradient after 20 steps, parameters are below 1 in magnitude)
    tol = {"rtol": 1e-5, "atol": 1e-6} if precision == "fp32" else {"rtol": 2e-2, "atol": 5e-3}
    for r in range(WORLD):
        for got, expected in zip(ranks[r]["sum"]["params"], ranks[r]["none"]["params"]):
            torch.testing.assert_close(got, expected, **tol)
        for got, other in zip(ranks[r]["pcgrad"]["params"], ranks[0]["pcgrad"]["params"]):
            torch.testing.assert_close(got, other, rtol=0, atol=0)  # ranks stay in sync
    pcgrad = ranks[0]["pcgrad"]
    losses = pcgrad["losses"]
    # "up" and "down" share inputs but want opposite outputs, so the loss has a floor well above 0; it must
    # still fall steadily and end near the plain (no-surgery) run's level
    assert losses[-1] < 0.75 * losses[0], losses
    assert sum(b < a for a, b in zip(losses, losses[1:])) >= 0.8 * (len(losses) - 1), losses
    assert losses[-1] < 1.1 * ranks[0]["none"]["losses"][-1], (losses, ranks[0]["none"]["losses"])
    # PCGrad changed the update (the tasks conflict), and the logged cosines show the conflict
    assert max(float((a - b).abs().max()) for a, b in zip(pcgrad["params"], ranks[0]["sum"]["params"])) > 5e-2
    cosine = pcgrad["stats"]["grad_cosine"]
    assert cosine[0][1] < 0
    if (stage, precision) == (3, "fp32"):  # ZeRO-3's per-parameter pieces: the same PCGrad run as ZeRO-2's slices
        zero2 = {label: run for (s, p, label), run in ds_results[0].items() if (s, p) == (2, "fp32")}
        for got, expected in zip(pcgrad["params"], zero2["pcgrad"]["params"]):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(torch.tensor(pcgrad["stats"]["grad_cosine"]),
                                   torch.tensor(zero2["pcgrad"]["stats"]["grad_cosine"]), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_trainer_pcgrad_zero2_two_processes_loss_falls(tmp_path):
    """The real trainer (`t2t_mtl train` under torchrun, 2 ranks, gloo) with `gradient_surgery: pcgrad` at ZeRO-2:
    the engine calls `build_step_hook` at every accumulation boundary, and the loss falls."""
    from engine_helpers import run_checked, step_losses, tiny_config, torchrun_command, train_tiny_tokenizer, \
        write_config

    tok = train_tiny_tokenizer(tmp_path / "tok")
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache",
                      training={"steps": 16, "grad_accum": 3, "precision": "bf16", "log_every": 1},
                      gradient_surgery={"method": "pcgrad", "seed": 0}, deepspeed={"zero_stage": 2})
    run_checked(torchrun_command(write_config(cfg, tmp_path / "run.yaml"), 2))
    losses = step_losses(tmp_path / "run")
    assert sorted(losses) == list(range(1, 17))
    first, last = sum(losses[s] for s in (1, 2, 3)) / 3, sum(losses[s] for s in (14, 15, 16)) / 3
    assert last < first - 1.0, losses


@pytest.mark.slow
def test_trainer_pcgrad_zero3_equals_zero2(tmp_path):
    """The trainer with `gradient_surgery: pcgrad` under ZeRO-3 (2 ranks: every parameter partitioned, the
    per-task rows hold each rank's pieces) trains exactly as under ZeRO-2 (flat slices), step for step."""
    from engine_helpers import run_checked, step_losses, tiny_config, torchrun_command, train_tiny_tokenizer, \
        write_config

    tok = train_tiny_tokenizer(tmp_path / "tok")
    for stage in (2, 3):
        cfg = tiny_config(tmp_path / f"z{stage}", tok, tmp_path / "cache", training={"steps": 8, "grad_accum": 3},
                          gradient_surgery={"method": "pcgrad", "seed": 0}, deepspeed={"zero_stage": stage})
        run_checked(torchrun_command(write_config(cfg, tmp_path / f"z{stage}.yaml"), 2))
    zero2, zero3 = step_losses(tmp_path / "z2"), step_losses(tmp_path / "z3")
    assert sorted(zero3) == list(range(1, 9))
    for step, loss in zero2.items():
        assert zero3[step] == pytest.approx(loss, rel=1e-4), (step, zero2, zero3)
    assert zero3[8] < zero3[1]


@pytest.mark.slow
def test_trainer_pcgrad_zero3_after_a_skipped_step_equals_zero2(tmp_path, monkeypatch):
    """A step poisoned by a non-finite loss is skipped by DeepSpeed's overflow check; ZeRO-3's hook starts the next
    step from DeepSpeed's pieces, which must then hold no trace of the skipped step: the run goes on exactly as under
    ZeRO-2, whose hook clears its own rows (one rank, in process)."""
    from engine_helpers import step_losses, tiny_config, train_tiny_tokenizer

    from t2t_mtl.engine import trainer as trainer_mod

    real = trainer_mod.forward_losses
    tok = train_tiny_tokenizer(tmp_path / "tok")
    losses = {}
    for stage in (2, 3):
        calls = {"n": 0}

        def poisoned(*args, **kwargs):
            calls["n"] += 1
            per_task, aux = real(*args, **kwargs)
            if calls["n"] in (4, 5, 6):  # step 2's three micro-batches
                per_task = {task: value * float("nan") for task, value in per_task.items()}
            return per_task, aux

        monkeypatch.setattr(trainer_mod, "forward_losses", poisoned)
        cfg = tiny_config(tmp_path / f"z{stage}", tok, tmp_path / "cache", training={"steps": 5, "grad_accum": 3},
                          gradient_surgery={"method": "pcgrad", "seed": 0}, deepspeed={"zero_stage": stage})
        assert trainer_mod.train(cfg, evaluate_held_in=False).skipped_steps == 1
        losses[stage] = {step: loss for step, loss in step_losses(tmp_path / f"z{stage}").items() if loss is not None}
    assert sorted(losses[3]) == [1, 3, 4, 5]  # the skipped step 2 logged no loss
    for step, loss in losses[2].items():
        assert losses[3][step] == pytest.approx(loss, rel=1e-5), (step, losses)
