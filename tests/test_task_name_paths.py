"""A task's name names its folder of tokenized rows (`<cache_dir>/<name, / as __>/`): a name that would name
another folder ('.', '..'), none (a NUL or other control character) or one too long for a file system is refused
where the task is defined, naming it; every name accepted keeps its folder inside the cache folder."""
from __future__ import annotations

import os

import pytest

from t2t_mtl.data.streams import _cache_options
from task_registry import GeneratorSource, Task, TaskDefinitionError, Template, validate_task_file


def _rows(split, num_rows, seed):
    yield {"q": "x"}


def _task(name: str) -> Task:
    return Task(name, GeneratorSource(_rows, num_rows=1), Template("t", "{{q}} ||| {{q}}"), splits=("train",))


@pytest.mark.parametrize("name, problem", [
    ("..", "is '.' or '..', which name folders already"),
    (".", "is '.' or '..', which name folders already"),
    ("a\x00b", "holds a control character"),
    ("line\nbreak", "holds a control character"),
    ("x" * 201, "is longer than 200 bytes"),
    ("é" * 101, "is longer than 200 bytes"),
])
def test_a_name_that_is_no_folder_of_its_own_is_refused(name, problem):
    with pytest.raises(TaskDefinitionError) as caught:
        _task(name)
    assert str(caught.value) == (f"task name {name!r} {problem}: a task's name is its folder's, where its rows are "
                                 f"kept tokenized; name it with letters, digits and _ - . /")


def test_a_yaml_task_named_dot_dot_is_refused_at_its_line(tmp_path):
    path = tmp_path / "dots.yaml"
    (tmp_path / "x.jsonl").write_text('{"q": "x"}\n')
    path.write_text('name: ".."\nsplits: [train]\nsource: {files: {train: x.jsonl}}\ntemplates:\n'
                    '  - name: t\n    jinja: "{{q}} ||| {{q}}"\n')
    assert validate_task_file(path) == [f"{path}:1: task name '..' is '.' or '..', which name folders already: a "
                                        f"task's name is its folder's, where its rows are kept tokenized; name it "
                                        f"with letters, digits and _ - . /"]


@pytest.mark.parametrize("name", ["rte", "bigbench/logic_grid", "a..b", "../up", "..a", "x" * 200, "é" * 100])
def test_an_accepted_name_keeps_its_folder_inside_the_cache(name, tmp_path):
    _task(name)
    cache = tmp_path / "cache"
    file = _cache_options(cache, name, "train", "key")["cache_file_name"]
    assert os.path.commonpath([os.path.realpath(file), os.path.realpath(cache)]) == os.path.realpath(cache)
    assert os.path.dirname(os.path.realpath(file)) != os.path.realpath(cache)  # (a folder of its own)
