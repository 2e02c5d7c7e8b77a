"""The tasks a run trains (`engine.run_mixture.training_rates`) met at their edges: the tasks data.tasks picks from a
mixture, and a mixture it names beside one."""
from __future__ import annotations

import pytest

from t2t_mtl.config import load_config
from t2t_mtl.engine.run_mixture import training_rates


def test_data_tasks_train_only_the_tasks_they_pick_from_the_mixture():
    cfg = load_config("quickstart", ["data.tasks=[parity, count_word]"])  # (quickstart: mixture procedural)
    assert training_rates(cfg) == {"parity": 1.0, "count_word": 1.0}


def test_data_tasks_naming_a_mixture_beside_data_mixture_is_told_it_names_a_mixture():
    # (without data.mixture, data.tasks may name mixtures; with it, data.tasks picks tasks of that mixture)
    from t2t_mtl.config import ConfigError

    with pytest.raises(ConfigError, match=r"^data.tasks: 'procedural_held_out' is a mixture, not a task"):
        training_rates(load_config("quickstart", ["data.tasks=[parity, procedural_held_out]"]))
