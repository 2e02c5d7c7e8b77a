"""A DeepSpeed JSON written for the HF Trainer ("auto" where the trainer's arguments decide) gets the training
section's values there, as the Trainer fills them; an "auto" the training section cannot give is refused by name."""
from __future__ import annotations

import json

import pytest

from t2t_mtl.config import ConfigError, config_from_dict
from t2t_mtl.engine.deepspeed_config import build_deepspeed_config

HF_JSON = {"bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"}, "gradient_clipping": "auto",
           "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto",
                                                     "weight_decay": "auto"}},
           "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto",
                                                             "warmup_num_steps": "auto", "total_num_steps": "auto"}},
           "zero_optimization": {"stage": 2, "overlap_comm": True, "contiguous_gradients": True},
           "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto"}
TRAINING = {"lr": 3e-4, "betas": [0.8, 0.95], "weight_decay": 0.01, "clip": 0.5, "warmup": 7, "steps": 40,
            "micro_batch_size": 2, "grad_accum": 3, "precision": "fp32"}


def _config(tmp_path, **deepspeed):
    return config_from_dict({"model": {"dims": {"d_model": 8}}, "data": {"tasks": ["parity"]},
                             "training": {**TRAINING, "output_dir": str(tmp_path / "run")}, "deepspeed": deepspeed})


def _json(tmp_path, ds):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(ds))
    return str(path)


def test_auto_values_of_a_whole_json_are_the_training_sections(tmp_path):
    ds = build_deepspeed_config(_config(tmp_path, config=_json(tmp_path, HF_JSON)), world_size=2)
    assert ds["optimizer"]["params"] == {"lr": 3e-4, "betas": [0.8, 0.95], "eps": 1e-8, "weight_decay": 0.01}
    assert ds["scheduler"]["params"] == {"warmup_min_lr": 0.0, "warmup_max_lr": 3e-4, "warmup_num_steps": 7,
                                         "total_num_steps": 40}
    assert ds["gradient_clipping"] == 0.5
    assert ds["bf16"] == {"enabled": False} and ds["fp16"] == {"enabled": False}  # training.precision fp32
    batch = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size")
    assert [ds[key] for key in batch] == [2, 3, 12]
    assert ds["zero_optimization"] == HF_JSON["zero_optimization"]  # explicit values kept as written


def test_an_auto_bf16_section_under_its_bfloat16_alias_is_filled_from_the_precision(tmp_path):
    # DeepSpeed reads "bfloat16" as "bf16": an "auto" there says what training.precision says
    ds = {key: value for key, value in HF_JSON.items() if key != "bf16"}
    for precision, enabled in (("bf16", True), ("fp32", False)):
        cfg = config_from_dict({"model": {"dims": {"d_model": 8}}, "data": {"tasks": ["parity"]},
                                "training": {**TRAINING, "precision": precision, "output_dir": str(tmp_path / "run")},
                                "deepspeed": {"config": _json(tmp_path, {**ds, "bfloat16": {"enabled": "auto"}})}})
        assert build_deepspeed_config(cfg, world_size=1)["bfloat16"] == {"enabled": enabled}


@pytest.mark.parametrize("scheduler", ["WarmupLR", "WarmupDecayLR"])
def test_an_auto_warmup_num_steps_without_warmup_is_one_step_as_the_trainer_fills_it(tmp_path, scheduler):
    # was: refused as 'warmup_num_steps must be a positive integer, got 0' (DeepSpeed's check) for training.warmup 0,
    # the default, though the JSON said "auto" and the HF Trainer runs it: it fills max(1, warmup steps)
    # (transformers' integrations/deepspeed.py, trainer_config_finalize)
    ds = {**HF_JSON, "scheduler": {"type": scheduler, "params": {**HF_JSON["scheduler"]["params"]}}}
    if scheduler == "WarmupLR":
        del ds["scheduler"]["params"]["total_num_steps"]
    for warmup, trainers in ((0, 1), (1, 1), (7, 7)):
        cfg = config_from_dict({"model": {"dims": {"d_model": 8}}, "data": {"tasks": ["parity"]},
                                "training": {**TRAINING, "warmup": warmup, "output_dir": str(tmp_path / "run")},
                                "deepspeed": {"config": _json(tmp_path, ds)}})
        assert build_deepspeed_config(cfg, world_size=1)["scheduler"]["params"]["warmup_num_steps"] == trainers
    written = {**ds, "scheduler": {"type": scheduler, "params": {**ds["scheduler"]["params"], "warmup_num_steps": 0}}}
    with pytest.raises(ConfigError, match="warmup_num_steps must be a positive integer, got 0"):  # a 0 written stays
        build_deepspeed_config(_config(tmp_path, config=_json(tmp_path, written)), world_size=1)


