"""t2t_mtl.config: layering, --set overrides, schema errors (unknown keys with suggestions, types, values,
paths) — all raised before any training starts."""
from __future__ import annotations

import dataclasses
import json
import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from t2t_mtl import config as C
from t2t_mtl.config_layers import SHARED_SELECTOR_KEYS
from t2t_mtl.cli import main as cli_main


def write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_default_yaml_matches_schema_defaults():
    needed = {"data": {"mixture": "m"}, "model": {"dims": {"d_model": 8}}}
    packaged = C.load_config("default", extra=needed).to_dict()
    schema = C.config_from_dict(needed).to_dict()
    assert packaged == schema


def test_a_file_without_base_layers_on_the_defaults_too(tmp_path):
    # was: only `base: default` layered default.yaml; without it, `sampling: {mode: mixed}` or `--set
    # sampling.alpha=2` left a section without its strategy ("unknown sampling strategy None"), and
    # `weighting: {...}` one without its method, though default.yaml (strategy temperature, method equal) is layer 1
    write(tmp_path / "c.yaml", {"data": {"mixture": "m"}, "model": {"dims": {"d_model": 8}},
                                "sampling": {"mode": "mixed"}})
    cfg = C.load_config(tmp_path / "c.yaml", ["sampling.alpha=2"])
    assert cfg.sampling == {"strategy": "temperature", "alpha": 2, "mode": "mixed"}
    assert cfg.weighting == {"method": "equal"}
    cfg = C.config_from_dict({"data": {"mixture": "m"}, "model": {"dims": {"d_model": 8}}, "sampling": {"alpha": 3}})
    assert cfg.sampling == {"strategy": "temperature", "alpha": 3}
    with_base = write(tmp_path / "b.yaml", {"base": "default", **yaml.safe_load((tmp_path / "c.yaml").read_text())})
    assert C.load_config(with_base, ["sampling.alpha=2"]) == C.load_config(tmp_path / "c.yaml", ["sampling.alpha=2"])


def test_layering_base_file_then_overrides(tmp_path):
    write(tmp_path / "base.yaml", {"training": {"steps": 10, "lr": 0.1}, "data": {"mixture": "a"}})
    child = write(tmp_path / "child.yaml", {"base": "base.yaml", "training": {"steps": 20}})
    cfg = C.load_config(child, ["training.lr=3e-4", "data.tasks=[x, y]", "model.dims.d_model=64"])
    assert cfg.training.steps == 20            # child over base
    assert cfg.training.lr == pytest.approx(3e-4)  # --set over file, YAML-parsed, int/float widened
    assert cfg.data.mixture == "a"             # kept from base
    assert cfg.data.tasks == ["x", "y"]
    assert cfg.model.dims == {"d_model": 64}
    assert cfg.training.micro_batch_size == C.TrainingConfig().micro_batch_size  # untouched default


def test_a_layers_data_tasks_replaces_the_base_selection_whole(tmp_path):
    # was: two {task: rate} mappings merged key by key, so an overlay could add tasks and change rates but never
    # drop a task of its base (`data.tasks: {c: 2}` over {a: 1, b: 1} trained a, b and c)
    write(tmp_path / "base.yaml", {"data": {"tasks": {"a": 1, "b": 1}}, "model": {"dims": {"d_model": 8}}})
    child = write(tmp_path / "child.yaml", {"base": "base.yaml", "data": {"tasks": {"c": 2}}})
    assert C.load_config(child).data.tasks == {"c": 2}
    assert C.load_config(tmp_path / "base.yaml", ["data.tasks={c: 2}"]).data.tasks == {"c": 2}
    # a dotted --set names one entry: it sets that task's rate and keeps the others
    assert C.load_config(tmp_path / "base.yaml", ["data.tasks.b=3", 'data.tasks."c.d"=1']).data.tasks == {
        "a": 1, "b": 3, "c.d": 1}
    assert C.load_config(child, ["data.tasks.b=3"]).data.tasks == {"c": 2, "b": 3}
    assert C.load_config(child).to_yaml()  # plain mappings in the resolved config
    # was: over a list the entries became the whole selection, so `data.tasks.b=3` over [a, b] trained b alone
    listed = write(tmp_path / "listed.yaml", {"base": "base.yaml", "data": {"tasks": ["a", "b"]}})
    with pytest.raises(C.ConfigError, match=r"--set data.tasks.b=\.\.\.: data.tasks is a list in the lower layers "
                                            r"\(a, b\), so setting single rates would replace it by \{'b': 3\} and "
                                            r"drop the rest: .* --set 'data.tasks=\{a: 1, b: 3\}'"):
        C.load_config(listed, ["data.tasks.b=3"])
    assert C.load_config(listed, ["data.tasks={a: 1, b: 3}"]).data.tasks == {"a": 1, "b": 3}
    # the list given by an earlier --set of the same command: was "'tasks' was already set to a non-mapping value"
    with pytest.raises(C.ConfigError) as caught:
        C.load_config(tmp_path / "base.yaml", ["data.tasks=[a, b]", "data.tasks.b=3"])
    assert str(caught.value) == ("--set data.tasks.b=...: data.tasks is a list in an earlier --set (a, b), so setting "
                                 "single rates would replace it by {'b': 3} and drop the rest: give the whole "
                                 "selection with its rates, e.g. --set 'data.tasks={a: 1, b: 3}'")
    # was: under data.mixture without data.tasks, `data.tasks.parity=3` trained parity alone (a subset of the mixture)
    with pytest.raises(C.ConfigError, match=r"--set data.tasks.parity=\.\.\.: data.tasks is unset, so data.mixture "
                                            r"'procedural' gives the selection, and \{'parity': 3\} alone would narrow "
                                            r"it to parity: .*or set data.mixture=null"):
        C.load_config("quickstart", ["data.tasks.parity=3"])
    for overrides in (["data.mixture=null", "data.tasks.parity=3"], ["data.tasks.parity=3", "data.mixture=null"]):
        assert C.load_config("quickstart", overrides).data.tasks == {"parity": 3}


def test_entries_over_an_earlier_sets_list_that_holds_no_rates_to_drop_keep_the_non_mapping_refusal():
    # mutation testing: the selection's message ("... would replace it ... and drop the rest") for an earlier --set's
    # empty data.tasks, which has no rest, or for a list other than data.tasks, which holds no rates, passed every test
    for overrides, part in ((["data.tasks=[]", "data.tasks.b=3"], "tasks"),
                            (["model.lora.targets=[q, v]", "model.lora.targets.x=1"], "targets")):
        with pytest.raises(C.ConfigError) as caught:
            C.parse_overrides(overrides)
        assert str(caught.value) == f"--set {overrides[1]!r}: {part!r} was already set to a non-mapping value"

def test_dotted_sets_after_a_set_to_null_start_a_fresh_mapping_as_a_file_layers_null_does(tmp_path):
    # was: "--set 'model.dims.dropout_rate=0.2': 'dims' was already set to a non-mapping value"; the reference is the
    # README's form, `dims: null` in a file layer with the dotted --set over it
    model = {"name_or_path": "google/t5-v1_1-small"}
    cleared = write(tmp_path / "cleared.yaml", {"base": "quickstart", "model": {**model, "dims": None}})
    assert C.load_config("quickstart").model.dims["d_model"] == 128  # (the base sets dims)
    fresh = C.load_config("quickstart", ["model.dims=null", f"model.name_or_path={model['name_or_path']}",
                                         "model.dims.dropout_rate=0.2"])
    assert fresh.model.dims == C.load_config(cleared, ["model.dims.dropout_rate=0.2"]).model.dims == {
        "dropout_rate": 0.2}
    assert yaml.safe_load(fresh.to_yaml())["model"]["dims"] == {"dropout_rate": 0.2}  # (plain mappings)
    assert C.load_config(cleared, ["model.dims.dropout_rate=0.2", "model.dims=null"]).model.dims == {}
    # deeper, and inside a WHOLE_VALUE_KEYS key: the entries alone
    tasks = C.load_config("quickstart", ["data.mixture=null", "data.tasks=null", "data.tasks.parity=3"]).data.tasks
    assert tasks == {"parity": 3}
    # a top-level section set to null is an empty section, which keeps the lower layers' (as in a file)
    empty = write(tmp_path / "empty.yaml", {"base": "quickstart", "training": None})
    steps = C.load_config("quickstart", ["training=null", "training.steps=5"]).training
    assert dataclasses.asdict(steps) == dataclasses.asdict(C.load_config(empty, ["training.steps=5"]).training)
    assert steps.output_dir == C.load_config("quickstart").training.output_dir != "runs/default"
    with pytest.raises(C.ConfigError, match=r"'dims' was already set to a non-mapping value"):
        C.parse_overrides(["model.dims=3", "model.dims.dropout_rate=0.2"])


def test_an_empty_section_in_a_layer_keeps_the_base_section(tmp_path):
    # was: `training:` with every key commented out (null) replaced the base's whole training section by the
    # defaults (quickstart's steps and output_dir silently became 1000 and runs/default)
    write(tmp_path / "base.yaml", {"training": {"steps": 10}, "data": {"mixture": "a"},
                                   "model": {"dims": {"d_model": 8}}})
    (tmp_path / "child.yaml").write_text("base: base.yaml\ntraining:\n  # steps: 20\nmodel:\n")
    cfg = C.load_config(tmp_path / "child.yaml", ["data="])
    assert cfg.training.steps == 10 and cfg.data.mixture == "a" and cfg.model.dims == {"d_model": 8}
    assert C.load_config(tmp_path / "child.yaml", ["gradient_surgery="]).gradient_surgery is None  # null: off


def test_quickstart_is_packaged_and_valid():
    cfg = C.load_config("quickstart")
    assert cfg.data.mixture == "procedural" and cfg.data.held_out_clusters == ["comparison"]
    assert "alpha" not in cfg.sampling and cfg.sampling["strategy"] == "uniform"  # base params dropped


def test_selector_sections_merge_when_strategy_unchanged():
    merged = C.deep_merge({"sampling": {"strategy": "temperature", "alpha": 1.0}},
                          {"sampling": {"alpha": 2.0}})
    assert merged["sampling"] == {"strategy": "temperature", "alpha": 2.0}
    replaced = C.deep_merge({"sampling": {"strategy": "temperature", "alpha": 1.0}},
                            {"sampling": {"strategy": "uniform"}})
    assert replaced["sampling"] == {"strategy": "uniform"}


def test_a_new_strategy_keeps_the_sampling_keys_every_strategy_takes():
    # was: `t2t-mtl train t5_recipe --set sampling.strategy=proportional` also dropped the recipe's `mode: mixed`
    # (and any block_size), which belong to every strategy, silently training in homogeneous mode
    from t2t_mtl.sampling.factory import COMMON_PARAMS

    assert set(SHARED_SELECTOR_KEYS["sampling"]) == set(COMMON_PARAMS) - {"strategy"}
    cfg = C.load_config("t5_recipe", ["sampling.strategy=proportional"])
    assert cfg.sampling == {"strategy": "proportional", "mode": "mixed"}
    merged = C.deep_merge({"sampling": {"strategy": "temperature", "alpha": 2.0, "mode": "mixed", "block_size": 64}},
                          {"sampling": {"strategy": "uniform", "mode": "homogeneous"}})
    assert merged["sampling"] == {"strategy": "uniform", "mode": "homogeneous", "block_size": 64}


def test_a_set_key_part_in_quotes_may_hold_dots():
    # was: a task named `my.task` (YAML task names may hold dots) could get no rate from --set:
    # `data.tasks.my.task=2` made {my: {task: 2}} and `data.tasks."my.task"=2` a key with the quotes in it
    assert C.parse_overrides(['data.tasks."my.task"=2', "data.tasks.b=1", "sampling.rates.'x.y'=0.5"]) == {
        "data": {"tasks": {"my.task": 2, "b": 1}}, "sampling": {"rates": {"x.y": 0.5}}}
    cfg = C.load_config(None, ['data.tasks."my.task"=2', "model.dims.d_model=8"])
    assert cfg.data.tasks == {"my.task": 2.0}
    for bad in ('data.tasks."my.task=2', 'data."".x=1', "data..x=1"):
        with pytest.raises(C.ConfigError, match="--set"):
            C.parse_overrides([bad])


