"""README.md's snippets against the code they document: every option a `t2t-mtl` command line of the README gives
is one that command's parser takes, every config key it names is one a config may hold, its Python task and YAML task
file render and load, its training config passes the checks `train` makes, and its Extending examples register and
keep the resume contract a run holds them to."""
from __future__ import annotations

import argparse
import dataclasses
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from t2t_mtl.cli import build_parser
from t2t_mtl.cli import main as cli_main

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", flags=re.M | re.S)


def fenced_blocks(language: str) -> list[str]:
    """The README's fenced code blocks of `language`, each dedented (the Extending list indents its blocks)."""
    text = README.read_text(encoding="utf-8")
    return [textwrap.dedent(body) for _, lang, body in FENCE.findall(text) if lang == language]


def command_lines() -> list[str]:
    """Each `t2t-mtl ...` command the README writes, up to a pipe or a comment: in inline code and in bash blocks."""
    text = README.read_text(encoding="utf-8")
    spans = re.findall(r"`([^`\n]+)`", FENCE.sub("", text))
    lines = [line for block in fenced_blocks("bash") for line in block.splitlines()]
    return [match.group(1) for piece in spans + lines for match in re.finditer(r"\bt2t-mtl ([^|#]*)", piece)]


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_option_a_readme_command_gives_is_one_that_command_takes():
    commands = subcommands(build_parser())
    unknown, checked = [], 0
    for line in command_lines():
        words = line.split()
        if not words or words[0] not in commands:  # prose naming the program, as `t2t-mtl eval/export/predict`
            continue
        parser = commands[words[0]]
        nested = subcommands(parser)
        if nested:
            if len(words) < 2 or words[1] not in nested:  # a command group named in prose: `t2t-mtl tasks`
                continue
            parser = nested[words[1]]
        options = {option for action in parser._actions for option in action.option_strings}
        for option in re.findall(r"(?<![\w-])--[a-z][\w-]*", line):
            checked += 1
            if option not in options:
                unknown.append(f"t2t-mtl {' '.join(words[:2])}: {option}")
    assert checked > 20, "the README's command lines were not found"
    assert unknown == []


#: dotted names in the README that start like a config key but name DeepSpeed's API (`deepspeed.initialize`)
DEEPSPEED_API = {"deepspeed.checkpointing", "deepspeed.initialize"}


def config_keys() -> set[str]:
    """Every dotted key a training config may hold: default.yaml's, and those of the sections other code owns (the
    evaluation section's, the MoE and LoRA configs' fields, every sampler's, weighting's and gradient method's
    parameters)."""
    from t2t_mtl.config_layers import CONFIG_DIR
    from t2t_mtl.engine.validation import EVALUATION_KEYS
    from t2t_mtl.gradients import METHODS as GRADIENT_METHODS
    from t2t_mtl.model.lora import LoRAConfig
    from t2t_mtl.model.moe_config import MoEConfig
    from t2t_mtl.sampling import STRATEGIES
    from t2t_mtl.weighting import METHODS

    def walk(node: object, prefix: str) -> set[str]:
        if not isinstance(node, dict):
            return set()
        return {f"{prefix}{key}" for key in node} | {k for key, value in node.items()
                                                      for k in walk(value, f"{prefix}{key}.")}

    keys = walk(yaml.safe_load((Path(CONFIG_DIR) / "default.yaml").read_text(encoding="utf-8")), "")
    owned = {"evaluation": EVALUATION_KEYS, "model.moe": [f.name for f in dataclasses.fields(MoEConfig)],
             "model.lora": [f.name for f in dataclasses.fields(LoRAConfig)],
             "sampling": ["strategy", "mode", "block_size", *(p for cls in STRATEGIES.values() for p in cls.PARAMS)],
             "weighting": ["method", *(p for cls in METHODS.values() for p in cls.PARAMS)],
             "gradient_surgery": ["method", *(p for cls in GRADIENT_METHODS.values() for p in cls.defaults)]}
    return keys | {f"{section}.{key}" for section, names in owned.items() for key in names}


def test_every_config_key_the_readme_names_is_one_a_config_may_hold():
    text = README.read_text(encoding="utf-8")
    sections = "model|tokenizer|data|sampling|weighting|gradient_surgery|training|deepspeed|evaluation"
    named = set(re.findall(rf"`((?:{sections})\.[A-Za-z_][\w.]*)", text)) - DEEPSPEED_API
    assert len(named) > 40, "the README's config keys were not found"
    assert sorted(named - config_keys()) == []


def readme_files(tmp_path: Path) -> dict[str, Path]:
    """Write each README YAML block that names its file in its first line (`# tasks/my_trec.yaml`) there."""
    written = {}
    for block in fenced_blocks("yaml"):
        first = block.splitlines()[0]
        if first.startswith("# ") and first.split()[1].rstrip(":").endswith(".yaml"):
            name = first.split()[1].rstrip(":")
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block, encoding="utf-8")
            written[name] = path
    return written


