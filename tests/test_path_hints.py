"""`task_registry.path_hints`: the existing path a misspelt one most likely meant."""
from __future__ import annotations

import os

from task_registry.path_hints import close_existing_path, path_hint


def test_each_missing_part_is_replaced_by_the_closest_name_beside_it(tmp_path, monkeypatch):
    (tmp_path / "runs" / "quickstart" / "checkpoints" / "step-00000002").mkdir(parents=True)
    (tmp_path / "runs" / "quickstep").mkdir()
    meant = tmp_path / "runs" / "quickstart" / "checkpoints" / "step-00000002"
    assert close_existing_path(tmp_path / "rnus" / "quikstart" / "chekpoints" / "step-00000002") == meant
    monkeypatch.chdir(tmp_path)  # a relative path is answered relative, as it was written
    assert str(close_existing_path(os.path.join("runs", "quikstart"))) == os.path.join("runs", "quickstart")
    assert path_hint("runs/quikstart") == " (did you mean 'runs/quickstart'?)"


def test_no_hint_for_an_existing_path_a_name_with_nothing_close_or_a_missing_tail(tmp_path):
    (tmp_path / "runs" / "quickstart").mkdir(parents=True)
    assert close_existing_path(tmp_path / "runs" / "quickstart") is None  # nothing to correct
    assert close_existing_path(tmp_path / "runs" / "zzzzzz") is None  # no name close to it
    assert close_existing_path(tmp_path / "runs" / "quickstart" / "x" / "y") is None  # no name at all beside it
    assert path_hint(tmp_path / "elsewhere") == ""
