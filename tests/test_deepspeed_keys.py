"""Top-level DeepSpeed keys that DeepSpeed never reads (a misspelt section it would silently ignore) are warned of,
naming where the key was written; every key DeepSpeed documents and every key we generate is read."""
from __future__ import annotations

import json
import re

import pytest
import torch

from t2t_mtl.config import ConfigError, config_from_dict
from t2t_mtl.engine.deepspeed_keys import unread_keys
from t2t_mtl.engine.idle_settings import config_warnings
from t2t_mtl.engine.run_checks import check_run_config

BATCH = {"train_batch_size": 4, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1}
# sections of DeepSpeed's documented configuration (deepspeed.ai/docs/config-json), each given a valid value
DOCUMENTED = {"optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
              "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 10}},
              "fp16": {"enabled": False}, "bf16": {"enabled": False}, "gradient_clipping": 1.0,
              "zero_optimization": {"stage": 1}, "steps_per_print": 10, "wall_clock_breakdown": False,
              "flops_profiler": {"enabled": False}, "activation_checkpointing": {"partition_activations": False},
              "tensorboard": {"enabled": False}, "aio": {"block_size": 1048576}, "prescale_gradients": False,
              "communication_data_type": None, "zero_allow_untested_optimizer": False, "dump_state": False}


def test_documented_keys_are_read_and_misspelt_ones_are_named_with_the_closest_read_key():
    assert unread_keys({**BATCH, **DOCUMENTED}) == []
    assert unread_keys({**BATCH, **DOCUMENTED, "zero_optimisation": {"stage": 2}, "gradient_clip": 1.0,
                        "my_note": "x"}) == [("zero_optimisation", "zero_optimization"),
                                            ("gradient_clip", "gradient_clipping"), ("my_note", None)]


def test_a_config_deepspeed_refuses_reports_nothing_here():
    # (a misspelt key inside a section, which DeepSpeed checks: the engine's start refuses it with its own message)
    assert unread_keys({**BATCH, "zero_optimization": {"stag": 1}, "zero_optimisation": {}}) == []


def _refused(config, start: str = "") -> str:
    """The message of the ConfigError check_run_config raises for `config`, asserted to start with `start` (the test
    fails where the config passes)."""
    with pytest.raises(ConfigError) as caught:
        check_run_config(config)
    assert str(caught.value).startswith(start), caught.value
    return str(caught.value)


def _config(tmp_path, **deepspeed):
    return config_from_dict({"model": {"dims": {"d_model": 8}}, "data": {"tasks": ["parity"]},
                             "training": {"output_dir": str(tmp_path / "run")}, "deepspeed": deepspeed})


def _refused_in_extra_and_json(tmp_path, section, start, json_section=None):
    """Assert that the run's checks refuse `section` in deepspeed.extra and in a deepspeed.config JSON (DOCUMENTED's
    sections updated by `json_section`, else by `section`), each message starting with where it is written and then
    `start`."""
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({**DOCUMENTED, **(section if json_section is None else json_section)}))
    for config, where in ((_config(tmp_path, extra=section), "deepspeed.extra."),
                          (_config(tmp_path, config=str(path)), f"deepspeed.config {path}: ")):
        _refused(config, f"{where}{start}")


def test_the_generated_config_has_no_unread_key_and_a_misspelt_extra_or_json_key_is_warned_of(tmp_path):
    assert not [w for w in config_warnings(_config(tmp_path)) if "DeepSpeed" in w]
    warnings = config_warnings(_config(tmp_path, zero_stage=1, extra={"zero_optimisation": {"stage": 1},
                                                                      "steps_per_print": 5}))
    assert [w for w in warnings if "DeepSpeed" in w] == [
        "deepspeed.extra.zero_optimisation: DeepSpeed " + __import__("deepspeed").__version__ + " reads no top-level "
        "key 'zero_optimisation', so it has no effect; did you mean 'zero_optimization'?"]
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"optimizer": DOCUMENTED["optimizer"], "bf16": {"enabled": False},
                                "wall_clock_breakdwon": True}))
    warnings = config_warnings(_config(tmp_path, config=str(path)), world_size=2)
    assert [w for w in warnings if "DeepSpeed" in w] == [
        f"deepspeed.config {path}: wall_clock_breakdwon: DeepSpeed " + __import__("deepspeed").__version__
        + " reads no top-level key 'wall_clock_breakdwon', so it has no effect; did you mean 'wall_clock_breakdown'?"]


def test_a_key_deepspeed_refuses_inside_a_section_is_named_by_the_run_checks(tmp_path):
    # was: print-config and the run's checks passed it; DeepSpeed's parser refused it only in deepspeed.initialize,
    # after the data was read and the model built
    check_run_config(_config(tmp_path, zero_stage=2, extra={"zero_optimization": {"overlap_comm": True}}))
    with pytest.raises(ConfigError, match=r"(?s)^DeepSpeed refused the config generated from deepspeed\.extra: .*"
                                          r"overlap_com\n.*Extra inputs are not permitted"):
        check_run_config(_config(tmp_path, zero_stage=2, extra={"zero_optimization": {"overlap_com": True}}))


@pytest.mark.parametrize("section, key", [
    ({"optimizer": "AdamW"}, "optimizer"), ({"optimizer": None}, "optimizer"), ({"optimizer": ["AdamW"]}, "optimizer"),
    ({"optimizer": {"type": 3}}, "optimizer.type"), ({"optimizer": {"type": ""}}, "optimizer.type"),
    ({"optimizer": {"type": None}}, "optimizer.type"), ({"optimizer": {"params": "lr=1"}}, "optimizer.params"),
    ({"optimizer": {"type": "SGD", "params": [0.1]}}, "optimizer.params"), ({"scheduler": "WarmupLR"}, "scheduler"),
    ({"scheduler": {"type": "WarmupLR", "params": "10"}}, "scheduler.params"),
])  # (deepspeed.extra.scheduler: "WarmupLR" was already refused, as a scheduler without a type)
def test_an_optimizer_or_scheduler_section_of_the_wrong_shape_is_named(tmp_path, section, key):
    # was: a raw AttributeError ('str' object has no attribute 'keys', 'int' object has no attribute 'lower') from
    # DeepSpeed's config parser, or a TypeError from the scheduler check, in the run's checks and --print-config;
    # a type null or '' passed them, DeepSpeed then building no optimizer
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({**DOCUMENTED, **section}))
    for config, where in ((_config(tmp_path, extra=section), "deepspeed.extra."),
                          (_config(tmp_path, config=str(path)), f"deepspeed.config {path}: "))[key == "scheduler":]:
        _refused(config, f"{where}{key} must be ")


@pytest.mark.parametrize("section, key", [
    ({"fp16": None}, "fp16"), ({"fp16": True}, "fp16"), ({"bf16": "yes"}, "bf16"), ({"bfloat16": None}, "bfloat16"),
    ({"zero_optimization": None}, "zero_optimization"), ({"zero_optimization": 2}, "zero_optimization"),
    ({"activation_checkpointing": None}, "activation_checkpointing"), ({"checkpoint": []}, "checkpoint"),
    ({"flops_profiler": "on"}, "flops_profiler"), ({"aio": "x"}, "aio"),
])
def test_a_deepspeed_section_that_is_no_mapping_is_named(tmp_path, section, key):
    # was: a raw AttributeError ('NoneType' object has no attribute 'get') from the run's own fp16, precision or
    # offload checks, or a TypeError ('argument after ** must be a mapping') from DeepSpeed's config parser
    _refused_in_extra_and_json(tmp_path, section, f"{key} must be a mapping")


