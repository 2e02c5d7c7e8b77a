"""Process-group setup for one process, `torchrun`, the `deepspeed` launcher, or SLURM.

The environment decides the topology: `RANK`/`WORLD_SIZE`/`LOCAL_RANK`/`MASTER_ADDR`/`MASTER_PORT` (set by
`torchrun` and the `deepspeed` launcher) or, under `srun`, `SLURM_PROCID`/`SLURM_NTASKS`/`SLURM_LOCALID` with
`MASTER_ADDR` taken from the first host of `SLURM_JOB_NODELIST` when unset. A bare `python` run is one rank
on 127.0.0.1 with a free port — also a command of an sbatch script that srun did not start (it has no
`SLURM_STEP_ID`). CPU runs use gloo (`DS_ACCELERATOR=cpu` is set when no GPU is present, and set on a GPU machine
trains on its CPU: `trains_on_gpu`); GPU runs use NCCL, rank r of a node on its GPU r (`check_local_gpu`).
"""
from __future__ import annotations

import contextlib
import datetime
import io
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Type

import torch

from t2t_mtl.engine import rank_phases
from t2t_mtl.launched_ranks import (check_launch_variables, launch_variables_problem, launched_world_size,
                                    started_by_srun)
from t2t_mtl.timeout_variables import deepspeed_timeout_minutes, minutes_variable

logger = logging.getLogger(__name__)

# Rank 0 alone may prepare for long — train the run's tokenizer, tokenize a large mixture, convert a checkpoint to the
# universal format — while the other ranks wait in `barrier` or `failed_ranks`. They wait through a gloo group of
# their own with a timeout of their own (`wait_timeout()`, a day unless set): under the default group's (DeepSpeed's
# 10 minutes, DEEPSPEED_TIMEOUT) such a wait crashed the run. A rank that dies meanwhile still ends the wait at once
# (its connections close); one that hangs alive (a stalled shared filesystem) holds the others that long.
WAIT_TIMEOUT_VARIABLE = "T2T_MTL_WAIT_TIMEOUT"
DEFAULT_WAIT_MINUTES = 24 * 60
_waiting_group = None  # that group, while this process's group of several ranks exists
# Where the default group's collectives take their tensors, as `init_distributed` / `join_gloo_group` made it: the GPU
# under NCCL (which cannot all-reduce a CPU tensor), else the CPU; None for a group this module did not make.
_group_device: Optional[torch.device] = None


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: global rank, world size, local rank, and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the one that writes files and logs."""
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _first_slurm_host(nodelist: str) -> str:
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
        return out.stdout.split()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        # "node[01-04],gpu7" → "node01"
        head = nodelist.split(",")[0]
        if "[" in head:
            prefix, rest = head.split("[", 1)
            return prefix + rest.split("-")[0].split(",")[0].rstrip("]")
        return head


def _slurm_job_port(job_id: str) -> str:
    """The rendezvous port of a SLURM job's ranks: one port per job (20000 + job id mod 12000, below Linux's
    ephemeral ports), so jobs sharing a node (a job array's tasks) do not meet on one port; 29500 without a job id."""
    return str(20000 + int(job_id) % 12000) if job_id.isdigit() else "29500"


def fill_env_from_launcher() -> None:
    """Derive the torch.distributed variables from SLURM or a bare process when they are missing; a
    LaunchEnvironmentError naming the variable where the launcher's are unusable (`check_launch_variables`: RANK
    without WORLD_SIZE, say)."""
    check_launch_variables()
    env = os.environ
    if started_by_srun():
        env["RANK"] = env["SLURM_PROCID"]
        env["WORLD_SIZE"] = env["SLURM_NTASKS"]
        env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
        if "MASTER_ADDR" not in env and "SLURM_JOB_NODELIST" in env:
            env["MASTER_ADDR"] = _first_slurm_host(env["SLURM_JOB_NODELIST"])
        env.setdefault("MASTER_PORT", _slurm_job_port(env.get("SLURM_JOB_ID", "")))
    if "RANK" not in env:
        env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_SIZE="1")
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        env.setdefault("MASTER_PORT", str(_free_port()))
    env.setdefault("LOCAL_RANK", "0")
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    env.setdefault("MASTER_PORT", "29500")


