"""Runs trained one after another in one process, as a notebook trains them: what a finished `train()` leaves
behind for the next."""
from __future__ import annotations

import gc
import random
import weakref

import numpy as np
import pytest
import torch

from t2t_mtl.engine import trainer as trainer_mod
from t2t_mtl.engine.trainer import train

from engine_helpers import tiny_config, train_tiny_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


@pytest.mark.parametrize("stage", [1, 2])
def test_a_finished_runs_model_and_optimizer_are_freed_when_train_returns(tmp_path, tok, monkeypatch, stage):
    # were kept for the rest of the process: DeepSpeed's ZeRO-1/2 optimizer hooks every parameter's gradient
    # accumulation with a closure over itself, held by torch's C++ side where Python's garbage collector cannot see
    # it, so each run of a notebook added its model, gradients and optimizer state to the memory (a GPU's) in use
    engines = []

    def initialize(*args, **kwargs):
        engine = initialize_deepspeed(*args, **kwargs)
        engines.append((weakref.ref(engine), weakref.ref(engine.module), weakref.ref(engine.optimizer)))
        return engine

    initialize_deepspeed = trainer_mod.initialize_deepspeed
    monkeypatch.setattr(trainer_mod, "initialize_deepspeed", initialize)
    result = train(tiny_config(tmp_path / "run", tok, tmp_path / "cache", deepspeed={"zero_stage": stage},
                               training={"steps": 2}))
    assert result.step == 2 and len(engines) == 1
    gc.collect()
    assert [ref() is None for ref in engines[0]] == [True, True, True]  # engine, model, optimizer


def test_train_leaves_the_callers_random_generators_as_it_found_them(tmp_path, tok):
    # were left where the run's own seeding (training.seed) and draws took them: a notebook's draws after a `train()`
    # cell were the run's, not those its own seed gives
    def seeded_draws() -> tuple:
        return random.random(), float(np.random.rand()), torch.rand(3).tolist()

    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    expected = seeded_draws()
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    train(tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 2, "seed": 3}))
    assert seeded_draws() == expected


@pytest.mark.parametrize("config, named", [(3, "3 (int)"), (["quickstart"], "['quickstart'] (list)")])
def test_a_config_of_another_type_is_refused_saying_what_train_takes(config, named):
    # was a TypeError from inside pathlib: "expected str, bytes or os.PathLike object, not int"
    from t2t_mtl.config import ConfigTypeError

    with pytest.raises(ConfigTypeError) as error:
        train(config)
    assert str(error.value) == (f"train() takes a Config, a dict (a YAML file's keys), a YAML file's path or a "
                                f"packaged config's name (quickstart), got {named}")


def test_a_runs_model_and_optimizer_are_freed_when_train_raises_after_building_its_engine(tmp_path, tok, monkeypatch):
    # kills a mutant the tests let live: the engine destroyed when train returns only, so a notebook cell's run that
    # failed once its DeepSpeed engine was built kept its model, gradients and optimizer state for the process
    engines = []

    def initialize(*args, **kwargs):
        engine = initialize_deepspeed(*args, **kwargs)
        engines.append((weakref.ref(engine), weakref.ref(engine.module), weakref.ref(engine.optimizer)))
        return engine

    def failing(engine):
        raise RuntimeError("failed after the engine was built")

    initialize_deepspeed = trainer_mod.initialize_deepspeed
    monkeypatch.setattr(trainer_mod, "initialize_deepspeed", initialize)
    monkeypatch.setattr(trainer_mod, "engine_precision", failing)
    try:
        train(tiny_config(tmp_path / "run", tok, tmp_path / "cache", deepspeed={"zero_stage": 2},
                          training={"steps": 2}))
    except RuntimeError as error:
        assert str(error) == "failed after the engine was built"
    else:
        raise AssertionError("train did not raise")
    assert len(engines) == 1
    gc.collect()  # (the error's traceback, and the frames holding the engine with it, are gone with the except)
    assert [ref() is None for ref in engines[0]] == [True, True, True]  # engine, model, optimizer