def test_a_deepspeed_json_optimizer_without_a_type_is_refused_as_no_optimizer_is(tmp_path):
    # was: passed the run's checks, as a type null or '' no longer does; DeepSpeed reads a section without a type as
    # no optimizer, and the run died after tokenizing and building the model (engine.get_lr()'s IndexError)
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"optimizer": {"params": {"lr": 1e-3}}}))
    with pytest.raises(ConfigError, match=rf"^deepspeed\.config {path} names an optimizer without a type .*add an "
                                          r"\"optimizer\" section with its type"):
        check_run_config(_config(tmp_path, config=str(path)))
    path.write_text(json.dumps({"optimizer": {"type": "adamw", "params": {"lr": 1e-3}}}))  # (any case DeepSpeed reads)
    check_run_config(_config(tmp_path, config=str(path)))


def test_a_typed_scheduler_without_params_is_refused(tmp_path):
    # was: passed the run's checks and --print-config; deepspeed.initialize, after the data and the model, then built
    # it as WarmupLR(optimizer, **None) (its config parser reads absent params as None): a raw TypeError
    path = tmp_path / "ds.json"
    for scheduler in ({"type": "WarmupLR"}, {"type": "WarmupLR", "params": None}):
        path.write_text(json.dumps({**DOCUMENTED, "scheduler": scheduler}))
        for config, where in ((_config(tmp_path, extra={"scheduler": scheduler}), "deepspeed.extra."),
                              (_config(tmp_path, config=str(path)), f"deepspeed.config {path}: ")):
            with pytest.raises(ConfigError, match=r"scheduler\.params must be given, .*\{\} for its defaults"):
                check_run_config(config)
    check_run_config(_config(tmp_path, extra={"scheduler": {"type": "WarmupLR", "params": {}}}))


@pytest.mark.parametrize("section, value", [("bf16", "false"), ("bf16", "no"), ("fp16", "off"), ("bfloat16", "0"),
                                            ("bf16", "true")])
def test_a_precision_switch_that_is_not_true_or_false_is_refused(tmp_path, section, value):
    # was: a JSON's bf16: {enabled: "false"} was read by the run's checks as bf16 (training.precision fp32 refused, auto
    # recorded bf16 in the checkpoints), while DeepSpeed's parser (the reference) reads it as false and trains in fp32
    from deepspeed.runtime.config import DeepSpeedConfig

    from t2t_mtl.engine.deepspeed_settings import json_precision

    parsed = DeepSpeedConfig({"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1,
                              section: {"enabled": value}})
    enabled = parsed.float16_config.enabled if section == "fp16" else parsed.bfloat16_config.enabled
    assert enabled is (value == "true")
    assert json_precision({section: {"enabled": value}}) == ("fp16" if section == "fp16" else "bf16")
    _refused_in_extra_and_json(tmp_path, {section: {"enabled": value}},
                               f"{section}.enabled must be true or false, got {value!r}: ")


@pytest.mark.parametrize("value", ["false", "no", "true"])
def test_a_cpu_offload_switch_that_is_not_true_or_false_is_refused(tmp_path, value):
    # was: the run's checks read any text as an optimizer offload, so zero_optimization.cpu_offload: "false" (which
    # DeepSpeed's parser, the reference, reads as no offload) was refused as an offload without
    # deepspeed.offload_optimizer, and in a JSON chose the offload's optimizer kernels
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    from t2t_mtl.engine.deepspeed_settings import json_offloads_optimizer

    offloads = DeepSpeedZeroConfig(stage=2, cpu_offload=value).offload_optimizer is not None
    assert offloads is (value == "true")
    assert json_offloads_optimizer({"zero_optimization": {"cpu_offload": value}})
    zero = {"zero_optimization": {"cpu_offload": value}}
    _refused_in_extra_and_json(tmp_path, zero, f"zero_optimization.cpu_offload must be true or false, got {value!r}: ")


def test_a_null_section_deepspeed_reads_as_absent_is_accepted(tmp_path):
    # (DeepSpeed reads bf16: null and aio: null as the sections left out; precision pinned to fp32, which a null bf16
    # section trains in, as "auto" is bf16 on a CPU with AVX512-BF16/AMX)
    check_run_config(config_from_dict({"model": {"dims": {"d_model": 8}}, "data": {"tasks": ["parity"]},
                                       "training": {"output_dir": str(tmp_path / "run"), "precision": "fp32"},
                                       "deepspeed": {"extra": {"bf16": None, "aio": None}}}))


def test_a_run_start_builds_and_parses_its_deepspeed_config_once(tmp_path, monkeypatch, capsys):
    # was: built three times by print-config and a training start (the run's checks, the unread-key warning, then the
    # printed or initialised config) and parsed twice by DeepSpeedConfig (the checks, the unread-key warning)
    import deepspeed.runtime.config

    from t2t_mtl.cli import main as cli_main
    from t2t_mtl.engine import checked_deepspeed, deepspeed_config

    counts = {"built": 0, "parsed": 0}

    def counted(real, key):
        def call(*args, **kwargs):
            counts[key] += 1
            return real(*args, **kwargs)
        return call

    built = counted(deepspeed_config.build_deepspeed, "built")  # (what build_deepspeed_config calls too)
    monkeypatch.setattr(deepspeed_config, "build_deepspeed", built)
    monkeypatch.setattr(checked_deepspeed, "build_deepspeed", built)
    parser = deepspeed.runtime.config.DeepSpeedConfig
    monkeypatch.setattr(parser, "__init__", counted(parser.__init__, "parsed"))
    assert cli_main(["train", "--print-config", "--set", "model.dims={d_model: 8, d_ff: 8, num_layers: 1, "
                     "num_heads: 1, d_kv: 8}", "--set", "data.tasks=[parity]", "--set",
                     f"training.output_dir={tmp_path / 'run'}", "--set",
                     "deepspeed.extra={zero_optimisation: {}}"]) == 0
    assert "deepspeed.extra.zero_optimisation: DeepSpeed" in capsys.readouterr().err  # (the parse's unread key)
    assert counts == {"built": 1, "parsed": 1}