def select_cpu_accelerator() -> None:
    """Where no GPU is visible, point DeepSpeed at its CPU accelerator (`DS_ACCELERATOR=cpu`, unless set): to be
    called before DeepSpeed is first imported, which otherwise detects the CPU itself and says so in a warning on
    stdout (where `train --print-config`'s config goes)."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def trains_on_gpu() -> bool:
    """Whether `train` runs on this machine's GPU: CUDA is available and DeepSpeed is not pointed at its CPU
    accelerator (`DS_ACCELERATOR=cpu`, which a GPU machine may set to train on its CPU). `init_distributed` places
    the run by it; what depends on the device (the precision auto picks, fp16's refusal) must ask it too."""
    return torch.cuda.is_available() and os.environ.get("DS_ACCELERATOR", "cuda") != "cpu"


def init_distributed(num_threads: int | None = None) -> DistEnv:
    """Initialise (once) the default process group through DeepSpeed and return this process's place.

    gloo on CPU (with `DS_ACCELERATOR=cpu`), NCCL on CUDA. `num_threads` sets torch's intra-op threads.
    """
    global _group_device
    select_cpu_accelerator()
    fill_env_from_launcher()
    if num_threads:
        torch.set_num_threads(num_threads)
    group_timeout()  # (DeepSpeed reads DEEPSPEED_TIMEOUT as it is imported: a bad one is refused here, naming it)
    import deepspeed
    import torch.distributed as dist

    cuda = trains_on_gpu()
    backend = "nccl" if cuda else "gloo"
    local_rank = int(os.environ["LOCAL_RANK"])
    if cuda:
        check_local_gpu(local_rank)
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        waiting = wait_timeout()  # (refused before joining)
        unbuilt = None if cuda else unbuilt_shm_op()
        if unbuilt is not None and local_rank == 0:
            print(f"building DeepSpeed's shared-memory op for the CPU into {unbuilt} (only on a first start: later "
                  f"runs load it; minutes on a small CPU)", file=sys.stderr, flush=True)
        lock = None if cuda or local_rank != 0 else held_build_lock()
        if lock is not None:
            print(f"waiting for {lock} to go before loading DeepSpeed's shared-memory op: another process is building "
                  f"or loading the op there now, or a process stopped while it held the lock left the file behind, "
                  f"and then this start waits forever: remove the file if no process on this machine is building the "
                  f"op", file=sys.stderr, flush=True)
        printed = io.StringIO()
        try:  # (DeepSpeed prints on stdout that it loaded its shared-memory op, on every CPU start)
            with contextlib.redirect_stdout(printed):
                deepspeed.init_distributed(dist_backend=backend, verbose=False)
        finally:
            report_deepspeed_output(printed.getvalue())
        if dist.get_world_size() > 1:
            _open_waiting_group(waiting)
        if not cuda:
            barrier("shared-memory buffers mapped")  # every rank has mapped every rank's buffer: the names can go
            unlink_shm_allreduce_buffer(dist.get_rank())
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    _group_device = device
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)


def check_local_gpu(local_rank: int) -> None:
    """Refuse a `local_rank` (LOCAL_RANK) this process sees no GPU of, naming what to change, where torch would stop
    with 'CUDA error: invalid device ordinal': DeepSpeed trains rank r of a node on the node's GPU r, so a node
    runs at most one rank per GPU and every rank sees all of them (not one per rank, as SLURM's --gpus-per-task
    binds them)."""
    from t2t_mtl.config_errors import LaunchEnvironmentError
    from t2t_mtl.wording import counted

    count = torch.cuda.device_count()
    if local_rank >= count:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        seen = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
        raise LaunchEnvironmentError(
            f"LOCAL_RANK is {local_rank}, but this process sees {counted(count, 'GPU')}{seen}: DeepSpeed trains rank "
            f"r of a node on its GPU r (cuda:LOCAL_RANK), so start at most one rank per GPU of the node (torchrun "
            f"--nproc_per_node, deepspeed --num_gpus), each seeing every GPU of the node (under SLURM "
            f"--gpus-per-node, not --gpus-per-task, which shows a task its own GPU only), or set DS_ACCELERATOR=cpu "
            f"to train on the CPU")


def unbuilt_shm_op() -> Optional[str]:
    """The folder `deepspeed.init_distributed` on the CPU builds DeepSpeed's shared-memory op into (a C++ compile, with
    nothing shown, of minutes on a small CPU), where it holds no built library yet; None where the op is loaded from
    there, was installed prebuilt, or is not used (DeepSpeed finds it incompatible)."""
    folder = shm_op_folder()
    return None if folder is None or (folder / f"{folder.name}.so").is_file() else str(folder)


