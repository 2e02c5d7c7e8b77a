"""Layered YAML configuration for training runs.

A run's configuration is built from layers, later ones overriding earlier ones key by key (except that a layer's
`data.tasks` replaces the lower layers' whole, mapping or list; a dotted `--set data.tasks.NAME=RATE` sets one
task's rate):

1. `t2t_mtl/configs/default.yaml` (every key, with its default),
2. the chain of `base:` files named by the user's file (a path relative to that file or the name of a
   packaged config, e.g. `base: quickstart`),
3. the user's YAML file,
4. `--set a.b=c` overrides (values parsed as YAML: `--set training.lr=3e-4`, `--set data.tasks=[a,b]`).

Every key is checked against the schema below before anything runs: an unknown key is reported with the
closest known names, a wrong type names the key, the expected type and the value. Sections whose contents
belong to another component (`sampling`, `weighting`, `gradient_surgery`, `model.moe`, `model.lora`, `evaluation`,
`deepspeed.extra`) are free-form dicts here and are validated by their owners' builders.

This module holds the schema and the entry points; `config_layers` reads and merges the layers, `config_types`
checks keys and types against the schema, `config_values` makes the range and consistency checks (`validate_values`),
`config_paths` checks the paths a run's config names on the disk (`check_paths`), `config_errors` holds the errors;
the functions and errors of those that callers use are re-exported here.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, FrozenSet, List, Literal, Mapping, Optional, Sequence, Union

import yaml

from t2t_mtl.config_errors import ConfigError, ConfigFileError, ConfigTypeError, UnknownConfigKeyError
from t2t_mtl.config_layers import deep_merge, file_layers, layer_keys, parse_overrides, resolve_config_path
from t2t_mtl.config_paths import check_paths, tasks_dirs
from t2t_mtl.config_types import build_dataclass
from t2t_mtl.config_values import PATH_KEYS, PRETRAINED_DIM_KEYS, validate_model, validate_values

__all__ = ["Config", "ConfigError", "ConfigFileError", "ConfigTypeError", "DataConfig",
           "DeepSpeedSection", "ModelConfig", "TOKENIZER_TRAIN_DEFAULTS", "TokenizerConfig", "TrainingConfig",
           "UnknownConfigKeyError",
           "changed_keys", "check_model_source", "check_paths", "config_from_dict", "deep_merge", "load_config",
           "model_config_from_dict", "parse_overrides", "resolve_config_path", "saved_run_config", "tasks_dirs",
           "tokenizer_source", "validate_values"]

logger = logging.getLogger(__name__)


@dataclass
class ModelConfig:
    """`name_or_path`: hub name or local folder; otherwise a T5 is built from `dims` (T5Config kwargs; beside a
    pretrained model a run takes only its `PRETRAINED_DIM_KEYS`, e.g. dropout_rate, over the model's config, as it
    keeps its own sizes; `dims: null` clears a base config's).
    `moe`: task-aware MoE FFNs (`t2t_mtl.model.moe.MoEConfig` keys); `task_embeddings`: a `<task:NAME>` token
    prepended to every encoder input (TE⊕ENC), its embedding learned with the model; `activation_checkpointing`:
    recompute the activations of every (true) or every N-th (an integer N >= 1: blocks 0, N, 2N, ... of each stack)
    encoder/decoder block in the backward instead of keeping them (false: off); `lora`: low-rank adapters on the
    blocks' linear layers, the rest frozen (`t2t_mtl.model.lora.LoRAConfig` keys; true = its defaults)."""

    name_or_path: Optional[str] = None
    dims: Optional[Dict[str, Any]] = field(default_factory=dict)
    moe: Optional[Dict[str, Any]] = None
    lora: Optional[Union[bool, Dict[str, Any]]] = None
    task_embeddings: bool = False
    activation_checkpointing: Union[bool, int] = False

    def __post_init__(self) -> None:
        self.dims = {} if self.dims is None else self.dims  # `dims: null`: none


def changed_keys(section: Any, keys: Sequence[str]) -> List[str]:
    """Those of `keys` that config section `section` (a schema dataclass: `cfg.training`, `cfg.data`, ...) sets
    away from the schema's defaults, in the order given."""
    default = type(section)()
    return [key for key in keys if getattr(section, key) != getattr(default, key)]


def tokenizer_source(cfg: "Config") -> Optional[str]:
    """The tokenizer a fresh run loads: `tokenizer.path`, else a pretrained model's own (`model.name_or_path`:
    a pretrained model's embeddings are indexed by its tokenizer's ids); None: the run trains one."""
    return cfg.tokenizer.path if cfg.tokenizer.path is not None else cfg.model.name_or_path


def check_model_source(model: ModelConfig) -> None:
    """ConfigError when `model.dims` beside `model.name_or_path` sets a key other than `PRETRAINED_DIM_KEYS`: a
    pretrained model keeps its own sizes and architecture, so such a key would be ignored. (A run's check, not a
    schema one: old run configs still export.)"""
    if model.name_or_path is None:
        return
    kept = [key for key in model.dims if key not in PRETRAINED_DIM_KEYS]
    if kept:
        raise ConfigError(f"model.dims and model.name_or_path are both set: the pretrained model "
                          f"{model.name_or_path!r} keeps its own sizes and architecture, so "
                          f"{', '.join(f'model.dims.{key}' for key in kept)} would be ignored; beside it model.dims "
                          f"takes only {', '.join(PRETRAINED_DIM_KEYS)} (how it trains); drop the others "
                          f"(over a base config that sets dims: `dims: null` under model, or --set model.dims=null)")


#: `tokenizer.train`'s options where a config gives none (default.yaml's): the trained tokenizer's SentencePiece
#: pieces and the rows it reads per task
TOKENIZER_TRAIN_DEFAULTS: Mapping[str, int] = {"vocab_size": 512, "max_examples_per_task": 2000}


@dataclass
class TokenizerConfig:
    """`path`: tokenizer name/folder; else a pretrained model's own (`model.name_or_path`), else trained on the
    mixture with `train` options (by each fresh run). Either way kept in the run, where a resumed run reads it."""

    path: Optional[str] = None
    train: Dict[str, Any] = field(default_factory=lambda: dict(TOKENIZER_TRAIN_DEFAULTS))


@dataclass
class DataConfig:
    """Which tasks and how their examples become batches.

    `tasks_dir`: folder(s) of YAML task files registered (on every rank) before the tasks are resolved.
    `task_modules`: Python module(s) imported (on every rank) before them, registering their tasks and mixtures
    (`task_registry.import_task_modules`: a module name on sys.path or a .py file's path).
    `held_out_clusters`: clusters never trained on (dropped from a mixture; an error if named in `tasks`).
    `train_held_out`: tasks flagged `held_out` that may be trained on all the same (deliberately).
    `all_templates`: train each row in every template of its task (`data.templates`' when given): rows x templates
    examples, as T0's training mixture; by default a row is trained in one template, drawn per row. Held-in
    validation scores a row in one template either way.
    `few_shot`: demonstrations in front of a share of the training inputs (`t2t_mtl.data.few_shot.FewShotMix`
    keys; true = its defaults)."""

    mixture: Optional[str] = None
    tasks: Optional[Union[List[str], Dict[str, float]]] = None
    tasks_dir: Optional[Union[str, List[str]]] = None
    task_modules: Optional[Union[str, List[str]]] = None
    held_out_clusters: List[str] = field(default_factory=list)
    train_held_out: List[str] = field(default_factory=list)
    templates: Optional[List[str]] = None
    all_templates: bool = False
    max_examples_per_task: Optional[int] = None
    max_input_length: int = 128
    max_target_length: int = 64
    data_dir: Optional[str] = None
    cache_dir: Optional[str] = None
    batching: Literal["bucket", "pack", "pad_to_longest", "pad_to_max"] = "bucket"
    bucket_batches: int = 8
    pad_to_multiple_of: int = 8
    validation_examples: int = 64
    few_shot: Optional[Union[bool, Dict[str, Any]]] = None


@dataclass
class TrainingConfig:
    """The optimisation loop."""

    steps: int = 1000
    micro_batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: Literal["constant", "linear", "cosine"] = "linear"
    warmup: int = 0
    clip: float = 1.0
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    seed: int = 0
    log_every: int = 10
    validate_every: int = 0
    validate_examples: int = 16
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    keep_best: Optional[Literal["val_score", "val_loss"]] = None
    early_stopping: int = 0
    max_bad_steps: int = 5
    loss_reduction: Literal["example", "token"] = "example"
    output_dir: str = "runs/default"
    num_threads: Optional[int] = None
    progress_bar: bool = True
    plot: bool = True
    tensorboard: bool = True
    wandb: Optional[Union[bool, Dict[str, Any]]] = None


@dataclass
class DeepSpeedSection:
    """ZeRO stage and offload, or `config`: a whole DeepSpeed JSON file used as is (batch keys checked)."""

    zero_stage: int = 0
    offload_optimizer: bool = False
    offload_param: bool = False
    config: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Config:
    """A whole run configuration (see the module docstring for layering). The schema's sections are dataclasses
    (`cfg.training.steps`); the free-form ones their components check (`sampling`, `weighting`, `gradient_surgery`,
    `evaluation`, and `model.dims`/`moe`/`lora`, `tokenizer.train`, `deepspeed.extra` within theirs) are dicts
    (`cfg.sampling["alpha"]`), as the YAML gives them."""

    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sampling: Dict[str, Any] = field(default_factory=lambda: {"strategy": "temperature", "alpha": 1.0})
    weighting: Dict[str, Any] = field(default_factory=lambda: {"method": "equal"})
    gradient_surgery: Optional[Dict[str, Any]] = None
    training: TrainingConfig = field(default_factory=TrainingConfig)
    deepspeed: DeepSpeedSection = field(default_factory=DeepSpeedSection)
    evaluation: Dict[str, Any] = field(default_factory=dict)
    #: dotted keys (`tokenizer.train`) whose values only the `base:` files of `load_config`'s file set, not the file
    #: itself nor the overrides: a warning of a key with no effect is about what the user wrote (empty: unknown)
    base_only_keys: ClassVar[FrozenSet[str]] = frozenset()

    def __setattr__(self, name: str, value: Any) -> None:
        """A dict assigned to a whole schema section (`cfg.training = {"steps": 3}`) is a layer over the section's
        current values, as a YAML file's section is over its base's: the section is rebuilt from both and checked
        (keys, types) now; anything else (a section object: `TrainingConfig(steps=3)`) is set as it is."""
        current = self.__dict__.get(name)
        if isinstance(value, Mapping) and dataclasses.is_dataclass(current) and name in _SECTIONS:
            layered = deep_merge({name: _attribute_values(current)}, {name: value})
            value = build_dataclass(type(current), _paths_as_text(layered)[name], f"{name}.")
        super().__setattr__(name, value)

    def to_dict(self) -> Dict[str, Any]:
        """Plain nested dict (YAML/JSON serialisable)."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """`to_dict()` as YAML, keys in schema order."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ------------------------------------------------------------------------------------------- entry points

#: the schema's sections; one left empty in a layer (`training:` with every key commented out) sets nothing
_SECTIONS = tuple(name for name, tp in typing.get_type_hints(Config).items() if dataclasses.is_dataclass(tp))


def _without_empty_sections(layer: Mapping[str, Any]) -> Dict[str, Any]:
    """`layer` less its empty (null) schema sections, which would otherwise replace the lower layers' ones."""
    return {key: value for key, value in layer.items() if not (value is None and key in _SECTIONS)}


def load_config(
    path: Union[str, Path, None] = None,
    overrides: Sequence[str] = (),
    extra: Union[Mapping[str, Any], Config, None] = None,
) -> Config:
    """Build and validate (once) a `Config` from a YAML file (or packaged name), `--set` strings and `extra`: a dict,
    or a Config (one edited in Python, read as `config_from_dict` reads one).

    `path=None` uses only the defaults, or the `base:` a dict `extra` names as a YAML file would (a config name or
    path, relative to the working directory, or a list of them). Raises `ConfigError` subclasses with the offending
    key named; a malformed `--set` is named before the file is looked up (`--set training.steps 20` names the
    `--set`, not a config '20'). The Config's `base_only_keys` are the keys only the file's (or the dict's) `base:`
    chain sets, and those of a Config `extra` that the overrides leave alone.
    """
    override_layer = parse_overrides(overrides)
    layers = file_layers(resolve_config_path(path)) if path is not None else []
    extra_layer = _attribute_values(extra) if isinstance(extra, Config) else dict(extra or {})
    bases, layers = layers[:-1], layers[-1:]
    if not isinstance(extra, Config) and "base" in extra_layer:
        bases = _dict_base_layers(extra_layer.pop("base"), path) or bases
    layers = [*bases, *layers, extra_layer, override_layer]
    merged: Dict[str, Any] = {}
    for layer in layers:
        merged = deep_merge(merged, _without_empty_sections(layer))
    cfg = config_from_dict(merged)
    own = set().union(*map(layer_keys, layers[len(bases):]))
    cfg.base_only_keys = frozenset(set().union(*map(layer_keys, bases)) - own)
    if isinstance(extra, Config):
        cfg.base_only_keys |= extra.base_only_keys - layer_keys(override_layer)
    return cfg


def _dict_base_layers(base: Any, path: Union[str, Path, None]) -> List[Dict[str, Any]]:
    """The layers of a dict's `base:` (a config name or path, relative to the working directory, or a list of
    them), as a YAML file's `base:` is read (null or [] is none); refused beside a config file `path`, which has its
    own."""
    if base is None or base == []:
        return []
    if path is not None:
        raise ConfigFileError(f"the dict given with the config {str(path)!r} names a base: too ({base!r}): give the "
                              f"base as the config, or write base: in the file")
    bases = base if isinstance(base, list) else [base]
    if not all(isinstance(item, (str, os.PathLike)) for item in bases):
        raise ConfigTypeError(f"base must be a config name or path, or a list of them, got {base!r}")
    return [layer for item in bases for layer in file_layers(resolve_config_path(item))]


def config_from_dict(data: Union[Mapping[str, Any], Config]) -> Config:
    """Validate a nested dict against the schema (unknown keys, types) and return a `Config`. The dict is a layer
    over the defaults (`default.yaml`'s values): a free-form section given in part (`sampling: {alpha: 2}`) keeps
    its default strategy / method. Its `base:` (a config name or path, relative to the working directory, or a list
    of them) is read as `load_config(extra=data)` reads it: the dict is then a layer over that chain.

    A `Config` (one edited in Python: `cfg.training.steps = 200`) is checked again as the values its attributes
    hold, an attribute the schema lacks (`cfg.training.step = 200`) being an unknown key, and returned as a checked
    copy with its `base_only_keys`; the one given is left as it is."""
    if isinstance(data, Config):
        cfg = build_dataclass(Config, _paths_as_text(_attribute_values(data)), "")
        validate_values(cfg)
        cfg.base_only_keys = data.base_only_keys
        return cfg
    if isinstance(data, Mapping) and "base" in data:
        return load_config(extra=data)
    cfg = _typed_config(data)
    validate_values(cfg)
    return cfg


def saved_run_config(data: Mapping[str, Any], source: Union[str, Path]) -> Config:
    """The config a run saved (`data`, read from `source`, its config.yaml) as evaluation and export read it to
    rebuild the run's model: keys, types and the model section are checked as `config_from_dict` checks them
    (ConfigError), but a value the other range and consistency checks refuse is only warned of, naming `source`:
    an earlier t2t-mtl accepted it and the run trained with it (a resume, which would train on with it, refuses it)."""
    cfg = _typed_config(data)
    validate_model(cfg.model)
    try:
        validate_values(cfg)
    except ConfigError as err:
        _warn_of_saved_value(str(source), str(err))
    return cfg


@functools.lru_cache(maxsize=None)
def _warn_of_saved_value(source: str, problem: str) -> None:
    """`saved_run_config`'s warning, once a process for each file and problem (eval reads a run's config for its
    settings, then again to load the model)."""
    logger.warning("%s holds a value this version of t2t-mtl refuses in a new run (%s); the run trained with it, so "
                   "its config is read as written to rebuild its model: correct the file to be rid of this warning",
                   source, problem)


def _typed_config(data: Mapping[str, Any]) -> Config:
    """A nested dict as a layer over the defaults, checked against the schema (unknown keys, types) only."""
    if not isinstance(data, Mapping):
        raise ConfigTypeError(f"a config must be a mapping of sections (model, data, training, ...), got "
                              f"{type(data).__name__}")
    return build_dataclass(Config, deep_merge(Config().to_dict(), _paths_as_text(_without_empty_sections(data))), "")


def _attribute_values(section: Any) -> Any:
    """A schema dataclass (a `Config` or one of its sections) as a nested dict of copies of the attributes it holds,
    the ones set beside its fields included (a misspelt name), class-level ones (`base_only_keys`) left out; any
    other value: a copy of it."""
    if not dataclasses.is_dataclass(section) or isinstance(section, type):
        return copy.deepcopy(section)
    fields = {f.name for f in dataclasses.fields(section)}
    return {key: _attribute_values(value) for key, value in vars(section).items()
            if key in fields or not hasattr(type(section), key)}


def model_config_from_dict(data: Mapping[str, Any]) -> ModelConfig:
    """A `ModelConfig` from a `model:` section given as a dict, with the checks `config_from_dict` makes of it
    (unknown keys, types, `dims` values); ConfigError naming the key."""
    if not isinstance(data, Mapping):
        raise ConfigTypeError(f"config key 'model' must be a mapping, got {data!r}")
    model = build_dataclass(ModelConfig, _python_model_section(data), "model.")
    validate_model(model)
    return model


def _python_model_section(data: Mapping[str, Any]) -> Dict[str, Any]:
    """A `model:` section built in Python as a YAML file would give it: a path-like `name_or_path` as its text, and
    as a dict a mapping that is no dict (`dims`, `moe`, `lora`) or a settings object (`MoEConfig`, `LoRAConfig`:
    their `to_dict()`), all taken before the section was checked."""
    section = dict(data)
    if isinstance(section.get("name_or_path"), os.PathLike):
        section["name_or_path"] = os.fspath(section["name_or_path"])
    for key in ("dims", "moe", "lora"):
        value = section.get(key)
        if callable(getattr(value, "to_dict", None)):
            section[key] = value.to_dict()
        elif isinstance(value, Mapping) and not isinstance(value, dict):
            section[key] = dict(value)
    return section


def _paths_as_text(data: Mapping[str, Any]) -> Dict[str, Any]:
    """`data` (a config layer) with the `os.PathLike` values of its path keys (`PATH_KEYS`, `data.task_modules`; a
    list's items too) as strings: a `pathlib.Path` from Python is a path as the YAML text of it is."""
    out = dict(data)
    for key in PATH_KEYS + ("data.task_modules",):
        section, name = key.split(".")
        values = out.get(section)
        if not isinstance(values, Mapping) or name not in values:
            continue
        value = values[name]
        out[section] = {**values, name: [_text(v) for v in value] if isinstance(value, (list, tuple)) else _text(value)}
    return out


def _text(value: Any) -> Any:
    """An `os.PathLike` value as its string; any other as it is."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value
