"""t2t_mtl.engine.distributed: the launcher environment (torchrun, DeepSpeed, srun, a bare process) and the
collectives every rank agrees through (max, any, who failed)."""
from __future__ import annotations

import datetime
import os
import subprocess
import time
from pathlib import Path

import pytest
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
    assert distributed._first_slurm_host("gpu[7]") == "gpu7"


def test_the_first_slurm_host_is_the_first_scontrol_lists(monkeypatch):
    from t2t_mtl.engine import distributed

    def scontrol(command, **kwargs):
        assert command == ["scontrol", "show", "hostnames", "a[1-2],b"]
        return subprocess.CompletedProcess(command, 0, stdout="a1\na2\nb\n", stderr="")

    monkeypatch.setattr(distributed.subprocess, "run", scontrol)
    assert distributed._first_slurm_host("a[1-2],b") == "a1"


def test_an_srun_rank_takes_its_local_rank_from_slurm_and_keeps_a_given_master(monkeypatch):
    from t2t_mtl.engine.distributed import fill_env_from_launcher

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_SIZE", "MASTER_PORT"):
        monkeypatch.setenv(key, "")  # (set, then deleted: the undo also removes what fill_env_from_launcher writes,
        monkeypatch.delenv(key)      # where delenv of a variable that is not set leaves the process a rank of 4)
    for key, value in {"SLURM_STEP_ID": "0", "SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1",
                       "SLURM_JOB_NODELIST": "n[1-2]", "MASTER_ADDR": "head"}.items():
        monkeypatch.setenv(key, value)
    fill_env_from_launcher()
    assert [os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")] == \
        ["3", "4", "1", "head", "29500"]


def test_srun_ranks_of_two_jobs_get_two_master_ports(monkeypatch):
    # was: every job's ranks met on port 29500, so two jobs on one node (a job array of seeds, say) collided: the
    # second job's rank 0 could not bind it and its other ranks joined the first job's store
    from t2t_mtl.engine.distributed import fill_env_from_launcher

    def port(job: str, procid: str, given: str = "") -> int:
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_SIZE", "MASTER_PORT"):
            monkeypatch.setenv(key, "")
            monkeypatch.delenv(key)
        for key, value in {"SLURM_STEP_ID": "0", "SLURM_PROCID": procid, "SLURM_NTASKS": "2", "SLURM_LOCALID": "0",
                           "SLURM_JOB_ID": job, "MASTER_ADDR": "head", **({"MASTER_PORT": given} if given else {})
                           }.items():
            monkeypatch.setenv(key, value)
        fill_env_from_launcher()
        assert os.environ["RANK"] == procid
        return int(os.environ["MASTER_PORT"])

    ports = {job: {port(job, "0"), port(job, "1")} for job in ("4242", "4243", "5000", "987654321")}
    assert all(len(same_job) == 1 for same_job in ports.values())  # a job's ranks meet on one port
    assert len(set.union(*ports.values())) == 4  # four jobs, four ports (jobs far apart may share one)
    assert all(1024 < p < 32768 for p in set.union(*ports.values()))  # below Linux's ephemeral ports
    assert port("4242", "1", given="31000") == 31000  # a port given is kept


def test_slurm_sbatch_leaves_master_port_to_each_job_unless_set(tmp_path):
    # the per-job port is taken only where MASTER_PORT is unset: a script exporting one (29500, as it did) gives every
    # job of a node that port again; the two-node SLURM test sets MASTER_PORT itself, so it cannot tell
    def started(**given: str) -> str:
        return slurm_sbatch_started(tmp_path, "MASTER_PORT=${MASTER_PORT-unset} $*", **given)

    assert started() == "MASTER_PORT=unset --kill-on-bad-exit=1 python -m t2t_mtl train cfg.yaml --resume auto\n"
    assert started(MASTER_PORT="31000").startswith("MASTER_PORT=31000 ")


def test_torchrun_started_by_srun_keeps_the_ranks_torchrun_set(monkeypatch):
    # srun starting one torchrun a node: SLURM_PROCID and SLURM_NTASKS count the nodes' torchruns, not the ranks;
    # taking them over torchrun's RANK and WORLD_SIZE would give every node's ranks one rank number
    from t2t_mtl.engine.distributed import fill_env_from_launcher
    from t2t_mtl.launched_ranks import started_by_srun

    torchrun = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "head", "MASTER_PORT": "29400"}
    for key, value in {**torchrun, "SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_NTASKS": "2",
                       "SLURM_LOCALID": "0"}.items():
        monkeypatch.setenv(key, value)
    assert not started_by_srun()
    fill_env_from_launcher()
    assert {key: os.environ[key] for key in torchrun} == torchrun