def shm_op_folder() -> Optional[Path]:
    """The folder torch builds and loads DeepSpeed's shared-memory op for the CPU in (TORCH_EXTENSIONS_DIR's
    `deepspeed_shm_comm`); None where the op is installed prebuilt or not used (DeepSpeed finds it incompatible)."""
    import deepspeed
    from deepspeed.accelerator import get_accelerator
    from deepspeed.git_version_info import installed_ops
    from torch.utils.cpp_extension import _get_build_directory

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is None or not deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
        return None
    if installed_ops.get(builder.NAME, False):
        return None
    return Path(_get_build_directory(builder.NAME, verbose=False))


#: how long a start waits for the shared-memory op's build lock to go before it says that it waits for it (a load of the
#: built op holds it under a second)
BUILD_LOCK_GRACE_S = 5.0


def held_build_lock() -> Optional[Path]:
    """The `lock` file in `shm_op_folder()` where it is still there after `BUILD_LOCK_GRACE_S` seconds; else None.
    Torch holds it while a process builds or loads the op (a load checks the build, under a second) and every other
    process waits for it to go, without a word and without end: a process killed meanwhile (a rank its launcher
    stopped, a job cancelled during its first start's build) leaves it, and every later CPU start on the machine
    waited forever."""
    folder = shm_op_folder()
    if folder is None:
        return None
    lock = folder / "lock"
    deadline = time.monotonic() + BUILD_LOCK_GRACE_S
    while lock.exists():
        if time.monotonic() >= deadline:
            return lock
        time.sleep(0.1)
    return None


def report_deepspeed_output(text: str) -> None:
    """Pass on what DeepSpeed printed on stdout while joining the process group, so that stdout carries the project's
    own lines only: its announcement of an op it loaded ('DeepSpeed deepspeed.ops.comm.deepspeed_shm_comm_op built
    successfully') to this module's log at debug level, any other line (a warning) to stderr."""
    for line in text.splitlines():
        if line.startswith("DeepSpeed ") and line.endswith(" built successfully"):
            logger.debug(line)
        elif line.strip():
            print(line, file=sys.stderr)


def group_timeout() -> datetime.timedelta:
    """The timeout of a job's process group, as `train` joins it through DeepSpeed: DEEPSPEED_TIMEOUT minutes (10
    unless set; a LaunchEnvironmentError naming it for a value that is no whole number of minutes from 1 to a year).
    A rank that never joins, or hangs in a collective, stops the others after this long."""
    return datetime.timedelta(minutes=deepspeed_timeout_minutes())


def wait_timeout() -> datetime.timedelta:
    """The timeout of the waiting group (`barrier`, `failed_ranks`, eval's gathers): T2T_MTL_WAIT_TIMEOUT minutes (a
    day unless set), how long ranks wait for one that works alone (rank 0 tokenizing a mixture, converting a
    checkpoint) or hangs without dying. A LaunchEnvironmentError naming the variable for a value that is no whole
    number of minutes from 1 to MAX_WAIT_MINUTES (a year)."""
    return datetime.timedelta(minutes=minutes_variable(
        WAIT_TIMEOUT_VARIABLE, DEFAULT_WAIT_MINUTES,
        f"how long ranks wait for rank 0's preparation; unset: {DEFAULT_WAIT_MINUTES}, a day"))


def join_gloo_group() -> DistEnv:
    """Join the launched ranks (`launched_world_size`: torchrun's variables or srun's) in a gloo group on the CPU with
    `group_timeout()`, plus the waiting group of `barrier` and `waiting_group` (`eval`: it gathers Python objects
    only, the model being where `load_checkpoint` put it). A process launched alone joins nothing: rank 0 of 1. A
    group that exists already (a caller's) is used as it is."""
    import torch.distributed as dist

    global _group_device
    cpu = torch.device("cpu")
    if launched_world_size() > 1 and not dist.is_initialized():
        waiting = wait_timeout()  # (refused before joining)
        fill_env_from_launcher()
        dist.init_process_group(backend="gloo", timeout=group_timeout())
        _open_waiting_group(waiting)
        _group_device = cpu
    if not dist.is_initialized():
        return DistEnv(0, 1, 0, cpu, "gloo")
    return DistEnv(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), cpu, "gloo")


