"""task_registry's lazily imported modules (`lazy_modules.LazyModule`) survive pickling and copying, as the modules
they stand for do by reference under dill (datasets' and multiprocess's pickler): a copy stands for the same module."""
from __future__ import annotations

import copy
import json
import pickle

import dill
import pytest

from task_registry.lazy_modules import LazyModule


@pytest.mark.parametrize("round_trip", [
    pytest.param(lambda m: pickle.loads(pickle.dumps(m)), id="pickle"),
    pytest.param(lambda m: dill.loads(dill.dumps(m)), id="dill"),
    pytest.param(copy.copy, id="copy"),
    pytest.param(copy.deepcopy, id="deepcopy"),
])
def test_a_lazy_module_round_trips_to_a_stand_in_for_the_same_module(round_trip):
    # was: RecursionError (the copy's __setstate__ lookup went to __getattr__, which read the unset _name)
    copied = round_trip(LazyModule("json"))
    assert isinstance(copied, LazyModule)
    assert copied.dumps is json.dumps and copied.loads('{"a": 1}') == {"a": 1}
