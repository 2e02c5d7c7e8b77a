"""The ranks a launcher started (torchrun's or deepspeed's variables, srun's), read from the environment alone:
without torch or a process group, so a command that loads no model (`tasks validate`) can ask which rank it is."""
from __future__ import annotations

import os
from typing import Optional

#: the variables torchrun and the `deepspeed` launcher set for each rank (srun's are mapped to them)
RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def started_by_srun() -> bool:
    """Whether this process is a rank that srun started and no other launcher set RANK for."""
    env = os.environ
    # srun sets SLURM_STEP_ID; an sbatch script's own commands see SLURM_PROCID=0 and the job's SLURM_NTASKS too,
    # but are one process each: taking those would wait in the rendezvous for ranks that never start
    return "RANK" not in env and "SLURM_STEP_ID" in env and "SLURM_PROCID" in env and "SLURM_NTASKS" in env


def launched_world_size() -> int:
    """The number of ranks the launcher started (WORLD_SIZE, else srun's SLURM_NTASKS; 1 for a bare process),
    read without joining or changing the environment; a LaunchEnvironmentError naming WORLD_SIZE where it is no
    whole number."""
    env = os.environ
    if "WORLD_SIZE" in env:
        return _whole_number("WORLD_SIZE")
    return int(env["SLURM_NTASKS"]) if started_by_srun() else 1


def launched_rank() -> int:
    """This process's rank as the launcher set it (RANK, else srun's SLURM_PROCID; 0 for a bare process), read
    without joining or changing the environment; a LaunchEnvironmentError naming RANK where it is no whole number."""
    env = os.environ
    if "RANK" in env:
        return _whole_number("RANK")
    return int(env["SLURM_PROCID"]) if started_by_srun() else 0


def launch_variables_problem() -> Optional[str]:
    """What makes the launcher's variables unusable, naming the variable and what to set; None where they are usable
    (none set: one process; srun's own). RANK and WORLD_SIZE come together, as torchrun and the `deepspeed` launcher
    set them (without WORLD_SIZE DeepSpeed looks for MPI instead, and a WORLD_SIZE of several ranks without RANK would
    train one process alone), whole numbers with 0 <= RANK < WORLD_SIZE (so WORLD_SIZE at least 1); LOCAL_RANK a
    whole number."""
    env = os.environ
    if started_by_srun():
        return None
    for name in RANK_VARIABLES:
        if name in env and not _is_whole_number(env[name]):
            return _not_a_whole_number(name)
    if "WORLD_SIZE" in env and int(env["WORLD_SIZE"]) == 0:
        return (f"environment variable WORLD_SIZE must be at least 1 (the number of ranks of the job, as torchrun and "
                f"the deepspeed launcher set it), got {env['WORLD_SIZE']!r}")
    if "RANK" in env and "WORLD_SIZE" not in env:
        return (f"environment variable RANK is set ({env['RANK']}) but WORLD_SIZE is not: set WORLD_SIZE to the "
                f"number of ranks of the job (torchrun and the deepspeed launcher set both), or unset RANK to train "
                f"one process")
    if "WORLD_SIZE" in env and "RANK" not in env and int(env["WORLD_SIZE"]) != 1:
        return (f"environment variable WORLD_SIZE is set ({env['WORLD_SIZE']}) but RANK is not: set RANK to this "
                f"process's rank, 0 to {int(env['WORLD_SIZE']) - 1} (torchrun and the deepspeed launcher set both), "
                f"or unset WORLD_SIZE to train one process")
    if "RANK" in env and not int(env["RANK"]) < int(env["WORLD_SIZE"]):
        return (f"environment variable RANK is {int(env['RANK'])}, but WORLD_SIZE is {int(env['WORLD_SIZE'])}: the "
                f"ranks of a job are 0 to WORLD_SIZE - 1 (WORLD_SIZE counts every rank of every node)")
    return _master_addr_problem() if "RANK" in env else None


def _master_addr_problem() -> Optional[str]:
    """MASTER_ADDR unset where the ranks (RANK and WORLD_SIZE set) span machines, as a LOCAL_WORLD_SIZE (torchrun's
    name) below WORLD_SIZE tells: 127.0.0.1, its default, reaches only this machine's ranks. (torchrun and the
    deepspeed launcher set MASTER_ADDR; ranks started by hand may not.)"""
    env = os.environ
    local = env.get("LOCAL_WORLD_SIZE", "")
    if "MASTER_ADDR" in env or not _is_whole_number(local) or int(local) >= int(env["WORLD_SIZE"]):
        return None
    return (f"environment variable MASTER_ADDR is not set, but WORLD_SIZE ({int(env['WORLD_SIZE'])}) is more than "
            f"LOCAL_WORLD_SIZE ({int(local)}), the ranks of this machine: the ranks span machines, and those of the "
            f"others would wait out the rendezvous at 127.0.0.1, their own address: set MASTER_ADDR to rank 0's host, "
            f"reachable from every machine (as torchrun and the deepspeed launcher do)")


def check_launch_variables() -> None:
    """Refuse the launcher's variables where `launch_variables_problem` finds them unusable: a LaunchEnvironmentError
    naming the variable."""
    problem = launch_variables_problem()
    if problem is not None:
        from t2t_mtl.config_errors import LaunchEnvironmentError

        raise LaunchEnvironmentError(problem)


def _whole_number(name: str) -> int:
    """The environment variable `name` (set) as an int; a LaunchEnvironmentError naming it where it is no whole
    number."""
    if not _is_whole_number(os.environ[name]):
        from t2t_mtl.config_errors import LaunchEnvironmentError

        raise LaunchEnvironmentError(_not_a_whole_number(name))
    return int(os.environ[name])


def _is_whole_number(text: str) -> bool:
    return text.strip().isdecimal()  # (isdigit takes ², which int() refuses)


def _not_a_whole_number(name: str) -> str:
    return (f"environment variable {name} must be a whole number (as torchrun and the deepspeed launcher set it), "
            f"got {os.environ[name]!r}")
