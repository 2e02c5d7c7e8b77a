"""Model merging: one multitask model from fine-tuned models of a common base, through task vectors.

A fine-tuned model's task vector is τ_i = θ_i − θ_base (Ilharco et al. 2023). Methods, per parameter tensor:
- `task_arithmetic`: θ = θ_base + λ·Σ_i τ_i;
- `mean`: θ = θ_base + λ·(1/n)·Σ_i τ_i (λ = 1: the average of the models, a model soup);
- `ties` (TIES-merging, Yadav et al. 2023): trim each τ_i to its `density` fraction of largest magnitudes (ties
  at the threshold kept), elect each entry's sign as that of Σ_i τ̂_i, and average the trimmed entries that
  agree with it (disjoint mean: entries that are zero or of the other sign do not count);
  θ = θ_base + λ·τ_merged.
Trimming is global, as in the paper and its reference code: τ_i is the whole model's task vector (all float
tensors flattened together; a tensor held under several keys, as tied embeddings are, counts once), and its
ceil(density·n) largest magnitudes are kept, wherever they are. The threshold is found exactly without a
flattened copy (a radix select over the magnitudes' bits, a few passes over the model in memory). Every method
merges a tensor the base holds under several keys once (a model must hold one tensor under them too), and the
result holds it under each. Non-float tensors must be equal in every model and are kept. `merge_task_vectors`
takes the models one at a time (memory for the base, float64 accumulators and one model, however many are
merged); `merge_state_dicts` works on state dicts in memory; `merge_models` on model folders / runs.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch

__all__ = ["MERGE_METHODS", "MergeError", "merge_models", "merge_state_dicts", "merge_task_vectors"]

MERGE_METHODS = ("task_arithmetic", "mean", "ties")


class MergeError(ValueError):
    """The models cannot be merged (different architectures or keys) or a merge setting is invalid."""


_DIGIT_BITS = 16  # bits of the magnitudes' patterns settled per pass of the radix select (4 passes of float64)


def _identity(value: torch.Tensor) -> Tuple[int, Tuple[int, ...], Tuple[int, ...], torch.dtype]:
    """What two keys holding one tensor share (and two distinct tensors do not)."""
    return value.data_ptr(), tuple(value.shape), value.stride(), value.dtype


def _first_keys(state: Mapping[str, torch.Tensor]) -> Dict[str, str]:
    """{key: the first key holding its tensor} for the float tensors of `state`: itself, or, for a tensor held under
    several keys (tied weights: a T5's shared embedding is also encoder/decoder.embed_tokens and lm_head), the key
    that held it first."""
    first: Dict[Tuple[Any, ...], str] = {}
    return {key: first.setdefault(_identity(value), key) for key, value in state.items() if value.is_floating_point()}


def _distinct_float_keys(state: Mapping[str, torch.Tensor]) -> List[str]:
    """The keys of the float tensors of `state`, one per tensor where several keys hold it (`_first_keys`)."""
    return [key for key, first in _first_keys(state).items() if key == first]


def _trim_threshold(base: Mapping[str, torch.Tensor], model: Mapping[str, torch.Tensor], density: float) -> float:
    """The magnitude at or above which TIES keeps an entry of `model`'s task vector: exactly its ceil(density·n)-th
    largest |τ| over all its n float entries, a tensor the base holds under several keys counted once (0 when all
    are kept). The bit patterns of non-negative float64 numbers order as the numbers do, so a radix select finds
    it, `_DIGIT_BITS` bits per pass over the tensors (no flattened copy of the task vector)."""
    keys = _distinct_float_keys(base)

    def magnitudes() -> Iterator[torch.Tensor]:
        for key in keys:
            yield (model[key].double() - base[key].double()).abs().flatten().view(torch.int64)

    n = sum(model[key].numel() for key in keys)
    # (0.07 · 100 is 7.000000000000001 in floats, hence the rounding; a density > 0 keeps at least one entry, also
    # where density · n rounds to 0)
    remaining = max(1, math.ceil(round(density * n, 6)))
    if remaining >= n:
        return 0.0
    digits, prefix = 1 << _DIGIT_BITS, 0
    for shift in range(64 - _DIGIT_BITS, -1, -_DIGIT_BITS):
        counts = torch.zeros(digits, dtype=torch.int64, device=model[keys[0]].device)
        for bits in magnitudes():
            if shift + _DIGIT_BITS < 64:
                bits = bits[(bits >> (shift + _DIGIT_BITS)) == prefix]
            counts += torch.bincount((bits >> shift) & (digits - 1), minlength=digits)
        at_least = counts.flip(0).cumsum(0)  # [i]: entries (of this prefix) whose digit is >= digits - 1 - i
        index = int(torch.searchsorted(at_least, remaining))
        remaining -= int(at_least[index - 1]) if index else 0
        prefix = (prefix << _DIGIT_BITS) | (digits - 1 - index)
    return float(torch.tensor(prefix, dtype=torch.int64).view(torch.float64))


def _trimmed(tau: torch.Tensor, threshold: float) -> torch.Tensor:
    """`tau` with its entries of magnitude below `threshold` zeroed."""
    return torch.where(tau.abs() >= threshold, tau, torch.zeros_like(tau))


def _check_settings(method: str, scale: float, density: float, count: int) -> None:
    if method not in MERGE_METHODS:
        raise MergeError(f"unknown merge method {method!r}; use one of {', '.join(MERGE_METHODS)}")
    if method == "ties" and not 0 < density <= 1:
        raise MergeError(f"density {density} must lie in (0, 1] (the fraction of each task vector TIES keeps)")
    if not math.isfinite(scale):
        raise MergeError(f"scale {scale} must be a finite number (negative scales subtract the task vectors)")
    if count < 1:
        raise MergeError("merging needs at least one fine-tuned model")


def _non_finite_key(state: Mapping[str, torch.Tensor]) -> Union[str, None]:
    """The first key of `state` whose float tensor holds a NaN or an infinity (None: all finite)."""
    return next((key for key, value in state.items()
                 if value.is_floating_point() and not bool(torch.isfinite(value).all())), None)


def _check_finite_base(base: Mapping[str, torch.Tensor], base_name: Optional[str]) -> None:
    key = _non_finite_key(base)
    if key is not None:
        where = f"{base_name}: " if base_name else ""
        raise MergeError(f"{where}the base's {key} holds non-finite weights (NaN or inf): task vectors need a finite "
                         f"base model")


def _loaded(base: Mapping[str, torch.Tensor], load: Callable[[int], Mapping[str, torch.Tensor]], index: int,
            name: str) -> Mapping[str, torch.Tensor]:
    """`load(index)`, after checking that it has the base's keys and shapes and its non-float tensors, and that
    its float tensors are finite; errors call it `name`."""
    model = load(index)
    for key, value in base.items():
        if key not in model or model[key].shape != value.shape:
            found = "missing" if key not in model else f"of shape {tuple(model[key].shape)}"
            raise MergeError(f"{name}: {key} is {found}, the base's is {tuple(value.shape)}: merging "
                             f"needs fine-tuned versions of the same base model")
        if not value.is_floating_point() and not torch.equal(model[key], value):
            raise MergeError(f"{name}: {key} (a {value.dtype} tensor) differs between the models; it cannot be "
                             f"merged")
    for key, first in _first_keys(base).items():  # (a tied weight is merged once, under its first key)
        if not (_identity(model[key]) == _identity(model[first]) or torch.equal(model[key], model[first])):
            raise MergeError(f"{name}: {key} and {first} are one tensor in the base (tied weights) but differ here: "
                             f"merging needs fine-tuned versions of the same base model, its weights tied as in it")
    # (a diverged fine-tune: TIES would silently drop its NaN entries, |NaN| >= threshold being false, and the other
    # methods would report an overflow that no scale fixes)
    key = _non_finite_key({key: model[key] for key in base})
    if key is not None:
        raise MergeError(f"{name}: {key} holds non-finite weights (NaN or inf), as a fine-tune that "
                         f"diverged does: its task vector cannot be merged; use an earlier checkpoint of it")
    extra = sorted(set(model) - set(base))
    if extra:
        raise MergeError(f"{name} has weights the base lacks ({', '.join(extra[:5])}): merging needs "
                         f"fine-tuned versions of the same base model")
    return model


def _task_vectors(base: Mapping[str, torch.Tensor], model: Mapping[str, torch.Tensor]
                  ) -> Iterator[Tuple[str, torch.Tensor]]:
    """(key, τ = θ − θ_base in float64) for each float tensor of the base, once where several keys hold it."""
    for key in _distinct_float_keys(base):
        yield key, model[key].double() - base[key].double()


def _add(into: Dict[str, torch.Tensor], key: str, value: torch.Tensor) -> None:
    """Accumulate `value` (a fresh tensor, taken over as the accumulator the first time) into `into[key]`."""
    if key in into:
        into[key] += value
    else:
        into[key] = value


def merge_task_vectors(base: Mapping[str, torch.Tensor], load: Callable[[int], Mapping[str, torch.Tensor]],
                       count: int, *, method: str = "task_arithmetic", scale: float = 1.0, density: float = 0.2,
                       base_name: Optional[str] = None, model_names: Optional[Sequence[str]] = None
                       ) -> Dict[str, torch.Tensor]:
    """The merged state dict (base's dtypes) of `count` fine-tuned models, model i's state dict given by `load(i)`.

    Models are taken one at a time — `load` is called once per model, twice for TIES (the sign election, then
    the disjoint mean) — so memory holds the base, float64 accumulators and one model, whatever `count` is.
    Raises MergeError for an unknown method, a density outside (0, 1], a non-finite scale, no models, models
    whose keys, shapes or non-float tensors differ from the base's, a base or model with NaN or infinite weights,
    or merged weights that overflow the dtype. The errors name the base `base_name` and model i `model_names[i]`
    (their paths, say; default: the base, model i + 1).
    """
    _check_settings(method, scale, density, count)
    names = list(model_names) if model_names is not None else [f"model {i + 1}" for i in range(count)]
    if len(names) != count:
        raise MergeError(f"model_names names {len(names)} models, not the {count} merged")
    _check_finite_base(base, base_name)
    merged_tau: Dict[str, torch.Tensor] = {}
    if method == "ties":
        thresholds: List[float] = []
        elected: Dict[str, torch.Tensor] = {}
        for index in range(count):
            model = _loaded(base, load, index, names[index])
            thresholds.append(_trim_threshold(base, model, density))
            for key, tau in _task_vectors(base, model):
                _add(elected, key, _trimmed(tau, thresholds[index]))
            del model  # before the next load: one model in memory at a time
        signs = {key: torch.sign(total).to(torch.int8) for key, total in elected.items()}
        del elected
        agreeing: Dict[str, torch.Tensor] = {}
        for index in range(count):  # (each model was checked by the first pass)
            for key, tau in _task_vectors(base, load(index)):
                trimmed = _trimmed(tau, thresholds[index])
                agree = (torch.sign(trimmed) == signs[key]) & (trimmed != 0)
                _add(merged_tau, key, torch.where(agree, trimmed, torch.zeros_like(trimmed)))
                _add(agreeing, key, agree.to(torch.int32))
        for key, number in agreeing.items():
            merged_tau[key] = torch.where(number > 0, merged_tau[key] / number.clamp(min=1),
                                          torch.zeros_like(merged_tau[key]))
    else:
        for index in range(count):
            for key, tau in _task_vectors(base, _loaded(base, load, index, names[index])):
                _add(merged_tau, key, tau)
        if method == "mean":
            for tau in merged_tau.values():
                tau /= count
    merged, first_keys = {}, _first_keys(base)
    for key, value in base.items():
        if not value.is_floating_point():
            merged[key] = value.clone()
            continue
        if first_keys[key] != key:  # a tied weight: the tensor merged under its first key, held under this one too
            merged[key] = merged[first_keys[key]]
            continue
        merged[key] = (value.double() + scale * merged_tau.pop(key)).to(value.dtype)
        if not torch.isfinite(merged[key]).all():
            raise MergeError(f"{key}: the merged weights overflow {value.dtype} (scale {scale}); use a smaller scale")
    return merged


def merge_state_dicts(base: Mapping[str, torch.Tensor], models: Sequence[Mapping[str, torch.Tensor]], *,
                      method: str = "task_arithmetic", scale: float = 1.0, density: float = 0.2
                      ) -> Dict[str, torch.Tensor]:
    """`merge_task_vectors` of state dicts held in memory: `models` is a list of them."""
    if isinstance(models, Mapping) or not isinstance(models, Sequence):  # one state dict is a mapping, not a list
        raise MergeError(f"models must be a list of fine-tuned state dicts, got {type(models).__name__} (one model: "
                         f"pass [state_dict])")
    return merge_task_vectors(base, models.__getitem__, len(models), method=method, scale=scale, density=density)


#: the config entries that decide a T5's weights and computation (others — paths, caching, labels — may differ)
ARCHITECTURE_KEYS = ("model_type", "vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers",
                     "num_heads", "relative_attention_num_buckets", "relative_attention_max_distance",
                     "feed_forward_proj", "dense_act_fn", "is_gated_act", "layer_norm_epsilon",
                     "scale_decoder_outputs", "tie_word_embeddings")


def _differences(config: Any, base_config: Any) -> List[str]:
    """The architecture entries (`ARCHITECTURE_KEYS`) in which `config` differs from `base_config`."""
    return [f"{key} {getattr(config, key, None)!r} (base {getattr(base_config, key, None)!r})"
            for key in ARCHITECTURE_KEYS if getattr(config, key, None) != getattr(base_config, key, None)]


#: how deep `_layout_meta` follows model.name_or_path back to the folder a run was fine-tuned from
_MAX_LINEAGE = 16


def _layout_meta(meta: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    """The t2t_mtl_meta.json that names the experts of an MoE run a plain T5's feed-forward layers hold (its
    `dense_from_experts` and `zero_padding`): `meta` itself for a folder `export --task` wrote of a task-routed MoE run
    (or a merge of such folders), that folder's for a run fine-tuned from one (found through the path its
    `initialised_from` records, else its model.name_or_path); None for any other model."""
    from t2t_mtl.engine.export import META_FILE

    for _ in range(_MAX_LINEAGE):
        if "dense_from_experts" in meta:
            return meta
        # (the resolved path the run recorded when it started; its config's name_or_path may be relative to the
        # folder it was trained from)
        source = ((meta.get("initialised_from") or {}).get("path")
                  or ((meta.get("config") or {}).get("model") or {}).get("name_or_path"))
        if not source:
            return None
        try:  # (a source without a readable t2t_mtl_meta.json, a hub name say, holds no experts this can name)
            meta = json.loads((Path(source) / META_FILE).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict):
            return None
    return None


def _expert_layout(meta: Mapping[str, Any]) -> Optional[Dict[str, List[int]]]:
    """Which experts of an MoE run a plain T5's feed-forward layers hold (`_layout_meta`'s `dense_from_experts`):
    {layer: expert ids}; None for any other model. Gates are left out: they are folded into wo, a weight like any
    other; so are the zero-padded dense layers, every other layer of the architecture the merge checks first. A folder
    exported before top_k > 1 had a plain form names each layer's one expert as {"expert": ID, "gate": G}."""
    found = _layout_meta(meta)
    if found is None:
        return None
    return {layer: route["experts"] if "experts" in route else [route["expert"]]
            for layer, route in found["dense_from_experts"].items()}