@pytest.mark.parametrize("reader, procid, variable, value, expected", [
    # (what the reader returns in a bare process, an sbatch script's own command with SLURM_PROCID `procid` of 4 tasks,
    # a rank srun started, and once torchrun or deepspeed set `variable` to `value`)
    ("launched_world_size", "0", "WORLD_SIZE", "2", [1, 1, 4, 2]),
    ("launched_rank", "3", "RANK", "1", [0, 0, 3, 1]),
])
def test_the_launched_world_size_and_rank_are_read_without_touching_the_environment(monkeypatch, reader, procid,
                                                                                    variable, value, expected):
    from t2t_mtl import launched_ranks

    for key in ("RANK", "WORLD_SIZE", "SLURM_STEP_ID", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    before = dict(os.environ)
    launched = getattr(launched_ranks, reader)
    read = [launched()]  # a bare process
    monkeypatch.setenv("SLURM_PROCID", procid)
    monkeypatch.setenv("SLURM_NTASKS", "4")
    read.append(launched())  # an sbatch script's own command: one process
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    read.append(launched())  # a rank srun started
    monkeypatch.setenv(variable, value)
    read.append(launched())  # torchrun / deepspeed
    assert read == expected
    for key in ("SLURM_STEP_ID", "SLURM_PROCID", "SLURM_NTASKS", variable):
        monkeypatch.delenv(key)
    assert dict(os.environ) == before


def test_a_failed_start_of_one_process_joins_nothing(monkeypatch):
    from t2t_mtl.engine import distributed

    joined = []
    monkeypatch.setattr(distributed, "init_distributed", lambda *args: joined.append(args))
    for key in ("RANK", "WORLD_SIZE", "SLURM_STEP_ID"):
        monkeypatch.delenv(key, raising=False)
    before = dict(os.environ)
    distributed.report_failed_start()
    assert joined == [] and dict(os.environ) == before


def test_one_process_agrees_with_itself():
    from t2t_mtl.engine.distributed import failed_ranks, gather_over_ranks, max_over_ranks, sum_over_ranks

    cpu = torch.device("cpu")
    assert sum_over_ranks(torch.tensor([2.0])).tolist() == [2.0]
    assert gather_over_ranks(torch.tensor([2.0])).tolist() == [[2.0]] and max_over_ranks(2.5, cpu) == 2.5
    other = DistEnv(rank=1, world_size=2, local_rank=0, device=cpu, backend="gloo")
    assert failed_ranks(True, other, "a phase") == [1] and failed_ranks(False, other, "a phase") == []
    assert not other.is_main  # rank 1 of the job, whatever its place on its node


def test_a_tensor_away_from_the_groups_device_is_reduced_there_and_copied_back(monkeypatch):
    # was: sum_over_ranks all-reduced a step's totals and the entropy accumulator where they were, on the CPU: a GPU
    # job's NCCL group cannot reduce a CPU tensor ('No backend type associated with device type cpu'), so a training
    # of several GPUs would have stopped at its first step (not run here: no GPU; the CPU's gloo takes both)
    from t2t_mtl.engine import distributed

    cpu_sums = torch.tensor([1.0, 2.0], dtype=torch.float64)
    monkeypatch.setattr(distributed, "_group_device", torch.device("meta"))  # (the one other device a CPU has)
    moved = distributed.on_group_device(cpu_sums)
    assert moved.device.type == "meta" and moved.shape == cpu_sums.shape and moved.dtype == cpu_sums.dtype
    on_group = torch.empty(2, device="meta")
    assert distributed.on_group_device(on_group) is on_group  # already there: no copy
    monkeypatch.setattr(distributed, "_group_device", None)  # a caller's own group: tensors go as they are
    assert distributed.on_group_device(cpu_sums) is cpu_sums

    reduced = []  # a fake group of two ranks with a stand-in move: what is reduced is the moved copy, then copied back
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *args: 2)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda tensor, *args, **kw: reduced.append(tensor.mul_(2)))
    monkeypatch.setattr(distributed, "on_group_device", lambda t: t.clone())
    assert distributed.sum_over_ranks(cpu_sums) is cpu_sums and cpu_sums.tolist() == [2.0, 4.0]
    assert len(reduced) == 1 and reduced[0] is not cpu_sums


