"""benchmarks/surgery_step.py's memory column: the fp32 numbers the surgery hook holds per rank, from its layout."""
from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import torch

from conftest import REPO_ROOT
from t2t_mtl.gradients.deepspeed_hook import DeepSpeedSurgeryHook


def _benchmark(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))  # it imports train_throughput from beside it
    path = REPO_ROOT / "benchmarks" / "surgery_step.py"
    spec = importlib.util.spec_from_file_location("benchmark_surgery_step", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hook_buffers_count_every_buffer_of_a_rank(monkeypatch):
    """P = 1000 on 2 ranks (500 each), 4 task rows. ZeRO 0-2: the scratch of the whole gradient (1000), the
    reduce-scatter piece (500) and 4 row slices (2000); ZeRO-3: DeepSpeed's accumulated pieces (500) and 4 row
    pieces (2000)."""
    assert _benchmark(monkeypatch).hook_buffers(1000, 4, 2) == (3500, 2500)


def _held_floats(hook: DeepSpeedSurgeryHook, model: torch.nn.Module) -> int:
    """fp32 numbers in the storage of the tensors the hook and its surgery hold (each storage once, the model's own
    parameters left out)."""
    own = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen, total = set(), 0
    for holder in (vars(hook), vars(hook.surgery)):
        for value in holder.values():
            for tensor in value if isinstance(value, list) else [value]:
                if isinstance(tensor, torch.Tensor) and tensor.untyped_storage().data_ptr() not in own | seen:
                    seen.add(tensor.untyped_storage().data_ptr())
                    total += tensor.untyped_storage().nbytes() // 4
    return total


def test_hook_buffers_match_what_the_hook_holds_on_one_rank(monkeypatch):
    model = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.Linear(20, 3))
    engine = SimpleNamespace(module=model, gradient_accumulation_steps=lambda: 4)
    hook = DeepSpeedSurgeryHook({"method": "pcgrad"}, engine, [f"task{i}" for i in range(12)])
    try:
        params = sum(p.numel() for p in model.parameters())
        expected = _benchmark(monkeypatch).hook_buffers(params, 4, 1)[0]
        assert _held_floats(hook, model) == expected + 1  # + the one zero of the surgery's stand-in parameter
    finally:
        hook.remove()
