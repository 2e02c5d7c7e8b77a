"""A resume builds its model without a random init (a pretrained one without reading its weights) where DeepSpeed's
load of the checkpoint fills every tensor (DeepSpeed's own format, and its universal one, whose load restores the
trained weights alone, the frozen ones and the buffers then written from the checkpoint's module state,
`t2t_mtl.engine.resumed_model`): with every unfilled tensor NaN, nothing is left NaN after the load, and the resumed
run trains as the resume that builds the model with its init (the reference) does; for a model with a buffer no load
fills, the init is kept. A checkpoint that lacks a tensor of the model is refused naming the file and the tensor, a
universal conversion that lacks a trained weight naming the folder and the weight."""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import T5ForConditionalGeneration

from t2t_mtl.engine import trainer as trainer_mod
from t2t_mtl.engine.checkpoint import UNIVERSAL_TAG, CheckpointError
from t2t_mtl.engine.export import load_trained_model
from t2t_mtl.engine.trainer import train

from engine_helpers import nan_filled_to_empty, pretrained_folder, step_records, tiny_config, train_tiny_tokenizer

LORA = {"lora": {"r": 2, "alpha": 4, "targets": ["q", "v", "wo"]}}
MOE = {"moe": {"num_experts": 4, "top_k": 2, "every": 1, "routing": "task"}}

#: the ZeRO-3 config that partitions every parameter (none kept whole under the persistence threshold)
PARTITIONED = {"zero_stage": 3, "extra": {"zero_optimization": {"stage3_param_persistence_threshold": 0}}}

#: name: (model section, training section, deepspeed section of the interrupted run, of the resume, built unfilled)
RUNS = {
    "dense-zero0": ({}, {}, {}, {}, True),
    "dense-zero2": ({}, {}, {"zero_stage": 2}, {"zero_stage": 2}, True),
    "bf16-zero0": ({}, {"precision": "bf16"}, {}, {}, True),  # (the fp32 masters of DeepSpeed's bf16 optimizer)
    "lora-zero0": (LORA, {}, {}, {}, True),  # frozen weights: filled from the module state alone
    "lora-bf16-zero2": (LORA, {"precision": "bf16"}, {"zero_stage": 2}, {"zero_stage": 2}, True),
    "moe-zero1": (MOE, {}, {"zero_stage": 1}, {"zero_stage": 1}, True),
    "lora-zero3": (LORA, {}, {"zero_stage": 3}, {"zero_stage": 3}, True),  # (every parameter kept whole)
    "lora-bf16-zero3-partitioned": (LORA, {"precision": "bf16"}, PARTITIONED, PARTITIONED, True),
    # universal format: the trained parameters' fp32 masters alone
    "dense-zero1-to-2": ({}, {}, {"zero_stage": 1}, {"zero_stage": 2}, True),
    "bf16-zero2-to-1": ({}, {"precision": "bf16"}, {"zero_stage": 2}, {"zero_stage": 1}, True),
    "moe-zero2-to-1": (MOE, {}, {"zero_stage": 2}, {"zero_stage": 1}, True),
    # (frozen weights: from the module state after the load, `universal_frozen`)
    "lora-zero1-to-2": (LORA, {}, {"zero_stage": 1}, {"zero_stage": 2}, True),
    "lora-bf16-zero2-to-1": (LORA, {"precision": "bf16"}, {"zero_stage": 2}, {"zero_stage": 1}, True),
}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


def _config(run, tok, cache, model, training, deepspeed, steps):
    cfg = tiny_config(run, tok, cache, deepspeed=deepspeed, training={"steps": steps, **training})
    cfg["model"] = {**cfg["model"], **model}
    return cfg


def _engine_tensors(engine):
    """The engine's model tensors (ZeRO-3: with each parameter's partition) and its optimizer's fp32 master weights
    (bf16 at stage 0, ZeRO 1-3)."""
    optimizer, module = engine.optimizer, engine.module
    masters = [t for group in getattr(optimizer, "fp32_groups", None) or [] for t in group]
    for flat in ("single_partition_of_fp32_groups", "fp32_partitioned_groups_flat"):
        masters += list(getattr(optimizer, flat, None) or [])
    partitions = [p.ds_tensor for p in module.parameters() if getattr(p, "ds_tensor", None) is not None]
    return [*module.parameters(), *module.buffers(), *partitions, *masters]


