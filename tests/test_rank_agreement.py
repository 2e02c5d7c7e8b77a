"""rank_agreement: the state a checkpoint saves from rank 0 alone (sampler, loss weighting, gradient method) is
compared over the ranks by a digest of its values, and a part held differently is refused naming its class."""
from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from t2t_mtl.engine.distributed import DistEnv
from t2t_mtl.engine.rank_agreement import SharedPart, disagreement, state_digest
from t2t_mtl.engine.training_state import LoopParts, Progress, shared_parts, trainer_state
from t2t_mtl.gradients.gradvac import GradVac
from t2t_mtl.sampling.bandit import SoftmaxBanditSampler, ThompsonBanditSampler
from t2t_mtl.sampling.static import TemperatureSampler
from t2t_mtl.sampling.uncertainty import UncertaintySelectionSampler
from t2t_mtl.weighting.methods import TchebycheffWeighting

RANK0 = DistEnv(0, 2, 0, torch.device("cpu"), "gloo")
SIZES = {"a": 10, "b": 30}


class OwnLossWeighting(TchebycheffWeighting):
    """Tchebycheff without `synchronize`: each rank keeps its own first losses as the references."""

    method = "own_loss"

    def synchronize(self, all_reduce_sum):
        pass


def test_equal_values_have_one_digest_whatever_their_order_storage_or_process():
    values = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    state = {"b": [1.5, None, "x"], "a": {"t": values.t().contiguous(), "s": {"q", "p"}}, "n": np.arange(3)}
    same = {"n": np.arange(3), "a": {"s": {"p", "q"}, "t": values.t().requires_grad_()}, "b": [1.5, None, "x"]}
    assert state_digest(state) == state_digest(same)  # (dict order, a transposed view, autograd flags aside)
    for changed in ({**state, "b": [1.5000001, None, "x"]}, {**state, "n": np.arange(3.0)},
                    {**state, "a": {**state["a"], "t": values.t().double()}}, {**state, "b": [1.5, None]},
                    {**state, "a": {**state["a"], "t": values.t().reshape(6)}}):  # its bytes in another shape
        assert state_digest(changed) != state_digest(state)
    # another process (another PYTHONHASHSEED: its sets of strings iterate in another order) gives the same digest
    code = ("import numpy as np, torch; from t2t_mtl.engine.rank_agreement import state_digest; "
            "v = torch.arange(6, dtype=torch.float32).reshape(2, 3); "
            "print(state_digest({'b': [1.5, None, 'x'], 'a': {'t': v.t(), 's': {'q', 'p'}}, 'n': np.arange(3)}).hex())")
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed})
        assert out.stdout.strip() == state_digest(state).hex()


def fake_two_ranks(monkeypatch, other_parts):
    """A fake group of two ranks: this process is rank 0, rank 1 holds `other_parts`. Returns the gathered tensors."""
    gathered = []

    def all_gather(parts, tensor, *args, **kwargs):
        gathered.append(tensor.clone())
        other = b"".join(state_digest(part.state) for part in other_parts)
        parts[0].copy_(tensor)
        parts[1].copy_(torch.frombuffer(bytearray(other), dtype=torch.int64))

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *args: 2)
    monkeypatch.setattr(torch.distributed, "all_gather", all_gather)
    return gathered


def loop_parts(sampler, weighting, packed=False):
    return LoopParts(sampler, None, SimpleNamespace(packed=packed), weighting, None, None, None)


def parts_of(sampler, weighting, packed=False, method=None):
    parts = loop_parts(sampler, weighting, packed)
    state = {"sampler": sampler.state_dict(), "weighting": weighting.state_dict(), "weighting_optimizer": None}
    if method is not None:  # (the step hook training holds: its GradientSurgery's method)
        parts.surgery = SimpleNamespace(surgery=SimpleNamespace(method=method))
        state["gradient_surgery"] = {"method": method.name, "state": method.state_dict()}
    return shared_parts(state, parts)


def stepped_weighting(cls, losses):
    weighting = cls(["a", "b"], SIZES)
    weighting({task: torch.tensor(value) for task, value in losses.items()}, epoch=0.0)
    return weighting