def test_a_copy_to_a_cpu_group_waits_for_the_device_and_an_upload_does_not(monkeypatch):
    # was: on_group_device copied a GPU tensor to a gloo (CPU) group with non_blocking=True, and the CPU collective
    # that follows reads the host memory at once, possibly before the copy has landed
    from t2t_mtl.engine import distributed

    copies = []

    class OnOtherDevice(torch.Tensor):  # a tensor that says it lives on the device the group is not on
        other = "meta"

        @property
        def device(self):
            return torch.device(self.other)

        def to(self, *args, **kwargs):
            copies.append((args[0].type, kwargs.get("non_blocking", False)))
            return self.as_subclass(torch.Tensor).clone()

    gpu_like = torch.tensor([1.0]).as_subclass(OnOtherDevice)
    monkeypatch.setattr(distributed, "_group_device", torch.device("cpu"))
    distributed.on_group_device(gpu_like)
    OnOtherDevice.other = "cpu"
    monkeypatch.setattr(distributed, "_group_device", torch.device("meta"))
    distributed.on_group_device(gpu_like)
    assert copies == [("cpu", False), ("meta", True)]


def test_the_group_device_is_the_device_init_distributed_returns(monkeypatch):
    from t2t_mtl.engine import distributed

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT", "DS_ACCELERATOR"):
        monkeypatch.delenv(key, raising=False)  # (restored after: init_distributed fills them)
    env = distributed.init_distributed()  # one process (a group of one is kept for in-process callers)
    assert distributed._group_device == env.device


def test_a_first_start_on_the_cpu_says_that_it_builds_deepspeeds_shared_memory_op(monkeypatch, tmp_path, capsys):
    # was: a first `t2t-mtl train` on a CPU compiled DeepSpeed's shared-memory op inside deepspeed.init_distributed
    # (3-5 minutes on a loaded 2-core machine) with nothing on the screen: torch logs its build at INFO, which no
    # handler shows, and DeepSpeed's own line goes to the stdout held back while the group is joined
    start = _cpu_start_up_to_joining(monkeypatch, tmp_path)
    start()
    assert capsys.readouterr().err == (
        f"building DeepSpeed's shared-memory op for the CPU into {tmp_path / 'deepspeed_shm_comm'} (only on a first "
        f"start: later runs load it; minutes on a small CPU)\njoining\n")
    (tmp_path / "deepspeed_shm_comm" / "deepspeed_shm_comm.so").write_bytes(b"")  # as the build leaves it
    start()
    assert capsys.readouterr().err == "joining\n"


def _collectives_worker(rank: int, port: int, out: str) -> None:
    from t2t_mtl.engine.distributed import failed_ranks, gather_over_ranks, max_over_ranks, sum_over_ranks

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=30))
    try:
        cpu = torch.device("cpu")
        env = DistEnv(rank=rank, world_size=2, local_rank=rank, device=cpu, backend="gloo")
        results = [max_over_ranks(3.0 if rank else 2.0, cpu),
                   gather_over_ranks(torch.tensor([rank, 5.0 + rank])).tolist(),
                   failed_ranks(rank == 1, env, "a check"), failed_ranks(False, env, "another check"),
                   sum_over_ranks(torch.tensor([1.0, 10.0 * rank])).tolist()]
        Path(f"{out}.{rank}").write_text(repr(results))
    finally:
        torch.distributed.destroy_process_group()


def _run_two_ranks(worker, out: str, *, teardown: bool = False) -> int:
    """Run `worker(rank, port, out)` as ranks 0 and 1 of a fresh port in forked processes (spawned ones, which end
    through the interpreter's teardown, with `teardown`); assert both exit 0 within 120 s (a rank still alive then is
    killed: e.g. one waiting on a buffer another rank removed). Returns the port."""
    from engine_helpers import forked_ranks, free_port, spawn_ranks

    port = free_port()
    start = spawn_ranks if teardown else forked_ranks
    assert start(worker, [(rank, port, out) for rank in range(2)], timeout=120) == [0, 0]
    return port