def _parser_error(section):
    """The error DeepSpeed's config parser raises on `section` (with batch keys), None where it accepts it."""
    from deepspeed.runtime.config import DeepSpeedConfig

    try:
        DeepSpeedConfig({"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1, **section})
    except Exception as error:  # noqa: BLE001
        return error
    return None


def _raw(error):
    """Whether `error` is a raw one, neither pydantic's ValidationError nor DeepSpeedConfigError (which name what they
    refuse)."""
    from deepspeed.runtime.config import DeepSpeedConfigError
    from pydantic import ValidationError

    return error is not None and not isinstance(error, (ValidationError, DeepSpeedConfigError))


def test_a_value_deepspeeds_parser_fails_on_unchecked_is_its_refusal_named_by_the_run_checks(tmp_path):
    # was: a raw AttributeError ("'str' object has no attribute 'get'", from the run's own offload check) in the run's
    # checks and --print-config; DeepSpeed's parser (the reference) fails on it too
    extra = {"zero_optimization": {"offload_optimizer": "cpu"}}
    assert _parser_error(extra) is not None
    with pytest.raises(ConfigError, match=r"^DeepSpeed refused the config generated from deepspeed\.extra: "):
        check_run_config(_config(tmp_path, extra=extra))


@pytest.mark.parametrize("section, key, value", [
    ({"communication_data_type": "fp8"}, "communication_data_type", "fp8"),
    ({"communication_data_type": 16}, "communication_data_type", 16),
    ({"seq_parallel_communication_data_type": "half"}, "seq_parallel_communication_data_type", "half"),
    ({"checkpoint": {"tag_validation": 3}}, "checkpoint.tag_validation", 3),
    ({"checkpoint": {"writer": {"type": 3}}}, "checkpoint.writer.type", 3),
    ({"compile": "x"}, "compile", "x"), ({"pipeline": 1}, "pipeline", 1),
])
def test_a_value_deepspeeds_parser_fails_on_with_a_raw_error_is_named_by_its_key(tmp_path, section, key, value):
    # was: "DeepSpeed refused the config generated from deepspeed.extra: AttributeError: 'int' object has no attribute
    # 'upper'" (or 'lower', 'items', "argument after ** must be a mapping"), which names no key; DeepSpeed's parser
    # (the reference) fails on each with a raw error, neither pydantic's nor its DeepSpeedConfigError
    assert _raw(_parser_error(section))
    _refused_in_extra_and_json(tmp_path, section, f"{key}: DeepSpeed's parser fails on {value!r} with ")


def test_a_key_looked_up_with_defaults_of_more_than_one_kind_takes_any_value():
    # mutation testing: holding a key to a kind where only some of its look-ups' defaults are of it passed every test;
    # DeepSpeed looks datastates_ckpt up with defaults false and null, and takes a mapping there (its
    # DeepSpeedDataStatesConfig, the reference, is then enabled with it), which the run's checks would refuse
    from deepspeed.datastates.config import DeepSpeedDataStatesConfig

    from t2t_mtl.engine.deepspeed_keys import parse_keys

    section = {"datastates_ckpt": {"host_cache_size": 16}}
    assert DeepSpeedDataStatesConfig(section).enabled
    parsed = parse_keys({**BATCH, **section})
    assert (parsed.error, parsed.mistyped) == (None, [])


def test_a_parse_error_is_put_on_the_key_read_last_though_it_was_read_before():
    # mutation testing: ordering the keys by their first look-up, not their latest, passed every test; DeepSpeed's
    # parser (the reference) reads zero_optimization early and again where a number there fails it with a raw error,
    # and parses the config without it
    from t2t_mtl.engine.deepspeed_keys import parse_keys

    assert _raw(_parser_error({"zero_optimization": 3})) and _parser_error({}) is None
    assert parse_keys({**BATCH, "zero_optimization": 3}).culprit == "zero_optimization"


def test_a_parse_error_is_put_on_no_key_where_the_key_read_last_is_not_its_cause():
    # mutation testing: naming the key read last even where the parse without it fails the same, and unread_keys
    # listing keys beside a mistyped scalar, passed every test; DeepSpeed's parser (the reference) fails the same
    # without expert_parallel, read last before its batch check
    from t2t_mtl.engine.deepspeed_keys import parse_keys

    batch = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 0}
    error = _parser_error({**batch, "expert_parallel": {}})
    assert _raw(error) and (type(error), str(error)) == (type(_parser_error(batch)), str(_parser_error(batch)))
    parsed = parse_keys({**batch, "expert_parallel": {}})
    assert str(parsed.error) == str(error) and parsed.culprit is None
    assert unread_keys({**BATCH, "zero_optimisation": {}, "gradient_clipping": "1.0"}) == []
    assert unread_keys({**BATCH, "zero_optimisation": {}, "gradient_clipping": 1.0}) == [("zero_optimisation",
                                                                                          "zero_optimization")]


@pytest.mark.parametrize("section, key, kind", [
    ({"activation_checkpointing": {"partition_activations": "x"}}, "activation_checkpointing.partition_activations",
     "true or false"),
    ({"activation_checkpointing": {"cpu_checkpointing": "no"}}, "activation_checkpointing.cpu_checkpointing",
     "true or false"),
    ({"flops_profiler": {"enabled": "on"}}, "flops_profiler.enabled", "true or false"),
    ({"flops_profiler": {"profile_step": True}}, "flops_profiler.profile_step", "a number"),
    ({"checkpoint": {"use_node_local_storage": "yes"}}, "checkpoint.use_node_local_storage", "true or false"),
    ({"aio": {"block_size": "1M"}}, "aio.block_size", "a number"),
])
def test_a_section_scalar_of_the_wrong_type_is_named_by_the_run_checks(tmp_path, section, key, kind):
    # was: passed the run's checks (a string "no" read as true, true as 1) or died with DeepSpeed's raw TypeError
    # ("unsupported operand type(s) for |: 'bool' and 'str'"); DeepSpeed's parser (the reference) reads each with
    # get_scalar_param, unchecked: it accepts it or fails with a raw error
    error = _parser_error(section)
    assert error is None or _raw(error)
    value = next(iter(next(iter(section.values())).values()))
    _refused_in_extra_and_json(tmp_path, section, f"{key} must be {kind}, got {value!r}: ")


def test_an_activation_checkpointing_section_is_warned_of_as_having_no_effect(tmp_path):
    # was: accepted in silence, though the engine never applies it: only deepspeed.checkpointing.configure reads the
    # parsed section (the reference: DeepSpeed's engine module names no activation checkpointing), and t2t-mtl calls
    # no deepspeed.checkpointing
    import inspect

    import deepspeed.runtime.engine

    assert "activation_checkpointing" not in inspect.getsource(deepspeed.runtime.engine)
    section = {"activation_checkpointing": {"partition_activations": True}}
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({**DOCUMENTED, **section}))
    for config, where in ((_config(tmp_path, extra=section), "deepspeed.extra."),
                          (_config(tmp_path, config=str(path)), f"deepspeed.config {path}: ")):
        assert [w for w in config_warnings(config) if "activation_checkpointing" in w] == [
            f"{where}activation_checkpointing: DeepSpeed applies it only to a model whose blocks call "
            f"deepspeed.checkpointing, which t2t-mtl's T5 does not, so it has no effect; "
            f"model.activation_checkpointing: true checkpoints the blocks"]
        assert check_run_config(config).deepspeed.warnings == [w for w in config_warnings(config)
                                                               if "DeepSpeed" in w]
    assert not [w for w in config_warnings(_config(tmp_path)) if "activation_checkpointing" in w]


def test_section_scalars_of_their_documented_types_pass(tmp_path):
    check_run_config(_config(tmp_path, extra={
        "activation_checkpointing": {"partition_activations": True, "number_checkpoints": 4},
        "flops_profiler": {"enabled": False, "profile_step": 2, "recompute_fwd_factor": 1},
        "checkpoint": {"use_node_local_storage": True, "tag_validation": "Fail"},
        "data_types": {"keep_in_fp32_modules": ["layer_norm"]}, "aio": {"block_size": 1 << 20}}))


@pytest.mark.parametrize("key, value, kind", [
    ("gradient_clipping", "1.0", "a number"), ("gradient_clipping", None, "a number"),
    ("gradient_clipping", [1.0], "a number"), ("gradient_clipping", True, "a number"),
    ("gradient_predivide_factor", "2", "a number"), ("prescale_gradients", "no", "true or false"),
    ("wall_clock_breakdown", "yes", "true or false"), ("zero_allow_untested_optimizer", 1, "true or false"),
    ("memory_breakdown", "false", "true or false"),
])
def test_a_top_level_scalar_of_the_wrong_type_is_named_by_the_run_checks(tmp_path, key, value, kind):
    # was: DeepSpeed's parser reads these as given, so the run's checks and --print-config passed them and
    # deepspeed.initialize (gradient_clipping "1.0": "'>' not supported between instances of 'str' and 'float'") or
    # a training step failed after the data and the model were built, a "no" string was read as true, or the parser
    # raised a raw TypeError (wall_clock_breakdown); the types are DeepSpeed's documented ones (config-json: a float,
    # a boolean)
    _refused_in_extra_and_json(tmp_path, {key: value}, f"{key} must be {kind}, got {value!r}: ")


def test_top_level_scalars_of_their_documented_types_pass(tmp_path):
    check_run_config(_config(tmp_path, extra={"gradient_clipping": 1, "gradient_predivide_factor": 2.0,
                                              "prescale_gradients": False, "wall_clock_breakdown": True,
                                              "memory_breakdown": False}))


