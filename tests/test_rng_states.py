"""The RNG states a checkpoint saves per rank (`t2t_mtl.engine.rng_states`): put back, they draw again what they
drew."""
from __future__ import annotations

import pytest
import torch

from t2t_mtl.engine.rng_states import rng_state, set_rng_state


def test_rng_state_roundtrip():
    state = rng_state()
    a = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    set_rng_state(state)
    b = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def as_gpu_machine(monkeypatch, gpus: int, generators: dict) -> None:
    """Make torch.cuda answer as a machine of `gpus` GPUs, the current one 0, whose generators' states are
    `generators` (device index → state); setting a device it lacks fails as torch does (past default_generators)."""
    def index(device) -> int:
        device = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
        return 0 if device.index is None else device.index

    def get_rng_state(device="cuda"):
        return generators[index(device)].clone()

    def set_rng_state(state, device="cuda"):
        if index(device) >= gpus:
            raise IndexError("tuple index out of range")
        generators[index(device)] = state.clone()

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("DS_ACCELERATOR", "cuda")  # (a run on the GPU: DS_ACCELERATOR=cpu trains on the CPU)
    for module in (torch.cuda, torch.cuda.random):  # (the _all functions call the module's own names)
        monkeypatch.setattr(module, "get_rng_state", get_rng_state)
        monkeypatch.setattr(module, "set_rng_state", set_rng_state)
        monkeypatch.setattr(module, "device_count", lambda: gpus)
        monkeypatch.setattr(module, "current_device", lambda: 0)


def test_a_state_saved_beside_more_gpus_than_the_resume_has_is_put_back_on_the_ranks_gpu(monkeypatch):
    # was: a rank saved every visible GPU's generator state and put them all back, so a checkpoint of a process on
    # cuda:0 of a 2-GPU machine stopped its resume on a 1-GPU machine (setting cuda:1: an IndexError inside torch)
    own, other, fresh = (torch.full((16,), value, dtype=torch.uint8) for value in (1, 2, 3))
    with monkeypatch.context() as patch:
        as_gpu_machine(patch, 2, {0: own, 1: other})
        saved = rng_state()
    one_gpu = {0: fresh}
    as_gpu_machine(monkeypatch, 1, one_gpu)
    set_rng_state(saved)
    assert torch.equal(one_gpu[0], own)
    assert torch.equal(saved["cuda"], own)  # the rank's own GPU's state only
    one_gpu[0] = fresh
    set_rng_state({**saved, "cuda": [own, other]})  # a checkpoint of before: every visible GPU's state, in order
    assert torch.equal(one_gpu[0], own)


def test_a_run_on_the_cpu_of_a_gpu_machine_keeps_no_gpu_state(monkeypatch):
    # was: with CUDA available, a run DS_ACCELERATOR=cpu trains on the CPU saved cuda:0's generator state, making a
    # CUDA context there (every rank of it) for a generator it never draws from
    as_gpu_machine(monkeypatch, 1, {0: torch.zeros(16, dtype=torch.uint8)})
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda *args, **kwargs: pytest.fail("the GPU's state was read"))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda *args, **kwargs: pytest.fail("the GPU's state was set"))
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    state = rng_state()
    assert "cuda" not in state
    set_rng_state({**state, "cuda": torch.zeros(16, dtype=torch.uint8)})  # (a GPU run's, resumed on the CPU)


def test_an_older_list_of_states_gives_the_rank_on_a_later_gpu_its_entry_or_nothing(monkeypatch):
    # kills mutants of set_rng_state that its tests let live (their rank was on cuda:0 alone): the first entry of an
    # older checkpoint's list put back on every rank's GPU, and a rank whose GPU the list has no entry for failing
    # (an IndexError) or given another GPU's entry; its generator is left as it is
    first, second, fresh = (torch.full((16,), value, dtype=torch.uint8) for value in (1, 2, 3))
    generators = {0: fresh.clone(), 1: fresh.clone()}
    as_gpu_machine(monkeypatch, 2, generators)

    def set_current(state, device="cuda"):  # (a bare "cuda" is the current GPU's, as in torch)
        generators[1 if device == "cuda" else torch.device(device).index] = state.clone()

    for module in (torch.cuda, torch.cuda.random):
        monkeypatch.setattr(module, "current_device", lambda: 1)
        monkeypatch.setattr(module, "set_rng_state", set_current)
    state = rng_state()
    set_rng_state({**state, "cuda": [first, second]})
    assert torch.equal(generators[1], second) and torch.equal(generators[0], fresh)
    generators[1] = fresh.clone()
    set_rng_state({**state, "cuda": (first, second)})
    assert torch.equal(generators[1], second)
    generators[1] = fresh.clone()
    set_rng_state({**state, "cuda": [first]})  # (saved on a machine of one GPU)
    assert torch.equal(generators[1], fresh) and torch.equal(generators[0], fresh)


@pytest.mark.parametrize("cuda_started", [False, True])
def test_the_callers_generators_are_put_back_after_the_block_and_the_gpus_only_where_cuda_was_started(monkeypatch,
                                                                                                     cuda_started):
    # kills mutants of callers_rng_kept no test let live: the CPU generators left as the block drew them, every GPU's
    # left as the block set it where CUDA was started, and CUDA started (to read the GPUs' states) where it was not
    import random

    import numpy as np

    from t2t_mtl.engine.rng_states import callers_rng_kept

    gpus = [torch.full((16,), 1, dtype=torch.uint8), torch.full((16,), 2, dtype=torch.uint8)]
    set_all = []

    def get_all():
        assert cuda_started, "a GPU's state was read before CUDA was started"
        return [state.clone() for state in gpus]

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: cuda_started)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", get_all)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: set_all.append([s.clone() for s in states]))
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    with callers_rng_kept():
        random.seed(7), np.random.seed(7), torch.manual_seed(7)
        random.random(), np.random.rand(), torch.rand(1)
        gpus[:] = [torch.zeros(16, dtype=torch.uint8)] * 2
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(1), expected[2])
    if cuda_started:
        assert len(set_all) == 1 and [s.tolist() for s in set_all[0]] == [[1] * 16, [2] * 16]
    else:
        assert set_all == []