def _slow_rank_worker(rank: int, port: int, out: str) -> None:
    from torch.distributed.distributed_c10d import _set_pg_timeout

    from t2t_mtl.engine.distributed import barrier, init_distributed, shut_down_process_group

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    init_distributed()
    _set_pg_timeout(datetime.timedelta(seconds=2))  # the training collectives' timeout, shortened from 10 minutes
    if rank == 0:
        time.sleep(6)  # rank 0 alone prepares (a tokenizer, a big mixture's tokens) while rank 1 waits
    barrier("rank 0's preparation done")
    Path(f"{out}.{rank}").write_text("through")
    shut_down_process_group()


def test_ranks_wait_in_a_barrier_for_one_that_prepares_longer_than_the_collective_timeout(tmp_path):
    """(Was: rank 1's barrier timed out after the default group's timeout, DeepSpeed's 10 minutes, and the run
    crashed whenever rank 0 alone tokenized or converted for longer.)"""
    out = str(tmp_path / "result")
    _run_two_ranks(_slow_rank_worker, out)
    assert [Path(f"{out}.{rank}").read_text() for rank in range(2)] == ["through"] * 2


def test_two_ranks_agree_on_the_largest_value_and_on_who_failed(tmp_path):
    out = str(tmp_path / "result")
    _run_two_ranks(_collectives_worker, out)
    assert [Path(f"{out}.{rank}").read_text() for rank in range(2)] == \
        [repr([3.0, [[0.0, 5.0], [1.0, 6.0]], [1], [], [2.0, 10.0]])] * 2