@pytest.mark.parametrize("kind", ["Adamm", "sgd", "torch.optim.SGD", "OneBitAdam", "FusedAdam", "MuAdam"])
def test_an_optimizer_type_deepspeed_cannot_build_is_named_by_the_run_checks(tmp_path, kind):
    # was: passed the run's checks and --print-config; deepspeed.initialize, after the data and the model, failed with
    # "AssertionError: Adamm is not a supported DeepSpeed Optimizer" (its types: its own in any case, or a torch.optim
    # class by its exact name; OneBitAdam and the like are gone from DeepSpeed 0.19), or for mup's optimizers without
    # mup installed "UnboundLocalError: cannot access local variable 'MuAdam'"
    import importlib.util

    from deepspeed.runtime.config import DEEPSPEED_OPTIMIZERS

    assert kind.lower() not in DEEPSPEED_OPTIMIZERS and not hasattr(torch.optim, kind) or kind == "MuAdam"
    if kind == "MuAdam" and importlib.util.find_spec("mup") is not None:
        pytest.skip("mup is installed here")
    _refused_in_extra_and_json(tmp_path, {"optimizer": {"type": kind, "params": {"lr": 1e-3}}},
                               f"optimizer.type {kind!r} is ")


@pytest.mark.parametrize("kind, params", [
    ("AdamW", {"lr": "1e-3"}), ("AdamW", {"eps": None}), ("AdamW", {"betas": [0.9]}), ("AdamW", {"betas": 0.9}),
    ("AdamW", {"weight_decay": -0.1}), ("AdamW", {"momentum": 0.9}), ("AdamW", {"amsgrad": "yes"}),
    ("adam", {"betas": [0.9, 0.99, 0.9]}), ("SGD", {"lr": 0.1, "momentum": "0.9"}),
    ("Adagrad", {"lr": -1.0}), ("AdamW", {"max_grad_norm": 1.0}), ("SGD", {"capturable": True}),
    ("ASGD", {"alpha": 1e30}),
])
def test_optimizer_params_deepspeed_cannot_build_with_are_named_by_the_run_checks(tmp_path, kind, params):
    # was: passed the run's checks and --print-config; deepspeed.initialize (or the first step: amsgrad) failed after
    # the data and the model with torch's raw error ("'<=' not supported between instances of 'float' and 'str'",
    # "list index out of range", "unexpected keyword argument 'momentum'") or DeepSpeed's ValueError for
    # max_grad_norm; the reference is torch's own optimizer (AdamW fused, as the run builds it), which refuses each
    adam = kind.lower() in ("adam", "adamw")
    if "max_grad_norm" not in params:
        cls = getattr(torch.optim, "AdamW" if adam else kind)
        with pytest.raises((TypeError, ValueError, IndexError, OverflowError)):
            weight = torch.zeros(1, requires_grad=True)
            built = cls([weight], **{"lr": 1e-3, **({"fused": True} if adam else {}), **params})
            weight.grad = torch.zeros(1)
            built.step()
    switches = {"torch_adam": True, "fused": True} if adam else {}  # (as the generated config's AdamW)
    _refused_in_extra_and_json(tmp_path, {"optimizer": {"type": kind, "params": params}}, "optimizer.params",
                               {"optimizer": {"type": kind, "params": {**switches, **params}}})


def test_an_optimizer_that_steps_with_a_closure_is_named_by_the_run_checks(tmp_path):
    # was: refused as "optimizer.params do not fit LBFGS ...: TypeError: LBFGS.step() missing 1 required positional
    # argument: 'closure'; give the params its constructor takes", though no params would do: DeepSpeed's engine
    # calls optimizer.step() with no argument, and LBFGS's step takes a closure it cannot go without (its signature)
    import inspect

    assert inspect.signature(torch.optim.LBFGS.step).parameters["closure"].default is inspect.Parameter.empty
    _refused_in_extra_and_json(tmp_path, {"optimizer": {"type": "LBFGS", "params": {"lr": 1.0}}},
                               "optimizer.type 'LBFGS' steps only with a closure that recomputes the loss")


@pytest.mark.parametrize("kind", ["RMSprop", "RAdam", "NAdam", "Adamax", "Adadelta", "Rprop", "ASGD", "AdamW"])
def test_an_optimizer_capturing_cuda_graphs_passes_the_run_checks(tmp_path, kind):
    # was: the run's checks built the optimizer with capturable: true (its CUDA-graph switch, for a GPU run) on their
    # CPU throwaway parameter, and RMSprop, RAdam, NAdam, Adamax, Adadelta, Rprop and ASGD died there with torch's raw
    # AssertionError ("If capturable=True, params and state_steps must be on supported devices"), on a GPU machine
    # too: train --print-config of such a run crashed; capturable is a keyword of each class (torch's documented one)
    import inspect

    assert "capturable" in inspect.signature(getattr(torch.optim, kind)).parameters
    optimizer = {"type": kind, "params": {"lr": 1e-3, "capturable": True}}
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({**DOCUMENTED, "optimizer": optimizer}))
    check_run_config(_config(tmp_path, config=str(path)))
    check_run_config(_config(tmp_path, extra={"optimizer": optimizer}))


def test_an_extra_optimizer_without_weight_decay_gets_none_from_the_training_section(tmp_path):
    # was: deepspeed.extra's optimizer of another type than Adam's got training.weight_decay (0 by default) among its
    # params, and Rprop, which takes none (its signature), was refused by the run's checks ("unexpected keyword
    # argument 'weight_decay'", a key the user never wrote; deepspeed.initialize failed on it before those checks):
    # it could not be used from deepspeed.extra at all; a weight decay it would ignore is refused naming the key
    import inspect

    assert "weight_decay" not in inspect.signature(torch.optim.Rprop).parameters
    optimizer = {"type": "Rprop", "params": {"lr": 1e-3}}
    checked = check_run_config(_config(tmp_path, extra={"optimizer": optimizer}))
    assert checked.deepspeed.config["optimizer"] == optimizer
    decayed = config_from_dict({**_config(tmp_path, extra={"optimizer": optimizer}).to_dict(),
                                "training": {"output_dir": str(tmp_path / "run"), "weight_decay": 0.1}})
    with pytest.raises(ConfigError, match="training.weight_decay is 0.1, but deepspeed.extra.optimizer.type 'Rprop' "
                                          "takes no weight_decay"):
        check_run_config(decayed)


@pytest.mark.parametrize("kind, params, key, expected", [
    ("AdamW", {"lr": True}, "lr", "a number"), ("SGD", {"lr": 0.1, "momentum": True}, "momentum", "a number"),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": "yes"}, "nesterov", "true or false"),
    ("RMSprop", {"centered": "false"}, "centered", "true or false"),
    ("adamw", {"torch_adam": "false"}, "torch_adam", "true or false"),
    ("adam", {"adam_w_mode": "no"}, "adam_w_mode", "true or false"),
])
def test_optimizer_params_of_the_wrong_kind_are_named_by_the_run_checks(tmp_path, kind, params, key, expected):
    # was: passed the run's checks and trained: torch's optimizers take true as 1 and any string as true (the reference
    # below: SGD at lr true steps as at lr 1), and DeepSpeed reads torch_adam / adam_w_mode with `if value:`, so
    # torch_adam: "false" built torch's AdamW (its own get_optimizer_configuration, the reference)
    from deepspeed.runtime.engine import DeepSpeedEngine

    weight = torch.zeros(1, requires_grad=True)
    sgd = torch.optim.SGD([weight], lr=True)
    weight.grad = torch.ones(1)
    sgd.step()
    assert weight.item() == -1.0
    assert DeepSpeedEngine.get_optimizer_configuration(None, {"torch_adam": "false"}, True)[0] is torch.optim.AdamW
    _refused_in_extra_and_json(tmp_path, {"optimizer": {"type": kind, "params": params}},
                               f"optimizer.params.{key} must be {expected}, got {params[key]!r}: ")