def test_a_weighting_learning_from_its_own_ranks_losses_is_refused_naming_its_class(monkeypatch):
    sampler = TemperatureSampler(SIZES, seed=3)
    this = parts_of(sampler, stepped_weighting(OwnLossWeighting, {"a": 1.0, "b": 2.0}))
    other = parts_of(sampler, stepped_weighting(OwnLossWeighting, {"a": 1.5, "b": 2.0}))
    gathered = fake_two_ranks(monkeypatch, other)
    message = disagreement(this, RANK0, step=4)
    assert len(gathered) == 1 and gathered[0].numel() * 8 == 16 * 2  # one all-gather: 16 bytes a part
    assert message.startswith("at step 4 the ranks hold different states where a checkpoint keeps rank 0's alone")
    assert ("the loss weighting's state (weighting.method: OwnLossWeighting of module test_rank_agreement) on rank 1 "
            "of 2 differs from rank 0's; a weighting learning from its rank's own losses makes what it learns the "
            "same on every rank in synchronize(all_reduce_sum)") in message
    assert "sampler's" not in message and message.endswith("Nothing was saved at this step")


def test_equal_states_pass_and_the_shipped_weighting_synchronized_passes(monkeypatch):
    sampler = TemperatureSampler(SIZES, seed=3)
    weighting = stepped_weighting(TchebycheffWeighting, {"a": 1.0, "b": 2.0})
    other = stepped_weighting(TchebycheffWeighting, {"a": 1.5, "b": 2.0})
    for each in (weighting, other):  # (the all-reduce of the two ranks' references, as training's synchronize)
        each.synchronize(lambda t: t.new_tensor([[2.5, 4.0], [2.0, 2.0]]))
    fake_two_ranks(monkeypatch, parts_of(TemperatureSampler(SIZES, seed=3), other))
    assert disagreement(parts_of(sampler, weighting), RANK0, step=2) is None


def test_a_sampler_seeded_by_rank_is_refused_and_per_rank_figures_are_not(monkeypatch):
    weighting = stepped_weighting(TchebycheffWeighting, {"a": 1.0, "b": 1.0})
    fake_two_ranks(monkeypatch, parts_of(TemperatureSampler(SIZES, seed=4), weighting))
    message = disagreement(parts_of(TemperatureSampler(SIZES, seed=3), weighting), RANK0, step=1)
    assert ("the sampler's state (sampling.strategy: TemperatureSampler of module t2t_mtl.sampling.static) on rank 1 "
            "of 2 differs from rank 0's; a sampler draws from the seed it is given") in message
    # uncertainty's selected counts are this rank's own (saved per rank): ranks selecting apart agree
    this, other = (UncertaintySelectionSampler(SIZES, seed=3) for _ in range(2))
    this.select({"a": torch.tensor([0.9]), "b": torch.tensor([0.1])}, {"a": 2, "b": 2})
    other.select({"a": torch.tensor([0.1]), "b": torch.tensor([0.9])}, {"a": 2, "b": 2})
    assert this.state_dict() != other.state_dict()
    fake_two_ranks(monkeypatch, parts_of(other, weighting))
    assert disagreement(parts_of(this, weighting), RANK0, step=1) is None


def test_a_sampler_whose_learned_state_differs_is_refused_before_its_probabilities_do(monkeypatch):
    """A bandit's first validation sets its baselines and changes no probability: ranks fed their own shard's scores
    (not the gathered ones) hold equal probabilities and different baselines, whose next rewards differ. Was: the
    strategy's extra state was never compared, so such a save passed (and a resume on another world size gave every
    rank rank 0's baselines)."""
    weighting = stepped_weighting(TchebycheffWeighting, {"a": 1.0, "b": 1.0})
    this, other = (SoftmaxBanditSampler(SIZES, seed=3, rank=rank, world_size=2) for rank in range(2))
    this.update({"val_score": {"a": 0.2, "b": 0.4}})
    other.update({"val_score": {"a": 0.3, "b": 0.4}})
    assert this.probabilities() == other.probabilities()
    fake_two_ranks(monkeypatch, parts_of(other, weighting))
    message = disagreement(parts_of(this, weighting), RANK0, step=5)
    assert ("the sampler's state (sampling.strategy: SoftmaxBanditSampler of module t2t_mtl.sampling.bandit) on "
            "rank 1 of 2 differs from rank 0's") in message
    for sampler in (this, other):  # (what the ranks would have trained on after the next validation)
        sampler.update({"val_score": {"a": 0.5, "b": 0.4}})
    assert this.probabilities() != other.probabilities()