def _resume(monkeypatch, cfg, *, reference):
    """Resume `cfg` for its remaining steps: the reference builds the model with its init; otherwise every tensor
    built unfilled is NaN, and none may be after the load. Returns whether the model trained was built unfilled."""
    real_restore, built, trained = trainer_mod.restore, [], []

    def restore(engine, *args, **kwargs):
        trained.append(engine.module)
        out = real_restore(engine, *args, **kwargs)
        left = [t for t in _engine_tensors(engine) if t.is_floating_point() and not torch.isfinite(t).all()]
        assert not left, f"{len(left)} tensors still hold the unfilled build's NaN after the load"
        return out

    real_to_empty = nan_filled_to_empty(torch.nn.Module.to_empty)

    def to_empty(module, **kwargs):
        built.append(module)
        return real_to_empty(module, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(trainer_mod, "restore", restore)
        if reference:
            patch.setattr(trainer_mod, "loads_every_tensor", lambda *args: False, raising=False)
        else:
            patch.setattr(torch.nn.Module, "to_empty", to_empty)
        assert train(cfg, resume="auto", evaluate_held_in=False).step == 5
    return any(module is trained[0] for module in built)


def _assert_same_runs(tmp_path, a, b):
    records = [step_records(tmp_path / run) for run in (a, b)]
    for step in (4, 5):  # the same examples and losses after the resume, bit for bit
        assert records[1][step]["task_examples"] == records[0][step]["task_examples"]
        assert records[1][step]["loss"] == records[0][step]["loss"]
    weights = [load_trained_model(tmp_path / run)[0].state_dict() for run in (a, b)]
    assert weights[0].keys() == weights[1].keys()
    assert [k for k in weights[0] if not torch.equal(weights[0][k], weights[1][k])] == []


@pytest.mark.parametrize("name", list(RUNS))
def test_a_resume_whose_load_fills_every_tensor_builds_no_init_and_trains_as_the_initialised_build(
        tmp_path, tok, name, monkeypatch):
    # was: every resume built the model with its random init, which DeepSpeed's load then overwrote
    model, training, before, after, unfilled = RUNS[name]
    train(_config(tmp_path / "cut", tok, tmp_path / "cache", model, training, before, 3), evaluate_held_in=False)
    shutil.copytree(tmp_path / "cut", tmp_path / "reference")
    _resume(monkeypatch, _config(tmp_path / "reference", tok, tmp_path / "cache", model, training, after, 5),
            reference=True)
    built = _resume(monkeypatch, _config(tmp_path / "cut", tok, tmp_path / "cache", model, training, after, 5),
                    reference=False)
    assert built == unfilled
    _assert_same_runs(tmp_path, "reference", "cut")


def test_a_resume_into_deepspeeds_bf16_optimizer_through_the_universal_format_builds_no_init(tmp_path, tok,
                                                                                              monkeypatch):
    # ZeRO-1 in bf16 accumulating gradients in fp32 trains with DeepSpeed's bf16 optimizer (BF16_Optimizer), whose
    # universal load is its own; the weights compared are the exported fp32 masters (`bf16_optimizer_weights`)
    bf16_zero1 = {"zero_stage": 1, "extra": {"data_types": {"grad_accum_dtype": "fp32"}}}
    training, optimizers = {"precision": "bf16"}, []
    train(_config(tmp_path / "cut", tok, tmp_path / "cache", {}, training, {"zero_stage": 2}, 3),
          evaluate_held_in=False)
    shutil.copytree(tmp_path / "cut", tmp_path / "reference")
    _resume(monkeypatch, _config(tmp_path / "reference", tok, tmp_path / "cache", {}, training, bf16_zero1, 5),
            reference=True)
    real_restore = trainer_mod.restore

    def restore(engine, *args, **kwargs):
        optimizers.append(type(engine.optimizer).__name__)
        return real_restore(engine, *args, **kwargs)

    monkeypatch.setattr(trainer_mod, "restore", restore)
    assert _resume(monkeypatch, _config(tmp_path / "cut", tok, tmp_path / "cache", {}, training, bf16_zero1, 5),
                   reference=False)
    assert optimizers == ["BF16_Optimizer"]
    _assert_same_runs(tmp_path, "reference", "cut")


@pytest.mark.parametrize("own_head", [False, True])
def test_a_pretrained_runs_resume_reads_no_pretrained_weights_and_trains_as_the_initialised_build(
        tmp_path, tok, monkeypatch, own_head):
    # was: the resume read the pretrained folder's weights (from_pretrained), which DeepSpeed's load then overwrote;
    # its frozen weights (LoRA) and its embedding grown for the task tokens come from the checkpoint alone, a
    # folder's own LM head stays its own, and its generation config is the folder's, as from_pretrained reads it
    folder = pretrained_folder(tmp_path, tok, own_head)
    generation = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**generation, "no_repeat_ngram_size": 3}))
    model = {"name_or_path": str(folder), "dims": None, "task_embeddings": True, **LORA}
    zero2 = {"zero_stage": 2}
    train(_config(tmp_path / "cut", tok, tmp_path / "cache", model, {}, zero2, 3), evaluate_held_in=False)
    shutil.copytree(tmp_path / "cut", tmp_path / "reference")
    _resume(monkeypatch, _config(tmp_path / "reference", tok, tmp_path / "cache", model, {}, zero2, 5),
            reference=True)

    def not_read(*args, **kwargs):
        raise AssertionError("the resume read the pretrained weights")

    real_restore, generation_configs = trainer_mod.restore, []

    def restore(engine, *args, **kwargs):
        generation_configs.append(engine.module.generation_config.to_dict())
        return real_restore(engine, *args, **kwargs)

    monkeypatch.setattr(trainer_mod, "restore", restore)
    monkeypatch.setattr(T5ForConditionalGeneration, "from_pretrained", not_read)
    assert _resume(monkeypatch, _config(tmp_path / "cut", tok, tmp_path / "cache", model, {}, zero2, 5),
                   reference=False)
    monkeypatch.undo()
    _assert_same_runs(tmp_path, "reference", "cut")
    assert generation_configs == [T5ForConditionalGeneration.from_pretrained(folder).generation_config.to_dict()]
    assert generation_configs[0]["no_repeat_ngram_size"] == 3