def test_a_bare_process_is_one_rank_on_a_port_the_system_handed_out(monkeypatch):
    # a fixed port would make two single-process runs on one machine meet in one rendezvous
    from t2t_mtl.engine.distributed import fill_env_from_launcher

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT", "SLURM_STEP_ID"):
        monkeypatch.delenv(key, raising=False)
    fill_env_from_launcher()
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert [os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")] == ["0", "1", "0", "127.0.0.1"]
    assert low <= int(os.environ["MASTER_PORT"]) <= high  # an ephemeral port the kernel chose


def test_a_bare_process_keeps_the_master_address_and_port_it_is_given(monkeypatch):
    from t2t_mtl.engine.distributed import fill_env_from_launcher

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_SIZE", "SLURM_STEP_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.7")
    monkeypatch.setenv("MASTER_PORT", "31337")
    fill_env_from_launcher()
    assert [os.environ[k] for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")] == \
        ["0", "1", "10.0.0.7", "31337"]


def test_unlinking_a_shared_memory_buffer_removes_its_name_once_and_then_does_nothing(monkeypatch, tmp_path):
    from t2t_mtl.engine import distributed

    monkeypatch.setattr(distributed, "shm_allreduce_buffer", lambda rank: tmp_path / f"buffer_{rank}")
    (tmp_path / "buffer_1").write_bytes(b"x")
    distributed.unlink_shm_allreduce_buffer(1)
    assert list(tmp_path.iterdir()) == []
    distributed.unlink_shm_allreduce_buffer(1)  # gone already (or never made): nothing to do


def _init_worker(rank: int, port: int, out: str) -> None:
    from t2t_mtl.engine.distributed import init_distributed, shut_down_process_group

    # as the deepspeed launcher sets them (DeepSpeed's shared memory is used when LOCAL_SIZE is the world size)
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    init_distributed()
    try:
        torch.distributed.barrier()  # every rank has removed its buffer's name
        mapped = sorted({line.split(None, 5)[5].strip() for line in Path("/proc/self/maps").read_text().splitlines()
                         if "deepspeed_allreduce_buffer" in line})
        Path(f"{out}.{rank}").write_text(repr(mapped))
    finally:
        shut_down_process_group()


def test_two_ranks_keep_every_ranks_shared_memory_buffer_mapped_and_its_name_unlinked(tmp_path):
    # DeepSpeed's CPU backend maps a ~69 MB /dev/shm buffer per rank and never unlinks it (the name is DeepSpeed's:
    # deepspeed_allreduce_buffer_<uid>_<MASTER_ADDR>_<MASTER_PORT>_<rank>): each rank's name must go, not rank 0's
    out = str(tmp_path / "mapped")
    port = _run_two_ranks(_init_worker, out)
    names = [f"/dev/shm/deepspeed_allreduce_buffer_{os.getuid()}_127.0.0.1_{port}_{rank} (deleted)" for rank in (0, 1)]
    assert [Path(f"{out}.{rank}").read_text() for rank in range(2)] == [repr(names)] * 2


def _stopping_worker(rank: int, port: int, out: str) -> None:
    from t2t_mtl.engine.distributed import START_PHASE, failed_ranks, init_distributed, report_failed_start

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    if rank == 1:  # refused before joining: it joins, flags itself and leaves
        report_failed_start()
    else:  # joined: it learns of rank 1, then stops on that error the same way (the group exists already)
        failed = failed_ranks(False, init_distributed(), START_PHASE)
        report_failed_start()
    Path(f"{out}.{rank}").write_text(repr([failed if rank == 0 else None, torch.distributed.is_initialized()]))


def test_ranks_stopping_on_an_error_leave_their_process_group_before_they_exit(tmp_path):
    # was: the refused rank, and the ranks that stopped on learning of it, exited with the group alive, and gloo
    # aborted in the interpreter's teardown now and then ('terminate called without an active exception', exit -6)
    out = str(tmp_path / "stopped")
    _run_two_ranks(_stopping_worker, out, teardown=True)
    assert [Path(f"{out}.{rank}").read_text() for rank in range(2)] == [repr([[1], False]), repr([None, False])]


def test_joining_the_process_group_prints_nothing_to_stdout(tmp_path):
    # was: every CPU start printed 'DeepSpeed deepspeed.ops.comm.deepspeed_shm_comm_op built successfully' (DeepSpeed's
    # TorchBackend loading its shared-memory op) on stdout, among train's own lines
    import sys

    from engine_helpers import REPO, subprocess_env

    joining = ("import logging, sys; logging.basicConfig(stream=sys.stderr, level=logging.DEBUG, format='%(name)s: "
               "%(message)s'); from t2t_mtl.engine.distributed import init_distributed, shut_down_process_group; "
               "init_distributed(); print('joined'); shut_down_process_group()")
    done = subprocess.run([sys.executable, "-c", joining], env=subprocess_env(), cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "joined\n"
    assert "t2t_mtl.engine.distributed: DeepSpeed deepspeed.ops.comm.deepspeed_shm_comm_op built successfully" \
        in done.stderr.splitlines()  # (the debug log)


def test_what_deepspeed_prints_while_joining_goes_to_the_log_or_to_stderr(capsys, caplog):
    from t2t_mtl.engine.distributed import report_deepspeed_output

    with caplog.at_level("DEBUG", logger="t2t_mtl.engine.distributed"):
        report_deepspeed_output("DeepSpeed deepspeed.ops.comm.deepspeed_shm_comm_op built successfully\n"
                                "[WARNING] something DeepSpeed warns of\n\n")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "[WARNING] something DeepSpeed warns of\n"
    assert caplog.messages == ["DeepSpeed deepspeed.ops.comm.deepspeed_shm_comm_op built successfully"]


@pytest.mark.parametrize("visible", [None, "3"])
def test_a_local_rank_without_a_gpu_of_its_own_is_refused_naming_what_to_change(monkeypatch, visible):
    # was: torch.cuda.set_device(LOCAL_RANK) stopped the rank with 'CUDA error: invalid device ordinal' where it sees
    # fewer GPUs (more ranks than GPUs on a node, or SLURM's --gpus-per-task showing each task its own GPU only)
    from t2t_mtl.config_errors import ConfigError
    from t2t_mtl.engine import distributed

    for key, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "CUDA_VISIBLE_DEVICES": visible}.items():
        monkeypatch.setenv(key, "")  # (set, then deleted or given: the undo restores the process's own)
        if value is None:
            monkeypatch.delenv(key)
        else:
            monkeypatch.setenv(key, value)
    monkeypatch.setattr(distributed, "trains_on_gpu", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: pytest.fail("set_device(1) on a process of 1 GPU"))
    with pytest.raises(ConfigError) as refused:
        distributed.init_distributed()
    seen = "" if visible is None else " (CUDA_VISIBLE_DEVICES=3)"
    assert str(refused.value) == (
        f"LOCAL_RANK is 1, but this process sees 1 GPU{seen}: DeepSpeed trains rank r of a node on its GPU r "
        f"(cuda:LOCAL_RANK), so start at most one rank per GPU of the node (torchrun --nproc_per_node, deepspeed "
        f"--num_gpus), each seeing every GPU of the node (under SLURM --gpus-per-node, not --gpus-per-task, which "
        f"shows a task its own GPU only), or set DS_ACCELERATOR=cpu to train on the CPU")

    class Placed(Exception):
        """Raised by the stand-in set_device: the rank is placed, and the test ends its start there."""

    def place(device: int) -> None:
        raise Placed(device)

    monkeypatch.setenv("LOCAL_RANK", "0")  # its one GPU: placed there
    monkeypatch.setattr(torch.cuda, "set_device", place)
    with pytest.raises(Placed) as placed:
        distributed.init_distributed()
    assert placed.value.args == (0,)


@pytest.mark.parametrize("given, expected", [
    ({"RANK": "0"}, "environment variable RANK is set (0) but WORLD_SIZE is not: set WORLD_SIZE to the number of ranks "
                    "of the job (torchrun and the deepspeed launcher set both), or unset RANK to train one process"),
    ({"WORLD_SIZE": "2"}, "environment variable WORLD_SIZE is set (2) but RANK is not: set RANK to this process's "
                          "rank, 0 to 1 (torchrun and the deepspeed launcher set both), or unset WORLD_SIZE to train "
                          "one process"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "environment variable RANK is 2, but WORLD_SIZE is 2: the ranks of a job are 0 "
                                      "to WORLD_SIZE - 1 (WORLD_SIZE counts every rank of every node)"),
    ({"RANK": "", "WORLD_SIZE": "2"}, "environment variable RANK must be a whole number (as torchrun and the "
                                      "deepspeed launcher set it), got ''"),
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "one"},
     "environment variable LOCAL_RANK must be a whole number (as torchrun and the deepspeed launcher set it), "
     "got 'one'"),
])
def test_launcher_variables_a_rank_cannot_take_its_place_by_are_refused_naming_the_variable(monkeypatch, given,
                                                                                            expected):
    # was: RANK without WORLD_SIZE sent DeepSpeed looking for MPI ("cannot import mpi4py ... install mpi4py there"),
    # WORLD_SIZE=2 without RANK trained one process alone (WORLD_SIZE replaced by 1), RANK >= WORLD_SIZE waited in the
    # rendezvous, and a RANK or LOCAL_RANK that is no number was a ValueError traceback
    from t2t_mtl.config_errors import ConfigError
    from t2t_mtl.engine import distributed

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT", "SLURM_STEP_ID"):
        monkeypatch.setenv(key, "")  # (set, then deleted: the undo also removes what fill_env_from_launcher writes)
        monkeypatch.delenv(key)
    for key, value in given.items():
        monkeypatch.setenv(key, value)
    before = dict(os.environ)
    with pytest.raises(ConfigError) as refused:
        distributed.fill_env_from_launcher()
    assert str(refused.value) == expected and dict(os.environ) == before
    joined = []  # (a rank that cannot take its place tells no other rank that it stopped: it cannot join them)
    monkeypatch.setattr(distributed, "init_distributed", lambda *args: joined.append(args))
    distributed.report_failed_start()
    assert joined == []