def _layout_difference(layout: Optional[Dict[str, List[int]]], base_layout: Optional[Dict[str, List[int]]]
                       ) -> Optional[str]:
    """How the experts a model's feed-forward layers hold (`_expert_layout`) differ from the base's (None: they
    agree), worded for a message."""
    if layout is None and base_layout is None:
        return None
    if layout is None or base_layout is None:
        which, other = ("the base", "it") if layout is None else ("it", "the base")
        return (f"{which} holds experts of a task-routed MoE run in its feed-forward layers (`t2t-mtl export --task`, "
                f"`dense_from_experts` in its t2t_mtl_meta.json) and {other} does not")
    for layer in sorted(set(layout) | set(base_layout)):
        ours, theirs = layout.get(layer), base_layout.get(layer)
        if ours != theirs:
            return f"its {layer} holds experts {ours} of the MoE run, the base's experts {theirs}"
    return None


def _dtype(model: Any) -> torch.dtype:
    return next(p.dtype for p in model.parameters() if p.is_floating_point())


def _check_out(out_dir: Union[str, Path], inputs: Sequence[Union[str, Path]]) -> None:
    """Refuse an output folder that is one of the inputs (or the run a checkpoint input belongs to), lies inside
    one, or lies inside a run's checkpoints. A folder holding an input is accepted: the merge writes its own files
    at the folder's top level and leaves the input's folder as it is."""
    out = Path(out_dir).resolve()
    for path in inputs:
        source = Path(path).resolve()
        run = source.parent.parent if source.parent.name == "checkpoints" else source
        if out in (source, run) or source in out.parents or out.is_relative_to(run / "checkpoints"):
            raise MergeError(f"--out {out_dir} is, or lies inside, the model {path} being merged; choose another "
                             f"folder")