def test_a_set_without_equals_is_named_before_the_config_file_is_looked_up(capsys):
    # was: `t2t-mtl train --set training.steps 20` (a space for the '=') took "20" for the config and answered
    # "config '20' not found", hiding the malformed --set the user wrote
    assert cli_main(["train", "--set", "training.steps", "20"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --set 'training.steps': expected KEY=VALUE") and "'20'" not in err
    with pytest.raises(C.ConfigError, match="--set 'training.steps': expected KEY=VALUE"):
        C.load_config("no_such_config", ["training.steps"])


def test_unknown_keys_listed_with_suggestions():
    with pytest.raises(C.UnknownConfigKeyError) as err:
        C.config_from_dict({"data": {"mixture": "m"}, "training": {"setps": 3, "lrr": 1.0}})
    msg = str(err.value)
    assert "training.setps" in msg and "'training.steps'" in msg
    assert "training.lrr" in msg and "'training.lr'" in msg
    with pytest.raises(C.UnknownConfigKeyError, match="trainng.*training"):
        C.config_from_dict({"trainng": {}})
    with pytest.raises(C.UnknownConfigKeyError, match="d_modle.*d_model"):
        C.config_from_dict({"data": {"mixture": "m"}, "model": {"dims": {"d_modle": 8}}})


@pytest.mark.parametrize("dims,expected", [
    ({"d_model": "abc"}, "'model.dims.d_model' must be an integer >= 1, got 'abc'"),
    ({"num_heads": 0}, "'model.dims.num_heads' must be an integer >= 1, got 0"),
    ({"feed_forward_proj": "nosuch"}, "'model.dims.feed_forward_proj' must be an activation or gated-<activation>"),
    ({"feed_forward_proj": "gated-nosuch"}, "feed_forward_proj"),
    ({"dropout_rate": 2}, r"'model.dims.dropout_rate' must be a number in \[0, 1\), got 2"),
    ({"layer_norm_epsilon": -1e-6}, "'model.dims.layer_norm_epsilon' must be a number > 0"),
    ({"tie_word_embeddings": "yes"}, "'model.dims.tie_word_embeddings' must be true or false"),
])
def test_bad_model_dims_values_are_named(dims, expected):
    # was: tracebacks from inside transformers or torch when the model was built
    with pytest.raises(C.ConfigError, match=expected):
        C.config_from_dict({"data": {"mixture": "m"}, "model": {"dims": dims}})
    C.config_from_dict({"data": {"mixture": "m"}, "model": {"dims": {"feed_forward_proj": "gated-gelu",
                                                                    "dropout_rate": 0.1, "d_model": 8}}})


def test_model_dims_floats_written_without_a_dot_are_numbers(tmp_path):
    # was: PyYAML reads `1e-6` as a string, which model.dims refused ("must be a number > 0, got '1e-6'")
    write(tmp_path / "c.yaml", {"data": {"mixture": "m"}})
    (tmp_path / "c.yaml").write_text((tmp_path / "c.yaml").read_text()
                                     + "model:\n  dims: {d_model: 8, layer_norm_epsilon: 1e-6, dropout_rate: 1e-1}\n")
    cfg = C.load_config(tmp_path / "c.yaml", ["model.dims.initializer_factor=1e0"])
    assert cfg.model.dims == {"d_model": 8, "layer_norm_epsilon": 1e-6, "dropout_rate": 0.1, "initializer_factor": 1.0}


def test_model_moe_floats_written_without_a_dot_are_numbers(tmp_path):
    # was: `aux_loss_coef: 1e-2` (PyYAML: a string) was refused, "model.moe.aux_loss_coef='1e-2': must be a number",
    # while `training.lr: 1e-3` was read as the number
    from t2t_mtl.model.moe import MoEConfig, MoEConfigError

    write(tmp_path / "c.yaml", {"data": {"mixture": "m"}})
    (tmp_path / "c.yaml").write_text((tmp_path / "c.yaml").read_text() + "model:\n  dims: {d_model: 8}\n"
                                     "  moe: {num_experts: 4, aux_loss_coef: 1e-2, capacity_factor: 125e-2}\n")
    cfg = C.load_config(tmp_path / "c.yaml", ["model.moe.z_loss_coef=1e-3", "model.moe.eval_capacity_factor=2e0"])
    want = {"num_experts": 4, "aux_loss_coef": 0.01, "capacity_factor": 1.25, "z_loss_coef": 0.001,
            "eval_capacity_factor": 2.0}
    assert cfg.model.moe == want
    assert MoEConfig.from_dict({**want, "z_loss_coef": "1e-3"}).z_loss_coef == 0.001  # (a dict built in Python)
    with pytest.raises(MoEConfigError, match=r"^model\.moe\.aux_loss_coef='1e-2x': must be a number$"):
        MoEConfig.from_dict({"aux_loss_coef": "1e-2x"})  # (no number: still named)


def test_model_lora_floats_written_without_a_dot_are_numbers(tmp_path):
    # was: `dropout: 1e-1` (PyYAML: a string) was refused, "model.lora.dropout='1e-1': must be a number in [0, 1)"
    from t2t_mtl.model.lora import LoRAConfig

    write(tmp_path / "c.yaml", {"data": {"mixture": "m"}})
    (tmp_path / "c.yaml").write_text((tmp_path / "c.yaml").read_text() + "model:\n  dims: {d_model: 8}\n"
                                     "  lora: {r: 2, dropout: 1e-1}\n")
    cfg = C.load_config(tmp_path / "c.yaml", ["model.lora.alpha=16e0"])
    assert cfg.model.lora == {"r": 2, "dropout": 0.1, "alpha": 16.0}
    assert LoRAConfig.from_dict({"r": 2, "dropout": "5e-2"}).dropout == 0.05  # (a dict built in Python)


@pytest.mark.parametrize("key,value,expected", [
    ("training.steps", "ten", "training.steps.*int"),
    ("training.steps", True, "training.steps.*int"),
    ("training.lr", [1], "training.lr.*float"),
    ("training.precision", "bf61", "one of.*did you mean 'bf16'"),
    ("data.held_out_clusters", "nli", "data.held_out_clusters.*list"),
    ("deepspeed.offload_param", "yes", "deepspeed.offload_param.*bool"),
    ("data.tasks_dir", 3, "data.tasks_dir.*str or list of str"),
    ("data.train_held_out", "glue_rte", "data.train_held_out.*list"),
])
def test_wrong_types_name_the_key(key, value, expected):
    section, name = key.split(".")
    data = {"data": {"mixture": "m"}, "model": {"dims": {"d_model": 8}}}
    data.setdefault(section, {})[name] = value
    with pytest.raises(C.ConfigTypeError, match=expected):
        C.config_from_dict(data)


@pytest.mark.parametrize("override, listed", [
    ("data.held_out_clusters=nli", "[nli]"),
    ("data.held_out_clusters=nli,commonsense", "[nli, commonsense]"),
    ("data.templates=t5", "[t5]"),
])
def test_text_where_a_list_is_expected_says_how_to_write_the_list(override, listed):
    # was: "config key 'data.held_out_clusters' must be list of str, got 'nli' (str)", and the commands' own
    # --held-out-clusters takes `nli,commonsense` as written
    key = override.split("=")[0]
    with pytest.raises(C.ConfigTypeError) as caught:
        C.load_config("quickstart", [override])
    assert str(caught.value).endswith(f"; write a YAML list, e.g. {key.split('.')[-1]}: {listed} in a file, "
                                      f"--set '{key}={listed}'")
    section, name = key.split(".")
    written = getattr(getattr(C.load_config("quickstart", [f"{key}={listed}"]), section), name)  # as it says
    assert written == listed.strip("[]").split(", ")
    with pytest.raises(C.ConfigTypeError) as caught:
        C.load_config("quickstart", ["training.betas=0.9"])  # (not text: no list written for it)
    assert "write a YAML list" not in str(caught.value)


@pytest.mark.parametrize("section, name, value", [("gradient_surgery", "method", "pcgrad"),
                                                  ("sampling", "strategy", "uniform"), ("weighting", "method", "dtp")])
def test_a_section_given_as_a_name_alone_says_how_to_write_it(section, name, value):
    # was: "config key 'gradient_surgery' must be mapping or null, got 'pcgrad' (str)", and no word of the key
    with pytest.raises(C.ConfigTypeError) as caught:
        C.load_config("quickstart", [f"{section}={value}"])
    assert str(caught.value).endswith(f" (str); write {section}: {{{name}: {value}}} in a file, "
                                      f"--set {section}.{name}={value}")
    assert getattr(C.load_config("quickstart", [f"{section}.{name}={value}"]), section)[name] == value  # as it says
    with pytest.raises(C.ConfigTypeError) as caught:
        C.load_config("quickstart", [f"{section}=3"])  # (not a name: no section written for it)
    assert "; write" not in str(caught.value)


@pytest.mark.parametrize("section, example", [
    ("gradient_surgery", "method=pcgrad"), ("sampling", "strategy=temperature"), ("weighting", "method=equal"),
    ("model.moe", "num_experts=8"), ("evaluation", "held_out=true"), ("model.dims", None)])
def test_a_mapping_section_given_true_or_false_says_what_to_write(section, example):
    # was: "config key 'gradient_surgery' must be mapping or null, got True (bool)", and no word of what to write
    with pytest.raises(C.ConfigTypeError) as caught:
        C.load_config("quickstart", [f"{section}=true"])
    said = str(caught.value).split(" (bool); ")[1]
    if example is None:
        assert said == f"{section} is set by its keys, not true: write them under it (t2t_mtl/configs/default.yaml " \
                       f"lists them)"
    else:
        name, value = example.split("=")
        assert said == (f"{section} is set by its keys, not true: write them under it, e.g. {section}: {{{name}: "
                        f"{value}}} in a file, --set {section}.{example}")
        C.load_config("quickstart", [f"{section}.{example}"])  # (loads, as it says)
    with pytest.raises(C.ConfigTypeError) as caught:
        C.load_config("quickstart", [f"{section}=false"])
    nullable = section in ("gradient_surgery", "model.moe", "model.dims")
    assert str(caught.value).split(" (bool); ")[1] == (
        f"for no {section}, write {section}: null in a file, --set {section}=null" if nullable else
        f"{section} is set by its keys, not false: leave it out for its defaults")
    if section in ("gradient_surgery", "model.moe"):  # (null loads, as it says, and leaves the section empty)
        assert not functools.reduce(getattr, section.split("."), C.load_config("quickstart", [f"{section}=null"]))


@pytest.mark.parametrize("section", ["model", "tokenizer", "data", "training", "deepspeed"])
def test_a_settings_section_given_true_or_false_says_what_to_write(section):
    # was: "config key 'training' must be a mapping, got True", without ec36836's word of what to write that the
    # mapping sections of a type hint (gradient_surgery, model.moe, ...) give
    for value, hint in (("true", "not true: write them under it (t2t_mtl/configs/default.yaml lists them)"),
                        ("false", "not false: leave it out for its defaults")):
        with pytest.raises(C.ConfigTypeError) as caught:
            C.load_config("quickstart", [f"{section}={value}"])
        assert str(caught.value) == (f"config key {section!r} must be a mapping, got {value.title()}; {section} is "
                                     f"set by its keys, {hint}")


@pytest.mark.parametrize("key,value,quoted,expected", [
    ("training.output_dir", "2024", '"2024"',
     r"""got 2024 \(int\); .*quote text.*--set 'training.output_dir="2024"'"""),
    ("data.templates", "[1, yes]", '["1", "yes"]', r"data.templates.*got \[1, True\].*quote text"),
    ("model.name_or_path", "0.5", '"0.5"', r'model.name_or_path.*quote text, e.g. name_or_path: "0.5" in a file'),
])
def test_text_that_yaml_reads_as_a_number_says_to_quote_it(key, value, quoted, expected):
    # was: "must be str, got 2024 (int)" alone, though the value was meant as text and quoting is the fix
    needed = ["data.mixture=m", "model.dims.d_model=8"]
    with pytest.raises(C.ConfigTypeError, match=expected):
        C.load_config(None, [*needed, f"{key}={value}"])
    C.load_config(None, [*needed, f"{key}={quoted}"])


@pytest.mark.parametrize("data,expected", [
    ({}, "no training data"),
    ({"data": {"mixture": "m"}, "training": {"steps": 0}}, "training.steps.*> 0"),
    ({"data": {"mixture": "m"}, "deepspeed": {"zero_stage": 4}}, "zero_stage"),
    ({"data": {"mixture": "m"}, "deepspeed": {"offload_param": True, "zero_stage": 2}}, "offload_param"),
    ({"data": {"tasks": {"a": -1.0}}}, "data.tasks.a"),
    ({"data": {"mixture": "m"}, "model": {"dims": {}}}, "model.name_or_path"),
    # were accepted: a negative validate_every turned validation off, a negative num_threads was a raw
    # RuntimeError from torch, a NaN lr trained NaN weights
    ({"data": {"mixture": "m"}, "training": {"validate_every": -3}}, "training.validate_every.*>= 0"),
    ({"data": {"mixture": "m"}, "training": {"num_threads": -1}}, "training.num_threads.*> 0"),
    ({"data": {"mixture": "m"}, "training": {"lr": float("nan")}}, "training.lr.*> 0"),
    ({"data": {"mixture": "m"}, "training": {"clip": float("nan")}}, "training.clip.*>= 0"),
    # were accepted: `lr: .inf` (or 1e400, which YAML reads as inf) makes the first AdamW step non-finite
    ({"data": {"mixture": "m"}, "training": {"lr": float("inf")}}, "training.lr.*a finite number > 0, got inf"),
    ({"data": {"mixture": "m"}, "training": {"weight_decay": float("inf")}}, "training.weight_decay.*finite"),
    ({"data": {"mixture": "m", "tasks": {"a": float("inf")}}}, "data.tasks.a: rate must be a finite number > 0"),
    # were silently ignored: a whole DeepSpeed JSON (deepspeed.config) is used as is
    ({"data": {"mixture": "m"}, "deepspeed": {"config": "ds.json", "zero_stage": 2}},
     r"deepspeed.zero_stage .*ignored.*deepspeed.config"),
    ({"data": {"mixture": "m"}, "deepspeed": {"config": "ds.json", "zero_stage": 3, "offload_param": True}},
     r"deepspeed.zero_stage, deepspeed.offload_param .*ignored"),
    # was accepted: every task refused the empty selection only once its data was read, without naming the key
    # was accepted: an empty model.moe built a dense model, with no word (model.lora: {} is LoRA's defaults)
    ({"data": {"mixture": "m"}, "model": {"dims": {"d_model": 8}, "moe": {}}},
     r"'model.moe' is an empty mapping.*give its keys.*or null for a dense model"),
    # was accepted: read as no surgery with no word, while options without a method were refused
    ({"data": {"mixture": "m"}, "gradient_surgery": {}}, r"'gradient_surgery' is an empty mapping.*give its method"),
    ({"data": {"mixture": "m", "templates": []}}, r"'data.templates' is an empty list.*null for every template"),
    # were accepted: data.mixture's every task trained, as if data.tasks were null (`data.tasks: {}` also warned that
    # its rates went unused)
    ({"data": {"mixture": "m", "tasks": []}}, r"'data.tasks' is empty, .* data.mixture 'm'.*null for all of them"),
    ({"data": {"mixture": "m", "tasks": {}}}, r"'data.tasks' is empty, .* data.mixture 'm'.*null for all of them"),
    ({"data": {"tasks": []}}, "no training data"),
    # was accepted: a template named twice was drawn for 2/3 of the rows of a task with two templates
    ({"data": {"mixture": "m", "templates": ["a", "b", "a"]}}, r"'data.templates' names a more than once"),
    # was a raw "Overflow when unpacking long long" ValueError from torch.manual_seed once the run started
    ({"data": {"mixture": "m"}, "training": {"seed": 2 ** 64}}, r"'training.seed' must be an integer in \[0, 9223372"),
    ({"data": {"mixture": "m"}, "training": {"seed": -1}}, r"'training.seed' must be an integer in \[0, "),
    # was a raw "Overflow when unpacking long" ValueError from torch.set_num_threads once the run started
    ({"data": {"mixture": "m"}, "training": {"num_threads": 2 ** 31}},
     r"'training.num_threads' must be at most 2147483647"),
    # were accepted: an empty output_dir or cache_dir wrote the run into the working directory, an empty data_dir or
    # tasks_dir was read as none
    ({"data": {"mixture": "m"}, "training": {"output_dir": ""}},
     r"'training.output_dir' is an empty path, .* as the working directory .*: name the file or folder$"),
    ({"data": {"mixture": "m", "cache_dir": " "}}, r"'data.cache_dir' is an empty path.*, or null for none"),
    ({"data": {"mixture": "m", "data_dir": ""}}, r"'data.data_dir' is an empty path"),
    ({"data": {"mixture": "m", "tasks_dir": ["yaml_tasks", ""]}}, r"'data.tasks_dir' is an empty path"),
    ({"data": {"mixture": "m"}, "tokenizer": {"path": ""}}, r"'tokenizer.path' is an empty path"),
])
def test_bad_values(data, expected):
    if "model" not in data:
        data["model"] = {"dims": {"d_model": 8}}
    with pytest.raises(C.ConfigError, match=expected):
        C.config_from_dict(data)


def test_a_yaml_syntax_error_is_one_line_naming_file_and_line(tmp_path):
    # was: PyYAML's multi-line message (with its "<unicode string>" excerpt) after the file name
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: quickstart\ntraining: [unclosed\n")
    with pytest.raises(C.ConfigFileError) as caught:
        C.load_config(bad)
    assert str(caught.value) == (f"config file {bad} is not valid YAML: line 3, column 1: while parsing a flow "
                                 f"sequence: expected ',' or ']', but got '<stream end>'")
    with pytest.raises(C.ConfigError) as caught:
        C.parse_overrides(["training.steps=[1"])
    assert "\n" not in str(caught.value) and "line 1, column 3" in str(caught.value)


def test_a_config_not_found_names_the_close_files_and_packaged_configs(tmp_path, monkeypatch):
    # was: "config 'my.yml' not found (looked at ...); packaged configs: ..." beside the user's my.yaml, with no word
    # of the one-letter difference
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "a").mkdir(parents=True)
    for name in ("my.yaml", "other.yaml", "runs/a/config.yaml", "my.txt"):
        (tmp_path / name).write_text("training: {steps: 1}\n")
    for written, near in (("my.yml", "'my.yaml'"), ("my", "'my.yaml'"), ("runs/a/confg.yaml", "'runs/a/config.yaml'"),
                          ("quickstrat", "'quickstart'")):
        with pytest.raises(C.ConfigFileError, match=f"not found .*; did you mean {near}\\? packaged configs: "):
            C.load_config(written)
    write(tmp_path / "child.yaml", {"base": "othr.yaml"})  # a base: is looked for beside the file naming it
    with pytest.raises(C.ConfigFileError, match="did you mean 'other.yaml'\\? "):
        C.load_config(tmp_path / "child.yaml")
    with pytest.raises(C.ConfigFileError) as caught:
        C.load_config("zzz.yaml")
    assert "did you mean" not in str(caught.value)


def test_a_config_not_found_names_each_close_file_once(tmp_path, monkeypatch):
    # was: "did you mean 'my.yaml', 'my.yml', 'my.yaml', 'my.yml'?": each file once for each time its stem matched
    monkeypatch.chdir(tmp_path)
    for name in ("my.yaml", "my.yml"):
        (tmp_path / name).write_text("training: {steps: 1}\n")
    with pytest.raises(C.ConfigFileError, match="; did you mean 'my.yaml', 'my.yml'\\? packaged configs: "):
        C.load_config("my.ym")


def test_a_config_in_a_misspelt_folder_names_the_close_file_in_the_folder_meant(tmp_path, monkeypatch):
    # was: no "did you mean" for 'runs/quikstart/config.yaml' (the folder was searched for close files only when it
    # existed), though a checkpoint or --tasks-dir path misspelt so got one
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "quickstart").mkdir(parents=True)
    (tmp_path / "runs" / "quickstart" / "config.yaml").write_text("training: {steps: 1}\n")
    with pytest.raises(C.ConfigFileError, match="; did you mean 'runs/quickstart/config.yaml'\\? packaged configs"):
        C.load_config("runs/quikstart/config.yml")
    write(tmp_path / "child.yaml", {"base": "runs/quikstart/config.yaml"})  # a base: is looked for beside its file
    meant = tmp_path.resolve() / "runs" / "quickstart" / "config.yaml"
    with pytest.raises(C.ConfigFileError) as caught:
        C.load_config(tmp_path / "child.yaml")
    assert f"; did you mean {str(meant)!r}? packaged configs" in str(caught.value)


def test_missing_files_and_paths(tmp_path):
    with pytest.raises(C.ConfigFileError, match="nope.yaml.*not found"):
        C.load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [unclosed")
    with pytest.raises(C.ConfigFileError, match="not valid YAML"):
        C.load_config(bad)
    loop = write(tmp_path / "loop.yaml", {"base": "loop.yaml"})
    with pytest.raises(C.ConfigFileError, match="includes itself"):
        C.load_config(loop)
    cfg = C.config_from_dict({"data": {"mixture": "m", "data_dir": str(tmp_path / "missing")},
                              "model": {"dims": {"d_model": 8}}})
    with pytest.raises(C.ConfigFileError, match="data.data_dir.*does not exist"):
        C.check_paths(cfg)
    (tmp_path / "rows.jsonl").write_text("{}")  # was: accepted, the tasks' rows then "missing" under it
    cfg.data.data_dir = str(tmp_path / "rows.jsonl")
    with pytest.raises(C.ConfigFileError, match="data.data_dir.*rows.jsonl.*which is a file"):
        C.check_paths(cfg)
    cfg = C.config_from_dict({"data": {"mixture": "m"}, "tokenizer": {"path": str(tmp_path / "tok")},
                              "model": {"dims": {"d_model": 8}}})
    with pytest.raises(C.ConfigFileError, match="tokenizer.path"):
        C.check_paths(cfg)
    with pytest.raises(C.ConfigError, match="KEY=VALUE"):
        C.parse_overrides(["training.steps"])
    for tasks_dir, key in ((str(tmp_path / "no_tasks"), r"'data\.tasks_dir'"),
                           ([str(tmp_path), str(tmp_path / "no_tasks")], r"'data\.tasks_dir\[1\]'")):
        cfg = C.config_from_dict({"data": {"mixture": "m", "tasks_dir": tasks_dir}, "model": {"dims": {"d_model": 8}}})
        with pytest.raises(C.ConfigFileError, match=key + ".*no_tasks.*does not exist"):
            C.check_paths(cfg)


def test_a_relative_path_that_does_not_exist_says_it_is_read_from_the_working_directory(tmp_path, monkeypatch):
    # `data.tasks_dir: tasks` in a config beside its `tasks/` folder, run from elsewhere, said only that 'tasks' did
    # not exist — while paths inside a YAML task file are read from that file's folder
    (tmp_path / "project" / "tasks").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    cfg = C.config_from_dict({"data": {"mixture": "m", "tasks_dir": "tasks"}, "model": {"dims": {"d_model": 8}}})
    with pytest.raises(C.ConfigFileError) as raised:
        C.check_paths(cfg)
    assert str(raised.value) == (
        f"config key 'data.tasks_dir' names a folder of YAML task files 'tasks', which does not exist (a relative "
        f"path in a config is read from the working directory, {tmp_path / 'elsewhere'}, not from the config file's "
        f"folder: run from the folder it is relative to, or write it absolute)")
    monkeypatch.chdir(tmp_path / "project")
    C.check_paths(cfg)
    cfg.data.tasks_dir = str(tmp_path / "absent")  # an absolute path: nothing about the working directory
    with pytest.raises(C.ConfigFileError) as raised:
        C.check_paths(cfg)
    assert str(raised.value).endswith(f"{str(tmp_path / 'absent')!r}, which does not exist")


@pytest.mark.parametrize("value, local", [
    ("t5-small", False), ("google/t5-v1_1-small", False),  # hub ids: 'name' or 'owner/name'
    ("runs/nope", True), ("runs", True),  # (runs/ is a folder here: its missing subfolder is a local path)
    ("./tok", True), ("../tok", True), ("/abs/tok", True), ("~/tok", True), ("a/b/c", True),
])
def test_a_name_is_local_when_written_as_a_path_or_its_first_folder_is_here(value, local, tmp_path, monkeypatch):
    from t2t_mtl.hub import looks_like_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert looks_like_path(value) is local


@pytest.mark.parametrize("key", ["tokenizer.path", "model.name_or_path"])
def test_a_missing_folder_under_a_local_folder_is_refused_by_the_path_checks_not_read_as_a_hub_id(key, tmp_path,
                                                                                                 monkeypatch):
    # was: `tokenizer.path: runs/nope` (runs/ here, nope not in it) passed the checks as a hub id 'owner/name' and
    # the run stopped once started, asking the hub for a repository 'runs/nope'
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "my").mkdir(parents=True)
    section, name = key.split(".")
    cfg = C.config_from_dict({"data": {"mixture": "m"}, "model": {"dims": {"d_model": 8}},
                              section: {name: "runs/nope"}})  # (the model's replaces the dims)
    with pytest.raises(C.ConfigFileError) as raised:
        C.check_paths(cfg)
    assert str(raised.value).startswith(f"config key {key!r} names a local folder 'runs/nope', which does not exist")
    setattr(getattr(cfg, section), name, "google/t5-v1_1-small")  # (no google/ here: a hub id, left to the hub)
    C.check_paths(cfg)


def test_a_missing_sentencepiece_model_file_as_tokenizer_path_is_named_a_file_not_a_folder(tmp_path, monkeypatch):
    # was: "config key 'tokenizer.path' names a local folder 'tok/spiece.model', which does not exist": a *.model path
    # names a SentencePiece model file (a tokenizer path may be one), not a folder
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tok").mkdir()
    cfg = C.config_from_dict({"data": {"mixture": "m"}, "model": {"dims": {"d_model": 8}},
                              "tokenizer": {"path": "tok/spiece.model"}})
    with pytest.raises(C.ConfigFileError) as raised:
        C.check_paths(cfg)
    assert str(raised.value).startswith("config key 'tokenizer.path' names a SentencePiece model file "
                                        "'tok/spiece.model', which does not exist")
    cfg.tokenizer.path = "tok/nope"  # (a folder, as before)
    with pytest.raises(C.ConfigFileError, match="names a local folder 'tok/nope', which does not exist"):
        C.check_paths(cfg)


def test_a_cache_dir_under_a_file_is_refused_by_the_path_checks(tmp_path, capsys):
    # was: accepted by check_paths (and `train --print-config`); the run refused it only after its checks
    (tmp_path / "afile").write_text("x")
    cache = tmp_path / "afile" / "cache"
    cfg = C.config_from_dict({"data": {"mixture": "m", "cache_dir": str(cache)}, "model": {"dims": {"d_model": 8}},
                              "training": {"output_dir": str(tmp_path / "run")}})
    with pytest.raises(C.ConfigFileError) as caught:
        C.check_paths(cfg)
    assert str(caught.value) == f"data.cache_dir {str(cache)!r}: {tmp_path / 'afile'} exists and is not a directory; " \
                                f"choose another folder (or null: the run folder's cache/)"
    config_path = write(tmp_path / "cfg.yaml", {"data": {"tasks": ["parity"], "cache_dir": str(cache)},
                                                "model": {"dims": {"d_model": 8}},
                                                "training": {"output_dir": str(tmp_path / "run")}})
    assert cli_main(["train", str(config_path), "--print-config"]) == 2
    assert capsys.readouterr().err == f"error: {caught.value}\n"
    assert not (tmp_path / "run").exists()


def test_a_run_folder_as_model_or_tokenizer_is_refused_by_the_path_checks_with_what_to_name(tmp_path, capsys):
    # was: accepted by check_paths (and `train --print-config`); the run, once DeepSpeed was up, failed on the
    # tokenizer ("set tokenizer.path ...") for model.name_or_path: runs/my, whose fix is to export the run first
    run = tmp_path / "runs" / "my"
    (run / "checkpoints" / "step-00000010").mkdir(parents=True)
    (run / "checkpoints" / "step-00000010" / "meta.json").write_text("{}")
    (run / "tokenizer").mkdir()
    (run / "tokenizer" / "tokenizer_config.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    for model in (run, run / "checkpoints" / "step-00000010"):
        cfg = C.config_from_dict({"data": {"mixture": "m"}, "model": {"name_or_path": str(model)}})
        with pytest.raises(C.ConfigFileError) as caught:
            C.check_paths(cfg)
        assert str(caught.value) == (
            f"config key 'model.name_or_path' names {str(model)!r}, a t2t-mtl run (or checkpoint), not a model folder "
            f"(it holds no config.json): export it first, `t2t-mtl export {model} --out DIR`, and name DIR")
    cfg = C.config_from_dict({"data": {"mixture": "m"}, "model": {"name_or_path": str(tmp_path / "empty")}})
    with pytest.raises(C.ConfigFileError, match=r"'model.name_or_path' names .*empty', a folder that holds no "
                                                r"config.json: name a Hugging Face model folder"):
        C.check_paths(cfg)
    cfg = C.config_from_dict({"data": {"mixture": "m"}, "model": {"dims": {"d_model": 8}},
                              "tokenizer": {"path": str(run)}})
    with pytest.raises(C.ConfigFileError) as caught:
        C.check_paths(cfg)
    assert str(caught.value).startswith(f"config key 'tokenizer.path' names {str(run)!r}: tokenizer folder {run} "
                                        f"holds no tokenizer files")
    assert str(caught.value).endswith(f"pass {run / 'tokenizer'}")
    cfg.tokenizer.path = str(run / "tokenizer")
    C.check_paths(cfg)
    config_path = write(tmp_path / "cfg.yaml", {"data": {"tasks": ["parity"]}, "model": {"name_or_path": str(run),
                                                                                         "dims": None},
                                                "training": {"output_dir": str(tmp_path / "out")}})
    assert cli_main(["train", str(config_path), "--print-config"]) == 2
    assert "export it first" in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("key", ["data.cache_dir", "training.output_dir"])
def test_an_output_folder_the_user_may_not_write_is_refused_by_the_path_checks(tmp_path, monkeypatch, key):
    # was: accepted; the run failed in a PermissionError traceback once it first wrote there (the tokenized cache:
    # after every check, deep in tokenizing). Tests run as root too, where mode bits do not bind: os.access is
    # made to refuse the folder named `locked` as it would for another user
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != locked and real_access(path, mode, **kw))
    folder = locked / "sub"
    section, name = key.split(".")
    values = {"data": {"mixture": "m"}, "model": {"dims": {"d_model": 8}}, "training": {"output_dir": str(tmp_path)}}
    values[section][name] = str(folder)
    with pytest.raises(C.ConfigFileError) as caught:
        C.check_paths(C.config_from_dict(values))
    assert str(caught.value).startswith(f"{key} {str(folder)!r}: {locked} is not writable by this user; choose "
                                        f"another folder")
    values[section][name] = str(tmp_path / "free" / "sub")  # a folder that can be made passes
    C.check_paths(C.config_from_dict(values))


def test_a_config_file_that_is_not_utf8_is_named(tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"training:\n  output_dir: caf\xe9\n")
    with pytest.raises(C.ConfigFileError, match="latin.yaml.*not UTF-8"):
        C.load_config(latin)


def test_cli_reports_config_errors_before_training(tmp_path, capsys):
    cfg = write(tmp_path / "c.yaml", {"base": "quickstart", "training": {"stpes": 5, "output_dir": str(tmp_path)}})
    assert cli_main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "training.stpes" in err and "training.steps" in err
    assert not (tmp_path / "config.yaml").exists()  # nothing started
    assert cli_main(["train", "--set", "data.data_dir=/no/such/dir", "--set",
                     f"training.output_dir={tmp_path}/r"]) == 2
    assert "data.data_dir" in capsys.readouterr().err
    assert cli_main(["train", "--set", "sampling.alpah=2", "--set", "sampling.strategy=temperature", "--set",
                     f"training.output_dir={tmp_path}/r2", "--set", f"data.cache_dir={tmp_path}/r2-cache"]) == 2
    assert "alpah" in capsys.readouterr().err
    # failed before tokenizing (a run without data.cache_dir tokenizes into datasets' cache folder, not the run's)
    assert not (tmp_path / "r2-cache").exists()


@pytest.mark.parametrize("print_config", [[], ["--print-config"]])
def test_a_bad_data_dir_option_is_named_as_typed(tmp_path, capsys, print_config):
    # was "config key 'data.data_dir' names a data directory ..., which does not exist (a relative path in a config
    # is read from the working directory ...)": a key and a config file the command line never named
    afile = tmp_path / "rows.jsonl"
    afile.write_text("{}\n")
    for data_dir, state in ((tmp_path / "none", "does not exist"), (afile, "is a file")):
        assert cli_main(["train", "--data-dir", str(data_dir), "--set", f"training.output_dir={tmp_path}/r",
                         *print_config]) == 2
        assert capsys.readouterr().err == (f"error: --data-dir {data_dir} {state}: name the folder holding "
                                           f"<hub path>/<config or default>/<split>.jsonl\n")
    assert not (tmp_path / "r").exists()


def test_print_config_with_resume_refuses_what_resuming_would_refuse(tmp_path, capsys):
    # was: `train --resume RUN --set training.seed=5 --print-config` printed the config (exit 0), while the same
    # command without --print-config is refused: "checkpoint ... was written with training.seed = 0, this run has 5"
    import json

    ckpt = tmp_path / "run" / "checkpoints" / "step-00000003"
    ckpt.mkdir(parents=True)
    (ckpt / "meta.json").write_text(json.dumps({"step": 3, "settings": {"training.seed": 0}}))
    args = ["train", "--print-config", "--resume", str(ckpt), "--set", f"training.output_dir={tmp_path / 'run'}"]
    assert cli_main([*args, "--set", "training.seed=5"]) == 2
    captured = capsys.readouterr()
    assert f"error: checkpoint {ckpt} was written with training.seed = 0, this run has 5" in captured.err
    assert captured.out == ""
    assert cli_main(args) == 0 and capsys.readouterr().out.startswith("model:")


def test_print_config_with_resume_warns_of_a_template_edited_under_its_name(tmp_path, capsys):
    # was: silent, as the resumed run was, when a task's template changed under the same name since the checkpoint
    import json

    from t2t_mtl.engine.run_checks import check_run_config
    from t2t_mtl.engine.training_templates import template_digests_of, training_template_selection

    run = f"training.output_dir={tmp_path / 'run'}"
    cfg = C.load_config("quickstart", [run])
    digests = template_digests_of(training_template_selection(cfg, list(check_run_config(cfg)[0])))
    task, templates = next(iter(digests.items()))
    template = next(iter(templates))
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000003"
    ckpt.mkdir(parents=True)
    args = ["train", "--print-config", "--resume", str(ckpt), "--set", run]
    (ckpt / "meta.json").write_text(json.dumps({"step": 3, "template_digests": digests}))
    assert cli_main(args) == 0
    captured = capsys.readouterr()
    assert "changed under the same name" not in captured.err and captured.out.startswith("model:")
    edited = {**digests, task: {**templates, template: "0" * 16}}
    (ckpt / "meta.json").write_text(json.dumps({"step": 3, "template_digests": edited}))
    assert cli_main(args) == 0
    captured = capsys.readouterr()
    assert (f"warning: the template(s) [{template!r}] of task {task!r} changed under the same name since checkpoint "
            f"{ckpt} was written" in captured.err), captured.err
    assert captured.out.startswith("model:")


def test_print_config_roundtrip(tmp_path, capsys):
    assert cli_main(["train", "--print-config", "--set", "training.steps=7"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    cfg = C.config_from_dict(printed)
    assert cfg.training.steps == 7
    assert dataclasses.asdict(cfg) == printed
    # the config the run would train with: --data-dir replaces data.data_dir (mutation testing: printing the
    # config's own data_dir passed every test, none of which printed one with a --data-dir)
    assert cli_main(["train", "--print-config", "--data-dir", str(tmp_path)]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["data"]["data_dir"] == str(tmp_path)


def test_print_config_output_loads_as_the_config_where_ds_accelerator_is_unset(tmp_path):
    # was: without DS_ACCELERATOR in the environment (the README's commands on a CPU machine), DeepSpeed, first
    # imported by the run's checks, detected the CPU itself and put its warning "[...] [WARNING]
    # [real_accelerator.py:...] Setting accelerator to CPU. ..." on stdout above the config, so the output of
    # `train --print-config > cfg.yaml` was no YAML, where the README says it still loads as the config
    env = {name: value for name, value in os.environ.items() if name != "DS_ACCELERATOR"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-m", "t2t_mtl", "train", "--print-config", "--set", "training.steps=7"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout) == dataclasses.asdict(C.load_config("quickstart", ["training.steps=7"]))


def test_print_config_shows_the_deepspeed_config_of_the_jobs_world_size(tmp_path, capsys, monkeypatch):
    # mutation testing: --print-config sizing the DeepSpeed config for one rank whatever WORLD_SIZE says passed
    # every test, which ran it as one process; under torchrun --nproc_per_node 2 the batch is twice the rank's
    import json

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli_main(["train", "--print-config"]) == 0
    out = capsys.readouterr().out
    head = "# the DeepSpeed config of this run on 2 rank(s), saved as deepspeed_config.json in its folder:\n"
    assert head in out, out
    ds_config = json.loads("\n".join(line[2:] for line in out.split(head)[1].splitlines()))
    training = yaml.safe_load(out)["training"]
    assert ds_config["train_batch_size"] == 2 * training["micro_batch_size"] * training["grad_accum"]

def test_print_config_refuses_what_the_run_would_refuse(tmp_path, capsys):
    cases = {  # each passes config loading but the run refuses it before reading any data
        "sampling.alpah=2": "alpah",
        "data.held_out_clusters=[comparsion]": "comparsion",
        "data.batching=pack --set sampling.strategy=uncertainty": "data.batching: pack",
        "training.keep_best=val_loss": "training.validate_every",
        "data.data_dir=/no/such/dir": "data.data_dir",
        "training.precision=fp16": "fp16 is not supported on CPU",
        "tokenizer.train={foo: 1}": "tokenizer.train: unknown option(s) ['foo']",
        # were: a raw int() ValueError traceback, or a tokenizer error after reading the data
        "tokenizer.train.vocab_size=abc": "'tokenizer.train.vocab_size' must be an integer >= 4, got 'abc'",
        "tokenizer.train.max_examples_per_task=0": "'tokenizer.train.max_examples_per_task' must be an integer >= 1",
        # was: a raw ValueError traceback from SentencePiece ("cannot parse ... as int") once the data was read
        "tokenizer.train.vocab_size=2147483648": "'tokenizer.train.vocab_size' must be at most 2147483647",
        # 12 tasks, batch 32: a pool of 24 (was: the suggested 3 per task, a pool of 36, only just kept enough)
        "sampling.strategy=uncertainty --set sampling.pool_per_task=2": "raise sampling.pool_per_task above 2",
    }
    for override, message in cases.items():
        args = ["train", "--print-config"]
        for part in override.split(" --set "):
            args += ["--set", part]
        assert cli_main(args) == 2, override
        captured = capsys.readouterr()
        assert message in captured.err and captured.out == "", override
    assert cli_main(["train", "--print-config", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    bad_json = tmp_path / "ds.json"  # was: accepted here, refused by the run only after tokenizing the data
    bad_json.write_text("{not json")
    assert cli_main(["train", "--print-config", "--set", f"deepspeed.config={bad_json}"]) == 2
    assert "deepspeed.config: " + str(bad_json) + " is not valid JSON" in capsys.readouterr().err
    # accepted, but a setting would sit idle: said on stderr, the config still printed
    assert cli_main(["train", "--print-config", "--set", "training.steps=50", "--set", "training.validate_every=100",
                     "--set", "training.keep_best=val_loss"]) == 0
    captured = capsys.readouterr()
    assert "training.warmup (100) >= training.steps (50)" in captured.err
    assert "no periodic validation runs, so training.keep_best 'val_loss' never act" in captured.err
    assert captured.out.startswith("model:")


def test_a_task_named_twice_in_data_tasks_is_refused():
    from t2t_mtl.engine.run_mixture import training_rates

    # was: silently collapsed to one rate per task
    cfg = C.load_config("quickstart", ["data.mixture=null", "data.tasks=[parity, count_word, parity]"])
    with pytest.raises(C.ConfigError, match="data.tasks names parity more than once"):
        training_rates(cfg)


def test_tasks_outside_the_base_configs_mixture_say_to_clear_it():
    # `base: quickstart` plus `data.tasks: [my_task, glue_sst2]`, as the README's my.yaml suggests, kept
    # quickstart's data.mixture: procedural and was refused with only "... are not in mixture 'procedural'"
    from t2t_mtl.engine.run_mixture import training_rates

    cfg = C.load_config("quickstart", ["data.tasks=[parity, glue_sst2]"])
    with pytest.raises(C.ConfigError) as caught:
        training_rates(cfg)
    assert str(caught.value) == ("data.tasks ['glue_sst2'] are not in mixture 'procedural': with data.mixture set (a "
                                 "base config's too, as quickstart's), data.tasks picks tasks of it; to train exactly "
                                 "the tasks data.tasks names, set data.mixture: null")
    cleared = C.load_config("quickstart", ["data.tasks=[parity, glue_sst2]", "data.mixture=null"])
    assert set(training_rates(cleared)) == {"parity", "glue_sst2"}


def test_an_unknown_task_or_cluster_without_data_tasks_dir_says_yaml_tasks_need_it(tmp_path):
    # a YAML task (or its cluster) named in a config without data.tasks_dir was "unknown", with nothing about the
    # key that registers task files
    from t2t_mtl.engine.run_mixture import training_rates

    note = ("; a YAML task file's task is registered by data.tasks_dir: name its folder (a Python module's by "
            "data.task_modules)")
    for data, key in (({"tasks": ["my_task"]}, "data.tasks"),
                      ({"tasks": ["parity"], "held_out_clusters": ["my_cluster"]}, "data.held_out_clusters")):
        with pytest.raises(C.ConfigError) as caught:
            training_rates(C.config_from_dict({"model": {"dims": {"d_model": 8}}, "data": data}))
        assert str(caught.value).startswith(f"{key}: ") and str(caught.value).endswith(note)
    (tmp_path / "rows.jsonl").write_text('{"q": "a", "a": "b"}\n')
    (tmp_path / "my_task.yaml").write_text("name: my_task\ncluster: my_cluster\nsplits: [train]\n"
                                           "source: {files: rows.jsonl}\ntemplates:\n  - {name: t, jinja: "
                                           "'{{q}} ||| {{a}}'}\n")
    import task_registry

    with task_registry.isolated_registry(), pytest.raises(C.ConfigError) as caught:  # a typo then: no note
        training_rates(C.config_from_dict({"model": {"dims": {"d_model": 8}},
                                           "data": {"tasks": ["my_tsk"], "tasks_dir": str(tmp_path)}}))
    assert "did you mean 'my_task'" in str(caught.value) and note not in str(caught.value)


def test_a_held_out_yaml_task_outside_the_held_out_clusters_is_warned_of(tmp_path):
    # was: a task of the run's data.tasks_dir flagged held_out, its cluster not held out, was silently neither
    # trained nor evaluated (held-out evaluation scores data.held_out_clusters' tasks)
    import task_registry
    from t2t_mtl.engine.idle_settings import config_warnings

    (tmp_path / "rows.jsonl").write_text('{"q": "a", "a": "b"}\n')
    for name, cluster in (("mine", "my_cluster"), ("kept", "qa")):
        (tmp_path / f"{name}.yaml").write_text(f"name: {name}\ncluster: {cluster}\nheld_out: true\nsplits: [train]\n"
                                               f"source: {{files: rows.jsonl}}\ntemplates:\n  - {{name: t, jinja: "
                                               f"'{{{{q}}}} ||| {{{{a}}}}'}}\n")

    def warned(**data):
        cfg = C.config_from_dict({"model": {"dims": {"d_model": 8}}, "tokenizer": {"path": "tok"},
                                  "data": {"tasks": ["parity", "count_word"], "tasks_dir": str(tmp_path),
                                           "held_out_clusters": ["qa"], **data},
                                  "evaluation": {"held_out": True}})
        return [w for w in config_warnings(cfg) if "flagged held_out" in w]

    with task_registry.isolated_registry():
        task_registry.load_builtin_tasks()
        task_registry.load_task_dirs(tmp_path)
        assert warned() == [f"task 'mine' ({(tmp_path / 'mine.yaml').resolve()}) is flagged held_out (kept for "
                            f"zero-shot evaluation), but its cluster 'my_cluster' is not in data.held_out_clusters "
                            f"['qa']: the run neither trains it nor scores it zero-shot; add 'my_cluster' to "
                            f"data.held_out_clusters, or name it in evaluation.tasks"]
        # built-in held_out tasks (glue_rte ...) and the task a held-out cluster covers are not named
        assert warned(held_out_clusters=["qa", "my_cluster"]) == []
        assert warned(tasks=["parity", "mine"], train_held_out=["mine"]) == []


def test_a_train_held_out_task_the_run_does_not_train_is_refused():
    # was: accepted, and nothing was trained on it (a misspelt or forgotten task passed unnoticed)
    from t2t_mtl.engine.run_mixture import training_rates

    def rates(**data):
        return training_rates(C.config_from_dict({"model": {"dims": {"d_model": 8}}, "data": data}))

    with pytest.raises(C.ConfigError) as caught:
        rates(tasks=["parity"], train_held_out=["compare_numbers"])
    assert str(caught.value) == ("data.train_held_out names ['compare_numbers'], which this run does not train "
                                 "(data.tasks does not include it): add it to data.tasks to train on it, or drop it "
                                 "from data.train_held_out")
    # procedural's held-out cluster 'comparison' drops compare_numbers from the mixture
    with pytest.raises(C.ConfigError, match=r"^data\.train_held_out names \['compare_numbers'\], which this run does "
                                            r"not train \(data\.mixture 'procedural' does not include it; "
                                            r"data\.held_out_clusters holds out \['comparison'\]\): add it to "
                                            r"data\.tasks"):
        rates(mixture="procedural", held_out_clusters=["comparison"], train_held_out=["compare_numbers"])
    both = rates(tasks=["parity", "compare_numbers"], train_held_out=["compare_numbers"])
    assert set(both) == {"parity", "compare_numbers"}


@pytest.mark.parametrize("section, values, key, rest", [
    ("sampling", {"strategy": "temperature", "alpah": 2}, "alpah",
     "unknown parameter 'alpah' for sampling strategy 'temperature'. Did you mean 'alpha'? Valid parameters: alpha, "
     "block_size, cap, dataset_cap, mode, scale, sizes_count_templates, strategy, template_cap, template_sizes, "
     "templates."),
    ("weighting", {"method": "uncertainty", "inti": 0.5}, "inti",
     "unknown parameter 'inti' for loss weighting 'uncertainty'. Did you mean 'init'? Valid parameters: init."),
    # was: "... Did you mean 'templates', 'template_cap'?" for seqio's temperature (and no hint for its maximum)
    ("sampling", {"strategy": "temperature", "temperature": 2}, "temperature",
     "unknown parameter 'temperature' for sampling strategy 'temperature'. Did you mean 'alpha' (seqio's temperature: "
     "p ∝ n^(1/alpha))? Valid parameters: alpha, block_size, cap, dataset_cap, mode, scale, sizes_count_templates, "
     "strategy, template_cap, template_sizes, templates."),
    ("sampling", {"strategy": "proportional", "maximum": 1000}, "maximum",
     "unknown parameter 'maximum' for sampling strategy 'proportional'. Did you mean 'cap' (seqio's maximum: a task's "
     "size capped at it)? Valid parameters: block_size, cap, dataset_cap, mode, scale, sizes_count_templates, "
     "strategy, template_cap, template_sizes, templates."),
])
def test_an_unknown_sampling_or_weighting_key_is_named_by_its_config_path(tmp_path, capsys, section, values, key,
                                                                          rest):
    # was: "unknown parameter 'alpah' for sampling strategy ..." without the key as the config spells it
    config_path = write(tmp_path / "cfg.yaml", {"data": {"tasks": ["parity"]}, "model": {"dims": {"d_model": 8}},
                                                section: values, "training": {"output_dir": str(tmp_path / "run")}})
    assert cli_main(["train", str(config_path), "--print-config"]) == 2
    assert capsys.readouterr().err == f"error: {section}.{key}: {rest}\n"


def test_a_rate_mapping_in_data_tasks_replaces_the_mixtures_rates():
    from t2t_mtl.engine.run_mixture import training_rates

    tasks = {"parity": 3.0, "count_word": 1.0}
    both = training_rates(C.config_from_dict({"model": {"dims": {"d_model": 8}},
                                            "data": {"mixture": "procedural_train", "tasks": tasks}}))
    alone = training_rates(C.config_from_dict({"model": {"dims": {"d_model": 8}}, "data": {"tasks": tasks}}))
    assert both == alone and both["parity"] == 3 * both["count_word"]  # were the mixture's equal rates
    listed = training_rates(C.config_from_dict({"model": {"dims": {"d_model": 8}},
                                              "data": {"mixture": "procedural_train", "tasks": list(tasks)}}))
    assert listed["parity"] == listed["count_word"]  # a list keeps the mixture's rates


def test_tchebycheff_over_homogeneous_micro_batches_is_warned_about():
    # its max over the tasks of a micro-batch is a max over one task in homogeneous mode: a weighted sum, silently
    from t2t_mtl.engine.idle_settings import config_warnings

    def warnings(**sampling):
        return config_warnings(C.config_from_dict({"model": {"dims": {"d_model": 8}}, "data": {"mixture": "m"},
                                                   "weighting": {"method": "tchebycheff"},
                                                   **({"sampling": sampling} if sampling else {})}))

    assert any("reduces to the weighted sum" in w for w in warnings())
    assert any("reduces to the weighted sum" in w for w in warnings(mode="homogeneous"))
    assert not any("tchebycheff" in w for w in warnings(mode="mixed"))


def test_capacity_settings_under_task_routing_are_warned_about():
    # task routing has no capacity: the settings were accepted and did nothing, with no word
    from t2t_mtl.engine.idle_settings import config_warnings

    def warnings(**moe):
        return config_warnings(C.config_from_dict({"model": {"dims": {"d_model": 8}, "moe": moe},
                                                   "data": {"mixture": "m"}}))

    assert [w for w in warnings(routing="task", capacity_factor=1.0, dropless=True) if "model.moe" in w] == [
        "model.moe.capacity_factor, model.moe.dropless: routing task sends every token of a task to its experts "
        "with no capacity limit, so they have no effect"]
    assert any("model.moe.min_capacity: routing task" in w and "so it has no effect" in w
               for w in warnings(routing="task", min_capacity=2))
    assert not any("model.moe" in w for w in warnings(routing="token", capacity_factor=1.0))
    assert not any("model.moe" in w for w in warnings(routing="task"))


def test_capacity_settings_with_dropless_are_warned_about():
    # was: dropless: true gives every choice an expert row, so capacity_factor and its kin did nothing, with no word
    from t2t_mtl.engine.idle_settings import config_warnings

    def warnings(**moe):
        return [w for w in config_warnings(C.config_from_dict({"model": {"dims": {"d_model": 8}, "moe": moe},
                                                               "data": {"mixture": "m"}})) if "model.moe" in w]

    assert warnings(dropless=True, capacity_factor=1.0) == [
        "model.moe.capacity_factor: dropless: true routes every token's top-k choices with no capacity limit, so it "
        "has no effect"]
    assert warnings(routing="hybrid", dropless=True, eval_capacity_factor=3.0, min_capacity=2) == [
        "model.moe.eval_capacity_factor, model.moe.min_capacity: dropless: true routes every token's top-k choices "
        "with no capacity limit, so they have no effect"]
    assert warnings(dropless=False, capacity_factor=1.0) == warnings(dropless=True) == []
    assert len(warnings(routing="task", dropless=True, capacity_factor=1.0)) == 1  # (routing task's own warning)


def test_unseen_task_routing_under_token_routing_is_warned_about():
    # was: token routing never reads task ids, so unseen_task_routing (even `error`) did nothing, with no word
    from t2t_mtl.engine.trainer import config_warnings

    def warnings(**moe):
        return [w for w in config_warnings(C.config_from_dict({"model": {"dims": {"d_model": 8}, "moe": moe},
                                                               "data": {"mixture": "m"}})) if "model.moe" in w]

    assert warnings(unseen_task_routing="error") == warnings(routing="token", unseen_task_routing="mean") == [
        "model.moe.unseen_task_routing: routing token picks each token's experts by its own router, whatever its "
        "task, so it has no effect (it applies to routing task and hybrid)"]
    assert warnings(routing="task", unseen_task_routing="error") == []
    assert warnings(routing="hybrid", unseen_task_routing="mean") == warnings(routing="token") == []


def test_tokenizer_training_options_beside_a_loaded_tokenizer_are_warned_about():
    # was: a run with tokenizer.path (or a pretrained model's own tokenizer) ignored tokenizer.train, with no word
    from t2t_mtl.engine.trainer import config_warnings

    def warnings(model=None, **tokenizer):
        return [w for w in config_warnings(C.config_from_dict({"model": model or {"dims": {"d_model": 8}},
                                                               "tokenizer": tokenizer, "data": {"mixture": "m"}}))
                if "tokenizer" in w]

    assert warnings(path="tok", train={"vocab_size": 300}) == [
        "tokenizer.train is set, but the run loads the tokenizer of tokenizer.path ('tok') and trains none, so it "
        "has no effect"]
    assert warnings({"name_or_path": "t5-small"}, train={"vocab_size": 512, "max_examples_per_task": 10}) == [
        "tokenizer.train is set, but the run loads the tokenizer of model.name_or_path ('t5-small') and trains none, "
        "so it has no effect"]
    assert warnings(train={"vocab_size": 300}) == warnings(path="tok") == []  # trained here / the defaults
    assert warnings({"name_or_path": "t5-small"}) == []


def test_tokenizer_training_options_of_a_base_config_beside_the_users_tokenizer_path_are_not_warned_about(tmp_path):
    # was: 'tokenizer.train is set, but the run loads the tokenizer of tokenizer.path ... no effect' for a file with
    # base: quickstart and a tokenizer.path, though only the quickstart (vocab_size 400) wrote tokenizer.train
    from t2t_mtl.engine.idle_settings import config_warnings

    def warned(text, overrides=()):
        (tmp_path / "c.yaml").write_text(text)
        cfg = C.load_config(tmp_path / "c.yaml", list(overrides))
        assert cfg.tokenizer.train["vocab_size"] in (400, 300)  # (the base's, or the user's own, is still there)
        return [w for w in config_warnings(cfg) if w.startswith("tokenizer.train is set")]

    assert warned("base: quickstart\ntokenizer: {path: tok}\n") == []
    assert warned("base: quickstart\n", ["tokenizer.path=tok"]) == []
    # what the user's own file or overrides write is theirs, and still warned of
    assert warned("base: quickstart\ntokenizer: {path: tok, train: {vocab_size: 300}}\n")
    assert warned("base: quickstart\ntokenizer: {path: tok}\n", ["tokenizer.train.vocab_size=300"])
    assert warned("model: {dims: {d_model: 8}}\ndata: {mixture: m}\ntokenizer: {path: tok, train: {vocab_size: 300}}\n")


def test_batching_settings_the_chosen_batching_does_not_use_are_warned_about():
    # was: pad_to_longest / pad_to_max draw one micro-batch at a time and pad_to_max pads to the maximum lengths,
    # so data.bucket_batches (and under pad_to_max data.pad_to_multiple_of) did nothing, with no word
    from t2t_mtl.engine.trainer import config_warnings

    def warnings(**data):
        cfg = C.config_from_dict({"model": {"dims": {"d_model": 8}}, "data": {"mixture": "m", **data}})
        return [w for w in config_warnings(cfg) if "data." in w]

    assert warnings(batching="pad_to_longest", bucket_batches=4) == [
        "data.bucket_batches: data.batching pad_to_longest does not use it, so it has no effect"]
    assert warnings(batching="pad_to_max", bucket_batches=2, pad_to_multiple_of=16) == [
        "data.bucket_batches and data.pad_to_multiple_of: data.batching pad_to_max does not use them, so they have "
        "no effect"]
    assert warnings(batching="pad_to_longest", pad_to_multiple_of=16) == []  # rounds each batch's width up
    assert warnings(batching="bucket", bucket_batches=4, pad_to_multiple_of=16) == []
    assert warnings(batching="pack", bucket_batches=4, pad_to_multiple_of=16) == []
    assert warnings(batching="pad_to_max") == []  # the defaults


def test_validate_examples_without_periodic_validation_is_warned_about():
    # was: training.validate_examples sizes only the periodic validation; with validate_every 0 it did nothing
    from t2t_mtl.engine.trainer import config_warnings

    def warnings(**training):
        cfg = C.config_from_dict({"model": {"dims": {"d_model": 8}}, "data": {"mixture": "m"},
                                  "training": {"steps": 10, **training}})
        return [w for w in config_warnings(cfg) if "validate_examples" in w]

    assert warnings(validate_examples=100) == [
        "training.validate_examples (100) sizes the periodic validation, which training.validate_every 0 turns off, "
        "so it has no effect (the held-in score at the end reads data.validation_examples)"]
    assert warnings(validate_examples=100, validate_every=5) == warnings() == []


def test_training_settings_a_deepspeed_config_replaces_are_warned_about():
    # was: a whole deepspeed.config JSON, or deepspeed.extra's scheduler / optimizer params / gradient_clipping, took
    # the place of training.lr, betas, weight_decay, clip, schedule, warmup set beside them, with no word
    from t2t_mtl.engine.trainer import config_warnings

    def warnings(extra=None, config=None, **training):
        cfg = C.config_from_dict({"model": {"dims": {"d_model": 8}}, "data": {"mixture": "m"}, "training": training,
                                  "deepspeed": {"config": config, "extra": extra or {}}})
        return [w for w in config_warnings(cfg) if w.startswith("training.")]

    assert warnings(config="ds.json", lr=0.05, warmup=10, seed=3) == [
        "training.lr, training.warmup: deepspeed.config names a whole DeepSpeed JSON, used as is (its optimizer, "
        "scheduler and clipping), so they have no effect"]
    assert warnings(config="ds.json") == []
    assert warnings({"scheduler": {"type": "WarmupLR", "params": {}}}, schedule="cosine") == [
        "training.schedule: deepspeed.extra.scheduler replaces the schedule, so it has no effect"]
    sgd = {"optimizer": {"type": "SGD", "params": {"lr": 0.1}}}
    assert warnings(sgd, lr=0.05, betas=[0.5, 0.6], weight_decay=0.1) == [
        "training.lr: deepspeed.extra.optimizer.params gives its own, so it has no effect",
        "training.betas: deepspeed.extra.optimizer SGD takes no betas, so it has no effect"]
    assert warnings(sgd, weight_decay=0.1) == []  # (SGD gets training.weight_decay)
    assert warnings({"optimizer": {"type": "AdamW", "params": {"lr": 0.05}}}, lr=0.05, betas=[0.5, 0.6]) == []
    assert warnings({"gradient_clipping": 5.0}, clip=0.5) == [
        "training.clip: deepspeed.extra.gradient_clipping replaces it, so it has no effect"]
    assert warnings({"gradient_clipping": 0.5}, clip=0.5) == warnings({"gradient_clipping": 5.0}) == []


def test_moe_task_names_other_than_the_runs_are_refused():
    # was: the run replaced a given model.moe.task_names by its own task list, with no word
    from t2t_mtl.engine.trainer import check_run_config

    def cfg(**moe):
        return C.config_from_dict({"model": {"dims": {"d_model": 8}, "moe": {"routing": "task", **moe}},
                                   "tokenizer": {"path": "tok"}, "data": {"tasks": ["parity", "count_word"]}})

    with pytest.raises(C.ConfigError, match=r"model.moe.task_names \['count_word', 'parity'\] is not this run's "
                                            r"task list \['parity', 'count_word'\].*remove model.moe.task_names"):
        check_run_config(cfg(task_names=["count_word", "parity"]))
    check_run_config(cfg(task_names=["parity", "count_word"]))  # the run's own list: nothing replaced
    check_run_config(cfg())


def test_moe_expert_ids_of_an_exported_sub_network_are_refused_in_a_run():
    # was: accepted, and the first route to an expert a layer did not hold stopped the run after tokenizing and
    # building the model ("the route picked expert(s) [2], which this sub-network does not hold")
    from t2t_mtl.engine.trainer import check_run_config

    cfg = C.config_from_dict({"model": {"dims": {"d_model": 8}, "moe": {"routing": "task", "num_experts": 4,
                                                                        "expert_ids": {"encoder.1": [0, 1]}}},
                              "tokenizer": {"path": "tok"}, "data": {"tasks": ["parity", "count_word"]}})
    with pytest.raises(C.ConfigError, match=r"^model.moe.expert_ids lists the experts each layer of an exported task "
                                            r"sub-network holds .* remove model.moe.expert_ids"):
        check_run_config(cfg)


def test_a_model_folder_that_is_a_task_sub_network_is_refused_in_a_run(tmp_path):
    # was: accepted (model.name_or_path an `export --task NAME --keep-moe` folder), and the first route to an expert a
    # layer did not hold stopped the run mid-training with a traceback ("the route picked expert(s) [5], which this
    # sub-network does not hold"; a tiny run at lr 0.1: step 3)
    from t2t_mtl.engine.trainer import check_run_config
    from t2t_mtl.model.moe import convert_to_moe, extract_task_subnetwork
    from transformers import T5Config, T5ForConditionalGeneration

    def exported(top_k: int) -> str:
        dense = T5ForConditionalGeneration(T5Config(vocab_size=40, d_model=8, d_kv=4, d_ff=12, num_layers=2,
                                                    num_decoder_layers=1, num_heads=2, decoder_start_token_id=0))
        moe = convert_to_moe(dense, {"num_experts": 4, "top_k": top_k, "every": 1, "routing": "task",
                                     "task_names": ["parity"]})
        folder = tmp_path / f"top{top_k}"
        extract_task_subnetwork(moe, "parity").save_pretrained(folder)  # (as export --task --keep-moe writes it)
        return str(folder)

    def cfg(folder: str) -> C.Config:
        return C.config_from_dict({"model": {"name_or_path": folder}, "tokenizer": {"path": "tok"},
                                   "data": {"tasks": ["parity"]}})

    folder = exported(top_k=2)
    held = json.loads((Path(folder) / "config.json").read_text())["moe"]["expert_ids"]["decoder.0"]
    with pytest.raises(C.ConfigError) as refused:
        check_run_config(cfg(folder))
    assert str(refused.value) == (
        f"model.name_or_path {folder!r} is a task sub-network (`t2t-mtl export --task NAME --keep-moe`): its MoE "
        f"layers hold some of the 4 experts only (layer decoder.0: {held}), and training moves the gate rows that "
        f"pick them, so the first route to an expert a layer lacks would stop the run: fine-tune the full model (its "
        f"run, or its `t2t-mtl export` without --task) and export the task again")
    check_run_config(cfg(exported(top_k=4)))  # (every layer holds every expert: any route is held)


def test_rates_that_the_sampler_does_not_draw_by_are_warned_about():
    # a {task: rate} data.tasks under the default sampling.strategy (temperature: by task sizes) trained the tasks
    # at size-based rates, with no word that the rates given went unused
    from t2t_mtl.engine.idle_settings import config_warnings
    from t2t_mtl.engine.run_checks import check_run_config
    from t2t_mtl.sampling import build_sampler

    def cfg(**sampling):
        return C.config_from_dict({"model": {"dims": {"d_model": 8}}, "tokenizer": {"path": "tok"},
                                   "data": {"tasks": {"parity": 9.0, "count_word": 1.0}},
                                   **({"sampling": sampling} if sampling else {})})

    default = cfg()
    sampling = check_run_config(default)[1]
    assert build_sampler(sampling, {"parity": 100, "count_word": 100}, seed=0).probabilities()["parity"] == 0.5
    assert any("data.tasks gives rates, but sampling.strategy 'temperature' does not draw by rates" in w
               for w in config_warnings(default))
    explicit = cfg(strategy="explicit")
    sampling = check_run_config(explicit)[1]
    assert build_sampler(sampling, {"parity": 100, "count_word": 100}, seed=0).probabilities()["parity"] == 0.9
    assert not any("data.tasks" in w for w in config_warnings(explicit))
    overridden = cfg(strategy="explicit", rates={"parity": 1, "count_word": 1})
    assert any("sampling.rates replaces them" in w for w in config_warnings(overridden))
    listed = C.config_from_dict({"model": {"dims": {"d_model": 8}}, "data": {"tasks": ["parity", "count_word"]}})
    assert not any("data.tasks" in w for w in config_warnings(listed))


def test_a_mixtures_rates_that_the_sampler_does_not_draw_by_are_warned_about(tmp_path):
    # a seqio-style Mixture("m", {task: rate}) as data.mixture under another strategy than explicit (the default
    # temperature, the quickstart's uniform) trained at other rates than it gives, with no word
    import task_registry
    from t2t_mtl.engine.idle_settings import config_warnings
    from t2t_mtl.engine.run_checks import check_run_config
    from t2t_mtl.sampling import build_sampler

    def cfg(mixture, **sampling):
        return C.config_from_dict({"model": {"dims": {"d_model": 8}}, "tokenizer": {"path": "tok"},
                                   "data": {"mixture": mixture}, **({"sampling": sampling} if sampling else {})})

    def rate_warnings(config):
        check_run_config(config)  # (as train and --print-config do before config_warnings)
        return [w for w in config_warnings(config) if w.startswith("data.mixture")]

    sizes = {"parity": 100, "count_word": 100}
    files = {}
    for name, rows in (("small", 2), ("large", 6)):
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps({"q": f"q{i}", "a": "x"}) + "\n" for i in range(rows)))
    with task_registry.isolated_registry():
        task_registry.load_builtin_tasks()
        task_registry.register_mixture(task_registry.Mixture("seqio_mix", {"parity": 3.0, "count_word": 1.0}))
        uniform = cfg("seqio_mix", strategy="uniform")
        assert build_sampler(check_run_config(uniform)[1], sizes, seed=0).probabilities()["parity"] == 0.5
        assert rate_warnings(uniform) == [
            "data.mixture 'seqio_mix' gives its tasks rates (parity 0.75, count_word 0.25), but sampling.strategy "
            "'uniform' does not draw by them: they go unused (sampling.strategy: explicit without sampling.rates "
            "draws by them; `t2t-mtl mixture show --config` shows what the run draws)"]
        assert len(rate_warnings(cfg("seqio_mix"))) == 1  # the default temperature strategy: by sizes
        explicit = cfg("seqio_mix", strategy="explicit")
        assert build_sampler(check_run_config(explicit)[1], sizes, seed=0).probabilities()["parity"] == 0.75
        assert rate_warnings(explicit) == []
        replaced = rate_warnings(cfg("seqio_mix", strategy="explicit", rates={"parity": 1, "count_word": 1}))
        assert len(replaced) == 1 and "but sampling.rates replaces them" in replaced[0]
        assert rate_warnings(cfg("procedural_train", strategy="uniform")) == []  # a list of tasks: equal rates
        # a rate function of the task sizes: a size-based strategy draws by sizes itself, uniform does not
        for name in files:
            task_registry.register_task(task_registry.Task(
                f"rows_{name}", task_registry.LocalFileSource({"train": str(files[name])}),
                task_registry.Template("t", "{{ q }} ||| {{ a }}"), splits=("train",)))
        task_registry.register_mixture(task_registry.Mixture(
            "by_size", ["rows_small", "rows_large"], default_rate=task_registry.rate_num_examples()))
        assert rate_warnings(cfg("by_size", strategy="proportional")) == []
        assert rate_warnings(cfg("by_size", strategy="uniform")) == [
            "data.mixture 'by_size' gives its tasks rates (rows_small 0.25, rows_large 0.75), but sampling.strategy "
            "'uniform' does not draw by them: they go unused (sampling.strategy: explicit without sampling.rates "
            "draws by them; `t2t-mtl mixture show --config` shows what the run draws)"]


def test_model_dims_beside_a_pretrained_model_is_refused_naming_both_keys(tmp_path, capsys):
    # was: model.dims was silently ignored when model.name_or_path was set (a pretrained model keeps its sizes)
    args = ["train", "--print-config", "--set", "model.name_or_path=google/t5-small-lm-adapt"]
    assert cli_main(args) == 2  # quickstart sets model.dims
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "model.dims and model.name_or_path are both set" in captured.err and "model.dims=null" in captured.err


def test_model_dims_null_clears_a_base_configs_dims():
    cfg = C.load_config("quickstart", ["model.name_or_path=google/t5-small-lm-adapt", "model.dims=null"])
    assert cfg.model.dims == {} and cfg.model.name_or_path == "google/t5-small-lm-adapt"


def test_a_key_repeated_in_a_config_mapping_is_an_error(tmp_path):
    # was: YAML kept the second `training:` silently, so the first one's steps and output_dir were dropped
    cfg = tmp_path / "twice.yaml"
    cfg.write_text("base: quickstart\ntraining:\n  steps: 3\n  output_dir: here\ntraining:\n  lr: 0.01\n")
    with pytest.raises(C.ConfigFileError, match=r"twice\.yaml.*duplicate key 'training' \(lines 2 and 5"):
        C.load_config(cfg)
    with pytest.raises(C.ConfigError, match=r"duplicate key 'parity'"):
        C.parse_overrides(["data.tasks={parity: 1, parity: 2}"])
    merged = tmp_path / "merge.yaml"  # a `<<:` merge's keys may still be overridden
    merged.write_text("base: quickstart\ntraining:\n  <<: {steps: 3, lr: 0.5}\n  lr: 0.01\n")
    training = C.load_config(merged).training
    assert (training.steps, training.lr) == (3, 0.01)


def test_a_misspelt_gradient_surgery_method_is_named_before_the_sampling_mode_it_needs():
    # was: with sampling.mode mixed, `method: pcgard` was answered "set sampling.mode: homogeneous", hiding the typo
    from t2t_mtl.engine.run_checks import check_run_config
    from t2t_mtl.gradients import GradientMethodError

    cfg = C.config_from_dict({"model": {"dims": {"d_model": 8}}, "tokenizer": {"path": "tok"},
                              "data": {"tasks": ["parity", "count_word"]}, "sampling": {"mode": "mixed"},
                              "training": {"grad_accum": 2}, "gradient_surgery": {"method": "pcgard"}})
    with pytest.raises(GradientMethodError, match="did you mean 'pcgrad'"):
        check_run_config(cfg)


@pytest.mark.parametrize("data,error,match", [
    # were AttributeError ('NoneType' object has no attribute 'items') and TypeError ('int' object is not iterable)
    (None, C.ConfigTypeError, r"a config must be a mapping of sections .* got NoneType"),
    ([{"training": {}}], C.ConfigTypeError, r"a config must be a mapping of sections .* got list"),
    ({5: {}}, C.UnknownConfigKeyError, r"unknown config key\(s\) in top level:\n  5\n"),
])
def test_config_from_dict_names_a_config_that_is_not_a_mapping_of_names(data, error, match):
    with pytest.raises(error, match=match):
        C.config_from_dict(data)


@pytest.mark.parametrize("section,key,meant", [("training", "LR", "training.lr"), ("data", "MIXTURE", "data.mixture")])
def test_a_config_key_written_in_other_case_names_the_key_it_meant(section, key, meant):
    # was: no "did you mean" (difflib's ratio of 'LR' and 'lr' is 0); the hints compare names ignoring case now, as
    # an unknown task's do
    with pytest.raises(C.UnknownConfigKeyError, match=rf"  {section}\.{key} — did you mean '{re.escape(meant)}'\?"):
        C.config_from_dict({"model": {"dims": {"d_model": 8}}, section: {key: 1}})


def test_a_run_task_whose_files_lack_one_of_its_splits_is_refused_before_training(tmp_path):
    # was: a Python-built Task with a LocalFileSource (or HFSource(data_files=...)) of train files only, its splits
    # left at [train, validation], trained fully and then failed reading validation for the held-in evaluation
    import task_registry
    from t2t_mtl.engine.run_checks import check_run_config

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"q": "a", "a": "b"}\n')
    template = task_registry.Template("t", "{{ q }} ||| {{ a }}")
    with task_registry.isolated_registry():
        task_registry.register_task(task_registry.Task("own", task_registry.LocalFileSource({"train": rows}),
                                                       [template]))
        task_registry.register_task(task_registry.Task("hub_files", task_registry.HFSource(
            "json", data_files=str(rows)), [template]))
        task_registry.register_task(task_registry.Task("own_train_only", task_registry.LocalFileSource(
            {"train": rows}), [template], splits=("train",)))
        task_registry.register_task(task_registry.Task("shared_files", task_registry.LocalFileSource(rows),
                                                       [template]))

        def cfg(*tasks):
            return C.config_from_dict({"model": {"dims": {"d_model": 8}}, "tokenizer": {"path": "tok"},
                                       "data": {"tasks": list(tasks)}})

        with pytest.raises(C.ConfigError, match=r"task 'own' has the split\(s\) \['validation'\] \(its `splits`, "
                                                r"default \[train, validation\]\), but its source has files for "
                                                r"\['train'\] only.*Task\(\.\.\., splits=\[\.\.\.\]\)"):
            check_run_config(cfg("own_train_only", "own"))
        with pytest.raises(C.ConfigError, match=r"task 'hub_files' has the split\(s\) \['validation'\]"):
            check_run_config(cfg("hub_files"))
        check_run_config(cfg("own_train_only", "shared_files"))  # splits its files hold; one list for every split


def test_a_run_task_whose_data_dir_folder_lacks_one_of_its_splits_is_refused_before_training(tmp_path):
    # was: a Python-built Task of a hub dataset whose data dir folder holds train and test (HFSource("ag_news")), its
    # splits left at [train, validation], trained fully and then failed reading validation for the held-in evaluation
    import task_registry
    from t2t_mtl.engine.run_checks import check_run_config

    folder = tmp_path / "data" / "news" / "default"
    folder.mkdir(parents=True)
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").write_text('{"q": "a", "a": "b"}\n')
    template = task_registry.Template("t", "{{ q }} ||| {{ a }}")
    previous = task_registry.get_data_dir()
    try:
        with task_registry.isolated_registry():
            task_registry.register_task(task_registry.Task("news", task_registry.HFSource("news"), [template]))
            task_registry.register_task(task_registry.Task("news_test", task_registry.HFSource("news"), [template],
                                                           splits=("train", "test")))
            task_registry.register_task(task_registry.Task("absent", task_registry.HFSource("absent"), [template]))

            def cfg(*tasks):
                return C.config_from_dict({"model": {"dims": {"d_model": 8}}, "tokenizer": {"path": "tok"},
                                           "data": {"tasks": list(tasks), "data_dir": str(tmp_path / "data")}})

            task_registry.set_data_dir(tmp_path / "data")
            with pytest.raises(task_registry.DataSourceError, match="split 'validation' expects the file"):
                task_registry.get_task("news").to_dataset("validation")  # the reference: what reading it raises
            with pytest.raises(C.ConfigError) as caught:
                check_run_config(cfg("news_test", "news"))
            assert str(caught.value) == (
                f"task 'news' has the split(s) ['validation'] (its `splits`, default [train, validation]), but the "
                f"data dir has no file for them ({folder / 'validation.jsonl'}; {str(folder)!r} holds ['test', "
                f"'train']), so reading them would fail (after training, for the evaluations): give the task the "
                f"splits its files hold (Task(..., splits=[...]); YAML `splits:`), or add the files")
            check_run_config(cfg("news_test"))  # the splits its folder holds
            check_run_config(cfg("news_test", "absent"))  # no folder: left to its read of train, which names it
    finally:
        task_registry.set_data_dir(previous)


def test_a_mixture_with_tasks_without_a_train_split_is_refused_before_training(shared_data_dir):
    # was: `data.mixture: real` (all the real tasks, evaluation-only sets among them) tokenized and rendered the
    # other tasks, then failed on "task 'super_glue_boolq' has no split 'train'"
    import task_registry
    from t2t_mtl.engine.run_mixture import training_rates

    task_registry.load_builtin_tasks()
    held_out = ["commonsense", "coreference", "nli", "word_sense"]
    cfg = C.config_from_dict({"model": {"dims": {"d_model": 8}},
                              "data": {"mixture": "real", "held_out_clusters": held_out}})
    without_train = [name for name in task_registry.get_mixture("real").flatten()
                     if "train" not in task_registry.get_task(name).splits
                     and task_registry.get_task(name).cluster not in held_out]
    assert "super_glue_boolq" in without_train
    with pytest.raises(C.ConfigError) as caught:
        training_rates(cfg)
    message = str(caught.value)
    assert message.startswith("data.mixture 'real' would train on task(s) without a train split")
    assert all(f"{name} [" in message for name in without_train) and "real_train" in message
    assert message.endswith("or give a task of your own a train split (a YAML task: train in its splits: and, for "
                            "local files, a train file in its source, e.g. source: {files: {train: dialogues.jsonl, "
                            "test: test.jsonl}})")
    # (a user's dialogue-summary task of test files alone met the hint above)
    cfg.data.mixture, cfg.data.data_dir = "real_train", str(shared_data_dir)  # (its rates count train rows)
    previous = task_registry.get_data_dir()
    try:
        assert "glue_sst2" in training_rates(cfg)
    finally:
        task_registry.set_data_dir(previous)


def _python_edited(edit):
    """The quickstart's Config with `edit(cfg)` applied to it in Python, and a copy of its dict before the edit."""
    cfg = C.load_config("quickstart")
    before = cfg.to_dict()
    edit(cfg)
    return cfg, before


@pytest.mark.parametrize("edit, message", [
    (lambda c: setattr(c.training, "steps", -3), "'training.steps' must be a finite number > 0, got -3"),
    (lambda c: setattr(c.training, "steps", "10"), "'training.steps' must be int, got '10'"),
    (lambda c: setattr(c.data, "batching", "packed"), r"'data.batching' must be one of .* \(did you mean 'pack'\?\)"),
    (lambda c: setattr(c.training, "step", 10), r"training.step — did you mean 'training.steps'"),
    (lambda c: setattr(c, "sampler", {"strategy": "uniform"}), r"unknown config key\(s\) in top level:\n  sampler"),
])
def test_a_config_edited_in_python_is_checked_again_by_train(edit, message):
    # was: train(cfg) took a Config as it was, so a value set in Python after load_config skipped every check: steps
    # -3 trained 0 steps to a loss of nan, batching 'packed' trained padded batches, steps '10' failed in the run's
    # checks on "'>=' not supported between instances of 'int' and 'str'", and a misspelt attribute (training.step)
    # was dropped without a word
    from t2t_mtl.engine.trainer import as_config

    cfg, _ = _python_edited(edit)
    for check in (C.config_from_dict, as_config):  # (train's first step)
        with pytest.raises(C.ConfigError, match=message):
            check(cfg)


def test_train_checks_a_copy_of_a_python_config_and_leaves_the_callers_as_it_was():
    # was: as_config returned the caller's Config itself, and train's data_dir= wrote data.data_dir into it
    from t2t_mtl.engine.trainer import as_config

    cfg, before = _python_edited(lambda c: setattr(c.training, "steps", 20))
    cfg.base_only_keys = frozenset({"tokenizer.train"})
    for checked in (C.config_from_dict(cfg), as_config(cfg)):
        assert checked is not cfg and checked.training is not cfg.training and checked.sampling is not cfg.sampling
        assert checked.to_dict() == cfg.to_dict() == {**before, "training": {**before["training"], "steps": 20}}
        assert checked.base_only_keys == {"tokenizer.train"}
    assert as_config(cfg, ["training.lr=0.5"]).to_dict()["training"] == {**before["training"], "steps": 20, "lr": 0.5}
    assert cfg.training.lr == before["training"]["lr"]


def test_a_python_config_with_overrides_keeps_its_base_only_keys_and_is_validated_once(tmp_path, monkeypatch):
    # was: as_config(cfg, overrides) checked cfg, then loaded its to_dict() as a plain layer, which dropped its
    # base_only_keys (train warned that quickstart's tokenizer.train, which the user never wrote, had no effect) and
    # validated the values a second time
    from t2t_mtl.engine.idle_settings import config_warnings
    from t2t_mtl.engine.trainer import as_config

    (tmp_path / "my.yaml").write_text(f"base: quickstart\ntokenizer: {{path: {tmp_path / 'tok'}}}\n")
    cfg = C.load_config(tmp_path / "my.yaml")
    assert "tokenizer.train" in cfg.base_only_keys
    validations = []
    real = C.validate_values
    monkeypatch.setattr(C, "validate_values", lambda checked: validations.append(checked) or real(checked))
    checked = as_config(cfg, ["training.steps=40"])
    assert len(validations) == 1
    assert checked.training.steps == 40
    assert checked.base_only_keys == cfg.base_only_keys - {"training", "training.steps"}
    assert not [w for w in config_warnings(checked) if w.startswith("tokenizer.train")]
    overridden = as_config(cfg, ["tokenizer.train.vocab_size=300"])  # (now the user's: its warning is theirs)
    assert "tokenizer.train" not in overridden.base_only_keys
    assert [w for w in config_warnings(overridden) if w.startswith("tokenizer.train is set")]


def test_a_dict_given_to_train_reads_its_base_as_the_same_yaml_file_does(tmp_path, monkeypatch):
    # was: train({"base": "quickstart", ...}) (a YAML file's text, as yaml.safe_load gives it, or the README's
    # `base: quickstart` + your keys written as a dict in a notebook) was refused: "unknown config key(s) in top
    # level: base"
    from t2t_mtl.engine.trainer import as_config

    layer = {"data": {"validation_examples": 7}, "training": {"steps": 20, "output_dir": "runs/nb"}}
    (tmp_path / "my.yaml").write_text(yaml.safe_dump({"base": "quickstart", **layer}))
    from_file = C.load_config(tmp_path / "my.yaml")
    for checked in (as_config({"base": "quickstart", **layer}), C.load_config(extra={"base": "quickstart", **layer})):
        assert checked.to_dict() == from_file.to_dict()
        assert checked.base_only_keys == from_file.base_only_keys and "tokenizer.train" in checked.base_only_keys
    assert as_config({"base": "quickstart", **layer}, ["training.steps=30"]).training.steps == 30
    monkeypatch.chdir(tmp_path)  # (a path is relative to the working directory, as a file's is to its folder)
    assert as_config({"base": "my.yaml", "training": {"steps": 40}}).to_dict() == \
        {**from_file.to_dict(), "training": {**from_file.to_dict()["training"], "steps": 40}}
    with pytest.raises(C.ConfigTypeError, match=r"^base must be a config name or path, or a list of them, got 3$"):
        as_config({"base": 3})
    with pytest.raises(C.ConfigFileError, match=r"config 'quikstart' not found .*did you mean 'quickstart'"):
        as_config({"base": "quikstart"})
    with pytest.raises(C.ConfigFileError, match=r"names a base: too \('default'\): give the base as the config"):
        C.load_config("quickstart", extra={"base": "default"})


def test_a_dict_s_empty_base_is_no_base_as_a_yaml_file_s(tmp_path):
    # was: a dict whose base: is null or [] (yaml.safe_load of a file with an empty `base:`, which the file itself
    # loads as no base) was refused: "unknown config key(s) in top level: base" for null, "base must be a config
    # name or path, or a list of them, got []" for []
    layer = {"model": {"dims": {"d_model": 8}}, "data": {"tasks": ["parity"]}, "training": {"steps": 20}}
    for base in (None, []):
        (tmp_path / "empty_base.yaml").write_text(yaml.safe_dump({"base": base, **layer}))
        from_file = C.load_config(tmp_path / "empty_base.yaml")
        assert from_file.to_dict() == C.load_config(extra=layer).to_dict()
        assert C.load_config(extra={"base": base, **layer}).to_dict() == from_file.to_dict()
        assert C.load_config("quickstart", extra={"base": base}).to_dict() == C.load_config("quickstart").to_dict()


def test_a_text_key_given_true_is_told_to_quote_it_not_to_write_keys_under_it():
    # (the switch hint is a mapping section's: training.output_dir takes text, not keys)
    with pytest.raises(C.ConfigTypeError) as caught:
        C.load_config("quickstart", ["training.output_dir=true"])
    assert str(caught.value) == (
        "config key 'training.output_dir' must be str, got True (bool); YAML reads unquoted numbers and yes/no/on/off "
        "as numbers and booleans: quote text, e.g. output_dir: \"2024\" in a file, "
        "--set 'training.output_dir=\"2024\"'")


def test_a_dicts_base_list_is_read_in_order_as_the_same_yaml_files_is(tmp_path, monkeypatch):
    from t2t_mtl.engine.trainer import as_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "steps.yaml").write_text(yaml.safe_dump({"training": {"steps": 40, "log_every": 3}}))
    layer = {"base": ["quickstart", "steps.yaml"], "training": {"log_every": 5}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(layer))
    from_file = C.load_config(tmp_path / "run.yaml")
    assert (from_file.training.steps, from_file.training.log_every) == (40, 5)  # (the list's last base, then the keys)
    checked = as_config(layer)
    assert checked.to_dict() == from_file.to_dict() and checked.base_only_keys == from_file.base_only_keys


def test_config_from_dict_reads_a_dicts_base_as_train_and_load_config_do(tmp_path, monkeypatch):
    # was: config_from_dict({"base": "quickstart", ...}) raised "unknown config key(s) in top level: base", though
    # train() and load_config(extra=...) took the same dict
    monkeypatch.chdir(tmp_path)
    (tmp_path / "steps.yaml").write_text(yaml.safe_dump({"base": "quickstart", "training": {"steps": 40}}))
    layer = {"training": {"log_every": 5}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"base": "steps.yaml", **layer}))
    from_file = C.load_config(tmp_path / "run.yaml")
    checked = C.config_from_dict({"base": "steps.yaml", **layer})  # (relative to the working directory)
    assert checked.to_dict() == from_file.to_dict() and (checked.training.steps, checked.training.log_every) == (40, 5)
    assert checked.base_only_keys == from_file.base_only_keys and "tokenizer.train" in checked.base_only_keys
    with pytest.raises(C.ConfigTypeError, match=r"^base must be a config name or path, or a list of them, got 3$"):
        C.config_from_dict({"base": 3})


def test_a_path_key_takes_a_pathlib_path_from_python(tmp_path):
    # was: config_from_dict refused {'training': {'output_dir': tmp_path / 'run'}} ("must be str, got PosixPath"),
    # and a Path set on a Config's attribute reached the run, whose config.yaml yaml.safe_dump cannot write
    (tmp_path / "tasks").mkdir()
    data = {"mixture": "m", "tasks_dir": [tmp_path / "tasks"], "data_dir": tmp_path,
            "task_modules": tmp_path / "my_tasks.py"}
    cfg = C.config_from_dict({"model": {"dims": {"d_model": 8}}, "data": data,
                              "training": {"output_dir": tmp_path / "run"}})
    assert (cfg.data.tasks_dir, cfg.data.data_dir, cfg.data.task_modules, cfg.training.output_dir) == (
        [str(tmp_path / "tasks")], str(tmp_path), str(tmp_path / "my_tasks.py"), str(tmp_path / "run"))
    cfg.tokenizer.path = tmp_path / "tok"
    checked = C.config_from_dict(cfg)
    assert checked.tokenizer.path == str(tmp_path / "tok")
    assert yaml.safe_load(checked.to_yaml())["tokenizer"]["path"] == str(tmp_path / "tok")
    with pytest.raises(C.ConfigTypeError, match=r"config key 'data.mixture' must be str or null, got PosixPath"):
        C.config_from_dict({"model": {"dims": {"d_model": 8}}, "data": {"mixture": Path("m")}})  # (a name, not a path)


def _old_run(tmp_path, section, values):
    """A run folder whose config.yaml (the quickstart's) holds `values` in its `section`, as a run started with an
    earlier t2t-mtl wrote it, and a checkpoint's meta.json. Returns the checkpoint folder."""
    saved = C.load_config("quickstart", [f"training.output_dir={tmp_path / 'run'}"]).to_dict()
    saved[section].update(values)
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000003"
    ckpt.mkdir(parents=True)
    write(tmp_path / "run" / "config.yaml", saved)
    (ckpt / "meta.json").write_text(json.dumps({"step": 3}))
    return ckpt


def test_a_resume_refusing_a_value_of_the_runs_saved_config_says_where_it_is_and_how_to_correct_it(tmp_path, capsys):
    # was: "error: config key 'data.tasks' is empty, ...: name the tasks to train, or set it to null for all of them",
    # of a config the user never passed: a run started before a5d57a1 with `data.tasks: []` beside its mixture
    # (then read as every task of it) saved that in its config.yaml, which `train --resume RUN` reads
    # (and the run's own checks, since 8549d02, a gradient_clipping: true that DeepSpeed had read as 1.0)
    note = (f"(this resume reads the run's saved config, {tmp_path / 'run' / 'config.yaml'}, where a run started "
            f"with an earlier t2t-mtl may hold a value this version refuses: correct it with --set KEY=VALUE, which "
            f"the resumed run saves there, or edit the file)\n")
    ckpt = _old_run(tmp_path, "data", {"tasks": []})
    assert cli_main(["train", "--print-config", "--resume", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config key 'data.tasks' is empty") and err.endswith(note)
    assert cli_main(["train", "--print-config", "--resume", str(ckpt), "--set", "data.tasks=null"]) == 0
    assert capsys.readouterr().out.startswith("model:")
    (tmp_path / "run").rename(tmp_path / "data.tasks run")
    ckpt = _old_run(tmp_path, "deepspeed", {"extra": {"gradient_clipping": True}})
    assert cli_main(["train", "--print-config", "--resume", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: deepspeed.extra.gradient_clipping must be a number, got True") and err.endswith(note)
    assert cli_main(["train", "--print-config", "--resume", str(ckpt), "--set", "deepspeed.extra.gradient_clipping=1.0"]
                    ) == 0
    # a config named on the command line is the user's own: no note
    assert cli_main(["train", str(tmp_path / "run" / "config.yaml"), "--print-config", "--resume", str(ckpt)]) == 2
    assert "this resume reads" not in capsys.readouterr().err


def test_another_ranks_stop_on_a_resume_is_not_told_as_a_refused_value_of_the_saved_config(tmp_path, capsys,
                                                                                            monkeypatch):
    # was: rank 1 of `deepspeed ... train --resume RUN`, whose rank 0 was refused (the run folder still trained by the
    # ranks of a launcher killed with kill -9), printed "rank 0 of 2 stopped before training began (see its error
    # ...)" followed by the note on a value of the run's saved config, which was not at fault
    from t2t_mtl.engine import distributed

    ckpt = _old_run(tmp_path, "training", {})  # (the quickstart's config as saved: nothing refused)
    monkeypatch.setattr(distributed, "failed_ranks", lambda failed, env, phase: [0])  # rank 0 stopped before joining
    assert cli_main(["train", "--resume", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: rank 0 of 1 stopped before training began (see its error: a run folder another "
                          "process trains (rank 0's run.lock), or a config, data or path that rank could not use)")
    assert "this resume reads" not in err


def test_a_checkpoint_is_read_with_its_own_runs_config_wherever_it_is_named_from(tmp_path, monkeypatch, capsys):
    # was: a checkpoint's run was its parent's parent when the parent was named checkpoints/, else its parent, so
    # step-N named from inside checkpoints/ ('.' from inside step-N) was refused ("its run directory . has no
    # config.yaml"), and a checkpoint linked or copied beside another config.yaml (the working directory's) was read
    # with that config: eval, predict and export rebuilt another model from it
    import shutil

    from t2t_mtl.engine.model_meta import ExportError, trained_model_meta

    ckpt = _old_run(tmp_path, "data", {"max_input_length": 77})
    write(tmp_path / "config.yaml", C.load_config("quickstart").to_dict())  # another config, beside the copies
    (tmp_path / "linked").symlink_to(ckpt)
    shutil.copytree(ckpt, tmp_path / "copied")
    for cwd, named in ((ckpt.parent, ckpt.name), (ckpt, "."), (tmp_path, "linked")):
        monkeypatch.chdir(cwd)
        meta = trained_model_meta(named)
        assert Path(meta["run_dir"]).resolve() == (tmp_path / "run").resolve()
        # (absolute, as an export's t2t_mtl_meta.json keeps them: was '.' and 'step-00000003' from checkpoints/)
        assert meta["run_dir"] == os.path.abspath(Path(cwd, named).resolve().parent.parent)
        assert meta["checkpoint"] == os.path.abspath(Path(cwd, named))
        assert meta["config"]["data"]["max_input_length"] == 77
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ExportError) as refused:
        trained_model_meta("copied")
    assert str(refused.value) == (
        "checkpoint copied is not in a run's checkpoints/ folder, and its model is rebuilt from its run's config.yaml "
        "and tokenizer: pass it where its run keeps it (RUN/checkpoints/step-N) or the run directory, or export the "
        "run (t2t-mtl export) for a folder that holds them")
    assert cli_main(["export", "copied", "--out", "out"]) != 0
    assert capsys.readouterr().err == f"error: {refused.value}\n"
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_in_a_checkpoints_folder_linked_to_other_storage_is_read_with_its_runs_config(tmp_path):
    # a run whose checkpoints/ links to a larger disk: the checkpoint's real folder is named otherwise and has no
    # config.yaml beside it; the run is the one the checkpoint is named in (reading the real folder's parent's parent
    # refused it, as did taking only the real folder for where a checkpoint lives)
    import shutil

    from t2t_mtl.engine.model_meta import trained_model_meta

    ckpt = _old_run(tmp_path, "data", {"max_input_length": 77})
    scratch = tmp_path / "scratch" / "run_checkpoints"
    scratch.parent.mkdir()
    shutil.move(str(ckpt.parent), scratch)
    ckpt.parent.symlink_to(scratch)
    meta = trained_model_meta(ckpt)
    assert Path(meta["run_dir"]) == tmp_path / "run" and meta["config"]["data"]["max_input_length"] == 77


def test_evaluation_and_export_read_a_saved_value_a_new_run_is_refused_with_a_warning(tmp_path, caplog):
    # was: "checkpoint ... could not be loaded: .../config.yaml is not a valid run config (config key 'data.tasks' is
    # empty, ...); the model cannot be rebuilt without it", for a run that trained with that config: its model could
    # be neither evaluated nor exported
    from t2t_mtl.engine.checkpoint import CheckpointError
    from t2t_mtl.engine.model_meta import trained_model_meta

    ckpt = _old_run(tmp_path, "data", {"tasks": []})
    meta = trained_model_meta(ckpt)
    assert meta["step"] == 3 and meta["config"]["data"]["tasks"] == []
    assert trained_model_meta(ckpt) == meta  # (read again, as eval reads it to load the model: warned of once)
    saved = tmp_path / "run" / "config.yaml"
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"{saved} holds a value this version of t2t-mtl refuses in a new run (config key 'data.tasks' is empty, which "
        f"would pick no task of data.mixture 'procedural': name the tasks to train, or set it to null for all of "
        f"them); the run trained with it, so its config is read as written to rebuild its model: correct the file to "
        f"be rid of this warning"]
    # what rebuilding the model needs stays refused: its keys, their types, the model section's values
    original = saved.read_text()
    for (section, values), named in (((("model", {"dims": {"d_model": 0}}), "model.dims.d_model"),
                                     (("data", {"taks": ["parity"]}), "taks"),
                                     (("data", {"max_input_length": "long"}), "data.max_input_length"))):
        written = yaml.safe_load(original)
        written[section] = {**written[section], **values}
        write(saved, written)
        with pytest.raises(CheckpointError, match=f"(?s)config.yaml is not a valid run config .*{named}"):
            trained_model_meta(ckpt)


def test_a_launch_environment_refused_on_a_resume_is_not_told_as_a_refused_value_of_the_saved_config(
        tmp_path, capsys, monkeypatch):
    # was: `train --resume RUN` started with a LOCAL_RANK beyond the GPUs it sees printed the LOCAL_RANK refusal
    # followed by the note on a value of the run's saved config, which neither holds LOCAL_RANK nor can correct it
    import torch

    from t2t_mtl.engine import distributed

    ckpt = _old_run(tmp_path, "training", {})  # (the quickstart's config as saved: nothing refused)
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(distributed, "trains_on_gpu", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert cli_main(["train", "--resume", str(ckpt)]) == 2
    assert capsys.readouterr().err == (
        "error: LOCAL_RANK is 1, but this process sees 1 GPU: DeepSpeed trains rank r of a node on its GPU r "
        "(cuda:LOCAL_RANK), so start at most one rank per GPU of the node (torchrun --nproc_per_node, deepspeed "
        "--num_gpus), each seeing every GPU of the node (under SLURM --gpus-per-node, not --gpus-per-task, which "
        "shows a task its own GPU only), or set DS_ACCELERATOR=cpu to train on the CPU\n")


def test_one_override_string_from_python_is_refused_with_the_list_to_write():
    # was read letter by letter: "--set 't': expected KEY=VALUE with a dotted key", naming a letter of it
    from t2t_mtl.engine.trainer import train

    expected = ("overrides must be a list of KEY=VALUE strings (as --set takes them), got the string "
                "'training.steps=3': write ['training.steps=3']")
    with pytest.raises(C.ConfigError) as load_error:
        C.load_config("quickstart", "training.steps=3")
    with pytest.raises(C.ConfigError) as train_error:
        train("quickstart", overrides="training.steps=3")
    assert str(load_error.value) == str(train_error.value) == expected
    assert C.load_config("quickstart", ["training.steps=3"]).training.steps == 3


def test_launcher_variables_refused_on_a_resume_are_not_told_as_a_refused_value_of_the_saved_config(
        tmp_path, capsys, monkeypatch):
    # was: `train --resume RUN` started with WORLD_SIZE=2 and no RANK printed the launcher-variable refusal followed by
    # the note on a value of the run's saved config, which holds neither variable
    ckpt = _old_run(tmp_path, "training", {})  # (the quickstart's config as saved: nothing refused)
    for key in ("RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli_main(["train", "--resume", str(ckpt)]) == 2
    assert capsys.readouterr().err == (
        "error: environment variable WORLD_SIZE is set (2) but RANK is not: set RANK to this process's rank, 0 to 1 "
        "(torchrun and the deepspeed launcher set both), or unset WORLD_SIZE to train one process\n")


def test_print_config_refuses_fp16_on_a_gpu_machine_training_on_its_cpu(monkeypatch, capsys):
    # kills a mutant of print_checked_config that the tests let live (the precision checked against
    # torch.cuda.is_available, not trains_on_gpu): a GPU machine training on its CPU (DS_ACCELERATOR=cpu) was shown
    # fp16 as fine, which its run refuses (DeepSpeed refuses fp16 on the CPU)
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    assert cli_main(["train", "--print-config", "--set", "training.precision=fp16"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.splitlines()[-1] == (
        "error: training.precision: fp16 is not supported on CPU (DeepSpeed refuses it) and T5 is known to overflow in "
        "fp16; use auto (the default), bf16 or fp32")


def test_a_dict_assigned_to_a_whole_section_in_python_is_a_layer_over_its_current_values(tmp_path):
    # was: `cfg.training = {"steps": 3}` built the section from the schema's defaults when train checked it, dropping
    # the quickstart's training values (its run dir runs/quickstart became runs/default, lr, warmup, ...) unsaid
    cfg = C.load_config("quickstart")
    before = cfg.to_dict()
    cfg.training = {"steps": 3, "output_dir": tmp_path / "run"}
    cfg.data = {"max_input_length": 32}
    assert isinstance(cfg.training, C.TrainingConfig) and cfg.training.steps == 3
    expected = {**before, "training": {**before["training"], "steps": 3, "output_dir": str(tmp_path / "run")},
                "data": {**before["data"], "max_input_length": 32}}
    assert C.config_from_dict(cfg).to_dict() == expected
    with pytest.raises(C.UnknownConfigKeyError, match=r"training.step — did you mean 'training.steps'"):
        cfg.training = {"step": 3}
    with pytest.raises(C.ConfigTypeError, match="'training.steps' must be int, got '3'"):
        cfg.training = {"steps": "3"}
    assert cfg.training.steps == 3  # (a refused dict leaves the section as it was)
    cfg.training = C.TrainingConfig(steps=5)  # a section object replaces the whole section
    assert C.config_from_dict(cfg).training == C.TrainingConfig(steps=5)
