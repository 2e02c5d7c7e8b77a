"""What a run's model that cannot be rebuilt is advised (export's `_rebuild_advice`): point a relative
model.name_or_path read from another working directory at the folder the run started from only where that folder
is there and is not the one the path already names."""
from __future__ import annotations

from pathlib import Path

import pytest

from t2t_mtl.engine.export import _rebuild_advice


@pytest.fixture
def started(tmp_path, monkeypatch) -> Path:
    """The folder a run started from (as its checkpoints' `initialised_from` records it), with the working directory
    a sibling folder of it, where "model" names nothing."""
    (tmp_path / "model").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return tmp_path.resolve() / "model"


def _meta(started: Path) -> dict:
    return {"initialised_from": {"path": str(started)}}


def test_a_relative_path_missing_the_folder_the_run_started_from_is_pointed_at_it(started, tmp_path):
    assert _rebuild_advice("model", _meta(started), tmp_path / "run") == (
        f"model.name_or_path 'model' is read from the working directory, {started.parent / 'elsewhere'}, but the run "
        f"started from {started}, which is there: point model.name_or_path in {tmp_path / 'run' / 'config.yaml'} at "
        f"it, or run this where the run was started")


@pytest.mark.parametrize("case", ["started folder gone", "path names the started folder", "absolute path",
                                  "no initialised_from"])
def test_a_folder_to_restore_or_repoint_is_advised_where_the_run_started_from_no_folder_to_point_at(case, started,
                                                                                                       tmp_path):
    # kills 3 mutants of _rebuild_advice the tests let live (the started folder's being there, the relative path's
    # naming another folder, and its being relative, each left out of the condition): each pointed the run at a
    # folder that is gone, at the folder it names already, or called an absolute path one read from the working
    # directory
    name, meta = "model", _meta(started)
    if case == "started folder gone":
        started.rmdir()
    elif case == "path names the started folder":
        name = "../model"
    elif case == "absolute path":
        name = str(tmp_path / "moved-away")
    else:
        meta = {}
    assert _rebuild_advice(name, meta, tmp_path / "run") == (
        f"restore it, or point model.name_or_path in {tmp_path / 'run' / 'config.yaml'} at its new place")
