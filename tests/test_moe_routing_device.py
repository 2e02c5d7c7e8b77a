"""A model whose MoE routing kernels (`model.moe.backend`) cannot run on the device `eval` and `predict` put it on is
refused as it is loaded, naming the setting and where it is kept."""
from __future__ import annotations

import pytest

from t2t_mtl.cli import main as cli_main
from t2t_mtl.model import build_model

from engine_helpers import train_tiny_tokenizer

DIMS = {"d_model": 16, "d_kv": 4, "d_ff": 32, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2,
        "dropout_rate": 0.0}


@pytest.fixture(scope="module")
def triton_routed(tmp_path_factory):
    """A token-routed MoE model folder saved with model.moe.backend triton (as a GPU run may choose)."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("moe_device")
    tokenizer = AutoTokenizer.from_pretrained(str(train_tiny_tokenizer(root / "tok")))
    model = build_model({"dims": DIMS, "moe": {"num_experts": 2, "top_k": 1, "every": 1, "backend": "triton"}},
                        vocab_size=len(tokenizer))
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return root / "model"


@pytest.mark.parametrize("command", [["eval", "--tasks", "parity", "--max-examples", "2", "--no-progress"],
                                     ["predict", "parity: 1 0 1"]])
def test_a_routing_backend_that_cannot_run_on_the_device_is_refused_naming_the_setting(triton_routed, capsys,
                                                                                       monkeypatch, command):
    # was: the kernels' own error at the first forward, which names neither model.moe.backend nor where it is kept
    import t2t_kernels.moe as kernels

    monkeypatch.setattr(kernels, "_INTERPRETING", False)  # a CPU machine without TRITON_INTERPRET=1
    assert cli_main([command[0], "--checkpoint", str(triton_routed), *command[1:]]) != 0
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: checkpoint {str(triton_routed)!r} routes its MoE layers with model.moe.backend 'triton', which "
        f"cannot run here (backend='triton' cannot run on cpu: tensors are not on CUDA and TRITON_INTERPRET=1 was "
        f"not set before t2t_kernels.moe was imported; use backend='reference'): set it to 'auto' or 'reference' in "
        f"the model.moe of the run's config.yaml, or the moe of a model folder's config.json")


@pytest.mark.parametrize("backend", ["auto", "triton"])
def test_more_experts_than_the_triton_kernels_take_are_told_to_route_by_the_reference(backend):
    # was told to "set it to 'auto' or 'reference'": auto on a GPU runs the same Triton kernels, so it is refused alike
    from types import SimpleNamespace

    import torch

    from t2t_mtl.evaluation.checkpoint import check_routing_device
    from t2t_mtl.evaluation.errors import CheckpointError

    model = SimpleNamespace(moe_config=SimpleNamespace(routing="token", backend=backend, num_experts=16385))
    with pytest.raises(CheckpointError) as info:
        check_routing_device(model, torch.device("cuda", 0), "run")  # (only its type is read: no tensor is made)
    assert str(info.value) == (
        f"checkpoint 'run' routes its MoE layers with model.moe.backend {backend!r}, which cannot run here (the "
        f"Triton routing takes at most 16384 experts, got 16385; use backend='reference'): set it to 'reference' in "
        f"the model.moe of the run's config.yaml, or the moe of a model folder's config.json")


def test_a_task_routed_model_is_not_refused_for_a_backend_it_runs_no_kernel_of(monkeypatch):
    # kills a mutant of check_routing_device that its tests let live: task routing checked like token routing, so a
    # task-routed model saved with backend triton was refused on a CPU, where it runs (its experts are the top_k of
    # its task's gate row, chosen by the PyTorch reference)
    import t2t_kernels.moe as kernels
    import torch

    from t2t_mtl.evaluation.checkpoint import check_routing_device

    monkeypatch.setattr(kernels, "_INTERPRETING", False)  # a CPU machine without TRITON_INTERPRET=1
    model = build_model({"dims": DIMS, "moe": {"num_experts": 2, "top_k": 1, "every": 1, "routing": "task",
                                               "backend": "triton"}}, vocab_size=32, task_names=["a", "b"])
    check_routing_device(model, torch.device("cpu"), "run")
    ids = torch.tensor([[3, 4, 1], [5, 6, 1]])
    logits = model(input_ids=ids, labels=ids, task_ids=torch.tensor([0, 1])).logits  # (it runs here)
    assert logits.shape == (2, 3, 32) and torch.isfinite(logits).all()