def test_ranks_drawing_apart_in_packed_mixed_batches_compare_the_samplers_settings_only(monkeypatch):
    weighting = stepped_weighting(TchebycheffWeighting, {"a": 1.0, "b": 1.0})
    this, other = (TemperatureSampler(SIZES, seed=3, mode="mixed") for _ in range(2))
    this.sample_tasks(5)
    other.sample_tasks(7)  # (each rank draws the rows its own packed micro-batches hold)
    fake_two_ranks(monkeypatch, parts_of(other, weighting))
    assert "the sampler's state" in disagreement(parts_of(this, weighting), RANK0, step=1)  # unpacked: refused
    fake_two_ranks(monkeypatch, parts_of(other, weighting, packed=True))
    assert disagreement(parts_of(this, weighting, packed=True), RANK0, step=1) is None


def test_what_a_sampler_learns_from_its_own_ranks_packed_draws_is_not_compared(monkeypatch):
    """bandit_thompson with a target credits the arms its rank drew since the last update: ranks packing their own
    rows learn apart, as they draw apart."""
    weighting = stepped_weighting(TchebycheffWeighting, {"a": 1.0, "b": 1.0})
    this, other = (ThompsonBanditSampler(SIZES, seed=3, mode="mixed", target="a") for _ in range(2))
    for sampler, n in ((this, 5), (other, 7)):
        for score in (0.2, 0.3):
            sampler.sample_tasks(n)
            sampler.update({"val_score": {"a": score, "b": 0.1}})
    assert this.state_dict()["extra"]["alpha"] != other.state_dict()["extra"]["alpha"]
    fake_two_ranks(monkeypatch, parts_of(other, weighting, packed=True))
    assert disagreement(parts_of(this, weighting, packed=True), RANK0, step=1) is None


def test_a_gradient_method_drawing_from_its_own_ranks_seed_is_refused_naming_its_class(monkeypatch):
    sampler = TemperatureSampler(SIZES, seed=3)
    weighting = stepped_weighting(TchebycheffWeighting, {"a": 1.0, "b": 1.0})
    this, other, alike = (GradVac(2, seed=seed) for seed in (0, 1, 0))
    fake_two_ranks(monkeypatch, parts_of(sampler, weighting, method=other))
    message = disagreement(parts_of(sampler, weighting, method=this), RANK0, step=3)
    assert ("the gradient method's state (gradient_surgery.method: GradVac of module t2t_mtl.gradients.gradvac) on "
            "rank 1 of 2 differs from rank 0's; a gradient method learns from the Gram matrices") in message
    fake_two_ranks(monkeypatch, parts_of(sampler, weighting, method=alike))
    assert disagreement(parts_of(sampler, weighting, method=this), RANK0, step=3) is None


def test_one_rank_compares_nothing(monkeypatch):
    monkeypatch.setattr(torch.distributed, "all_gather", lambda *args: pytest.fail("no collective for one rank"))
    part = SharedPart("sampler", "sampling.strategy", object(), {"x": 1}, "")
    assert disagreement([part], DistEnv(0, 1, 0, torch.device("cpu"), "gloo"), step=1) is None


def test_the_parts_compared_are_those_of_the_checkpoints_trainer_state():
    sampler = TemperatureSampler(SIZES, seed=3)
    weighting = stepped_weighting(TchebycheffWeighting, {"a": 1.0, "b": 1.0})
    parts = loop_parts(sampler, weighting)
    found = shared_parts(trainer_state(Progress(), parts, None), parts)
    assert [(part.name, part.key, part.owner) for part in found] == [
        ("sampler", "sampling.strategy", sampler), ("loss weighting", "weighting.method", weighting)]
    assert found[0].state["probabilities"] == sampler.probabilities()
    assert found[0].state["extra"] == sampler.state_dict()["extra"]
    assert state_digest(found[1].state) == state_digest({"weighting": weighting.state_dict(), "optimizer": None})