def _open_waiting_group(timeout: datetime.timedelta) -> None:
    """Make the waiting group (gloo, `timeout`: `wait_timeout()`) of the group of several ranks just joined; every
    rank calls this right after joining (creating a group is collective)."""
    global _waiting_group
    import torch.distributed as dist

    _waiting_group = dist.new_group(backend="gloo", timeout=timeout)


def waiting_group() -> Optional[object]:
    """The group of waits that may last long (`wait_timeout()`: one rank busy while the others wait for it, a dying
    rank still ending the wait at once), where `init_distributed` or `join_gloo_group` made it; else None, the
    default group."""
    return _waiting_group


def shm_allreduce_buffer(rank: int) -> Path:
    """The /dev/shm file DeepSpeed's CPU backend maps for `rank` of a one-machine job (~69 MB a rank)."""
    env = os.environ
    return Path("/dev/shm") / (f"deepspeed_allreduce_buffer_{os.getuid()}_{env.get('MASTER_ADDR', '')}_"
                               f"{env.get('MASTER_PORT', '')}_{rank}")


def unlink_shm_allreduce_buffer(rank: int) -> None:
    """Remove this rank's DeepSpeed shared-memory buffer name once every rank has mapped it. DeepSpeed never
    unlinks it, so each CPU run (one process too) otherwise left ~69 MB of RAM per rank in /dev/shm until
    reboot; unlinked, the memory goes when the job's processes exit."""
    try:
        shm_allreduce_buffer(rank).unlink()
    except FileNotFoundError:
        pass


def barrier(phase: str) -> None:
    """Wait for every rank at `phase` (the call site, e.g. "the run's tokenizer trained"), however long one takes
    (`wait_timeout()`, where `init_distributed` made the group); `RanksAtDifferentPhasesError` where a rank waits at
    another phase (`rank_phases`). A no-op without an initialised group of more than one process."""
    _flags_at_phase(phase, False)


def _flags_at_phase(phase: str, flag: bool) -> List[bool]:
    """Every rank's `flag` once every rank has reached `phase`, through `rank_phases` in the waiting group (else the
    default group, on its device); [`flag`] without an initialised group of more than one process."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [flag]
    # the waiting group's collectives (gloo's) take CPU tensors; without it (None), the default group's its device's
    device = torch.device("cpu") if _waiting_group is not None else _group_device or torch.device("cpu")
    return rank_phases.flags_at_phase(phase, flag, _waiting_group, device)


def max_over_ranks(value: float, device: torch.device) -> float:
    """The largest of the ranks' `value`s, on every rank (one tiny all-reduce when distributed)."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """`t` summed over the ranks, in place, on every rank (an all-reduce when distributed; unchanged otherwise).
    The result is the same tensor on every rank. A tensor away from the group's device (a CPU tensor of a GPU job,
    whose NCCL group cannot reduce it) is reduced there and copied back."""
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        on_group = on_group_device(t)
        dist.all_reduce(on_group)
        if on_group is not t:
            t.copy_(on_group)
    return t


def on_group_device(t: torch.Tensor) -> torch.Tensor:
    """`t` itself where the default group's collectives can take it, else a copy on the group's device: without
    waiting for a host tensor's upload (the collective is queued after it on the device's stream), but a copy to the
    host waits, since a CPU collective reads the memory at once."""
    if _group_device is None or t.device.type == _group_device.type:
        return t
    return t.to(_group_device, non_blocking=_group_device.type != "cpu")


def gather_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """Every rank's `t` stacked in rank order, `[world size, *t.shape]` on `t`'s device, on every rank (an all-gather
    when distributed; `t[None]` otherwise). Every rank gives a tensor of the same shape and dtype. A tensor away
    from the group's device is gathered there and the result copied back, as `sum_over_ranks` does."""
    import torch.distributed as dist

    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return t.unsqueeze(0)
    on_group = on_group_device(t)
    parts = [torch.empty_like(on_group) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, on_group)
    return torch.stack(parts).to(t.device)


