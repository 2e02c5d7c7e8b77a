"""The ranks a launcher started (torchrun's or deepspeed's variables, srun's), read from the environment alone:
without torch or a process group, so a command that loads no model (`tasks validate`) can ask which rank it is."""
from __future__ import annotations

import os


def started_by_srun() -> bool:
    """Whether this process is a rank that srun started and no other launcher set RANK for."""
    env = os.environ
    # srun sets SLURM_STEP_ID; an sbatch script's own commands see SLURM_PROCID=0 and the job's SLURM_NTASKS too,
    # but are one process each: taking those would wait in the rendezvous for ranks that never start
    return "RANK" not in env and "SLURM_STEP_ID" in env and "SLURM_PROCID" in env and "SLURM_NTASKS" in env


def launched_world_size() -> int:
    """The number of ranks the launcher started (WORLD_SIZE, else srun's SLURM_NTASKS; 1 for a bare process),
    read without joining or changing the environment."""
    env = os.environ
    if "WORLD_SIZE" in env:
        return int(env["WORLD_SIZE"])
    return int(env["SLURM_NTASKS"]) if started_by_srun() else 1


def launched_rank() -> int:
    """This process's rank as the launcher set it (RANK, else srun's SLURM_PROCID; 0 for a bare process), read
    without joining or changing the environment."""
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"])
    return int(env["SLURM_PROCID"]) if started_by_srun() else 0
