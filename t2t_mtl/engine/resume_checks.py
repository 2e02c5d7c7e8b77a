"""What a resume must keep: the checks that refuse to resume a checkpoint into a run whose tasks, ZeRO stage,
precision, LoRA, task embeddings, `RESUME_SETTINGS`, training templates, task sizes or model shapes differ from the
checkpoint's, each naming the config key that changed (all before DeepSpeed starts); and the parts of a run's config
its checkpoints save for them (`lora_section`, `model_section`, `resume_settings`). Changes that keep the weights
and data positions valid are warned of instead (`model_change_warning`, `template_change_warnings`)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch

from t2t_mtl.config import Config, ModelConfig
from t2t_mtl.engine.checkpoint import CheckpointError, read_meta
from t2t_mtl.model.lora import lora_settings, lora_signature
from t2t_mtl.model.moe_config import MoEConfig
from t2t_mtl.model.t5 import model_config

__all__ = ["MODEL_SETTINGS", "RESUME_SETTINGS", "check_compatible", "check_model_shapes", "check_resume_config",
           "check_task_sizes", "check_templates", "lora_section", "model_section", "own_dims", "parameter_shapes",
           "resume_settings", "template_change_warnings"]


_UNSET: Any = object()


#: config keys whose saved state (sampler, data streams, weighting) belongs to their value, with what to do
RESUME_SETTINGS = {
    "training.seed": "resume with the same seed (the data streams and the sampler continue its sequences)",
    "sampling.strategy": "resume with the same sampling strategy (the sampler state belongs to it)",
    "weighting.method": "resume with the same loss weighting (its state, e.g. learned log-variances, belongs to it)",
    "data.max_examples_per_task": "resume with the same data.max_examples_per_task (it sets the task sizes, which "
                                  "the saved data order and epoch counts belong to)",
    "data.all_templates": "resume with the same data.all_templates (it sets the task sizes and the template each "
                          "data position holds, which the saved data order belongs to)",
}


def resume_settings(cfg: Any) -> Dict[str, Any]:
    """The `RESUME_SETTINGS` values of a run config, as saved in a checkpoint's meta ("settings")."""
    def value(key: str) -> Any:
        section, name = key.split(".")
        part = getattr(cfg, section)
        return part.get(name) if isinstance(part, Mapping) else getattr(part, name)  # (free-form sections: dicts)

    return {key: value(key) for key in RESUME_SETTINGS}


def check_task_sizes(ckpt: Path, saved: Mapping[str, int], sizes: Mapping[str, int]) -> None:
    """Refuse to resume `ckpt`, whose tasks had the sizes `saved`, into a run whose tasks have other `sizes` (their
    data changed): the saved data positions and epochs belong to the saved sizes. Raises CheckpointError naming
    the tasks and where their data comes from."""
    was = {task: n for task, n in saved.items() if sizes.get(task) != n}
    if was:
        now = {task: sizes.get(task) for task in was}
        raise CheckpointError(
            f"checkpoint {ckpt} was written for task sizes {was}, this run's tasks have {now}: the saved data "
            f"positions and epochs belong to those sizes; resume with the same task data (data.data_dir, the task "
            f"files of data.tasks_dir, data.templates), or set training.output_dir to a new directory to start a "
            f"new run")


def check_templates(ckpt: Path, saved: Mapping[str, Sequence[str]], now: Mapping[str, Sequence[str]],
                    templates: Optional[Sequence[str]], every_template: bool) -> None:
    """Refuse to resume `ckpt`, whose tasks were trained in the templates `saved` ({task: names, in order}), into a
    run training them in others, or in another order (`now`; `templates`: its data.templates; `every_template`: its
    data.all_templates): the list sets the template each saved data position holds — each row is trained in every
    one of them in turn, or in the one drawn from the seed and the row's index. Raises CheckpointError naming the
    first such task and both lists."""
    for task, names in now.items():
        was = saved.get(task)
        if was is not None and list(was) != list(names):
            chosen = (f"data.templates = {templates!r}" if templates is not None
                      else "data.templates unset: all of the task's own")
            why = ("with data.all_templates each row is trained in every one of them in turn, so they set the task's "
                   "size and the template each saved data position holds" if every_template else
                   "each row is trained in the one of them drawn from training.seed and the row's index, so they set "
                   "the template each saved data position holds (the resumed run would train other prompts than "
                   "the run it continues)")
            raise CheckpointError(
                f"checkpoint {ckpt} trained task {task!r} in the templates {list(was)}, this run trains it in "
                f"{list(names)} ({chosen}): {why}; resume with the same data.templates (and task definitions: a "
                f"YAML task's `templates:`), or set training.output_dir to a new directory to start a new run")


