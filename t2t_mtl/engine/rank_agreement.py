"""The check that the state a checkpoint saves from rank 0 alone is every rank's.

A checkpoint keeps one copy of the sampler's, the loss weighting's and the gradient method's state (rank 0's), which
every rank loads on a resume under another world size, on the promise that the ranks hold the same state: samplers
draw from the shared seed and learn from the all-reduced step stats, a weighting learning from its rank's own losses
makes its state the same in `synchronize`. A registered class breaking it makes the ranks train differently, and a
resume would silently give every rank rank 0's state. `disagreement` compares a digest of each part's state over
the ranks (one all-gather of 16 bytes a part) and names the parts that differ.
"""
from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import numpy as np
import torch

from t2t_mtl.engine.distributed import DistEnv, failed_ranks_wording, gather_over_ranks

DIGEST_BYTES = 16


@dataclass(frozen=True)
class SharedPart:
    """A part of the loop whose `state` every rank must hold alike: `name` (as a message names it), the config key
    choosing it, the object whose class is named, and `remedy` (what such a class must do)."""

    name: str
    key: str
    owner: Any
    state: Any
    remedy: str


def state_digest(state: Any) -> bytes:
    """A digest of `state`'s values (`DIGEST_BYTES` bytes), the same in every process for equal values: tensors and
    arrays by dtype, shape and bytes, floats exactly, mappings and sets whatever their order; never object ids or
    Python's per-process string hashes."""
    digest = hashlib.blake2b(digest_size=DIGEST_BYTES)
    _feed(digest, state)
    return digest.digest()


def _feed(digest: Any, value: Any) -> None:
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, np.generic)):
        digest.update(f"{type(value).__name__}:{value!r};".encode())
    elif isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"tensor:{flat.dtype}:{tuple(value.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, np.ndarray):
        digest.update(f"array:{value.dtype.str}:{value.shape};".encode())
        digest.update(np.ascontiguousarray(value).tobytes() if value.dtype != object else pickle.dumps(value.tolist()))
    elif isinstance(value, dict):  # (ranks may fill a dict in another order: compared as a set of items)
        items = sorted((state_digest(key), state_digest(item)) for key, item in value.items())
        digest.update(f"dict:{len(items)};".encode() + b"".join(k + v for k, v in items))
    elif isinstance(value, (set, frozenset)):
        digest.update(f"set:{len(value)};".encode() + b"".join(sorted(map(state_digest, value))))
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__}:{len(value)};".encode())
        for item in value:
            _feed(digest, item)
    elif hasattr(value, "__dict__"):
        digest.update(f"object:{type(value).__module__}.{type(value).__qualname__};".encode())
        _feed(digest, vars(value))
    else:
        digest.update(pickle.dumps(value))


def disagreement(parts: Sequence[SharedPart], env: DistEnv, step: int) -> Optional[str]:
    """Collective (every rank calls it with its own parts, in the same order): None where every rank holds each
    part's state alike, else the message naming each part that differs, its class and module, the ranks holding
    another state than rank 0's and what the class must do. One rank: None, without computing anything."""
    if env.world_size == 1 or not parts:
        return None
    digests = torch.frombuffer(bytearray(b"".join(state_digest(part.state) for part in parts)), dtype=torch.int64)
    gathered = gather_over_ranks(digests.to(env.device)).cpu().view(env.world_size, len(parts), -1)
    problems: List[str] = []
    for i, part in enumerate(parts):
        differing = [rank for rank in range(1, env.world_size) if not torch.equal(gathered[rank, i], gathered[0, i])]
        if differing:
            ranks, _ = failed_ranks_wording(differing, env.world_size)
            cls = type(part.owner)
            problems.append(f"the {part.name}'s state ({part.key}: {cls.__qualname__} of module {cls.__module__}) on "
                            f"{ranks} differs from rank 0's; {part.remedy}")
    if not problems:
        return None
    return (f"at step {step} the ranks hold different states where a checkpoint keeps rank 0's alone (a resume would "
            f"give every rank rank 0's, and the ranks already train differently): {'; '.join(problems)}. Nothing "
            f"was saved at this step")
