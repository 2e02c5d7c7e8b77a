"""The random number generators' states a checkpoint saves per rank (Python's, NumPy's, torch's on the CPU and, where
training runs on a GPU, on the rank's own GPU), put back on resume, and kept across a computation beside training
(`rng_kept`)."""
from __future__ import annotations

import contextlib
import random
from typing import Any, Dict, Iterator

import numpy as np
import torch

from t2t_mtl.engine.distributed import trains_on_gpu


def rng_state() -> Dict[str, Any]:
    """Python, NumPy and torch RNG states: the CPU's and, where training runs on a GPU (`trains_on_gpu`), the current
    GPU's (the rank's own, which `init_distributed` selects) — not every visible GPU's, which a machine of fewer GPUs
    could not take back, nor a GPU's where the run trains on the CPU (its CUDA context made on cuda:0 for nothing)."""
    state = cpu_rng_state()
    if trains_on_gpu():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def cpu_rng_state() -> Dict[str, Any]:
    """Python's, NumPy's and torch's CPU generator states (what `set_rng_state` puts back of a state without "cuda")."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore an `rng_state()`; its CUDA state only where training runs on a GPU, to the current GPU. A state saved
    before 2026-12-07 holds every visible GPU's (a list): the current GPU's is taken from it, where it has one."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and trains_on_gpu():
        cuda = state["cuda"]
        if isinstance(cuda, (list, tuple)):
            current = torch.cuda.current_device()
            cuda = cuda[current] if current < len(cuda) else None
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)


@contextlib.contextmanager
def rng_kept() -> Iterator[None]:
    """Run the block with the Python, NumPy and torch RNG states put back as they were after it: a computation
    beside training (an evaluation) draws nothing from the streams training and its checkpoints continue, even
    where a library's first import in a process draws (loading a metric imports rich, whose import calls
    random.getrandbits), which a resumed process does at another step than the uninterrupted one."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


@contextlib.contextmanager
def callers_rng_kept() -> Iterator[None]:
    """Run the block (a `train` call) with Python's, NumPy's and torch's CPU generators, and every GPU's where CUDA
    was started before it, put back as they were after it: the run seeds them with its training.seed and draws from
    them, and its caller (a notebook) draws next what its own seeding gives. (A GPU's generator CUDA had not started
    is left alone: reading it would start CUDA, on the first GPU, before the run picks its rank's.)"""
    state = cpu_rng_state()
    gpus = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        set_rng_state(state)
        if gpus is not None:
            torch.cuda.set_rng_state_all(gpus)