def test_the_readme_yaml_task_and_config_pass_the_checks_of_a_run(tmp_path, monkeypatch, capsys, shared_data_dir):
    import task_registry

    (tmp_path / "shared").symlink_to(shared_data_dir.parent)  # the README's layout: ../shared beside the clone
    files = readme_files(tmp_path / "clone")
    assert set(files) == {"tasks/my_trec.yaml", "tasks/ps_cb.yaml", "my.yaml"}
    monkeypatch.chdir(tmp_path / "clone")  # (data.tasks_dir is read from the working directory, as the README's runs)
    monkeypatch.setattr("task_registry.sources._data_dir", None)  # (the run checks set it; restored after the test)
    with task_registry.isolated_registry():
        assert cli_main(["tasks", "validate", "tasks/", "--data-dir", str(shared_data_dir)]) == 0
        # the README's ../shared/data is where its reader's clone finds the data; the tests' is elsewhere
        assert cli_main(["train", "my.yaml", "--set", "training.steps=200", "--data-dir", str(shared_data_dir),
                         "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "tasks:\n  - my_trec\n  - parity\n  - sort_words\n" in out
    assert "held_out_clusters:\n  - nli\n" in out and "steps: 200\n" in out
    with task_registry.isolated_registry():  # the promptsource task's templates, as many as the README says
        tasks = {task.name: task for task in task_registry.load_task_dir("tasks", register=False)}
        assert len(tasks["ps_cb"].templates) == 15


def test_the_readme_python_task_renders_the_columns_it_lists(tmp_path, monkeypatch, shared_data_dir):
    import task_registry

    block = next(block for block in fenced_blocks("python") if "tr.register_task(" in block)
    (tmp_path / "shared").symlink_to(shared_data_dir.parent)  # the README's layout: ../shared beside the clone
    (tmp_path / "clone").mkdir()
    monkeypatch.chdir(tmp_path / "clone")
    monkeypatch.setattr("task_registry.sources._data_dir", None)  # (the block sets it; restored after the test)
    names: dict = {}
    with task_registry.isolated_registry():
        exec(compile(block, str(README), "exec"), names)
    listed = re.findall(r"\w+", block.split("# columns:")[1])
    rows = (shared_data_dir / "glue" / "rte" / "validation.jsonl").read_text(encoding="utf-8").splitlines()
    ds = names["ds"]
    assert ds.column_names == listed and len(ds) == len(rows)
    assert set(ds["targets"]) == {"entailment", "not_entailment"}


@pytest.fixture
def readme_extensions(restored_component_tables):
    """The Extending section's sampler, weighting and gradient method, registered from the README's own code."""
    from t2t_mtl.gradients import METHODS as GRADIENT_METHODS

    methods = dict(GRADIENT_METHODS)
    blocks = [block for block in fenced_blocks("python") if "@register_" in block]
    assert len(blocks) == 3, "the README's Extending section has a sampler, a weighting and a method example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})
    yield
    GRADIENT_METHODS.clear()
    GRADIENT_METHODS.update(methods)


def test_the_readme_extension_examples_build_and_keep_the_resume_contract(readme_extensions):
    from t2t_mtl.engine.resume_contract import check_sampler_resumes, check_weighting_resumes
    from t2t_mtl.gradients import build_method
    from t2t_mtl.sampling import build_sampler
    from t2t_mtl.weighting import build_weighting

    sizes = {"a": 10, "b": 30}
    sampler = build_sampler({"strategy": "loss_chasing", "power": 2}, sizes, seed=0, log=False)
    sampler.update({"loss": {"a": 3.0}})  # a's EMA 6.5, b's 10: p ∝ 6.5², 10²
    assert sampler.probabilities() == pytest.approx({"a": 6.5 ** 2 / (6.5 ** 2 + 100), "b": 100 / (6.5 ** 2 + 100)})
    check_sampler_resumes(lambda: build_sampler({"strategy": "loss_chasing"}, sizes, seed=0, log=False), "s")

    weighting = build_weighting({"method": "capped", "cap": 2.0}, list(sizes))
    loss = weighting({"a": torch.tensor(4.0), "b": torch.tensor(1.0)}, epoch=0.0, stats={})
    assert float(loss) == pytest.approx(0.5 * 4.0 + 1.0 * 1.0)  # Σ_t min(1, cap / L_t) L_t
    check_weighting_resumes(lambda: build_weighting({"method": "capped"}, list(sizes)), "w")

    method = build_method({"method": "scaled", "scale": 0.5}, num_tasks=2)
    assert np.allclose(method.weights(np.eye(2)), [0.5, 0.5])