def merge_models(base: Union[str, Path], models: Sequence[Union[str, Path]], out_dir: Union[str, Path], *,
                 method: str = "task_arithmetic", scale: float = 1.0, density: float = 0.2) -> Path:
    """Merge fine-tuned models (exported folders, run dirs or checkpoints) of `base` into an HF folder `out_dir`
    (weights in the base's dtype, the base's tokenizer, t2t_mtl_meta.json with the recipe under "merge" and the
    base's run config under "config" when it has one, so `eval` and `predict` default to the base run's settings
    as for the base itself). The base and the models
    must be plain T5 models of one architecture, dtype and vocabulary (a per-task LoRA run's tasks: merge their
    `export --task` folders; MoE models cannot be merged, and `export --task` folders of a task-routed MoE run, or
    runs fine-tuned from them, only with models whose feed-forward layers hold the same experts: `_expert_layout`).
    Models are loaded one at a time (twice each for TIES),
    so memory does not grow with their number. The folder is written whole or not at all (staged, then moved into
    place). Raises MergeError naming the offending input, or `--out` when it cannot be written (a full disk: its
    OSError, the work failing rather than the option)."""
    from t2t_mtl.engine.export import META_FILE
    from t2t_mtl.evaluation.checkpoint import load_checkpoint
    from t2t_mtl.model.task_routing import TaskConditionedT5
    from t2t_mtl.output_paths import OutputPathError, prepare_output_dir, unwritten_output

    _check_out(out_dir, [base, *models])
    try:
        prepare_output_dir(out_dir, "--out", create=False)
    except OutputPathError as error:
        raise MergeError(str(error)) from None

    def load(path: Union[str, Path]) -> Tuple[Any, Any, Dict[str, Any]]:
        model, tokenizer, meta = load_checkpoint(path)
        if isinstance(model, TaskConditionedT5):
            raise MergeError(f"{path}: a task-conditioned model (MoE experts or per-task LoRA adapters) has no "
                             f"single set of weights to merge; MoE models cannot be merged, and a per-task LoRA "
                             f"run's tasks are merged through their `t2t-mtl export --task NAME` folders")
        return model, tokenizer, meta

    base_model, base_tokenizer, base_meta = load(base)
    base_layout_meta = _layout_meta(base_meta)  # (read once: the recipe below copies its experts)
    base_layout = None if base_layout_meta is None else _expert_layout(base_layout_meta)

    def load_model(index: int) -> Mapping[str, torch.Tensor]:
        path = models[index]
        model, tokenizer, meta = load(path)
        differences = _differences(model.config, base_model.config)
        if differences:
            raise MergeError(f"{path}: its architecture differs from the base's ({base}): {'; '.join(differences)}")
        if _dtype(model) != _dtype(base_model):
            raise MergeError(f"{path}: its weights are {_dtype(model)}, the base's {_dtype(base_model)}: a task "
                             f"vector across dtypes is mostly rounding error; save both in one dtype first")
        if tokenizer.get_vocab() != base_tokenizer.get_vocab():
            raise MergeError(f"{path}: its tokenizer's vocabulary differs from the base's ({base}): token ids would "
                             f"mean different things in the merged model")
        difference = _layout_difference(_expert_layout(meta), base_layout)
        if difference:
            raise MergeError(f"{path}: {difference} ({base}): each feed-forward unit would be merged with another "
                             f"expert's; merge folders that `t2t-mtl export --task` wrote for tasks whose routes "
                             f"pick the same experts (their dense_from_experts), or fine-tunes of one such folder")
        return model.state_dict()

    state = merge_task_vectors(base_model.state_dict(), load_model, len(models), method=method, scale=scale,
                               density=density, base_name=str(base), model_names=[str(path) for path in models])
    base_model.load_state_dict(state)
    recipe = {"merge": {"method": method, "scale": scale, "density": density if method == "ties" else None,
                        "base": str(Path(base).resolve()), "models": [str(Path(m).resolve()) for m in models]}}
    if base_meta.get("config"):  # a run's, an exported run's or an earlier merge's: its eval settings, clusters
        recipe["config"] = base_meta["config"]
    for key in ("dense_from_experts", "zero_padding"):  # (what the merge's own feed-forward layers hold: the base's)
        if key in (base_layout_meta or {}):
            recipe[key] = base_layout_meta[key]

    def write(folder: Path) -> None:
        base_model.save_pretrained(folder)
        base_tokenizer.save_pretrained(folder)
        (folder / META_FILE).write_text(json.dumps(recipe, indent=1, default=str))

    try:
        return _write_folder(Path(out_dir), write, META_FILE)
    except OSError as error:  # permissions, a read-only disk: bad input (--out), as for every command
        raise MergeError(unwritten_output(error, "--out", out_dir, "the merged model")) from None


