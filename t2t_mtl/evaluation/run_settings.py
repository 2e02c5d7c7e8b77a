"""The evaluation settings a run's own config gives: `EvalSettings.from_run`, and what `t2t-mtl eval` and `predict`
of the run take for each option not given (`t2t_mtl.cli.eval_defaults`, `t2t_mtl.cli.common.decoding_settings`), one
derivation for both."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

from t2t_mtl.evaluation.eval_settings import EvalSettings

#: EvalSettings field: the run config keys its value is read from, the first one set winning (none: EvalSettings'
#: default, as for a model folder without a run config)
RUN_KEYS: Dict[str, Tuple[str, ...]] = {
    "split": ("evaluation.split",),
    "max_examples": ("evaluation.max_examples",),
    "scoring": ("evaluation.scoring",),
    "length_normalize": ("evaluation.length_normalize",),
    "num_beams": ("evaluation.num_beams",),
    "max_new_tokens": ("evaluation.max_new_tokens", "data.max_target_length"),
    "batch_size": ("evaluation.batch_size",),
    "max_input_length": ("evaluation.max_input_length", "data.max_input_length"),
    "num_shots": ("evaluation.num_shots",),
    "shots_split": ("evaluation.shots_split",),
    "original_task_only": ("evaluation.original_task_only",),
    "seed": ("training.seed",),  # (the trainer's evaluation renders templates and draws demonstrations with it)
}


def run_config_value(meta: Mapping[str, Any], key: str) -> Any:
    """The value at the dotted `key` of the run config in a checkpoint's `meta` (None where it sets none, or for a
    model folder without one)."""
    section, name = key.split(".")
    return (((meta.get("config") or {}).get(section)) or {}).get(name)


def run_setting(meta: Mapping[str, Any], field: str) -> Any:
    """The EvalSettings `field` (a `RUN_KEYS` key) a run's own evaluation used: its first `RUN_KEYS` config value that
    is set, else EvalSettings' default."""
    value = next((value for value in (run_config_value(meta, key) for key in RUN_KEYS[field]) if value is not None),
                 None)
    return getattr(EvalSettings, field) if value is None else value


def settings_of_run(meta: Mapping[str, Any], **given: Any) -> EvalSettings:
    """The EvalSettings of a run (`meta`) with `given` fields: each `RUN_KEYS` field given and not None, else the
    run's (`run_setting`); other fields as given. Without demonstrations (num_shots 0) there is no `shots_split`."""
    values = {field: run_setting(meta, field) if given.get(field) is None else given[field] for field in RUN_KEYS}
    if not values["num_shots"]:
        values["shots_split"] = None
    return EvalSettings(**values, **{key: value for key, value in given.items() if key not in RUN_KEYS})
