"""YAML files written by others (task files, promptsource template files, configs, a run's config.yaml) are read
within bounds: values nested too deep, aliases expanding past a million values ('billion laughs') and a value
containing itself are refused at their line, naming the file, instead of a RecursionError or a walk of 10**9
values; ordinary aliases still load."""
from __future__ import annotations

import pytest
import yaml

from t2t_mtl import config as C
from t2t_mtl.config_errors import ConfigFileError
from t2t_mtl.engine.model_meta import run_config
from t2t_mtl.engine.checkpoint import CheckpointError
from task_registry import TaskDefinitionError, validate_task_file
from task_registry.promptsource import read_templates_file
from task_registry.yaml_limits import MAX_DEPTH, MAX_EXPANDED_VALUES, BoundedSafeLoader

_TEMPLATES = "templates:\n  - name: t\n    jinja: 'a ||| b'\n"


def _laughs(levels: int, width: int = 8) -> str:
    """Anchors `l0`..`l<levels>` (each alias-list `width` times the one before): `l<levels>` expands to
    width ** (levels + 1) strings."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _task_file(tmp_path, body: str) -> str:
    path = tmp_path / "t.yaml"
    path.write_text(f"name: t\nsource: {{files: {{train: x.jsonl}}}}\n{body}{_TEMPLATES}")
    return str(path)


def test_reference_expansion_counts():
    """The fixtures are what the tests say they are: independent counts of the expanded values."""
    assert 8 ** 7 > MAX_EXPANDED_VALUES > 8 ** 6
    assert len(yaml.safe_load(_laughs(2, width=3))["l2"]) == 3
    assert sum(len(inner) for middle in yaml.safe_load(_laughs(2, width=3))["l2"] for inner in middle) == 27


def test_task_file_alias_bomb_is_refused_at_its_line(tmp_path):
    path = _task_file(tmp_path, "description: placeholder\n" + "".join(
        "x_" + line + "\n" for line in _laughs(6).replace("*l", "*x_l").replace("&l", "&x_l").splitlines()))
    problems = validate_task_file(path)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}:10: not valid YAML: this value holds more than 1,000,000 values")
    assert "billion laughs" in problems[0]


def test_task_file_nested_too_deep_is_refused_at_its_line(tmp_path):
    path = _task_file(tmp_path, f"description: {_nested(3000)}\n")
    problems = validate_task_file(path)
    assert problems == [f"{path}:3: not valid YAML: values are nested more than {MAX_DEPTH} levels deep: no config, "
                        f"task or template file needs that; flatten the value"]


def test_task_file_value_containing_itself_is_refused(tmp_path):
    path = _task_file(tmp_path, "description: &loop [text, *loop]\n")
    problems = validate_task_file(path)
    assert problems == [f"{path}:3: not valid YAML: this value contains itself through an alias (*name), so it "
                        f"never ends: write the value out"]


def test_promptsource_file_alias_bomb_is_refused(tmp_path):
    path = tmp_path / "templates.yaml"
    path.write_text("dataset: d\n" + _laughs(6) + "templates:\n  abc: !Template\n    id: abc\n    name: t\n"
                    "    jinja: 'a ||| b'\n    reference: ''\n    metadata: !TemplateMetadata\n      metrics: *l6\n")
    with pytest.raises(TaskDefinitionError, match="not valid promptsource YAML: this value holds more than "
                                                   "1,000,000 values") as caught:
        read_templates_file(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("body, problem", [
    (f"training: {_nested(3000)}\n", "line 1, column 74: values are nested more than 64 levels deep"),
    (_laughs(6) + "training: {note: *l6}\n", "line 7, column 5: this value holds more than 1,000,000 values"),
])
def test_config_file_past_the_bounds_is_refused_naming_it(tmp_path, body, problem):
    path = tmp_path / "c.yaml"
    path.write_text(body)
    with pytest.raises(ConfigFileError) as caught:
        C.load_config(path)
    assert str(caught.value).startswith(f"config file {path} is not valid YAML: {problem}")


def test_run_config_past_the_bounds_is_a_checkpoint_error(tmp_path):
    (tmp_path / "config.yaml").write_text(f"model: {_nested(3000)}\n")
    with pytest.raises(CheckpointError, match="(?s)config.yaml is not a valid run config .*nested more than 64 levels"):
        run_config(tmp_path)


def test_ordinary_aliases_and_nesting_still_load():
    text = ("defaults: &defaults {lr: 0.001, steps: [1, 2, 3]}\n"
            "a: {<<: *defaults, lr: 0.01}\nb: *defaults\nc: [*defaults, *defaults]\n"
            f"deep: {_nested(MAX_DEPTH - 1)}\n" + _laughs(5))
    assert yaml.load(text, Loader=BoundedSafeLoader) == yaml.safe_load(text)
