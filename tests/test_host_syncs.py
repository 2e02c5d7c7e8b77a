"""Host synchronisations a CUDA run would make, counted on the CPU by benchmarks/host_syncs.py's `HostSyncCounter`:
the counter itself, then the hot paths that must not wait for the device (each test says what it was), and a
steady-state training step's bound (a change that adds a per-micro-batch or per-layer sync fails it)."""
from __future__ import annotations

import importlib.util
import sys

import torch

from conftest import REPO_ROOT

_spec = importlib.util.spec_from_file_location("host_syncs", REPO_ROOT / "benchmarks" / "host_syncs.py")
host_syncs = importlib.util.module_from_spec(_spec)
sys.modules["host_syncs"] = host_syncs  # (its dataclasses look their module up)
_spec.loader.exec_module(host_syncs)
HostSyncCounter = host_syncs.HostSyncCounter

TASKS = ["nli", "qa", "summ"]
DEVICE = torch.device("cpu")  # what `.to(env.device)` is given: a torch.device (the counter's mark of a transfer)


def _ops(counter: HostSyncCounter) -> list:
    return [sync.op for sync in counter.syncs]


# ------------------------------------------------------------------------------------------- the counter
def test_the_counter_counts_reads_and_value_sized_ops_of_device_tensors_only():
    host = torch.tensor([1.0, 0.0, 3.0])
    counter = HostSyncCounter()
    with counter:
        x = host.to(DEVICE, non_blocking=True)  # moved to the device: its reads count, the host tensor's do not
        host.tolist(), float(host[0]), host.nonzero(), host[host > 0]
        x.sum().item()
        x.tolist()
        bool(x[0])
        x.nonzero()
        x[x > 0]
        torch.bincount(x.long(), minlength=4)
        x.cpu()
        y = torch.zeros(3, device=x.device) + 1  # made on the device
        y.max().item()
        x.add(1).mul(2).index_select(0, torch.tensor([0, 2]))  # no read
        host.to(DEVICE)  # a copy to the device that waits for it
        torch.tensor([1, 2], device=DEVICE)
    assert _ops(counter) == ["item", "tolist", "__bool__", "nonzero", "bool-mask index", "bincount", "cpu", "item",
                             "upload", "upload"]
    assert {(sync.site, sync.package) for sync in counter.syncs} == {("?", None)}  # (made here, in tests/)


def test_the_counter_counts_a_modules_parameters_and_gradients_as_device_tensors():
    layer = torch.nn.Linear(3, 2)
    layer(torch.ones(1, 3)).sum().backward()
    counter = HostSyncCounter()
    counter.mark(layer)
    with counter:
        layer.weight.sum().item()
        layer.weight.grad.norm().item()
        torch.ones(2).sum().item()  # a host tensor
    assert _ops(counter) == ["item", "item"]
