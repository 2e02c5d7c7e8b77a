"""The range and consistency checks of a config's values that the types alone do not express (`validate_values`,
`validate_model`), made by `config_from_dict` and `model_config_from_dict` once the schema has built the sections;
each ConfigError names the key. (What the paths name on the disk is `config_paths`'s to check.)"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence

from t2t_mtl.config_errors import ConfigError, UnknownConfigKeyError
from t2t_mtl.config_types import FLOAT_RE
from t2t_mtl.wording import repeated_items

if TYPE_CHECKING:
    from t2t_mtl.config import Config, ModelConfig

__all__ = ["LORA_FLOAT_KEYS", "MOE_FLOAT_KEYS", "PATH_KEYS", "PRETRAINED_DIM_KEYS", "T5_DIM_KEYS", "read_yaml_floats",
           "validate_model", "validate_values"]

T5_DIM_KEYS = (
    "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
    "relative_attention_num_buckets", "relative_attention_max_distance", "dropout_rate",
    "layer_norm_epsilon", "initializer_factor", "feed_forward_proj", "tie_word_embeddings", "vocab_size",
)


#: the `model.dims` keys a pretrained model (`model.name_or_path`) takes over its config.json's, as
#: `from_pretrained(name, dropout_rate=...)` does: they change how it trains, not its weights' shapes nor what its
#: weights compute at eval (the others are its architecture, read with its weights)
PRETRAINED_DIM_KEYS = ("dropout_rate",)


_DIM_INTEGERS = ("d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
                 "relative_attention_num_buckets", "relative_attention_max_distance", "vocab_size")


_DIM_FLOATS = ("dropout_rate", "layer_norm_epsilon", "initializer_factor")


#: the `model.moe` keys that take a real number (`MoEConfig`'s floats)
MOE_FLOAT_KEYS = ("capacity_factor", "eval_capacity_factor", "aux_loss_coef", "z_loss_coef")
#: the `model.lora` keys that take a real number (`LoRAConfig`'s)
LORA_FLOAT_KEYS = ("alpha", "dropout")


def read_yaml_floats(section: Dict[str, Any], keys: Sequence[str]) -> None:
    """Turn the values of `keys` in `section` that PyYAML read as strings but are numbers (`1e-6`, written without
    a dot) into floats, in place; anything else is left for the section's checks to name."""
    for key in keys:
        if isinstance(section.get(key), str) and FLOAT_RE.fullmatch(section[key].strip()):
            section[key] = float(section[key])


def _check_dims(dims: Dict[str, Any]) -> None:
    """The values of `model.dims` (T5Config sizes): ConfigError naming the key instead of an error from deep in
    transformers or torch when the model is built. Numbers PyYAML reads as strings (`1e-6`) become floats."""
    read_yaml_floats(dims, _DIM_FLOATS)

    def bad(key: str, what: str) -> None:
        raise ConfigError(f"config key 'model.dims.{key}' must be {what}, got {dims[key]!r}")

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    for key in _DIM_INTEGERS:
        if key in dims and (not isinstance(dims[key], int) or isinstance(dims[key], bool) or dims[key] < 1):
            bad(key, "an integer >= 1")
    if "dropout_rate" in dims and not (number(dims["dropout_rate"]) and 0 <= dims["dropout_rate"] < 1):
        bad("dropout_rate", "a number in [0, 1)")
    for key in ("layer_norm_epsilon", "initializer_factor"):
        if key in dims and not (number(dims[key]) and dims[key] > 0):
            bad(key, "a number > 0")
    if "tie_word_embeddings" in dims and not isinstance(dims["tie_word_embeddings"], bool):
        bad("tie_word_embeddings", "true or false")
    if "feed_forward_proj" in dims:
        from transformers.activations import ACT2FN

        proj = dims["feed_forward_proj"]
        act = proj[len("gated-"):] if isinstance(proj, str) and proj.startswith("gated-") else proj
        if not isinstance(act, str) or act not in ACT2FN:
            bad("feed_forward_proj", f"an activation or gated-<activation>, the activation one of "
                                     f"{', '.join(sorted(ACT2FN))} (e.g. relu, gated-gelu)")


def _positive(key: str, value: Optional[float], allow_zero: bool = False) -> None:
    if value is None:
        return
    if not (value >= 0 if allow_zero else value > 0) or value == math.inf:  # (NaN fails both)
        raise ConfigError(f"config key {key!r} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value}")


def validate_model(model: ModelConfig) -> None:
    """The range checks of the model section (`validate_values`, `model_config_from_dict`): ConfigError naming the
    key (UnknownConfigKeyError for a `dims` key T5Config lacks)."""
    unknown_dims = [k for k in model.dims if k not in T5_DIM_KEYS]
    if unknown_dims:
        from task_registry.errors import close_matches

        lines = []
        for key in unknown_dims:
            close = close_matches(key, T5_DIM_KEYS, n=2, substrings=False)
            lines.append(f"  model.dims.{key}" + (f" — did you mean {', '.join(close)}?" if close else ""))
        raise UnknownConfigKeyError("unknown T5 dimension(s):\n" + "\n".join(lines)
                                    + f"\nvalid keys: {', '.join(T5_DIM_KEYS)}")
    _check_dims(model.dims)
    for section, keys in ((model.moe, MOE_FLOAT_KEYS), (model.lora, LORA_FLOAT_KEYS)):
        if isinstance(section, dict):  # (their other checks are MoEConfig's and LoRAConfig's)
            read_yaml_floats(section, keys)
    if model.name_or_path is None and not model.dims:
        raise ConfigError("model: set model.name_or_path (hub name or local folder) or model.dims (T5Config sizes)")
    if model.moe == {}:  # (every consumer reads an empty section as no MoE)
        raise ConfigError("config key 'model.moe' is an empty mapping, which would build no MoE layers: give its "
                          "keys (e.g. {num_experts: 8, top_k: 2}; the others take their defaults), or null for a dense "
                          "model")
    every = model.activation_checkpointing
    if not isinstance(every, bool) and every < 1:
        raise ConfigError(f"config key 'model.activation_checkpointing' must be true, false or an integer N >= 1 "
                          f"(checkpoint every N-th block), got {every}")


