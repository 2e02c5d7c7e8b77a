"""Which sources `t2t_mtl.evaluation.shared_data` finds reading a trained task's train data, kind by kind: files by
the path they resolve to (a relative path, a glob pattern, a split's own file, a source's second file), a local
folder (one save_to_disk wrote too) by its path, whichever source reads it. Each case asks only whether the evaluated
task is warned of the trained one, and of which split (worded as the warnings may change)."""
from __future__ import annotations

import os

import pytest

import task_registry
import task_registry.sources
from t2t_mtl.evaluation.shared_data import shared_data_warnings
from task_registry import HFSource, LocalFileSource, Task, Template

TEMPLATE = Template("plain", "{{ premise }} ||| {{ label }}")


@pytest.fixture(autouse=True)
def _hub_ids_read_from_the_hub(monkeypatch):
    """Hub ids resolve to the hub here, not to a data dir that $T2T_MTL_DATA_DIR names where the tests run."""
    monkeypatch.delenv(task_registry.sources.DATA_DIR_ENV, raising=False)


def _warned(evaluated: str, evaluated_source, trained: str, trained_source) -> list[str]:
    """The shared-data warnings of `evaluated` (read from `evaluated_source`) beside `trained` (which trains on
    `trained_source`'s train split), in a registry of those two tasks alone."""
    with task_registry.isolated_registry():
        for name, source in ((evaluated, evaluated_source), (trained, trained_source)):
            task_registry.register_task(Task(name, source, TEMPLATE, cluster=name))
        return shared_data_warnings([evaluated], [trained], "fix it")


def _rows(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"premise": "a", "label": 0}\n')
    return path


def test_a_trained_tasks_second_train_file_is_shared_as_its_first_is(tmp_path):
    first, second = _rows(tmp_path / "first.jsonl"), _rows(tmp_path / "second.jsonl")
    trained = LocalFileSource({"train": [str(first), str(second)]})
    [warning] = _warned("held", LocalFileSource({"train": str(second)}), "mine", trained)
    assert "'held'" in warning and "'mine'" in warning and str(second) in warning
    assert _warned("held", LocalFileSource({"train": str(_rows(tmp_path / "third.jsonl"))}), "mine", trained) == []


def test_a_held_out_task_sharing_data_with_two_trained_tasks_names_each(tmp_path):
    rows = _rows(tmp_path / "rows.jsonl")
    with task_registry.isolated_registry():
        for name in ("held", "mine", "yours"):
            task_registry.register_task(Task(name, LocalFileSource(str(rows)), TEMPLATE, cluster=name))
        warnings = "\n".join(shared_data_warnings(["held"], ["mine", "yours"], "fix it"))
    assert "'mine'" in warnings and "'yours'" in warnings


def test_a_split_of_its_own_file_is_named_when_it_reads_the_trained_tasks_train_file(tmp_path):
    # the evaluated task's validation file is what the trained task trains on; its own train file is not
    train, shared = _rows(tmp_path / "train.jsonl"), _rows(tmp_path / "shared.jsonl")
    trained = LocalFileSource({"train": str(shared)})
    for evaluated in (LocalFileSource({"train": str(train), "validation": str(shared)}),
                      HFSource("json", data_files={"train": str(train), "validation": str(shared)})):
        [warning] = _warned("held", evaluated, "mine", trained)
        assert str(shared) in warning and "validation split" in warning, warning
    # (and the other way round: its train file read by a task that trains on another split's file shares nothing)
    assert _warned("held", LocalFileSource({"validation": str(train)}), "mine",
                   HFSource("json", data_files={"train": str(shared), "validation": str(train)})) == []


def test_a_file_named_by_a_relative_path_or_a_pattern_is_the_file_it_resolves_to(tmp_path, monkeypatch):
    rows = _rows(tmp_path / "data" / "rows.jsonl")
    monkeypatch.chdir(tmp_path)
    relative, pattern = os.path.join("data", "rows.jsonl"), str(tmp_path / "data" / "*.jsonl")
    for evaluated, trained in ((LocalFileSource(relative), LocalFileSource(str(rows))),
                               (LocalFileSource(str(rows)), HFSource("json", data_files={"train": relative})),
                               (HFSource("json", data_files={"train": str(rows)}), LocalFileSource(pattern)),
                               (LocalFileSource(str(rows)), HFSource("json", data_files={"train": pattern}))):
        [warning] = _warned("held", evaluated, "mine", trained)
        assert str(rows) in warning, warning


def test_a_local_folder_read_by_load_dataset_is_the_same_folder_however_its_path_is_written(tmp_path, monkeypatch):
    folder = _rows(tmp_path / "corpus" / "train.jsonl").parent
    monkeypatch.chdir(tmp_path)
    [warning] = _warned("held", HFSource("./corpus"), "mine", HFSource(str(folder)))
    assert str(folder) in warning and "'mine'" in warning
    assert _warned("held", HFSource(str(_rows(tmp_path / "other" / "train.jsonl").parent)), "mine",
                   HFSource(str(folder))) == []


def test_a_folder_saved_by_save_to_disk_is_one_whether_load_dataset_or_a_files_source_reads_it(tmp_path):
    import datasets

    saved = tmp_path / "saved"
    datasets.Dataset.from_list([{"premise": "a", "label": 0}]).save_to_disk(str(saved))
    [warning] = _warned("held", LocalFileSource(str(saved)), "mine", HFSource(str(saved)))
    assert str(saved) in warning and "'mine'" in warning