def test_the_params_of_deepspeeds_own_kernels_are_held_to_their_kinds(tmp_path):
    # (an adamw without torch_adam builds DeepSpeed's FusedAdam, whose lr default is a number: read, not built)
    # (mutation testing: the offloaded optimizer's kernel taken as FusedAdam, or a null lr passing, passed every test;
    # DeepSpeed steps an offloaded adam with its CPU Adam, and FusedAdam's lr default is 1e-3, not null)
    path = tmp_path / "ds.json"
    offloaded = {"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}
    # (and an offloaded adagrad steps DeepSpeed's CPU Adagrad, an adam with torch_adam torch's AdamW unless adam_w_mode
    # is false, as DeepSpeedEngine._configure_basic_optimizer builds them: mutation testing found either taken for
    # another class passed every test)
    for sections, own, params, built in (({}, "adamw", {"lr": True}, "adamw (FusedAdam)"),
                                         ({}, "adamw", {"lr": None}, "adamw (FusedAdam)"),
                                         (offloaded, "adamw", {"lr": True}, "adamw (DeepSpeedCPUAdam)"),
                                         (offloaded, "adagrad", {"lr": True}, "adagrad (DeepSpeedCPUAdagrad)"),
                                         ({}, "adam", {"lr": True, "torch_adam": True}, "adam (AdamW)")):
        path.write_text(json.dumps({**DOCUMENTED, **sections, "optimizer": {"type": own, "params": params}}))
        with pytest.raises(ConfigError, match=rf"^deepspeed\.config {path}: optimizer\.params\.lr must be a number, "
                                              rf"got {params['lr']}: {re.escape(built)} reads true as 1"):
            check_run_config(_config(tmp_path, config=str(path)))
    # DeepSpeed's own switches are checked as such, not as the kernel's (CPU Adam's fp32_optimizer_states defaults to
    # true, DeepSpeed's to null; mutation testing: either check refusing the null passed every test)
    params = {"lr": 1e-3, "fp32_optimizer_states": None}
    path.write_text(json.dumps({**DOCUMENTED, **offloaded, "optimizer": {"type": "adamw", "params": params}}))
    check_run_config(_config(tmp_path, config=str(path)))


def test_an_optimizer_offloaded_to_nvme_is_read_as_stepped_on_the_cpu(tmp_path):
    # mutation testing: json_offloads_optimizer reading only a cpu offload passed every test; DeepSpeed steps an
    # optimizer offloaded to cpu or nvme with its CPU optimizer (DeepSpeedEngine.zero_use_cpu_optimizer, the reference)
    from types import SimpleNamespace

    from deepspeed.runtime.config import DeepSpeedConfig
    from deepspeed.runtime.engine import DeepSpeedEngine

    from t2t_mtl.engine.deepspeed_settings import json_offloads_optimizer

    for device in ("cpu", "nvme", "none"):
        zero = {"stage": 2, "offload_optimizer": {"device": device, "nvme_path": str(tmp_path)}}
        parsed = DeepSpeedConfig({"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
                                  "zero_optimization": zero})
        steps_on_cpu = DeepSpeedEngine.zero_use_cpu_optimizer(SimpleNamespace(_config=parsed))
        assert steps_on_cpu is (device != "none")
        assert json_offloads_optimizer({"zero_optimization": zero}) is steps_on_cpu, device


@pytest.mark.parametrize("scheduler", ["WarmupLR", "WarmupDecayLR", "WarmupCosineLR"])
def test_a_warmup_type_deepspeed_would_replace_by_log_is_refused(tmp_path, scheduler):
    # was: passed the run's checks; DeepSpeed's scheduler logs a warning and warms up by "log" in its place (the
    # reference: the scheduler built with it)
    from deepspeed.runtime import lr_schedules

    for warmup in ("lin", "Linear"):  # (mutation testing: a check refusing only 'lin' passed every test)
        params = {"warmup_type": warmup, **({"total_num_steps": 10} if scheduler != "WarmupLR" else {})}
        built = getattr(lr_schedules, scheduler)(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0),
                                                 **params)
        assert built.warmup_type == "log"
        _refused_in_extra_and_json(tmp_path, {"scheduler": {"type": scheduler, "params": params}},
                                   f"scheduler.params.warmup_type must be 'log' or 'linear', got {warmup!r}: ")
    check_run_config(_config(tmp_path, extra={"scheduler": {"type": scheduler, "params": {**params,
                                                                                         "warmup_type": "linear"}}}))
    check_run_config(_config(tmp_path, extra={"scheduler": {"type": "WarmupLR", "params": {"warmup_max_lr": None}}}))


def test_scheduler_params_of_the_wrong_kind_are_named_by_the_run_checks(tmp_path):
    # was: passed: WarmupLR builds with warmup_num_steps true, warming up over 1 step (the reference)
    from deepspeed.runtime.lr_schedules import WarmupLR

    assert WarmupLR(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), warmup_num_steps=True)
    _refused_in_extra_and_json(tmp_path, {"scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": True}}},
                               "scheduler.params.warmup_num_steps must be a number, got True: ")


def test_a_torch_schedulers_required_number_of_the_wrong_kind_is_named_by_the_run_checks(tmp_path):
    # was: passed: torch's schedulers postpone their annotations, so StepLR's required step_size (annotated 'int', no
    # default) was read as of no kind; StepLR builds with step_size true and decays every step (the reference)
    from torch.optim.lr_scheduler import StepLR

    scheduler = StepLR(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), step_size=True, gamma=0.5)
    scheduler.optimizer.step()
    scheduler.step()
    assert scheduler.get_last_lr() == [0.5]
    _refused_in_extra_and_json(tmp_path, {"scheduler": {"type": "StepLR", "params": {"step_size": True}}},
                               "scheduler.params.step_size must be a number, got True: StepLR reads true as 1")
    fp32 = _config(tmp_path, extra={"scheduler": {"type": "StepLR", "params": {"step_size": 2}}})
    fp32.training.precision = "fp32"  # (a torch scheduler runs at ZeRO 0 in fp32 alone: auto may choose bf16)
    check_run_config(fp32)


def test_per_param_group_lists_of_numbers_pass_the_kind_check(tmp_path):
    # was: refused as "must be a number": WarmupLR takes warmup_max_lr as one value per param group (the reference:
    # built with a list), as torch's ReduceLROnPlateau takes min_lr; a list holding true is still refused
    from deepspeed.runtime.lr_schedules import WarmupLR

    built = WarmupLR(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), warmup_max_lr=[0.01])
    assert built.max_lrs == [0.01]
    check_run_config(_config(tmp_path, extra={"scheduler": {"type": "WarmupLR", "params": {
        "warmup_min_lr": [0.0], "warmup_max_lr": [0.01]}}}))
    _refused_in_extra_and_json(tmp_path, {"scheduler": {"type": "WarmupLR", "params": {"warmup_max_lr": [True]}}},
                               "scheduler.params.warmup_max_lr must be a number, got [True]: ")


def test_a_list_where_deepspeeds_own_kernel_takes_a_number_is_refused(tmp_path):
    # was: passed (mutation testing: a number's place taking an empty list passed every test too): a list is one
    # number per param group for the classes the checks build, while DeepSpeed's kernels, not built here, take one
    # number for all groups (FusedAdam hands group['lr'] to its kernel as a float); torch's AdamW, the reference,
    # refuses an empty list
    with pytest.raises((TypeError, ValueError, IndexError)):
        torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=[]).step()
    path = tmp_path / "ds.json"
    for lr in ([], [1e-3]):
        path.write_text(json.dumps({**DOCUMENTED, "optimizer": {"type": "adamw", "params": {"lr": lr}}}))
        assert _refused(_config(tmp_path, config=str(path))) == (
            f"deepspeed.config {path}: optimizer.params.lr must be a number, got {lr!r}: "
            f"adamw (FusedAdam) takes one number for every param group, not a list; give a "
            f"number")
    # a torch optimizer, built by the checks, takes a list of one number per param group, but not an empty one
    with pytest.raises(ConfigError, match=r"^deepspeed\.extra\.optimizer\.params\.lr must be a number, got \[\]: "
                                          r"SGD takes a number, or a list of numbers, one per param group; give a "
                                          r"number$"):
        check_run_config(_config(tmp_path, extra={"optimizer": {"type": "SGD", "params": {"lr": []}}}))