def template_change_warnings(ckpt: Path, meta: Mapping[str, Any], digests: Mapping[str, Mapping[str, str]]
                             ) -> List[str]:
    """One warning a task naming its templates whose definition changed under the same name since checkpoint `ckpt`
    was written: their `Template.render_digest()` in this run (`digests`: {task: {template: digest}}) differs from the
    checkpoint's (meta "template_digests"). An edited template is a deliberate edit, so the resumed run goes on and
    trains the new text from the resumed step. No warning for an older checkpoint, which lacks the digests, nor for
    a template it did not train."""
    saved = meta.get("template_digests") or {}
    warnings = []
    for task, now in digests.items():
        was = saved.get(task) or {}
        edited = [name for name, digest in now.items() if name in was and was[name] != digest]
        if edited:
            warnings.append(
                f"the template(s) {edited} of task {task!r} changed under the same name since checkpoint {ckpt} "
                f"was written (their Jinja, answer_choices or references differ): the resumed steps train the new "
                f"text, the steps before it trained the old one (restore the old definition to go on unchanged)")
    return warnings


def check_compatible(ckpt: Path, meta: Dict[str, Any], *, tasks: Any = None, zero_stage: Optional[int] = None,
                     precision: Optional[str] = None, auto_reason: Optional[str] = None, lora: Any = _UNSET,
                     task_embeddings: Optional[bool] = None, settings: Optional[Dict[str, Any]] = None) -> None:
    """Refuse to resume `ckpt` into a run whose tasks, ZeRO stage, precision, LoRA settings (None: no LoRA),
    task embeddings or `settings` (`resume_settings`; checkpoints before 2026-12-03 lack them) differ from the
    checkpoint's (each given value is compared with `meta`; an omitted one is not). Raises CheckpointError naming
    the config key. `auto_reason`: where training.precision auto chose `precision`, what it chose on this machine and
    why (`auto_precision_reason`), so a bf16 or fp32 checkpoint (a run moved to another kind of machine) is told to
    name its own precision."""
    def refuse(key: str, was: Any, now: Any, what: str, why: str = "") -> None:
        raise CheckpointError(f"checkpoint {ckpt} was written with {key} = {was!r}, this run has {now!r}{why}: "
                              f"{what}, or set training.output_dir to a new directory to start a new run")

    if tasks is not None and "tasks" in meta and list(meta["tasks"]) != list(tasks):
        refuse("tasks", list(meta["tasks"]), list(tasks), "resume with the same data.mixture / data.tasks / "
               "data.held_out_clusters (the task ids and the sampler state belong to those tasks)")
    if zero_stage is not None and "zero_stage" in meta and int(meta["zero_stage"]) != int(zero_stage):
        refuse("deepspeed.zero_stage", meta["zero_stage"], zero_stage,
               "resume with the same ZeRO stage (its optimizer files are laid out per stage)")
    if precision is not None and "precision" in meta and meta["precision"] != precision:
        if auto_reason is not None and meta["precision"] in ("bf16", "fp32"):
            refuse("training.precision", meta["precision"], precision,
                   f"set training.precision: {meta['precision']} to resume it here",
                   f" (training.precision auto: {auto_reason})")
        refuse("training.precision", meta["precision"], precision, "resume with the same precision")
    if task_embeddings is not None and "task_embeddings" in meta and bool(meta["task_embeddings"]) != task_embeddings:
        refuse("model.task_embeddings", bool(meta["task_embeddings"]), task_embeddings,
               "resume with the same model.task_embeddings (the model was trained with or without a task token in "
               "front of every input)")
    for key, now in (settings or {}).items():
        saved = meta.get("settings", {})
        if key in saved and saved[key] != now:
            refuse(key, saved[key], now, RESUME_SETTINGS[key])
    if lora is not _UNSET and lora_signature(meta.get("lora")) != lora_signature(lora):
        refuse("model.lora", meta.get("lora"), lora, "resume with the same model.lora rank, alpha, targets, "
               "trainable and per_task (they decide which weights exist, train and how they combine; dropout may "
               "change); to adapt a finished run anew, export it and start from the export (model.name_or_path)")