def test_auto_in_deepspeed_extra_is_filled_too(tmp_path):
    ds = build_deepspeed_config(_config(tmp_path, extra={"gradient_clipping": "auto",
                                                         "optimizer": {"params": {"lr": "auto"}}}), world_size=1)
    assert ds["gradient_clipping"] == 0.5 and ds["optimizer"]["params"]["lr"] == 3e-4


def test_an_auto_neither_the_training_nor_the_model_section_gives_is_refused_by_its_key_path(tmp_path):
    ds = {**HF_JSON, "zero_optimization": {"stage": 3, "sub_group_size": "auto", "reduce_bucket_size": "auto",
                                           "stage3_max_live_parameters": "auto"}}
    path = _json(tmp_path, ds)
    with pytest.raises(ConfigError) as err:
        build_deepspeed_config(_config(tmp_path, config=path), world_size=1)
    assert str(err.value).startswith(f"deepspeed.config {path}: zero_optimization.sub_group_size, "
                                     f"zero_optimization.stage3_max_live_parameters: 'auto' is filled in only ")
    with pytest.raises(ConfigError, match=r"^deepspeed\.extra\.zero_optimization\.sub_group_size: 'auto'"):
        build_deepspeed_config(_config(tmp_path, zero_stage=2, extra={"zero_optimization": {
            "sub_group_size": "auto"}}), world_size=1)


BUCKET_AUTOS = {"reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
                "stage3_param_persistence_threshold": "auto"}


def _trainers_buckets(model) -> dict:
    """transformers' Trainer's values for BUCKET_AUTOS at ZeRO-3 (integrations/deepspeed.py,
    trainer_config_finalize), from the hidden size it reads off the model it is given."""
    h = model.config.hidden_size
    return {"reduce_bucket_size": h * h, "stage3_prefetch_bucket_size": int(0.9 * h * h),
            "stage3_param_persistence_threshold": 10 * h}


def test_zero_bucket_size_autos_follow_the_trainers_rule_on_the_models_hidden_size(tmp_path):
    # was: refused ('give a number instead'), so an HF Trainer ZeRO-3 JSON needed editing before it ran here
    from transformers import T5Config

    from t2t_mtl.model import build_model

    dims = {"d_model": 24, "d_ff": 40, "num_layers": 1, "num_heads": 2, "d_kv": 8}
    moe = {"num_experts": 2, "top_k": 1, "every": 1, "routing": "token"}  # (experts d_ff wide: the rule reads d_model)
    pretrained = tmp_path / "pretrained"
    T5Config(**{**dims, "d_model": 40}).save_pretrained(pretrained)
    for model_section in ({"dims": dims}, {"dims": dims, "moe": moe}, {"name_or_path": str(pretrained)}):
        reference = _trainers_buckets(build_model(model_section, task_names=["parity"], weights=False))
        in_json = {**HF_JSON, "zero_optimization": {"stage": 3, **BUCKET_AUTOS}}
        for deepspeed in ({"config": _json(tmp_path, in_json)},
                          {"zero_stage": 3, "extra": {"zero_optimization": BUCKET_AUTOS}}):
            cfg = config_from_dict({"model": model_section, "data": {"tasks": ["parity"]},
                                    "training": {**TRAINING, "output_dir": str(tmp_path / "run")},
                                    "deepspeed": deepspeed})
            zero = build_deepspeed_config(cfg, world_size=1)["zero_optimization"]
            assert {key: zero[key] for key in BUCKET_AUTOS} == reference, (model_section, deepspeed)
    assert reference == {"reduce_bucket_size": 1600, "stage3_prefetch_bucket_size": 1440,
                         "stage3_param_persistence_threshold": 400}  # (the pretrained model's d_model 40)