def test_a_negative_gradient_clipping_is_refused(tmp_path):
    # was: passed the run's checks and trained without clipping (DeepSpeed clips only above 0 and its parser keeps
    # the value, the reference), where training.clip refuses a negative value
    from deepspeed.runtime.config import DeepSpeedConfig

    parsed = DeepSpeedConfig({"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1,
                              "gradient_clipping": -1})
    assert parsed.gradient_clipping == -1
    with pytest.raises(ConfigError, match="training.clip"):
        config_from_dict({**_config(tmp_path).to_dict(), "training": {"output_dir": str(tmp_path), "clip": -1}})
    _refused_in_extra_and_json(tmp_path, {"gradient_clipping": -1}, "gradient_clipping must be 0 or more ")
    _refused_in_extra_and_json(tmp_path, {"gradient_clipping": -0.5}, "gradient_clipping must be 0 or more ")
    check_run_config(_config(tmp_path, extra={"gradient_clipping": 0}))


def test_an_optimizer_whose_kernel_the_accelerator_lacks_is_refused_naming_those_it_has():
    # was: Lamb (and Lion without offload) passed the run's checks on a CPU machine and deepspeed.initialize failed
    # loading the kernel ("This op had not been implemented on CPU backend."); DeepSpeed's CPU accelerator (the
    # reference) answers them with its NotImplementedBuilder, its CUDA accelerator with their builders
    from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator
    from deepspeed.accelerator.cuda_accelerator import CUDA_Accelerator

    from t2t_mtl.engine.deepspeed_optimizer_checks import check_kernel
    from t2t_mtl.engine.deepspeed_params import kernel_of

    cpu, cuda = CPU_Accelerator(), CUDA_Accelerator()
    assert cpu.get_op_builder("FusedLambBuilder").__name__ == "NotImplementedBuilder"
    for own in ("lamb", "lion", "adam"):
        check_kernel(cuda, kernel_of(own, False), False, f"optimizer.type {own!r}")
    check_kernel(cpu, kernel_of("lion", True), True, "optimizer.type 'lion'")  # (DeepSpeed's CPU Lion)
    for own, kernel in (("lamb", "FusedLamb"), ("lion", "FusedLion")):
        with pytest.raises(ConfigError, match=rf"^optimizer\.type '{own}' needs DeepSpeed's {kernel} kernel, which the "
                                              r"cpu accelerator does not implement .*: on cpu, name one of "
                                              r"DeepSpeed's adam, adamw, adagrad \(lion too with the optimizer "
                                              r"offloaded\), or a torch\.optim optimizer$"):
            check_kernel(cpu, kernel_of(own, False), False, f"optimizer.type {own!r}")


def test_the_run_checks_refuse_lamb_where_deepspeeds_accelerator_is_the_cpu(tmp_path):
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() != "cpu":
        pytest.skip("DeepSpeed's accelerator here is not the CPU")
    _refused_in_extra_and_json(tmp_path, {"optimizer": {"type": "Lamb", "params": {"lr": 1e-3}}},
                               "optimizer.type 'Lamb' needs DeepSpeed's FusedLamb kernel")


def test_optimizers_deepspeed_builds_pass_the_run_checks(tmp_path):
    for optimizer in ({"type": "adamw", "params": {"lr": 1e-3, "betas": [0.8, 0.9], "eps": 1e-6}},
                      {"type": "SGD", "params": {"lr": 0.1, "momentum": 0.9}}, {"type": "RMSprop", "params": {}},
                      {"type": "Adagrad", "params": {"lr": 0.1}}, {"type": "adam", "params": {"adam_w_mode": False}}):
        check_run_config(_config(tmp_path, extra={"optimizer": optimizer}))