def parameter_shapes(model: torch.nn.Module) -> Dict[str, str]:
    """{parameter name: shape as "64x32"} of a model before DeepSpeed partitions it: what the weights of its
    checkpoints fit (saved in their meta as "param_shapes")."""
    return {name: "x".join(map(str, p.shape)) for name, p in model.named_parameters()}


#: the model section's keys that decide the weights' shapes (with the LoRA settings, task embeddings and the
#: tokenizer, which a resume compares before)
MODEL_SETTINGS = ("name_or_path", "dims", "moe")


def check_model_shapes(ckpt: Path, meta: Mapping[str, Any], model: Mapping[str, Any], shapes: Mapping[str, str],
                       own_dims: Optional[Mapping[str, Any]] = None) -> None:
    """Refuse to resume `ckpt` into a model whose parameter shapes (`parameter_shapes`) are not those of its weights
    (meta "param_shapes"; a checkpoint before 2026-12-05 lacks them, and DeepSpeed's load reports a mismatch),
    before the engine starts. The CheckpointError names the `MODEL_SETTINGS` of this run's model section (`model`)
    that differ from the checkpoint's (meta "model"), with both values (`own_dims` as for `model_change_warning`),
    and the first parameter that does not fit."""
    saved = meta.get("param_shapes")
    if saved is None or dict(saved) == dict(shapes):
        return
    name = next(n for n in sorted(set(saved) | set(shapes)) if saved.get(n) != shapes.get(n))
    changes = "; ".join(f"{key} = {was}, this run has {now}"
                        for key, was, now in _model_changes(meta.get("model") or {}, model, own_dims or {}))
    there, here = (f"shape {shape}" if shape is not None else "absent" for shape in (saved.get(name), shapes.get(name)))
    raise CheckpointError(
        f"checkpoint {ckpt} was written with {changes or 'the same model settings'}: its weights do not fit this "
        f"run's model ({name}: {there} there, {here} here); resume with the model settings the checkpoint was "
        f"trained with, or set training.output_dir to a new directory to start a new run")


def model_change_warning(ckpt: Path, meta: Mapping[str, Any], model: Mapping[str, Any],
                         own_dims: Optional[Mapping[str, Any]] = None) -> Optional[str]:
    """A warning naming the `MODEL_SETTINGS` of this run's model section (`model`) that differ from the checkpoint's
    (meta "model") while its weights still fit (`check_model_shapes` refuses the others): dropout, the relative
    attention distance, the MoE top_k or capacity change the trained model from the resumed step on. A model.dims
    key a side leaves unset has the model's own value there, compared and named so ("the model's own 0.1"):
    `own_dims`, this run's model's (`own_dims`; None: not known, named "unset"), on the checkpoint's side only
    where its model.name_or_path is this run's; a model.moe key its default ("the default 2"). None when nothing
    changed, or the checkpoint predates saving its model section. A changed model.name_or_path (or model.moe.upcycle,
    which only decides how a new run's experts start) is said to change no weight: a resume loads them all from the
    checkpoint (`universal_frozen` fills the frozen ones in the universal
    format too); but a LoRA run in half precision is told that its export reads the frozen weights' fp32 values
    from the folder (`export._frozen_originals`)."""
    if meta.get("model") is None:
        return None
    changes = list(_model_changes(meta["model"], model, own_dims or {}))
    if not changes:
        return None
    keys = {key for key, _, _ in changes}
    notes = ["its weights fit, so the resumed run trains with the new settings from the resumed step (resume with "
             "the old ones to go on unchanged)"] if keys - {"model.name_or_path", "model.moe.upcycle"} else []
    if "model.name_or_path" in keys and meta.get("lora") and meta.get("precision") in ("bf16", "fp16"):
        notes.append(f"the resumed run takes every weight, frozen ones too, from the checkpoint, but it holds the "
                     f"frozen ones in {meta['precision']} alone: export, eval and predict read their fp32 values from "
                     f"model.name_or_path, which the run's config.yaml will name, so resume with the folder the run "
                     f"started from")
    elif "model.name_or_path" in keys:
        notes.append("the resumed run takes every weight, frozen ones too, from the checkpoint: model.name_or_path "
                     "only names what a new run starts from")
    if "model.moe.upcycle" in keys:
        notes.append("model.moe.upcycle only decides how a new run's experts start (copies of the dense feed-forward "
                     "layer, or freshly initialised): the resumed run takes them from the checkpoint")
    named = "; ".join(f"{key} = {was} there, {now} here" for key, was, now in changes)
    return f"this run's model settings differ from checkpoint {ckpt}'s: {named}; {'; '.join(notes)}"


