"""The random number generators' states a checkpoint saves per rank (Python's, NumPy's, torch's on the CPU and on
CUDA), put back on resume, and kept across a computation beside training (`rng_kept`)."""
from __future__ import annotations

import contextlib
import random
from typing import Any, Dict, Iterator

import numpy as np
import torch


def rng_state() -> Dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) RNG states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore an `rng_state()`; its CUDA states only where CUDA is available."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