@pytest.mark.parametrize("section, key", [
    ({"steps_per_print": "10"}, "steps_per_print"), ({"steps_per_print": 0}, "steps_per_print"),
    ({"gradient_predivide_factor": 0}, "gradient_predivide_factor"),
    ({"data_types": {"grad_accum_dtype": "float64"}}, "data_types.grad_accum_dtype"),
])
def test_a_value_deepspeeds_engine_fails_on_after_its_parser_passed_it_is_named_by_the_run_checks(tmp_path, section,
                                                                                                 key):
    # was: passed the run's checks and --print-config (DeepSpeed's parser too, the reference: it accepts each), and
    # deepspeed.initialize or the first step failed after the data and the model ("unsupported operand type(s) for
    # %: 'int' and 'str'", "integer modulo by zero", "float division by zero", "'float64' is not a valid DtypeEnum")
    from deepspeed.runtime.config import DeepSpeedConfig

    DeepSpeedConfig({"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1, **section})
    _refused_in_extra_and_json(tmp_path, section, f"{key} must ")


def test_values_deepspeeds_engine_takes_pass_the_run_checks(tmp_path):
    check_run_config(_config(tmp_path, zero_stage=1, extra={"steps_per_print": None, "gradient_predivide_factor": 2,
                                                            "data_types": {"grad_accum_dtype": "fp32"}}))
    check_run_config(_config(tmp_path, extra={"steps_per_print": 5, "data_types": {"grad_accum_dtype": None}}))


def _engine_optimizer_check(ds: dict, monkeypatch) -> object:
    """What DeepSpeed's engine makes of config `ds`'s precision, gradient accumulation dtype and ZeRO settings: the
    optimizer wrapper its optimizer check picks ("bf16": its bf16 optimizer), or the error it raises (its own methods
    on a stand-in for the engine; any optimizer taken as one ZeRO supports)."""
    from types import SimpleNamespace

    from deepspeed.runtime import engine as ds_engine
    from deepspeed.runtime.config import DeepSpeedConfig

    parsed = DeepSpeedConfig({"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1, **ds})
    engine = SimpleNamespace(_config=parsed, pipeline_parallelism=False)
    for method in ("fp16_enabled", "bfloat16_enabled", "get_data_types", "zero_optimization", "zero_optimization_stage",
                   "zero_cpu_offload", "zero_compute_grad_norm"):
        setattr(engine, method, getattr(ds_engine.DeepSpeedEngine, method).__get__(engine))
    monkeypatch.setattr(ds_engine, "is_zero_supported_optimizer", lambda optimizer: True)
    try:
        return ds_engine.DeepSpeedEngine._do_optimizer_sanity_check(engine, None)
    except (NotImplementedError, ValueError) as err:
        return err


@pytest.mark.parametrize("precision, dtype", [("bf16", "fp32"), ("fp32", "bf16"), ("bf16", "float")])
def test_a_gradient_accumulation_dtype_other_than_the_models_is_refused_without_zero(tmp_path, monkeypatch, precision,
                                                                                       dtype):
    # was: passed the run's checks, and deepspeed.initialize failed after the data and the model ('unsupported mix of
    # model_dtype=torch.bfloat16 and grad_accum_dtype=torch.float32'; the reference below)
    section = {"data_types": {"grad_accum_dtype": dtype}}
    refused = _engine_optimizer_check({"bf16": {"enabled": precision == "bf16"}, **section}, monkeypatch)
    assert isinstance(refused, NotImplementedError) and "unsupported mix" in str(refused)
    end = (f"data_types.grad_accum_dtype is {dtype!r} at ZeRO stage 0 in a {precision} run: without ZeRO DeepSpeed "
           f"accumulates gradients in the model's precision only and refuses any other ('unsupported mix'); remove "
           f"the key, or train at zero_stage 1 or more")
    def run(deepspeed):
        return config_from_dict({"model": {"dims": {"d_model": 8}}, "data": {"tasks": ["parity"]},
                                 "training": {"output_dir": str(tmp_path / "run"), "precision": precision},
                                 "deepspeed": deepspeed})

    assert _refused(run({"extra": section})) == "deepspeed.extra." + end
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({**DOCUMENTED, "zero_optimization": {"stage": 0},
                                "bf16": {"enabled": precision == "bf16"}, **section}))
    assert _refused(_config(tmp_path, config=str(path))) == f"deepspeed.config {path}: " + end
    # the model's own dtype, and any at ZeRO 1 (fp32 in bf16: DeepSpeed's bf16 optimizer), are DeepSpeed's to run
    same = {"data_types": {"grad_accum_dtype": precision}}
    assert not isinstance(_engine_optimizer_check({"bf16": {"enabled": precision == "bf16"}, **same}, monkeypatch),
                          Exception)
    check_run_config(run({"extra": same}))
    check_run_config(run({"zero_stage": 1, "extra": section}))


def test_compute_grad_norm_false_is_refused_where_deepspeeds_bf16_optimizer_trains(tmp_path, monkeypatch):
    # was: passed the run's checks, and deepspeed.initialize failed after the data and the model ('ValueError:
    # zero_optimization.compute_grad_norm=false does not support ZeRO Stage 1 with BF16 parameters and FP32 gradient
    # accumulation'; the reference below), where the key selects no other optimizer
    def ds(stage, precision, dtype, offload=False):
        zero = {"stage": stage, "compute_grad_norm": False, **({"offload_optimizer": {"device": "cpu"}} if offload
                                                                else {})}
        return {"bf16": {"enabled": precision == "bf16"}, "data_types": {"grad_accum_dtype": dtype},
                "zero_optimization": zero}

    refused = _engine_optimizer_check(ds(1, "bf16", "fp32"), monkeypatch)
    assert isinstance(refused, ValueError) and "compute_grad_norm=false" in str(refused)
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({**DOCUMENTED, **ds(1, "bf16", "float32")}))
    assert _refused(_config(tmp_path, config=str(path))) == (
        f"deepspeed.config {path}: zero_optimization.compute_grad_norm is false at ZeRO "
        f"stage 1 in a bf16 run accumulating gradients in fp32 (data_types.grad_accum_dtype "
        f"'float32'), which DeepSpeed trains with its bf16 optimizer and refuses the key for; "
        f"remove it, or the grad_accum_dtype")
    extra = {k: v for k, v in ds(1, "bf16", "fp32").items() if k != "bf16"}
    _refused(config_from_dict({"model": {"dims": {"d_model": 8}}, "data": {"tasks": ["parity"]},
                               "training": {"output_dir": str(tmp_path / "run"), "precision": "bf16"},
                               "deepspeed": {"zero_stage": 1, "extra": extra}}),
             "deepspeed.extra.zero_optimization.compute_grad_norm is false at ZeRO stage 1")
    # the ZeRO optimizer takes it: ZeRO-2, the model's own dtype, an optimizer offload (also by its deprecated name)
    deprecated = ds(1, "bf16", "fp32")
    deprecated["zero_optimization"]["cpu_offload"] = True
    for passing in (ds(2, "bf16", "fp32"), ds(1, "bf16", "bf16"), ds(1, "fp32", "fp32"), ds(1, "bf16", "fp32", True),
                    deprecated):
        assert not isinstance(_engine_optimizer_check(passing, monkeypatch), Exception), passing
        path.write_text(json.dumps({**DOCUMENTED, **passing}))
        check_run_config(_config(tmp_path, config=str(path)))


@pytest.mark.parametrize("offload", [True, "cpu"])
def test_an_offload_optimizer_that_is_no_mapping_beside_compute_grad_norm_is_refused_by_deepspeeds_parser(tmp_path,
                                                                                                         offload):
    # was: AttributeError: 'bool' object has no attribute 'get' (a raw traceback) from the compute_grad_norm check of
    # a bf16 ZeRO-1 run accumulating in fp32; without that check's keys the parser's refusal named the key
    zero = {"stage": 1, "offload_optimizer": offload, "compute_grad_norm": False}
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({**DOCUMENTED, "bf16": {"enabled": True}, "data_types": {"grad_accum_dtype": "fp32"},
                                "zero_optimization": zero}))
    _refused(_config(tmp_path, config=str(path)),
             f"DeepSpeed refused the config generated from deepspeed.config ({path}): 1 "
             f"validation error for DeepSpeedZeroConfig\noffload_optimizer\n")


def test_legacy_checkpoint_serialization_is_refused_at_zero_stages_whose_weights_zero_to_fp32_gathers(tmp_path):
    # was: accepted, and a ZeRO-1..3 run's checkpoints then could be resumed but not exported, evaluated, predicted
    # with or merged: DeepSpeed's zero_to_fp32 memory-maps the optimizer files, which torch cannot do for the legacy
    # format checkpoint_serialization: false writes (the reference below)
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(RuntimeError, match="mmap"):
        torch.load(legacy, mmap=True, weights_only=False)
    section = {"checkpoint": {"checkpoint_serialization": False}}
    start = "checkpoint.checkpoint_serialization is false at ZeRO stage {}: DeepSpeed would write"
    for stage in (1, 2, 3):
        _refused(_config(tmp_path, zero_stage=stage, extra=section), "deepspeed.extra." + start.format(stage))
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({**DOCUMENTED, **section}))
    _refused(_config(tmp_path, config=str(path)), f"deepspeed.config {path}: " + start.format(1))
    check_run_config(_config(tmp_path, zero_stage=0, extra=section))  # stage 0 resumes and exports its own files
    check_run_config(_config(tmp_path, zero_stage=2, extra={"checkpoint": {"checkpoint_serialization": True}}))


@pytest.mark.parametrize("value, written", [(0, "0"), (None, "null"), ("", '""')])
def test_a_checkpoint_serialization_torch_reads_as_false_is_refused_as_false_is(tmp_path, value, written):
    # was: only false was refused, while DeepSpeed hands the value to torch.save as given, which writes its legacy
    # format for any value it reads as false (the reference below)
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=value)
    with pytest.raises(RuntimeError, match="mmap"):
        torch.load(legacy, mmap=True, weights_only=False)
    section = {"checkpoint": {"checkpoint_serialization": value}}
    _refused(_config(tmp_path, zero_stage=2, extra=section),
             f"deepspeed.extra.checkpoint.checkpoint_serialization is {written} at ZeRO "
             f"stage 2: DeepSpeed would write")


def _json_config(tmp_path, ds: dict):
    """A run of the DeepSpeed JSON `ds` (DOCUMENTED's sections updated by it) given as deepspeed.config."""
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({**DOCUMENTED, **ds}))
    return _config(tmp_path, config=str(path)), f"deepspeed.config {path}: "


def _stage_read(stage) -> int:
    """The ZeRO stage DeepSpeed's own parser reads from `stage` as written (the reference of the tests below)."""
    from deepspeed.runtime.config import DeepSpeedConfig

    return DeepSpeedConfig({**BATCH, "zero_optimization": {"stage": stage}}).zero_optimization_stage


