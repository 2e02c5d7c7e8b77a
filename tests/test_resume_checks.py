"""The checks that refuse to resume a checkpoint into an incompatible run, naming the config key that changed."""
from __future__ import annotations

import pytest

from t2t_mtl.engine import resume_checks as rc
from t2t_mtl.engine.checkpoint import CheckpointError


def test_check_compatible_names_the_changed_key(tmp_path):
    meta = {"tasks": ["a", "b"], "zero_stage": 0, "precision": "bf16"}
    rc.check_compatible(tmp_path, meta, tasks=["a", "b"], zero_stage=0, precision="bf16")
    with pytest.raises(CheckpointError, match="tasks.*data.tasks"):
        rc.check_compatible(tmp_path, meta, tasks=["b", "a"])
    with pytest.raises(CheckpointError, match="deepspeed.zero_stage = 0, this run has 2"):
        rc.check_compatible(tmp_path, meta, zero_stage=2)
    with pytest.raises(CheckpointError, match="training.precision = 'bf16', this run has 'fp32'"):
        rc.check_compatible(tmp_path, meta, precision="fp32")
    meta = {**meta, "task_embeddings": False, "settings": {"training.seed": 1}}
    with pytest.raises(CheckpointError, match="model.task_embeddings = False, this run has True"):
        rc.check_compatible(tmp_path, meta, task_embeddings=True)
    with pytest.raises(CheckpointError, match="training.seed = 1, this run has 2: resume with the same seed"):
        rc.check_compatible(tmp_path, meta, settings={"training.seed": 2})
    rc.check_compatible(tmp_path, meta, task_embeddings=False, settings={"training.seed": 1, "sampling.strategy": "x"})


def test_a_model_of_other_shapes_is_refused_naming_each_changed_setting(tmp_path):
    meta = {"param_shapes": {"a.weight": "4x2", "b.weight": "3"},
            "model": {"name_or_path": "t5-small", "dims": {"d_ff": 64}, "moe": None}}
    rc.check_model_shapes(tmp_path, meta, {"name_or_path": "other"}, {"a.weight": "4x2", "b.weight": "3"})  # fits
    rc.check_model_shapes(tmp_path, {"model": meta["model"]}, {}, {"a.weight": "9"})  # no shapes saved: not checked
    model = {"name_or_path": "t5-base", "dims": {"d_ff": 64, "d_kv": 8}, "moe": None}
    with pytest.raises(CheckpointError, match=r"written with model\.name_or_path = 't5-small', this run has "
                                                 r"'t5-base'; model\.dims\.d_kv = unset, this run has 8: its weights "
                                                 r"do not fit this run's model \(a\.weight: shape 4x2 there, shape "
                                                 r"4x4 here\)"):
        rc.check_model_shapes(tmp_path, meta, model, {"a.weight": "4x4", "b.weight": "3"})
    with pytest.raises(CheckpointError, match=r"written with the same model settings: its weights do not fit this "
                                                 r"run's model \(b\.weight: shape 3 there, absent here\)"):
        rc.check_model_shapes(tmp_path, meta, meta["model"], {"a.weight": "4x2"})


def test_check_compatible_skips_what_an_old_checkpoint_lacks_and_compares_falsy_values(tmp_path):
    rc.check_compatible(tmp_path, {"tasks": ["a"]}, precision="bf16", zero_stage=2, task_embeddings=True)
    with pytest.raises(CheckpointError, match="model.task_embeddings = True, this run has False"):
        rc.check_compatible(tmp_path, {"task_embeddings": True}, task_embeddings=False)
    with pytest.raises(CheckpointError, match="deepspeed.zero_stage = 2, this run has 0"):
        rc.check_compatible(tmp_path, {"zero_stage": 2}, zero_stage=0)
    lora = {"r": 4, "alpha": 8, "targets": ["q", "v"], "trainable": [], "dropout": 0.0}
    with pytest.raises(CheckpointError, match="model.lora = .*, this run has None"):
        rc.check_compatible(tmp_path, {"lora": lora}, lora=None)
    rc.check_compatible(tmp_path, {"lora": lora}, lora={**lora, "targets": ["v", "q"], "dropout": 0.1})


def test_task_sizes_of_a_task_the_run_lacks_are_refused(tmp_path):
    rc.check_task_sizes(tmp_path, {"a": 5}, {"a": 5, "b": 3})
    with pytest.raises(CheckpointError, match=r"task sizes \{'b': 3\}, this run's tasks have \{'b': None\}"):
        rc.check_task_sizes(tmp_path, {"a": 5, "b": 3}, {"a": 5})