@pytest.mark.parametrize("stage, file", [(0, "mp_rank_00_model_states.pt"),
                                         (3, "zero_pp_rank_0_mp_rank_00_model_states.pt")])
def test_a_checkpoint_whose_module_state_lacks_a_tensor_is_refused_naming_the_file_and_the_tensor(tmp_path, tok,
                                                                                                  stage, file):
    # was: DeepSpeed's strict load refused it after the engine started, its message cut to its first lines
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 2},
                      deepspeed={"zero_stage": stage})
    train(cfg, evaluate_held_in=False)
    states = tmp_path / "run" / "checkpoints" / "step-00000002" / "ds" / file
    saved = torch.load(states, weights_only=False)
    del saved["module"]["decoder.final_layer_norm.weight"]
    torch.save(saved, states)
    with pytest.raises(CheckpointError) as refused:
        train({**cfg, "training": {**cfg["training"], "steps": 3}}, resume="auto", evaluate_held_in=False)
    assert str(refused.value) == (f"{states} holds no decoder.final_layer_norm.weight of this run's model: resume "
                                  f"with the model settings the checkpoint was trained with, or from another "
                                  f"checkpoint")


def test_a_model_with_a_buffer_outside_its_state_dict_is_built_with_its_init(tmp_path, tok, monkeypatch):
    # a buffer no load fills (persistent=False) would keep the unfilled build's NaN
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 2})
    train(cfg, evaluate_held_in=False)
    real_build, real_restore, scales = trainer_mod.build_model, trainer_mod.restore, []

    def with_buffer(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.encoder.register_buffer("scale", torch.ones(2), persistent=False)
        return model

    def restore(engine, *args, **kwargs):
        scales.append(engine.module.encoder.scale.clone())
        return real_restore(engine, *args, **kwargs)

    monkeypatch.setattr(trainer_mod, "build_model", with_buffer)
    monkeypatch.setattr(trainer_mod, "restore", restore)
    monkeypatch.setattr(torch.nn.Module, "to_empty", nan_filled_to_empty(torch.nn.Module.to_empty))
    train({**cfg, "training": {**cfg["training"], "steps": 3}}, resume="auto", evaluate_held_in=False)
    assert [scale.tolist() for scale in scales] == [[1.0, 1.0]]


@pytest.mark.parametrize("zero, fills", [
    ({"stage": 0}, True), ({"stage": 2}, True), ({"stage": 3}, True),
    ({"stage": 3, "offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "cpu"}}, True),
    ({"stage": 3, "offload_optimizer": {"device": "nvme"}}, False),
    ({"stage": 3, "offload_param": {"device": "nvme"}}, False),
])
def test_the_load_may_fill_every_tensor_without_an_nvme_offload(zero, fills):
    # an NVMe offload's load copies swapped-out tensors, which the proof does not follow
    from t2t_mtl.engine.resumed_model import loads_every_tensor

    assert loads_every_tensor({"zero_optimization": zero}) is fills


def test_the_tensors_no_load_fills_are_the_buffers_outside_the_state_dict():
    # (the universal format's load restores the trained parameters alone: the resume writes the frozen ones and the
    # saved buffers from the module state, `universal_frozen.frozen_names`; a buffer outside the state dict: nothing)
    from t2t_mtl.engine.resumed_model import left_unfilled
    from t2t_mtl.engine.universal_frozen import frozen_names

    model = torch.nn.Module()
    model.trained, model.frozen = (torch.nn.Parameter(torch.zeros(1)) for _ in range(2))
    model.frozen.requires_grad_(False)
    model.register_buffer("saved", torch.zeros(1))
    model.register_buffer("unsaved", torch.zeros(1), persistent=False)
    assert left_unfilled(model) == ["unsaved"]
    assert frozen_names(model) == ["frozen", "saved"]
    assert left_unfilled(torch.nn.Linear(2, 2)) == [] and frozen_names(torch.nn.Linear(2, 2)) == []


@pytest.mark.parametrize("model, deepspeed", [(MOE, {"zero_stage": 3}), (MOE, PARTITIONED), (LORA, PARTITIONED)])
def test_a_zero3_resume_through_the_universal_format_builds_no_init_and_trains_as_the_initialised_build(
        tmp_path, tok, monkeypatch, model, deepspeed):
    # (DeepSpeed's universal load at ZeRO-3, which a resume under another world size takes, in one process: the
    # resume of a one-rank checkpoint sent through it) was built with its random init; LoRA's frozen partitions are
    # written from the saved frozen_param_fragments
    training = {"precision": "bf16"}
    train(_config(tmp_path / "cut", tok, tmp_path / "cache", model, training, deepspeed, 3), evaluate_held_in=False)
    shutil.copytree(tmp_path / "cut", tmp_path / "reference")
    real_convert, converted = trainer_mod.universal_conversion.ensure_universal, []

    def ensure_universal(*args):
        converted.append(args)
        return real_convert(*args)

    monkeypatch.setattr(trainer_mod, "loads_through_universal", lambda *args: True)
    monkeypatch.setattr(trainer_mod.universal_conversion, "ensure_universal", ensure_universal)
    _resume(monkeypatch, _config(tmp_path / "reference", tok, tmp_path / "cache", model, training, deepspeed, 5),
            reference=True)
    assert _resume(monkeypatch, _config(tmp_path / "cut", tok, tmp_path / "cache", model, training, deepspeed, 5),
                   reference=False)
    assert len(converted) == 2
    monkeypatch.undo()
    _assert_same_runs(tmp_path, "reference", "cut")


def test_a_zero3_resume_through_the_universal_format_does_not_check_the_module_states_it_never_reads(tmp_path, tok,
                                                                                                     monkeypatch):
    # the universal load reads no module state, so its rank's own (which a rank past the checkpoint's world size does
    # not have at all) is not checked for the unfilled build's tensors: a ZeRO-3 module state lacking one still
    # resumes, every tensor filled from the converted fp32 masters
    model, training = MOE, {"precision": "bf16"}
    train(_config(tmp_path / "run", tok, tmp_path / "cache", model, training, PARTITIONED, 3), evaluate_held_in=False)
    states = tmp_path / "run" / "checkpoints" / "step-00000003" / "ds" / "zero_pp_rank_0_mp_rank_00_model_states.pt"
    saved = torch.load(states, weights_only=False)
    del saved["module"]["decoder.final_layer_norm.weight"]
    torch.save(saved, states)
    monkeypatch.setattr(trainer_mod, "loads_through_universal", lambda *args: True)
    assert _resume(monkeypatch, _config(tmp_path / "run", tok, tmp_path / "cache", model, training, PARTITIONED, 5),
                   reference=False)


def test_a_universal_conversion_lacking_a_trained_weight_is_refused_naming_it(tmp_path, tok, monkeypatch):
    # was: DeepSpeed's ZeRO-1/2 universal load skips a parameter whose fp32.pt is missing without a word, the weight
    # kept as built (its random init)
    train(_config(tmp_path / "run", tok, tmp_path / "cache", {}, {}, {"zero_stage": 1}, 2), evaluate_held_in=False)
    real_convert = trainer_mod.universal_conversion.ensure_universal

    def damaged(*args):
        folder = real_convert(*args)
        (folder / "zero" / "decoder.final_layer_norm.weight" / "fp32.pt").unlink()
        return folder

    monkeypatch.setattr(trainer_mod.universal_conversion, "ensure_universal", damaged)
    with pytest.raises(CheckpointError) as refused:
        train(_config(tmp_path / "run", tok, tmp_path / "cache", {}, {}, {"zero_stage": 2}, 3), resume="auto",
              evaluate_held_in=False)
    folder = tmp_path / "run" / "checkpoints" / "step-00000002" / UNIVERSAL_TAG
    assert str(refused.value) == (f"{folder / 'zero'} holds no fp32 weights of decoder.final_layer_norm.weight of "
                                  f"this run's model: the conversion to DeepSpeed's universal format is incomplete; "
                                  f"remove {folder} for the resume to convert the checkpoint again, or resume from "
                                  f"another checkpoint")


def test_a_checkpoint_in_torchs_legacy_serialization_resumes_unfilled(tmp_path, tok, monkeypatch):
    # (DeepSpeed's checkpoint.checkpoint_serialization: false) was refused as corrupt: its module state cannot be
    # memory-mapped, which the check of its names did (ZeRO-0: DeepSpeed's zero_to_fp32, which export uses at ZeRO
    # 1-3, memory-maps the files it reads too)
    legacy = {"extra": {"checkpoint": {"checkpoint_serialization": False}}}
    train(_config(tmp_path / "cut", tok, tmp_path / "cache", {}, {}, legacy, 3), evaluate_held_in=False)
    states = tmp_path / "cut" / "checkpoints" / "step-00000003" / "ds" / "mp_rank_00_model_states.pt"
    assert not zipfile.is_zipfile(states)
    shutil.copytree(tmp_path / "cut", tmp_path / "reference")
    _resume(monkeypatch, _config(tmp_path / "reference", tok, tmp_path / "cache", {}, {}, legacy, 5), reference=True)
    assert _resume(monkeypatch, _config(tmp_path / "cut", tok, tmp_path / "cache", {}, {}, legacy, 5),
                   reference=False)
    _assert_same_runs(tmp_path, "reference", "cut")


@pytest.mark.parametrize("stage, rank", [(0, 0), (0, 1), (2, 1), (3, 0), (3, 1)])
def test_the_module_state_a_rank_loads_is_the_file_deepspeed_names_for_it(tmp_path, stage, rank):
    # mutation testing: every rank reading rank 0's ZeRO-3 file passed every test (all one process). DeepSpeed's
    # engine names the file it loads a rank's module state from (`_get_ckpt_name`, the reference): its own at ZeRO-3,
    # where the weights are partitioned, else the one file of model parallel rank 0
    from deepspeed.runtime.engine import DeepSpeedEngine

    from t2t_mtl.engine.checkpoint import DS_TAG
    from t2t_mtl.engine.resumed_model import module_state_file

    engine = SimpleNamespace(checkpoint_mp_rank=0, zero_optimization_partition_weights=lambda: stage == 3)
    expected = DeepSpeedEngine._get_ckpt_name(engine, str(tmp_path), DS_TAG, pp_placeholder=rank)
    assert module_state_file(tmp_path, stage, rank) == Path(expected)


@pytest.mark.parametrize("missing, named", [(5, "a, b, c, d, e"), (7, "a, b, c, d, e and 2 more")])
def test_a_module_state_lacking_many_tensors_is_refused_naming_the_first_five_and_how_many_more(tmp_path, missing,
                                                                                                named):
    # mutation testing: naming four, or ' and 0 more' after exactly five, passed every test, whose checkpoints all
    # lacked one tensor
    from t2t_mtl.engine.resumed_model import check_load_fills

    names = "abcdefg"[:missing]
    model = torch.nn.Module()
    for name in [*names, "z"]:
        model.register_parameter(name, torch.nn.Parameter(torch.zeros(1)))
    states = tmp_path / "ds" / "mp_rank_00_model_states.pt"
    states.parent.mkdir()
    torch.save({"module": {"z": torch.zeros(1)}}, states)
    with pytest.raises(CheckpointError) as refused:
        check_load_fills(model, tmp_path, 0, 0)
    assert str(refused.value) == (f"{states} holds no {named} of this run's model: resume with the model settings "
                                  f"the checkpoint was trained with, or from another checkpoint")


def test_a_module_state_that_cannot_be_read_is_refused_as_an_incomplete_checkpoint(tmp_path):
    # mutation testing: its reading error passing out unwrapped (a raw UnpicklingError or the like) passed every test
    from t2t_mtl.engine.resumed_model import check_load_fills

    states = tmp_path / "ds" / "mp_rank_00_model_states.pt"
    states.parent.mkdir()
    states.write_bytes(b"cut short")
    with pytest.raises(CheckpointError) as refused:
        check_load_fills(torch.nn.Linear(1, 1), tmp_path, 0, 0)
    message = str(refused.value)
    assert message.startswith(f"{states} (the saved module state) cannot be read ("), message
    assert message.endswith("); the checkpoint is incomplete or corrupt: resume from an earlier one (--resume "
                            "<run>/checkpoints/step-N) or remove it"), message


@pytest.mark.parametrize("missing, named", [(1, "a"), (5, "a, b, c, d, e"), (7, "a, b, c, d, e and 2 more")])
def test_a_universal_folder_lacking_trained_weights_names_the_first_five_and_not_a_frozen_ones(tmp_path, missing,
                                                                                               named):
    # mutation testing: also naming a frozen parameter the folder lacks, naming four, or ' and 0 more' after five passed
    # its tests, whose models trained every weight and whose folders lacked one. DeepSpeed's universal load reads
    # the fp32 masters of the trained parameters alone (a frozen one keeps the build's weight), so a frozen
    # parameter's absence is no gap
    from t2t_mtl.engine.resumed_model import check_universal_fills

    names = "abcdefg"[:missing]
    model = torch.nn.Module()
    for name in [*names, "frozen", "z"]:
        model.register_parameter(name, torch.nn.Parameter(torch.zeros(1), requires_grad=name != "frozen"))
    (tmp_path / "zero" / "z").mkdir(parents=True)
    torch.save(torch.zeros(1), tmp_path / "zero" / "z" / "fp32.pt")
    with pytest.raises(CheckpointError) as refused:
        check_universal_fills(model, tmp_path)
    assert str(refused.value) == (f"{tmp_path / 'zero'} holds no fp32 weights of {named} of this run's model: the "
                                  f"conversion to DeepSpeed's universal format is incomplete; remove {tmp_path} for "
                                  f"the resume to convert the checkpoint again, or resume from another checkpoint")
    model.a.requires_grad_(False)  # (each trained weight there: nothing to refuse)
    for name in names[1:]:
        (tmp_path / "zero" / name).mkdir()
        torch.save(torch.zeros(1), tmp_path / "zero" / name / "fp32.pt")
    check_universal_fills(model, tmp_path)