_INT32_MAX, _INT64_MAX = 2 ** 31 - 1, 2 ** 63 - 1


#: keys naming a file or folder, where an empty path would be read as the working directory (or as no path at all)
PATH_KEYS = ("model.name_or_path", "tokenizer.path", "data.tasks_dir", "data.data_dir", "data.cache_dir",
              "training.output_dir", "deepspeed.config")


def _refuse_empty_paths(cfg: Config) -> None:
    """ConfigError naming the first key of `PATH_KEYS` (or an item of its list) that is an empty or blank string."""
    for key in PATH_KEYS:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if any(isinstance(v, str) and not v.strip() for v in (value if isinstance(value, list) else [value])):
            unset = "" if key == "training.output_dir" else ", or null for none"
            raise ConfigError(f"config key {key!r} is an empty path, which would be read as the working directory or "
                              f"as no path at all: name the file or folder{unset}")


def validate_values(cfg: Config) -> None:
    """Range and consistency checks that the types alone do not express."""
    _refuse_empty_paths(cfg)
    validate_model(cfg.model)
    t = cfg.training
    for key in ("steps", "micro_batch_size", "grad_accum", "lr", "log_every", "max_bad_steps", "keep_checkpoints",
                "num_threads"):
        _positive(f"training.{key}", getattr(t, key))
    for key in ("warmup", "checkpoint_every", "clip", "weight_decay", "early_stopping", "validate_every"):
        _positive(f"training.{key}", getattr(t, key), allow_zero=True)
    if t.num_threads is not None and t.num_threads > _INT32_MAX:  # (torch.set_num_threads takes a C int)
        raise ConfigError(f"config key 'training.num_threads' must be at most {_INT32_MAX}, got {t.num_threads}")
    if not 0 <= t.seed <= _INT64_MAX:  # (torch.manual_seed's overflow was a bare ValueError; numpy refuses a negative)
        raise ConfigError(f"config key 'training.seed' must be an integer in [0, {_INT64_MAX}], got {t.seed}")
    if len(t.betas) != 2 or not all(0 <= b < 1 for b in t.betas):
        raise ConfigError(f"config key 'training.betas' must be two numbers in [0, 1), got {t.betas}")
    d = cfg.data
    for key in ("max_input_length", "max_target_length", "bucket_batches", "pad_to_multiple_of"):
        _positive(f"data.{key}", getattr(d, key))
    _positive("data.validation_examples", d.validation_examples, allow_zero=True)
    _positive("data.max_examples_per_task", d.max_examples_per_task)
    if d.mixture is None and not d.tasks:
        raise ConfigError("no training data: set data.mixture (a registered mixture name) or data.tasks "
                          "(a list of task names or a {task: rate} mapping)")
    if d.tasks is not None and not d.tasks:  # (was read as null: every task of the mixture, with no word)
        raise ConfigError(f"config key 'data.tasks' is empty, which would pick no task of data.mixture {d.mixture!r}: "
                          f"name the tasks to train, or set it to null for all of them")
    if d.templates is not None and not d.templates:  # (every task would refuse it, once its data is read)
        raise ConfigError("config key 'data.templates' is an empty list: name the templates to train with, or set "
                          "it to null for every template of each task")
    repeated = repeated_items(d.templates or ())
    if repeated:  # (a repeated name would be drawn that many times as often as the others)
        raise ConfigError(f"config key 'data.templates' names {', '.join(repeated)} more than once: list each "
                          f"template once (a task's rows are spread evenly over its templates)")
    if isinstance(d.tasks, dict):
        for name, rate in d.tasks.items():
            if not 0 < rate < math.inf:
                raise ConfigError(f"data.tasks.{name}: rate must be a finite number > 0, got {rate}")
    if cfg.gradient_surgery == {}:  # (read as no surgery, though options without a method are refused)
        raise ConfigError("config key 'gradient_surgery' is an empty mapping, which would apply no surgery: give its "
                          "method (e.g. {method: pcgrad}), or null for none")
    ds = cfg.deepspeed
    ignored = [f"deepspeed.{key}" for key, value in (("zero_stage", ds.zero_stage != 0),
               ("offload_optimizer", ds.offload_optimizer), ("offload_param", ds.offload_param)) if value]
    if ds.config is not None and ignored:
        raise ConfigError(f"{', '.join(ignored)} would be ignored: deepspeed.config names a whole DeepSpeed JSON, "
                          f"used as is; set ZeRO in that file (zero_optimization) or drop deepspeed.config")
    if cfg.deepspeed.zero_stage not in (0, 1, 2, 3):
        raise ConfigError(f"config key 'deepspeed.zero_stage' must be 0, 1, 2 or 3, got {cfg.deepspeed.zero_stage}")
    if cfg.deepspeed.offload_param and cfg.deepspeed.zero_stage != 3:
        raise ConfigError("deepspeed.offload_param needs deepspeed.zero_stage: 3")
    if cfg.deepspeed.offload_optimizer and cfg.deepspeed.zero_stage == 0:
        raise ConfigError("deepspeed.offload_optimizer needs deepspeed.zero_stage >= 1")