def test_a_train_started_with_rank_but_without_world_size_says_so_in_one_line(monkeypatch, tmp_path, capsys):
    # was: "error: t2t-mtl cannot import mpi4py (No module named 'mpi4py') in the Python it was started with, ...:
    # ... or install mpi4py there": DeepSpeed, missing WORLD_SIZE, looked for MPI to find the ranks
    from t2t_mtl.cli import main

    for key in ("WORLD_SIZE", "LOCAL_RANK", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT", "SLURM_STEP_ID"):
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    monkeypatch.setenv("RANK", "0")
    assert main(["train", "--set", f"training.output_dir={tmp_path / 'run'}"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: environment variable RANK is set (0) but WORLD_SIZE is not: set WORLD_SIZE to the number of ranks of "
        "the job (torchrun and the deepspeed launcher set both), or unset RANK to train one process")


@pytest.mark.parametrize("removed_after", [None, 0.3])
def test_a_cpu_start_waiting_for_a_build_lock_that_stays_says_which_file_to_remove(monkeypatch, tmp_path, capsys,
                                                                                   removed_after):
    # was: a process killed while torch held DeepSpeed's shared-memory op's build lock (a job cancelled during its first
    # start's build, a rank its launcher stopped while it loaded the op) left the file, and every later CPU start on the
    # machine waited for it forever without a word; a lock that goes within the grace (a load by another rank) is quiet
    import threading

    from t2t_mtl.engine import distributed

    start = _cpu_start_up_to_joining(monkeypatch, tmp_path)
    monkeypatch.setattr(distributed, "BUILD_LOCK_GRACE_S", 1.0, raising=False)  # (shortened from 5 s)
    folder = tmp_path / "deepspeed_shm_comm"
    folder.mkdir()
    (folder / "deepspeed_shm_comm.so").write_bytes(b"")  # built: a start only loads it
    (folder / "lock").write_bytes(b"")
    if removed_after is not None:
        threading.Timer(removed_after, (folder / "lock").unlink).start()
    start()
    waited = (f"waiting for {folder / 'lock'} to go before loading DeepSpeed's shared-memory op: another process is "
              f"building or loading the op there now, or a process stopped while it held the lock left the file "
              f"behind, and then this start waits forever: remove the file if no process on this machine is building "
              f"the op\n")
    assert capsys.readouterr().err == (waited if removed_after is None else "") + "joining\n"


def _cpu_start_up_to_joining(monkeypatch, extensions_dir: Path):
    """A function running `init_distributed` as one process on the CPU, with torch's extensions (DeepSpeed's
    shared-memory op) in `extensions_dir`, up to joining the group: there the stand-in of `deepspeed.init_distributed`
    prints "joining" on stderr and ends the start."""
    import sys

    import deepspeed
    import torch.distributed as dist
    from t2t_mtl.engine import distributed

    class Joined(Exception):
        pass

    def join(**kwargs):
        print("joining", file=sys.stderr)
        raise Joined

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)  # (restored after: init_distributed fills them)
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(extensions_dir))  # (torch builds an op NAME into its folder NAME)
    monkeypatch.setattr(deepspeed, "init_distributed", join)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)

    def start() -> None:
        with pytest.raises(Joined):
            distributed.init_distributed()

    return start