def test_deepspeed_initialize_reads_a_zero_stage_and_compute_grad_norm_written_as_text_as_their_values():
    # the reference for the tests below: DeepSpeed's parser reads its ZeRO settings in pydantic's lax mode, so that
    # deepspeed.initialize refuses stage "1" with compute_grad_norm "false" (a bf16 run accumulating in fp32) as it
    # refuses stage 1 with false, and stage "0" as stage 0
    import deepspeed

    from t2t_mtl.engine.distributed import init_distributed

    init_distributed()
    for zero, error, words in (({"stage": "1", "compute_grad_norm": "false"}, ValueError, "compute_grad_norm=false"),
                               ({"stage": "0"}, NotImplementedError, "unsupported mix")):
        model = torch.nn.Linear(4, 1)
        ds = {**BATCH, "train_batch_size": 1, "train_micro_batch_size_per_gpu": 1, "bf16": {"enabled": True},
              "optimizer": {"type": "SGD", "params": {"lr": 0.1}}, "zero_allow_untested_optimizer": True,
              "data_types": {"grad_accum_dtype": "fp32"}, "zero_optimization": zero}
        with pytest.raises(error, match=words):
            deepspeed.initialize(model=model, model_parameters=model.parameters(), config=ds)


@pytest.mark.parametrize("stage", ["0", 0.0, False])
def test_a_gradient_accumulation_dtype_at_zero_stage_0_written_otherwise_is_refused_as_at_stage_0(tmp_path,
                                                                                                  monkeypatch, stage):
    # was: passed the run's checks, which compared the stage as written with 0, and deepspeed.initialize failed after
    # the data and the model ('unsupported mix'), DeepSpeed reading the stage as 0 (the reference below)
    ds = {"bf16": {"enabled": True}, "data_types": {"grad_accum_dtype": "fp32"}, "zero_optimization": {"stage": stage}}
    assert _stage_read(stage) == 0
    refused = _engine_optimizer_check(ds, monkeypatch)
    assert isinstance(refused, NotImplementedError) and "unsupported mix" in str(refused)
    config, where = _json_config(tmp_path, ds)
    _refused(config, f"{where}data_types.grad_accum_dtype is 'fp32' at ZeRO stage 0 in a bf16 "
                     f"run")


@pytest.mark.parametrize("stage, switch", [("1", False), (1, 0), (1, "false"), (1.0, "no"), ("1", "off")])
def test_compute_grad_norm_false_written_otherwise_is_refused_where_deepspeeds_bf16_optimizer_trains(tmp_path,
                                                                                                    monkeypatch,
                                                                                                    stage, switch):
    # was: passed the run's checks, which read the stage and the switch as written (stage "1" is not 1, 0 is not
    # False), and deepspeed.initialize failed after the data and the model (the reference below)
    ds = {"bf16": {"enabled": True}, "data_types": {"grad_accum_dtype": "fp32"},
          "zero_optimization": {"stage": stage, "compute_grad_norm": switch}}
    refused = _engine_optimizer_check(ds, monkeypatch)
    assert isinstance(refused, ValueError) and "compute_grad_norm=false" in str(refused)
    config, where = _json_config(tmp_path, ds)
    _refused(config, f"{where}zero_optimization.compute_grad_norm is false at ZeRO stage 1 in a "
                     f"bf16 run")


@pytest.mark.parametrize("stage", ["1", 2.0, "3", True])
def test_legacy_checkpoint_serialization_at_a_zero_stage_written_otherwise_is_refused_naming_the_stage(tmp_path,
                                                                                                     stage):
    # was: passed the run's checks, which looked for the stage as written among 1, 2 and 3, and the run's
    # checkpoints could not be exported (test_legacy_checkpoint_serialization_is_refused_...: why)
    read = _stage_read(stage)
    assert read in (1, 2, 3)
    config, where = _json_config(tmp_path, {"zero_optimization": {"stage": stage},
                                            "checkpoint": {"checkpoint_serialization": False}})
    _refused(config, f"{where}checkpoint.checkpoint_serialization is false at ZeRO stage {read}: "
                     f"DeepSpeed would write")


@pytest.mark.parametrize("stage", ["0", 0.0, False])
def test_fp16_at_a_zero_stage_0_written_otherwise_is_refused(stage):
    # was: passed, the check comparing the stage as written with 0, and DeepSpeed trained at stage 0 with updates
    # ~65536x too small (test_engine_single's fp16 stage-0 test: why)
    from t2t_mtl.engine.deepspeed_value_checks import check_fp16_zero_stage
    from t2t_mtl.engine.host_precision import PrecisionError

    assert _stage_read(stage) == 0
    with pytest.raises(PrecisionError, match="^fp16 with deepspeed.zero_stage 0: "):
        check_fp16_zero_stage({"fp16": {"enabled": True}, "zero_optimization": {"stage": stage}})
    check_fp16_zero_stage({"fp16": {"enabled": True}, "zero_optimization": {"stage": "1"}})


@pytest.mark.parametrize("zero, key", [({"stage": "one"}, "stage"), ({"stage": 4}, "stage"), ({"stage": None}, "stage"),
                                       ({"stage": 1, "compute_grad_norm": "maybe"}, "compute_grad_norm"),
                                       ({"stage": 1, "compute_grad_norm": None}, "compute_grad_norm")])
def test_a_zero_setting_deepspeed_cannot_read_is_left_to_its_parser_which_names_it(tmp_path, zero, key):
    # (stage null, mutation testing: read as the field's default 0, it passed its tests and was refused as a
    # grad_accum_dtype at 'ZeRO stage 0', not by the parser, which refuses null)
    config, _ = _json_config(tmp_path, {"bf16": {"enabled": True}, "data_types": {"grad_accum_dtype": "fp32"},
                                        "zero_optimization": zero})
    _refused(config, f"DeepSpeed refused the config generated from deepspeed.config "
                     f"({config.deepspeed.config}): 1 validation error for "
                     f"DeepSpeedZeroConfig\n{key}\n")


@pytest.mark.parametrize("zero", [None, {"offload_optimizer": {"device": "none"}}])
def test_a_gradient_accumulation_dtype_in_a_json_naming_no_zero_stage_is_refused_as_at_stage_0(tmp_path, monkeypatch,
                                                                                               zero):
    # mutation testing: reading a zero_optimization section without a stage (or no section) as naming no stage, not
    # DeepSpeed's default 0, passed its tests (each named one); such a JSON then passed the run's checks and
    # deepspeed.initialize failed after the data and the model ('unsupported mix', the reference below)
    ds = {**{k: v for k, v in DOCUMENTED.items() if k != "zero_optimization"}, "bf16": {"enabled": True},
          "data_types": {"grad_accum_dtype": "fp32"}, **({"zero_optimization": zero} if zero is not None else {})}
    refused = _engine_optimizer_check({k: ds[k] for k in ds if k in ("bf16", "data_types", "zero_optimization")},
                                      monkeypatch)
    assert isinstance(refused, NotImplementedError) and "unsupported mix" in str(refused)
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(ds))
    _refused(_config(tmp_path, config=str(path)),
             f"deepspeed.config {path}: data_types.grad_accum_dtype is 'fp32' at ZeRO "
             f"stage 0 in a bf16 run")


def test_compute_grad_norm_false_with_an_optimizer_offloaded_to_nvme_is_refused_where_the_bf16_optimizer_trains(
        tmp_path, monkeypatch):
    # mutation testing: reading an NVMe optimizer offload as DeepSpeed's CPU offload passed the checks' tests; DeepSpeed
    # picks its ZeRO optimizer over the bf16 one for a CPU offload alone (`zero_cpu_offload`), so with NVMe it still
    # refuses compute_grad_norm false in deepspeed.initialize (the reference below)
    ds = {"bf16": {"enabled": True}, "data_types": {"grad_accum_dtype": "fp32"},
          "zero_optimization": {"stage": 1, "compute_grad_norm": False,
                                "offload_optimizer": {"device": "nvme", "nvme_path": str(tmp_path)}}}
    refused = _engine_optimizer_check(ds, monkeypatch)
    assert isinstance(refused, ValueError) and "compute_grad_norm=false" in str(refused)
    config, where = _json_config(tmp_path, ds)
    _refused(config, f"{where}zero_optimization.compute_grad_norm is false at ZeRO stage 1 in a "
                     f"bf16 run")