def test_a_task_whose_own_templates_changed_is_refused_and_an_old_checkpoint_is_not_checked(tmp_path):
    # a template added to a task's registration (a YAML task's `templates:`), data.templates unset and no
    # data.all_templates: the task's size is unchanged, but each row may now draw another template
    import json

    import task_registry
    from t2t_mtl.config import config_from_dict
    from t2t_mtl.engine.training_templates import training_template_names

    task_registry.load_builtin_tasks()
    cfg = config_from_dict({"data": {"tasks": ["reverse_words"]}, "model": {"dims": {"d_model": 8}}})
    names = training_template_names(cfg, ["reverse_words"])
    ckpt = tmp_path / "step-00000002"
    ckpt.mkdir()
    (ckpt / "meta.json").write_text(json.dumps({"tasks": ["reverse_words"]}))  # before checkpoints held templates
    assert "templates" not in rc.check_resume_config(cfg, ckpt, ["reverse_words"], names)
    (ckpt / "meta.json").write_text(json.dumps({"tasks": ["reverse_words"],
                                                "templates": {"reverse_words": ["t5_prefix"]}}))
    with pytest.raises(CheckpointError, match=r"trained task 'reverse_words' in the templates \['t5_prefix'\], this "
                                              r"run trains it in \['t5_prefix', 'instruction'\] \(data\.templates "
                                              r"unset: all of the task's own\): each row is trained in the one of "
                                              r"them drawn from training\.seed"):
        rc.check_resume_config(cfg, ckpt, ["reverse_words"], names)
    (ckpt / "meta.json").write_text(json.dumps({"tasks": ["reverse_words"],
                                                "templates": {"reverse_words": ["t5_prefix", "instruction"]}}))
    rc.check_resume_config(cfg, ckpt, ["reverse_words"], names)


def test_templates_edited_under_their_names_are_warned_of_once_a_task(tmp_path):
    saved = {"template_digests": {"a": {"t1": "1" * 16, "t2": "2" * 16, "t3": "3" * 16}, "b": {"t1": "4" * 16}}}
    now = {"a": {"t1": "1" * 16, "t2": "9" * 16, "t3": "8" * 16}, "b": {"t1": "4" * 16}}
    warnings = rc.template_change_warnings(tmp_path, saved, now)
    assert warnings == [f"the template(s) ['t2', 't3'] of task 'a' changed under the same name since checkpoint "
                        f"{tmp_path} was written (their Jinja, answer_choices or references differ): the resumed "
                        f"steps train the new text, the steps before it trained the old one (restore the old "
                        f"definition to go on unchanged)"]
    assert rc.template_change_warnings(tmp_path, saved, {"a": saved["template_digests"]["a"]}) == []  # unchanged
    assert rc.template_change_warnings(tmp_path, {"templates": {"a": ["t1"]}}, now) == []  # before the digests
    # a task or template the checkpoint did not train (`check_resume_config` refuses another template list)
    assert rc.template_change_warnings(tmp_path, saved, {"c": {"t1": "0" * 16}, "b": {"t9": "0" * 16}}) == []


def test_a_setting_unset_since_the_checkpoint_and_templates_in_another_order_are_refused(tmp_path):
    meta = {"settings": {"data.max_examples_per_task": 100}}
    with pytest.raises(CheckpointError, match="data.max_examples_per_task = 100, this run has None"):
        rc.check_compatible(tmp_path, meta, settings={"data.max_examples_per_task": None})
    # the order sets the template each saved data position holds
    rc.check_templates(tmp_path, {"t": ["a", "b"]}, {"t": ["a", "b"]}, None, False)
    with pytest.raises(CheckpointError, match=r"trained task 't' in the templates \['a', 'b'\], this run trains it in "
                                              r"\['b', 'a'\]"):
        rc.check_templates(tmp_path, {"t": ["a", "b"]}, {"t": ["b", "a"]}, ["b", "a"], False)


def test_check_resume_config_compares_the_runs_resume_settings(tmp_path):
    import json

    from t2t_mtl.config import config_from_dict

    cfg = config_from_dict({"model": {"dims": {"d_model": 8}}, "data": {"tasks": ["parity"]}, "training": {"seed": 3}})
    meta = {"tasks": ["parity"], "settings": {**rc.resume_settings(cfg), "training.seed": 1}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="training.seed = 1, this run has 3"):
        rc.check_resume_config(cfg, tmp_path, ["parity"], {})
    meta["settings"]["training.seed"] = 3
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    assert rc.check_resume_config(cfg, tmp_path, ["parity"], {}) == meta