def test_a_gpu_machine_trains_on_its_gpu_unless_ds_accelerator_names_the_cpu(monkeypatch):
    # kills a mutant of trains_on_gpu that the tests let live (an unset DS_ACCELERATOR read as the CPU's): a GPU
    # machine that sets nothing trains on its GPU, as DeepSpeed picks its CUDA accelerator there
    from t2t_mtl.engine.distributed import trains_on_gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    assert trains_on_gpu()
    for accelerator, on_gpu in (("cuda", True), ("cpu", False)):
        monkeypatch.setenv("DS_ACCELERATOR", accelerator)
        assert trains_on_gpu() is on_gpu
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("DS_ACCELERATOR", "cuda")
    assert not trains_on_gpu()  # (no GPU to train on)


@pytest.mark.parametrize("given", [{"WORLD_SIZE": "0"}, {"RANK": "0", "WORLD_SIZE": "00"}])
def test_a_world_size_of_no_rank_is_refused_as_such(monkeypatch, given):
    # was "set RANK to this process's rank, 0 to -1" without RANK, "RANK is 0, but WORLD_SIZE is 0" with it
    from t2t_mtl.launched_ranks import launch_variables_problem

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_STEP_ID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in given.items():
        monkeypatch.setenv(key, value)
    assert launch_variables_problem() == (
        f"environment variable WORLD_SIZE must be at least 1 (the number of ranks of the job, as torchrun and the "
        f"deepspeed launcher set it), got {given['WORLD_SIZE']!r}")


@pytest.mark.parametrize("given", [
    {"WORLD_SIZE": "1"},  # one process: no RANK to pair with it
    {"RANK": " 1", "WORLD_SIZE": "2 ", "LOCAL_RANK": " 0 "},  # whole numbers with spaces around, as int() reads them
    {"SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_NTASKS": "2", "WORLD_SIZE": "2"},  # srun's own ranks
])
def test_launcher_variables_a_rank_can_take_its_place_by_are_no_problem(monkeypatch, given):
    from t2t_mtl import launched_ranks

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_STEP_ID", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in given.items():
        monkeypatch.setenv(key, value)
    assert launched_ranks.launch_variables_problem() is None


