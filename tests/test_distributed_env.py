"""t2t_mtl.engine.distributed: the launcher environment (torchrun, DeepSpeed, srun, a bare process) and the
collectives every rank agrees through (max, any, who failed)."""
from __future__ import annotations

import datetime
import multiprocessing
import os
import socket
from pathlib import Path

import torch

from t2t_mtl.engine.distributed import DistEnv

def test_the_first_slurm_host_is_read_from_the_node_list_without_scontrol(monkeypatch):
    from t2t_mtl.engine import distributed

    def no_scontrol(*args, **kwargs):
        raise FileNotFoundError("scontrol")

    monkeypatch.setattr(distributed.subprocess, "run", no_scontrol)
    assert distributed._first_slurm_host("node[01-04],gpu7") == "node01"
    assert distributed._first_slurm_host("gpu7,node[01-04]") == "gpu7"
    assert distributed._first_slurm_host("node[3,5-7]") == "node3"


def test_an_srun_rank_takes_its_local_rank_from_slurm_and_keeps_a_given_master(monkeypatch):
    from t2t_mtl.engine.distributed import fill_env_from_launcher

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_SIZE", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {"SLURM_STEP_ID": "0", "SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1",
                       "SLURM_JOB_NODELIST": "n[1-2]", "MASTER_ADDR": "head"}.items():
        monkeypatch.setenv(key, value)
    fill_env_from_launcher()
    assert [os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")] == \
        ["3", "4", "1", "head", "29500"]


def test_one_process_agrees_with_itself():
    from t2t_mtl.engine.distributed import any_true, failed_ranks, max_over_ranks

    cpu = torch.device("cpu")
    assert any_true(True, cpu) and not any_true(False, cpu) and max_over_ranks(2.5, cpu) == 2.5
    other = DistEnv(rank=1, world_size=2, local_rank=0, device=cpu, backend="gloo")
    assert failed_ranks(True, other) == [1] and failed_ranks(False, other) == []
    assert not other.is_main  # rank 1 of the job, whatever its place on its node


def _collectives_worker(rank: int, port: int, out: str) -> None:
    from t2t_mtl.engine.distributed import any_true, failed_ranks, max_over_ranks

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=30))
    try:
        cpu = torch.device("cpu")
        env = DistEnv(rank=rank, world_size=2, local_rank=rank, device=cpu, backend="gloo")
        results = [max_over_ranks(3.0 if rank else 2.0, cpu), any_true(rank == 1, cpu), any_true(False, cpu),
                   failed_ranks(rank == 1, env), failed_ranks(False, env)]
        Path(f"{out}.{rank}").write_text(repr(results))
    finally:
        torch.distributed.destroy_process_group()


def test_two_ranks_agree_on_the_largest_value_and_on_who_failed(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    out = str(tmp_path / "result")
    processes = [context.Process(target=_collectives_worker, args=(rank, port, out)) for rank in range(2)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=120)
    assert [p.exitcode for p in processes] == [0, 0]
    assert [Path(f"{out}.{rank}").read_text() for rank in range(2)] == [repr([3.0, True, False, [1], []])] * 2


def test_a_bare_process_is_one_rank_on_a_port_the_system_handed_out(monkeypatch):
    # a fixed port would make two single-process runs on one machine meet in one rendezvous
    from t2t_mtl.engine.distributed import fill_env_from_launcher

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT", "SLURM_STEP_ID"):
        monkeypatch.delenv(key, raising=False)
    fill_env_from_launcher()
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert [os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")] == ["0", "1", "0", "127.0.0.1"]
    assert low <= int(os.environ["MASTER_PORT"]) <= high  # an ephemeral port the kernel chose