#: weight files of an earlier save_pretrained that a new save into the same folder would have removed
_WEIGHT_FILES = re.compile(r"^(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?$")


def _write_folder(out: Path, write: Callable[[Path], None], last: str) -> Path:
    """Write a model folder whole or not at all: `write(folder)` fills a staging folder — next to a new `out`,
    which it then becomes by one rename; inside an existing `out` (an empty one, `.` too), whose files its files
    then replace one by one, `last` (the recipe) last, weight files of an earlier save that the new one lacks
    removed. A failure while writing leaves `out` as it was (and no staging folder)."""
    existing = out.is_dir()
    if not existing:
        out.parent.mkdir(parents=True, exist_ok=True)
    name = f".merge-{uuid.uuid4().hex[:8]}.partial" if existing else f".{out.name}.{uuid.uuid4().hex[:8]}.partial"
    staging = (out if existing else out.parent) / name
    staging.mkdir()  # (mkdir, not mkdtemp: the folder gets the umask's permissions, as an in-place save did)
    try:
        write(staging)
        if not existing:
            os.rename(staging, out)
            return out
        written = sorted(staging.iterdir(), key=lambda path: path.name == last)
        stale = [path for path in out.iterdir()
                 if _WEIGHT_FILES.match(path.name) and not (staging / path.name).exists() and path.is_file()]
        for path in written:
            os.replace(path, out / path.name)
        for path in stale:
            path.unlink()
        return out
    finally:
        shutil.rmtree(staging, ignore_errors=True)
