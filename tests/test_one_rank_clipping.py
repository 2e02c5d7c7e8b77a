"""A one-rank fp32 engine's gradient clipping (`t2t_mtl.engine.one_rank_clipping`): the same bits as DeepSpeed's
`clip_grad_norm_` on a one-rank group, and a training run that no longer goes through it (its per-step all-reduce)."""
from __future__ import annotations

import deepspeed.runtime.engine as ds_engine
import deepspeed.runtime.utils as ds_utils
import pytest
import torch

from t2t_mtl.engine import trainer as trainer_mod
from t2t_mtl.engine.one_rank_clipping import clip_one_rank_gradients
from t2t_mtl.engine.trainer import train

from engine_helpers import step_records, tiny_config, train_tiny_tokenizer

SHAPES = [(7, 5), (5,), (3, 4, 2), (1,), (64, 33)]


def _parameters(seed: int, scale: float):
    torch.manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(shape)) for shape in SHAPES + [(4, 4)]]
    for p in params[:-1]:  # the last has no gradient (a frozen weight): left out of the norm
        p.grad = torch.randn(p.shape) * scale
    return params


@pytest.fixture
def one_rank_deepspeed(monkeypatch):
    """DeepSpeed's clip_grad_norm_ as on a one-rank data-parallel group: its all-reduce returns the rank's value."""
    monkeypatch.setattr(ds_utils.groups, "_get_data_parallel_group", lambda: None)
    monkeypatch.setattr(ds_utils.dist, "get_world_size", lambda group=None: 1)
    monkeypatch.setattr(ds_utils.dist, "all_reduce", lambda tensor, *args, **kwargs: None)


@pytest.mark.parametrize("max_norm", [0.5, 1.0, 1e6])  # clipped, clipped, left as they are
@pytest.mark.parametrize("seed,scale", [(0, 1.0), (1, 1e-3), (2, 30.0)])
def test_clipping_equals_deepspeeds_on_one_rank_bit_for_bit(one_rank_deepspeed, max_norm, seed, scale):
    ours, theirs = _parameters(seed, scale), _parameters(seed, scale)
    total = clip_one_rank_gradients(ours, max_norm)
    expected = ds_utils.clip_grad_norm_(theirs, max_norm)
    assert torch.equal(total.reshape(1), expected.reshape(1))
    for a, b in zip(ours, theirs):
        assert (a.grad is None and b.grad is None) or torch.equal(a.grad, b.grad)


def test_no_gradient_clips_nothing():
    assert clip_one_rank_gradients([torch.nn.Parameter(torch.ones(2))], 1.0) is None


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


def test_a_one_rank_fp32_run_clips_without_deepspeeds_collective(tmp_path, tok, monkeypatch):
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 3, "clip": 0.05})
    with monkeypatch.context() as patched:  # DeepSpeed's own clipping, the reference
        patched.setattr(trainer_mod, "use_one_rank_clipping", lambda engine: None)
        train(cfg, evaluate_held_in=False)

    def refused(*args, **kwargs):
        raise AssertionError("DeepSpeed's clip_grad_norm_ (an all-reduce of the norm every step) on one rank")

    monkeypatch.setattr(ds_engine, "clip_grad_norm_", refused)
    cfg["training"]["output_dir"] = str(tmp_path / "again")
    train(cfg, evaluate_held_in=False)
    first, again = step_records(tmp_path / "run"), step_records(tmp_path / "again")
    assert len(first) == 3
    for field in ("loss", "task_loss", "weighted_loss"):
        assert [r[field] for r in again.values()] == [r[field] for r in first.values()]