def test_a_training_key_that_fills_an_auto_is_not_warned_of_as_replaced(tmp_path):
    # was: 'training.lr, ..., training.warmup: deepspeed.config names a whole DeepSpeed JSON, used as is (...), so
    # they have no effect' though each filled an "auto" of that JSON. A run's checked DeepSpeed config carries the
    # keys its "auto" values take (read as its JSON is, once), and warns alike
    from t2t_mtl.engine.idle_settings import config_warnings
    from t2t_mtl.engine.checked_deepspeed import check_deepspeed

    def replaced(cfg):
        warned = [w for w in config_warnings(cfg) if w.startswith("training.")]
        assert [w for w in config_warnings(cfg, 1, check_deepspeed(cfg, 1)) if w.startswith("training.")] == warned
        return warned

    assert replaced(_config(tmp_path, config=_json(tmp_path, HF_JSON))) == []
    fixed = {**HF_JSON, "gradient_clipping": 1.0, "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
             "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 5}}}
    assert replaced(_config(tmp_path, config=_json(tmp_path, fixed))) == [
        "training.lr, training.betas, training.weight_decay, training.clip, training.warmup: deepspeed.config names a "
        "whole DeepSpeed JSON, used as is (its optimizer, scheduler and clipping), so they have no effect"]
    fixed["scheduler"]["params"]["warmup_max_lr"] = "auto"  # (training.lr is then the scheduler's peak)
    assert replaced(_config(tmp_path, config=_json(tmp_path, fixed)))[0].startswith("training.betas, ")
    assert replaced(_config(tmp_path, extra={"gradient_clipping": "auto", "optimizer": {"params": {"lr": "auto"}}})) \
        == []


def test_print_config_shows_the_deepspeed_config_with_its_autos_filled_as_yaml_comments(tmp_path, capsys):
    # was: only the YAML, so the DeepSpeed config a run would start with (its "auto" values filled) was seen only in
    # the run folder's deepspeed_config.json once training had begun
    import yaml

    from t2t_mtl.cli import main as cli_main

    args = ["train", "--print-config", "--set", "model.dims={d_model: 8, d_ff: 8, num_layers: 1, num_heads: 1, "
            "d_kv: 8}", "--set", "data.tasks=[parity]", "--set", f"deepspeed.config={_json(tmp_path, HF_JSON)}"]
    for key, value in TRAINING.items():
        args += ["--set", f"training.{key}={value}"]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out)["training"]["lr"] == 3e-4  # (still the config, the comments aside)
    comments = out[out.index("\n# the DeepSpeed config of this run on 1 rank(s), saved as deepspeed_config.json "
                             "in its folder:\n") + 1:].splitlines()[1:]
    ds = json.loads("\n".join(line[2:] for line in comments))
    assert ds["optimizer"]["params"] == {"lr": 3e-4, "betas": [0.8, 0.95], "eps": 1e-8, "weight_decay": 0.01}
    assert ds["gradient_clipping"] == 0.5 and ds["scheduler"]["params"]["total_num_steps"] == 40
    assert ds["train_batch_size"] == 6  # micro_batch_size 2 x grad_accum 3 x 1 rank


def test_a_zero3_run_with_the_bucket_size_autos_starts_with_the_filled_values(tmp_path):
    from engine_helpers import tiny_config, train_tiny_tokenizer

    from t2t_mtl.engine.trainer import train
    from t2t_mtl.model import build_model

    tok = train_tiny_tokenizer(tmp_path / "tok")
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 2},
                      deepspeed={"zero_stage": 3, "extra": {"zero_optimization": BUCKET_AUTOS}})
    assert train(cfg, evaluate_held_in=False).step == 2
    written = json.loads((tmp_path / "run" / "deepspeed_config.json").read_text())["zero_optimization"]
    reference = _trainers_buckets(build_model(cfg["model"], weights=False))
    assert written["stage"] == 3 and {key: written[key] for key in BUCKET_AUTOS} == reference