def own_dims(model: ModelConfig, saved: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The T5 config values the model of section `model` has where its model.dims leaves a key unset: a pretrained
    model's own (`saved`: its config dict, `check_t5_checkpoint`'s), else T5Config's defaults."""
    return model_config(dataclasses.replace(model, dims={}), saved).to_dict()


def _model_changes(was: Mapping[str, Any], now: Mapping[str, Any], own: Mapping[str, Any]
                   ) -> Iterator[Tuple[str, str, str]]:
    """(config key, checkpoint's value, this run's), as written in a message, of each `MODEL_SETTINGS` entry that
    differs, a mapping's (model.dims, model.moe) key by key; a key unset on a side compared as its value there: a
    dims key's the model's own value `own` (this run's model's: on the checkpoint's side only where its name_or_path
    is this run's), a moe key's its default."""
    for key in MODEL_SETTINGS:
        old, new = was.get(key), now.get(key)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            if key == "dims":
                same_model = was.get("name_or_path") == now.get("name_or_path")
                unset_old, unset_new = ((own if same_model else {}), "the model's own"), (own, "the model's own")
            else:  # (model.moe beside a model that is an MoE already is refused: its keys' defaults are MoEConfig's)
                unset_old = unset_new = (_MOE_DEFAULTS, "the default")
            for k in sorted(set(old) | set(new)):
                there, here = _setting(old, k, *unset_old), _setting(new, k, *unset_new)
                if there[0] != here[0]:
                    yield f"model.{key}.{k}", there[1], here[1]
        elif old != new:
            yield f"model.{key}", repr(old), repr(new)


#: the value of each model.moe key a section leaves unset
_MOE_DEFAULTS = {f.name: f.default for f in dataclasses.fields(MoEConfig) if f.default is not dataclasses.MISSING}


def _setting(section: Mapping[str, Any], key: str, unset: Mapping[str, Any], label: str) -> Tuple[Any, str]:
    """The value of `key` in model section mapping `section`, else its value `unset` there (worded after `label`,
    e.g. "the model's own 0.1"), and its wording."""
    if key in section:
        return section[key], repr(section[key])
    if key in unset:
        return unset[key], f"{label} {unset[key]!r}"
    return None, "unset"


def lora_section(cfg: Config) -> Optional[Dict[str, Any]]:
    """The run's LoRA settings (defaults filled in) as saved in checkpoints, or None without LoRA."""
    lora = lora_settings(cfg.model.lora)
    return lora.to_dict() if lora is not None else None


def check_resume_config(cfg: Config, ckpt: Path, task_names: Sequence[str],
                        template_names: Mapping[str, Sequence[str]]) -> Dict[str, Any]:
    """The meta of checkpoint `ckpt`, once `cfg` (training `task_names` in the templates `template_names`, {task:
    names in order}: `training_templates.template_names_of`) may resume it: a changed task list, LoRA, task embeddings,
    `RESUME_SETTINGS` key or task's templates would misread task ids, sampler state, data positions or weights, and
    is refused now (CheckpointError naming the key)."""
    meta = read_meta(ckpt)
    check_compatible(ckpt, meta, tasks=list(task_names), lora=lora_section(cfg),
                     task_embeddings=bool(cfg.model.task_embeddings), settings=resume_settings(cfg))
    if "templates" in meta:  # (checkpoints before 2026-12-05 lack them)
        check_templates(ckpt, meta["templates"], template_names, cfg.data.templates, bool(cfg.data.all_templates))
    return meta


def model_section(cfg: Config) -> Dict[str, Any]:
    """The run's `MODEL_SETTINGS` (model.name_or_path, dims, moe) as saved in checkpoints."""
    section = cfg.to_dict()["model"]
    return {key: section.get(key) for key in MODEL_SETTINGS}