def test_a_cpu_start_of_a_later_local_rank_does_not_wait_for_or_speak_of_the_build_lock(monkeypatch, tmp_path,
                                                                                        capsys):
    # kills a mutant no test let live: every rank of the node, not its local rank 0 alone, waiting out the grace and
    # saying it waits for a lock that stays (one line a rank, each the same)
    from t2t_mtl.engine import distributed

    start = _cpu_start_up_to_joining(monkeypatch, tmp_path)
    monkeypatch.setattr(distributed, "BUILD_LOCK_GRACE_S", 0.2, raising=False)
    for key, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(key, value)
    folder = tmp_path / "deepspeed_shm_comm"
    folder.mkdir()
    (folder / "deepspeed_shm_comm.so").write_bytes(b"")
    (folder / "lock").write_bytes(b"")
    start()
    assert capsys.readouterr().err == "joining\n"


def slurm_sbatch_started(tmp_path: Path, srun_echo: str, **given: str) -> str:
    """What `slurm.sbatch cfg.yaml` (run in `tmp_path`, environment `given` over a SLURM job's) starts srun with: its
    stub echoes `srun_echo` (shell words: `$*` its arguments, `${VAR-unset}` a variable)."""
    script = Path(__file__).resolve().parents[1] / "t2t_mtl" / "configs" / "launch" / "slurm.sbatch"
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    (stubs / "srun").write_text(f'#!/bin/sh\necho "{srun_echo}"\n')
    (stubs / "scontrol").write_text("#!/bin/sh\necho node1\n")
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    (tmp_path / "venv" / "bin").mkdir(parents=True, exist_ok=True)
    (tmp_path / "venv" / "bin" / "activate").write_text("")
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "VENV": str(tmp_path / "venv"), "SLURM_JOB_ID": "4242",
           "SLURM_JOB_NODELIST": "node[1-2]", **given}
    done = subprocess.run(["bash", str(script), "cfg.yaml"], env=env, capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_slurm_sbatch_sets_only_the_nccl_error_handling_variable_the_pinned_torch_reads(tmp_path):
    # was: it exported NCCL_ASYNC_ERROR_HANDLING=1 beside TORCH_NCCL_ASYNC_ERROR_HANDLING=1; the pinned torch (2.13)
    # reads the TORCH_ one, the other only as a deprecated fallback that it warns of on every rank
    started = slurm_sbatch_started(
        tmp_path, "${NCCL_ASYNC_ERROR_HANDLING-unset} ${TORCH_NCCL_ASYNC_ERROR_HANDLING-unset}")
    assert started == "unset 1\n"


@pytest.mark.parametrize("given", [
    {"RANK": "0", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"},
    {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": " 2\n"},
])
def test_hand_set_ranks_spanning_machines_without_master_addr_are_refused_naming_it(monkeypatch, given):
    # was: MASTER_ADDR defaulted to 127.0.0.1, so the ranks on the other machines waited out DeepSpeed's 10-minute
    # rendezvous at their own address; torchrun and the deepspeed launcher always set MASTER_ADDR, so only ranks
    # started by hand meet this
    from t2t_mtl.config_errors import ConfigError
    from t2t_mtl.engine import distributed

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                "SLURM_STEP_ID"):
        monkeypatch.setenv(key, "")  # (set, then deleted: the undo also removes what fill_env_from_launcher writes)
        monkeypatch.delenv(key)
    for key, value in given.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as refused:
        distributed.fill_env_from_launcher()
    assert str(refused.value) == (
        "environment variable MASTER_ADDR is not set, but WORLD_SIZE (4) is more than LOCAL_WORLD_SIZE (2), the ranks "
        "of this machine: the ranks span machines, and those of the others would wait out the rendezvous at 127.0.0.1, "
        "their own address: set MASTER_ADDR to rank 0's host, reachable from every machine (as torchrun and the "
        "deepspeed launcher do)")


@pytest.mark.parametrize("given", [
    {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "node1"},  # torchrun's, two machines
    {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"},  # one machine's ranks: 127.0.0.1 reaches them all
    {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_SIZE": "2"},  # not torchrun's name; the deepspeed launcher sets MASTER_ADDR
    {"RANK": "1", "WORLD_SIZE": "2"},  # by hand, machines unknown: 127.0.0.1, as before
])
def test_ranks_without_master_addr_that_need_none_are_no_problem(monkeypatch, given):
    from t2t_mtl.launched_ranks import launch_variables_problem

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "SLURM_STEP_ID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in given.items():
        monkeypatch.setenv(key, value)
    assert launch_variables_problem() is None