def failed_ranks(failed: bool, env: DistEnv, phase: str) -> List[int]:
    """The ranks whose `failed` is True at `phase` (the call site), on every rank, once each has got there however long
    it takes (`_flags_at_phase`: one gather when distributed, in which a rank at another phase stops every rank): a
    collective step that some rank could not do ends on every rank, instead of leaving the others waiting."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [env.rank] if failed else []
    return [rank for rank, flag in enumerate(_flags_at_phase(phase, failed)) if flag]


def failed_ranks_wording(failed: Sequence[int], world_size: int) -> tuple[str, str]:
    """How a message names the ranks `failed` of `world_size`, and the pronoun of their error: ("rank 1 of 2", "its"),
    ("ranks 1, 3 of 4", "their")."""
    ranks, its = ("rank", "its") if len(failed) == 1 else ("ranks", "their")
    return f"{ranks} {', '.join(map(str, failed))} of {world_size}", its


# the phase of `failed_ranks` in which every rank of a job learns of those that stopped before joining it
START_PHASE = "ranks stopped before joining checked"


def refuse_failed_start(env: DistEnv, work: str, unusable: str, shared: str,
                        error: Type[Exception] = ValueError) -> None:
    """Stop every rank, naming them, when ranks of the job stopped before joining it (`report_failed_start`; their own
    errors say why): `error` "rank R of N stopped before `work` began (see its error: `unusable` that rank could not
    use); every rank must see the same `shared`". Every rank calls this right after joining (`failed_ranks`)."""
    failed = failed_ranks(False, env, START_PHASE)
    if failed:
        ranks, its = failed_ranks_wording(failed, env.world_size)
        raise error(f"{ranks} stopped before {work} began (see {its} error: {unusable} that rank could not use); "
                    f"every rank must see the same {shared}")


def report_failed_start(join: Callable[[], DistEnv] = init_distributed) -> None:
    """Tell the other ranks of a multi-process job that this one stops before joining the process group (its error
    already printed): it joins them as they join (`join`: `init_distributed` for `train`, `join_gloo_group` for `eval`;
    they wait there for every rank) and flags itself in `failed_ranks`, which every rank calls first thing after
    joining (`refuse_failed_start`), so they stop at once naming it, instead of waiting out DeepSpeed's 10-minute
    rendezvous timeout and failing with a traceback (a launcher that watches only its own node's processes — two-node
    torchrun, the pdsh launcher, srun without --kill-on-bad-exit — would not stop them). Once the group exists (the
    others are past that check), it only leaves it (`leave_process_group`); a join that fails itself is left at that,
    though not for this rank's own bad T2T_MTL_WAIT_TIMEOUT (its stop, perhaps: `_default_wait_timeout`). A no-op for
    one process, and for a rank whose launcher variables give it no place to join by (`launch_variables_problem`)."""
    import torch.distributed as dist

    if launch_variables_problem() is not None or launched_world_size() <= 1:  # (a rank without a place joins nothing)
        return
    if not dist.is_initialized():
        try:
            with _default_wait_timeout():
                failed_ranks(True, join(), START_PHASE)
        except Exception:  # noqa: BLE001 (this rank ends with its own error; the others time out as before)
            pass
    leave_process_group()


@contextlib.contextmanager
def _default_wait_timeout() -> Iterator[None]:
    """The block run with T2T_MTL_WAIT_TIMEOUT unset where `wait_timeout` refuses it, then put back: a rank stopped by
    its own bad value (one host's ~/.deepspeed_env) joins the others only to tell them, and a join refused again left
    them waiting in the rendezvous until its timeout."""
    bad = None
    try:
        wait_timeout()
    except ValueError:  # (its LaunchEnvironmentError)
        bad = os.environ.pop(WAIT_TIMEOUT_VARIABLE)
    try:
        yield
    finally:
        if bad is not None:
            os.environ[WAIT_TIMEOUT_VARIABLE] = bad


def leave_process_group() -> None:
    """Destroy a group of several ranks at once, without waiting for the others, as a rank stopping on an error must
    before it exits: left to the interpreter's teardown, gloo was seen to abort there ('terminate called without an
    active exception', exit -6 instead of the error's 2). Ranks waiting for this one in a collective see it gone."""
    import torch.distributed as dist

    global _waiting_group, _group_device
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.destroy_process_group()
        _waiting_group = _group_device = None


def shut_down_process_group() -> None:
    """End a multi-process job's process group once every rank is done with it (a barrier, then destroy), as a
    launched process should before it exits: left to the interpreter's teardown, a rank of a CPU (gloo) job was
    seen to abort there ('terminate called without an active exception') after its run had finished. A group of
    one process is kept: in-process callers (tests, notebooks) train again in it."""
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
        leave_process_group()