def test_model_changes_name_a_setting_set_since_the_checkpoint_and_an_old_checkpoint_gets_no_warning(tmp_path):
    was = {"name_or_path": None, "dims": {"d_model": 8}, "moe": None}
    warning = rc.model_change_warning(tmp_path, {"model": was}, {**was, "name_or_path": "hf"})
    assert "model.name_or_path = None there, 'hf' here" in warning
    # was: "... so the resumed run trains with the new settings", though a resume takes every weight from the checkpoint
    assert warning.endswith("here; the resumed run takes every weight, frozen ones too, from the checkpoint: "
                            "model.name_or_path only names what a new run starts from")
    both = rc.model_change_warning(tmp_path, {"model": was}, {**was, "name_or_path": "hf", "dims": {"d_model": 16}})
    assert "model.dims.d_model = 8 there, 16 here; its weights fit, so the resumed run trains with the new settings" \
        in both and both.endswith("model.name_or_path only names what a new run starts from")
    assert rc.model_change_warning(tmp_path, {"model": was}, was) is None
    assert rc.model_change_warning(tmp_path, {}, {**was, "name_or_path": "hf"}) is None  # (no model section saved)
    # was: the same words for a LoRA run trained in bf16, whose export reads its frozen weights' fp32 values from the
    # folder config.yaml names (the checkpoint holds their bf16 rounding alone): the other folder exported them rounded
    lora = {"lora": {"r": 2}, "model": {**was, "name_or_path": "hf"}}
    for precision in ("fp32", "bf16"):
        warned = rc.model_change_warning(tmp_path, {**lora, "precision": precision}, {**was, "name_or_path": "ft"})
        assert warned.endswith("model.name_or_path only names what a new run starts from" if precision == "fp32" else
                               "the resumed run takes every weight, frozen ones too, from the checkpoint, but it holds "
                               "the frozen ones in bf16 alone: export, eval and predict read their fp32 values from "
                               "model.name_or_path, which the run's config.yaml will name, so resume with the folder "
                               "the run started from"), warned


def test_a_model_key_one_side_leaves_unset_is_named_and_compared_as_its_value_there(tmp_path):
    # was: "model.dims.dropout_rate = None there, 0.25 here", and a rate set to the model's own value on one side
    # only was warned of as a change
    own = {"dropout_rate": 0.1, "d_model": 512}  # (the model's config: its folder's, or T5Config's defaults)
    was = {"name_or_path": "folder", "dims": {}, "moe": None}
    now = {**was, "dims": {"dropout_rate": 0.25}}
    assert "model.dims.dropout_rate = the model's own 0.1 there, 0.25 here; its weights fit" in \
        rc.model_change_warning(tmp_path, {"model": was}, now, own)
    assert "model.dims.dropout_rate = 0.25 there, the model's own 0.1 here; its weights fit" in \
        rc.model_change_warning(tmp_path, {"model": now}, was, own)
    assert rc.model_change_warning(tmp_path, {"model": was}, {**was, "dims": {"dropout_rate": 0.1}}, own) is None
    # another model there: its own value is not this run's model's
    assert "model.dims.dropout_rate = unset there, 0.25 here" in \
        rc.model_change_warning(tmp_path, {"model": {**was, "name_or_path": "other"}}, now, own)
    # a model.moe key's is its default (MoEConfig's)
    moe = {**was, "moe": {"num_experts": 4}}
    assert "model.moe.top_k = the default 2 there, 1 here; its weights fit" in \
        rc.model_change_warning(tmp_path, {"model": moe}, {**was, "moe": {"num_experts": 4, "top_k": 1}}, own)
    assert rc.model_change_warning(tmp_path, {"model": moe}, {**was, "moe": {"num_experts": 4, "top_k": 2}}, own) \
        is None
    meta = {"param_shapes": {"a.weight": "4x2"}, "model": {**was, "dims": {"d_model": 64}}}
    with pytest.raises(CheckpointError, match=r"model\.dims\.d_model = 64, this run has the model's own 512: its "):
        rc.check_model_shapes(tmp_path, meta, was, {"a.weight": "4x4"}, own)


def test_own_dims_are_a_pretrained_models_config_values_or_t5s_defaults():
    from transformers import T5Config

    from t2t_mtl.config import model_config_from_dict

    saved = {**T5Config(d_model=16, dropout_rate=0.3).to_dict(), "model_type": "t5"}
    own = rc.own_dims(model_config_from_dict({"name_or_path": "folder", "dims": {"dropout_rate": 0.05}}), saved)
    assert (own["dropout_rate"], own["d_model"]) == (0.3, 16)
    own = rc.own_dims(model_config_from_dict({"dims": {"dropout_rate": 0.05, "d_model": 8}}), None)
    assert (own["dropout_rate"], own["d_model"]) == (T5Config().dropout_rate, T5Config().d_model) == (0.1, 512)


def test_a_changed_moe_upcycle_is_said_to_change_no_weight_on_a_resume(tmp_path):
    # was: "... its weights fit, so the resumed run trains with the new settings from the resumed step", though upcycle
    # only decides how a new run's experts start and a resume takes them from the checkpoint
    was = {"name_or_path": None, "dims": {"d_model": 8}, "moe": {"num_experts": 4}}
    warning = rc.model_change_warning(tmp_path, {"model": was}, {**was, "moe": {"num_experts": 4, "upcycle": False}})
    assert warning == (f"this run's model settings differ from checkpoint {tmp_path}'s: model.moe.upcycle = the "
                       f"default True there, False here; model.moe.upcycle only decides how a new run's experts start "
                       f"(copies of the dense feed-forward layer, or freshly initialised): the resumed run takes them "
                       f"from the checkpoint")
    both = rc.model_change_warning(tmp_path, {"model": was}, {**was, "moe": {"num_experts": 4, "upcycle": False,
                                                                             "top_k": 1}})
    assert "; its weights fit, so the resumed run trains with the new settings" in both
    assert both.endswith("the resumed run takes them from the checkpoint")
