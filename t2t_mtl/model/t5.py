"""Building the T5 encoder-decoder: from a hub name, a local folder, or config dimensions."""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Type, TypeVar, Union

import torch
from huggingface_hub import try_to_load_from_cache
from safetensors import SafetensorError, safe_open
from transformers import GenerationConfig, T5Config, T5ForConditionalGeneration

from t2t_mtl.config import ModelConfig, model_config_from_dict
from t2t_mtl.config_values import PRETRAINED_DIM_KEYS
from t2t_mtl.hub import use_hub_for
from t2t_mtl.model_folder import is_t5_model_type, not_a_t5
from t2t_mtl.wording import one_line


class ModelBuildError(ValueError):
    """The model config cannot produce a model (bad path, not a T5, vocabulary too small, ...)."""


#: the name of a T5's LM head weight in its state dict, and the weights file `save_pretrained` writes (one shard)
HEAD_WEIGHT, SAFE_WEIGHTS_NAME = "lm_head.weight", "model.safetensors"
#: the file of a model folder holding its generation settings
GENERATION_CONFIG_NAME = "generation_config.json"


#: T5's special ids, which a model built from dims has unless it is given its tokenizer's (`special_ids_of`)
T5_SPECIAL_IDS = {"pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0}


ModelT = TypeVar("ModelT", bound=T5ForConditionalGeneration)


def unfilled(build: Callable[[], ModelT], device: Union[str, torch.device] = "cpu") -> ModelT:
    """The model `build()` returns, built on the meta device (no random init, no random number drawn), then given
    storage on `device` that holds no values yet and tied again as its class ties its weights, an LM head of its own
    (`has_own_head`, as a folder's weights give one) kept its own: for a caller that fills every tensor next (a strict
    `load_state_dict` fills all of a T5's, a TaskAwareT5's or a LoRA model's: they have no buffer outside their state
    dict)."""
    with torch.device("meta"):
        model = build()
    # (whether the head trains: a frozen one, LoRA's, stays out of the optimizer as the filled build's does)
    own_head = model.get_output_embeddings().weight.requires_grad if has_own_head(model) else None
    model = model.to_empty(device=device)
    model.tie_weights()  # (to_empty gives each name of a tied weight a tensor of its own; this ties the head too)
    if own_head is not None:
        untie_head(model)
        model.get_output_embeddings().weight.requires_grad_(own_head)
    return model


def unfilled_model(cls: Type[ModelT], config: T5Config, dtype: torch.dtype, device: torch.device) -> ModelT:
    """`cls(config)` in `dtype` on `device`, built by `unfilled`: its weights allocated but not initialised."""
    return unfilled(lambda: cls(config).to(dtype=dtype), device)


def has_own_head(model: Any) -> bool:
    """Whether `model`'s LM head is a matrix of its own (T5 v1.1, mT5, Flan-T5 checkpoints), not its token embedding
    (original T5). transformers ties the two in every T5 built from a config (`T5Config` always sets
    `tie_word_embeddings`) and unties them only where a loaded checkpoint holds two different matrices."""
    head = model.get_output_embeddings()
    return head is not None and head.weight is not model.get_input_embeddings().weight


def untie_head_like(model: Any, source: Any) -> None:
    """Give `model`, built from a config (its head tied to its embedding), an LM head of its own where `source`, the
    model whose weights it takes next, has one (`has_own_head`): else a strict load of both matrices into the one
    tied tensor keeps the last, and the model computes with the head as its embedding, or the reverse."""
    if has_own_head(source):
        untie_head(model)


def saves_own_head(path: Union[str, Path], saved: Mapping[str, Any]) -> bool:
    """Whether the model of `path` (a local folder, or a hub name whose files the hub cache holds) has an LM head of
    its own, read without its weights: the safetensors header of its weights (else their index), which
    `from_pretrained` reads in that order, lists `lm_head.weight`, which `save_pretrained` leaves out where the head
    is the embedding; without safetensors weights (a `pytorch_model.bin`, which names both either way, or a hub model
    not cached), where its config dict `saved` says `tie_word_embeddings: false`, as T5 v1.1, mT5 and Flan-T5 hub
    configs do. ModelBuildError naming the weights file or its index where it cannot be read (an index with no
    `weight_map` mapping too): a model built without its weights and then filled by a run's checkpoint (a resume,
    export, eval) reads no other file that would say so, and a guessed tied head would silently take the
    checkpoint's head and embedding into one tensor."""
    weights = _model_file(path, SAFE_WEIGHTS_NAME)
    if weights is not None:
        try:
            with safe_open(str(weights), framework="pt") as stored:
                return HEAD_WEIGHT in stored.keys()
        except (OSError, SafetensorError) as err:
            raise ModelBuildError(f"{weights} cannot be read ({one_line(err)})") from None
    index = _model_file(path, f"{SAFE_WEIGHTS_NAME}.index.json")
    if index is None:
        return saved.get("tie_word_embeddings") is False
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
    except (OSError, ValueError, AttributeError) as err:  # (no JSON, or no JSON object)
        raise ModelBuildError(f"{index} cannot be read as a weights index, a JSON object ({type(err).__name__}: "
                              f"{one_line(err)})") from None
    if not isinstance(weight_map, Mapping):  # (from_pretrained's load of it fails deep in transformers)
        what = "it has none" if weight_map is None else f"its weight_map is a {type(weight_map).__name__}"
        raise ModelBuildError(f"{index} cannot be read as a weights index, a JSON object whose weight_map maps each "
                              f"tensor name to its file ({what})")
    return HEAD_WEIGHT in weight_map


def _model_file(path: Union[str, Path], filename: str) -> Optional[Path]:
    """File `filename` of the model of `path`: in the local folder `path`, else, for a hub name, its copy in the hub
    cache (nothing downloaded); None where there is none."""
    if Path(path).exists():
        file = Path(path) / filename
        return file if file.is_file() else None
    try:
        cached = try_to_load_from_cache(str(path), filename)
    except ValueError:  # (no valid hub name: its load says why)
        return None
    return Path(cached) if isinstance(cached, str) else None


def untie_head(model: Any) -> None:
    """Give `model` an LM head of its own where it is its embedding (`has_own_head`), as a checkpoint with two
    matrices loads: a copy of the embedding (for a load to overwrite), left out of transformers' map of tied weights
    as `from_pretrained` leaves an untied checkpoint's, so `tie_weights(recompute_mapping=False)` keeps it."""
    if has_own_head(model):
        return
    embedding = model.get_input_embeddings().weight
    head = torch.nn.Linear(embedding.shape[1], embedding.shape[0], bias=False, device=embedding.device,
                           dtype=embedding.dtype)
    with torch.no_grad():
        head.weight.copy_(embedding)
    model.set_output_embeddings(head)
    getattr(model, "all_tied_weights_keys", {}).pop(HEAD_WEIGHT, None)


def special_ids_of(tokenizer: Any) -> Dict[str, Optional[int]]:
    """The special ids a model built from dims takes from `tokenizer`: its pad and eos ids, and its pad id as the
    decoder's start (T5's convention)."""
    return {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
            "decoder_start_token_id": tokenizer.pad_token_id}


def t5_config_from_dims(dims: Mapping[str, Any], vocab_size: Optional[int] = None,
                        special_ids: Optional[Mapping[str, int]] = None) -> T5Config:
    """A `T5Config` from dimension kwargs with the tokenizer's `special_ids` (`special_ids_of`; None: T5's, pad 0,
    eos 1, decoder start = pad)."""
    kwargs = dict(dims)
    if vocab_size is not None:
        kwargs["vocab_size"] = max(int(kwargs.get("vocab_size", 0)), vocab_size)
    kwargs.setdefault("num_decoder_layers", kwargs.get("num_layers", 6))
    return T5Config(**(T5_SPECIAL_IDS if special_ids is None else special_ids), **kwargs)


def with_pretrained_dims(model_cfg: ModelConfig, saved: Mapping[str, Any]) -> Dict[str, Any]:
    """A pretrained model's saved config dict `saved` with the model section's `PRETRAINED_DIM_KEYS` (e.g.
    `dims: {dropout_rate: 0.05}`) over its values, as `from_pretrained(name, dropout_rate=0.05)` gives them; the
    other dims keys a run refuses beside `name_or_path` (`check_model_source`) are left out, as before that check."""
    return {**saved, **{key: value for key, value in model_cfg.dims.items() if key in PRETRAINED_DIM_KEYS}}


def model_config(model_cfg: ModelConfig, saved: Optional[Dict[str, Any]] = None,
                 special_ids: Optional[Mapping[str, int]] = None) -> T5Config:
    """The `T5Config` the model section describes (a pretrained model's own, `with_pretrained_dims`, or one from dims
    with the tokenizer's `special_ids`, None: T5's), without weights. `saved`: the dict `check_t5_checkpoint`
    returned for its name_or_path (None: read it)."""
    if model_cfg.name_or_path is None:
        return t5_config_from_dims(model_cfg.dims, special_ids=special_ids)
    if saved is None:
        saved = check_t5_checkpoint(model_cfg.name_or_path)
    try:
        return pretrained_t5_config(model_cfg.name_or_path, with_pretrained_dims(model_cfg, saved))
    except (OSError, ValueError) as err:
        raise ModelBuildError(f"model.name_or_path {model_cfg.name_or_path!r} could not be loaded: "
                              f"{one_line(err)}") from None


def saved_config_dict(name_or_path: str) -> Dict[str, Any]:
    """The config dict saved with the model of `name_or_path` (its config.json), the hub asked first as
    `use_hub_for` says."""
    use_hub_for(name_or_path)
    saved, _ = T5Config.get_config_dict(name_or_path)
    return saved


def pretrained_t5_config(name_or_path: str, saved: Optional[Dict[str, Any]] = None) -> T5Config:
    """`T5Config.from_pretrained` from the saved config dict `saved` (None: read it), keeping mT5's unscaled output
    layer: `T5Config` reads a saved `tie_word_embeddings: true` (which transformers writes for every mT5) as T5's
    `d_model**-0.5` scaling of the decoder output, which mT5 (`MT5ForConditionalGeneration`) never applies.
    ModelBuildError for a `model_type` other than `T5_MODEL_TYPES` (UMT5, LongT5, another architecture)."""
    if saved is None:
        saved = saved_config_dict(name_or_path)
    check_t5_model_type(saved, repr(name_or_path))
    config = T5Config.from_dict(saved)
    if saved.get("model_type") == "mt5":
        config.scale_decoder_outputs = False
    return config


def pretrained_generation_config(name_or_path: str) -> GenerationConfig:
    """The generation config `from_pretrained` gives the model of `name_or_path`: its generation_config.json, else
    the one its config.json implies. ModelBuildError naming the generation_config.json where the folder (or, for a
    hub name, the hub cache) holds one that cannot be read, e.g. no JSON: `from_pretrained` takes such a file for a
    missing one without a word, and the model would decode with other settings than the file's."""
    try:
        return GenerationConfig.from_pretrained(name_or_path)
    except OSError as err:
        saved = _model_file(name_or_path, GENERATION_CONFIG_NAME)
        if saved is not None:
            raise ModelBuildError(f"{saved} cannot be read as a generation config ({one_line(err)}): correct it, or "
                                  f"remove it to generate with the settings its config.json implies") from None
        return GenerationConfig.from_pretrained(name_or_path, config_file_name="config.json", _from_model_config=True)


def check_t5_checkpoint(name_or_path: str) -> Dict[str, Any]:
    """The saved config dict of `name_or_path` (read once); ModelBuildError when it cannot be read or is not a T5's
    (its `model_type` is not one of `T5_MODEL_TYPES`): another architecture would load as a T5 with every weight
    freshly initialised, or fail deep in transformers; for a local folder, also when its generation_config.json
    cannot be read (`pretrained_generation_config`)."""
    use_hub_for(name_or_path)  # (a hub that cannot be reached: offline mode, so a name not cached fails at once)
    try:
        config, _ = T5Config.get_config_dict(name_or_path)
    except (OSError, ValueError) as err:
        raise ModelBuildError(f"model.name_or_path {name_or_path!r} could not be loaded: {one_line(err)}") from None
    check_t5_model_type(config, f"model.name_or_path {name_or_path!r}",
                        ": use a T5 checkpoint (e.g. google/flan-t5-base) or build one from model.dims")
    if Path(name_or_path).exists():  # (a local folder's, before any tokenizing; a hub model's: where it is built)
        try:
            pretrained_generation_config(name_or_path)
        except ModelBuildError as err:
            raise ModelBuildError(f"model.name_or_path {name_or_path!r} could not be loaded: {err}") from None
    return config


def check_t5_model_type(saved: Mapping[str, Any], named: str, advice: str = "") -> None:
    """ModelBuildError "`named` is a ... model, not a T5 ...`advice`" where the saved config dict `saved` names a
    `model_type` other than `T5_MODEL_TYPES` (UMT5, LongT5, another architecture: built as a T5, it would compute
    otherwise); one naming none is read as a T5, as `T5Config` reads it."""
    model_type = saved.get("model_type")
    if not is_t5_model_type(model_type):
        raise ModelBuildError(f"{named} {not_a_t5(model_type)}{advice}")


def build_model(model_cfg: Union[ModelConfig, Mapping[str, Any]], vocab_size: Optional[int] = None,
                task_names: Optional[Sequence[str]] = None, saved: Optional[Dict[str, Any]] = None,
                weights: bool = True, special_ids: Optional[Mapping[str, int]] = None) -> T5ForConditionalGeneration:
    """A `T5ForConditionalGeneration` for the config's `name_or_path` (its config with `dims`' dropout_rate over it:
    `with_pretrained_dims`) or `dims`, its weights in fp32 (a folder saved in bf16 is upcast: `training.precision`
    sets the compute dtype, and fp32 training keeps fp32 weights).

    `vocab_size` (the tokenizer's `len(tok)`) sizes a model built from dims, and a loaded model whose embedding is
    smaller is refused (its token ids would overflow); `special_ids` (`special_ids_of(tok)`) are a model from dims'
    pad, eos and decoder-start ids (None: T5's; a pretrained model keeps its own). With `moe`, the FFNs are
    converted by `t2t_mtl.model.moe.convert_to_moe` (which owns that config); `task_names` (the training tasks in
    task-id order) tells task-routed experts which id is which task. With `lora`, the block linears get low-rank
    adapters and the rest is frozen (`t2t_mtl.model.lora.apply_lora`). A dict `model_cfg` is checked as the config's
    `model:` section is (`ConfigError` naming the key). `saved`: the dict `check_t5_checkpoint` returned for
    `name_or_path` (None: read it), so its config.json is read once. `weights=False` builds a pretrained model from
    its config alone, its weights not read (under `torch.device("meta")`: a weightless check of the model settings,
    e.g. which parameters `model.lora.trainable` names).
    """
    if not isinstance(model_cfg, ModelConfig):
        model_cfg = model_config_from_dict(model_cfg)
    if model_cfg.name_or_path is not None:
        from t2t_mtl.model.moe import TaskAwareT5, adopt_task_names, load_t5_or_moe

        if saved is None:
            saved = check_t5_checkpoint(model_cfg.name_or_path)
        try:  # an exported MoE model loads with its experts (plain T5 loading would drop them)
            model = load_t5_or_moe(model_cfg.name_or_path, saved=with_pretrained_dims(model_cfg, saved),
                                   weights=weights, dtype=torch.float32)
        except (OSError, ValueError, SafetensorError) as err:  # (a weights file cut short or of another format)
            raise ModelBuildError(f"model.name_or_path {model_cfg.name_or_path!r} could not be loaded: "
                                  f"{one_line(err)}") from None
        if isinstance(model, TaskAwareT5):
            _check_loaded_moe(model, model_cfg, task_names)
            if task_names is not None:
                adopt_task_names(model, task_names)
        if vocab_size is not None and model.config.vocab_size < vocab_size:
            raise ModelBuildError(
                f"model {model_cfg.name_or_path!r} has {model.config.vocab_size} embeddings but the tokenizer has "
                f"{vocab_size} tokens; use the model's own tokenizer (tokenizer.path)")
    else:
        model = T5ForConditionalGeneration(t5_config_from_dims(model_cfg.dims, vocab_size, special_ids))
    if model_cfg.moe:
        from t2t_mtl.model import moe  # owned by the MoE component
        model = moe.convert_to_moe(model, model_cfg.moe, task_names=list(task_names) if task_names else None)
    from t2t_mtl.model.lora import apply_lora, lora_settings

    lora = lora_settings(model_cfg.lora)
    if lora is not None:
        apply_lora(model, lora, train_embeddings=model_cfg.task_embeddings,
                   task_names=list(task_names) if task_names else None)
    if model_cfg.activation_checkpointing:
        enable_activation_checkpointing(model, int(model_cfg.activation_checkpointing))
    return model


def enable_activation_checkpointing(model: T5ForConditionalGeneration, every: int = 1) -> None:
    """Recompute the activations of every `every`-th block of the encoder and of the decoder — blocks 0, every,
    2·every, ... of each stack — in the backward (non-reentrant `torch.utils.checkpoint`, RNG state preserved, so
    dropout masks and gradients are those of a plain run).

    Applies in training mode with gradients enabled; evaluation and generation run the blocks as usual. MoE
    blocks are recomputed with the same routing (it depends only on their inputs and the batch's task ids).
    """
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    elif every == 1:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        raise ModelBuildError(f"model.activation_checkpointing: {every} (every {every}-th block) needs a transformers "
                              "release with activation_checkpointing_enable; use true")
    # transformers' every_n_layers counts the encoder's and the decoder's blocks as one sequence, so the decoder's
    # checkpointed blocks would depend on the encoder's depth: choose them per stack
    for stack in (model.get_encoder(), model.get_decoder()):
        for i, block in enumerate(stack.block):
            block.gradient_checkpointing = i % every == 0


def _check_loaded_moe(model: Any, model_cfg: ModelConfig, task_names: Optional[Sequence[str]]) -> None:
    """A loaded mixture-of-experts model keeps its own MoE layers: refuse a `model.moe` section (it would be
    ignored) and, for task/hybrid routing, a task list other than the one its task ids index."""
    if model_cfg.moe:
        raise ModelBuildError(f"model.name_or_path {model_cfg.name_or_path!r} is already a mixture-of-experts model "
                              f"(its config.json has a moe section, which is used as is): remove model.moe")
    trained = list(model.moe_config.task_names or [])
    if model.moe_config.routing != "token" and task_names is not None and list(task_names) != trained:
        other = (f", or fine-tune one task's experts on other tasks: `t2t-mtl export {model_cfg.name_or_path} --task "
                 f"NAME --out DIR` writes them as a plain T5 (a task it was not trained on: the unseen-task route's) "
                 f"for model.name_or_path" if model.moe_config.routing == "task" else "")
        raise ModelBuildError(f"model.name_or_path {model_cfg.name_or_path!r} routes experts by the task ids of "
                              f"{trained}, but this run's tasks are {list(task_names)}: train on the same tasks in "
                              f"the same order (data.tasks: {trained}){other}")


MOE_STATS = ("aux_loss", "load_balancing", "z_loss", "dropped")
LAYER_STATS = ("load_balancing", "z_loss", "num_dropped", "choices")  # each MoE layer's own, in `moe_stats`


def moe_stats(model: Any) -> Optional[torch.Tensor]:
    """The MoE layers' statistics of the model's last forward, or None for a dense model.

    float64 [len(MOE_STATS) + 1 + layers·tasks·E + layers·len(LAYER_STATS) + 1], on the model's device (built there
    without reading a value, so no wait for the device): the weighted aux loss (what the model added to the training
    loss), the sums over layers of the load-balancing and z losses, of the dropped (token, slot) choices and of all
    the choices, each MoE layer's [tasks, E] counts of the choices of each trained task per expert (layers in
    `moe_blocks` order; zeros where a layer counted none), each layer's own LAYER_STATS, and a trailing 1 — so the
    vectors of several micro-batches / ranks can be summed and then read by `moe_stats_dict`.
    """
    from t2t_mtl.model.moe import TaskAwareT5, moe_blocks

    if not isinstance(model, TaskAwareT5):
        return None
    cfg = model.moe_config
    layers = [block.aux for _, block in moe_blocks(model)]
    blocks = [aux for aux in layers if aux]
    load = len(MOE_STATS) + 1  # where the counts start
    per_layer = load + len(layers) * cfg.num_tasks * cfg.num_experts  # where each layer's own figures start
    out = torch.zeros(per_layer + len(layers) * len(LAYER_STATS) + 1, dtype=torch.float64, device=model.device)
    if not blocks:
        return out
    out[0] = model.moe_aux_loss().detach().double()
    for i, key in ((1, "load_balancing"), (2, "z_loss")):  # summed in float64 in layer order
        for aux in blocks:
            out[i] += aux[key].detach().double()
    out[3] = sum(aux["num_dropped"] for aux in blocks)
    out[4] = sum(aux["choices"] for aux in blocks)
    counts = [aux.get("task_counts") for aux in layers]
    given = [c for c in counts if c is not None]
    if cfg.num_tasks and given:
        zeros = torch.zeros_like(given[0])
        out[load:per_layer] = torch.stack([zeros if c is None else c for c in counts]).reshape(-1)
    for i, aux in enumerate(layers):
        for j, key in enumerate(LAYER_STATS if aux else ()):
            value = aux[key]
            out[per_layer + i * len(LAYER_STATS) + j] = value.detach().double() if torch.is_tensor(value) else value
    out[-1] = 1.0
    return out


def moe_stats_dict(summed: torch.Tensor, model: Any) -> Dict[str, Any]:
    """From a sum of `moe_stats` vectors of `model` (empty when no MoE forward was counted): the means over the
    forwards of the aux, load-balancing and z losses, `dropped` (the share of all their (token, slot) choices, over
    every MoE layer, dropped over capacity), `per_layer`: {layer: {load_balancing, z_loss (means over the forwards),
    dropped (the layer's share)}} and `expert_load`: {task: {layer: [share of the task's (token, slot) choices that
    went to each expert]}} for the trained tasks the forwards routed (none without task ids)."""
    from t2t_mtl.model.moe import moe_blocks

    summed = summed.cpu()  # (one transfer from the device)
    count = float(summed[-1])
    if not count:
        return {}
    out: Dict[str, Any] = {name: float(summed[i]) / count for i, name in enumerate(MOE_STATS[:3])}
    out["dropped"] = float(summed[3]) / float(summed[4]) if summed[4] else 0.0
    cfg, layers = model.moe_config, [name for name, _ in moe_blocks(model)]
    per_layer = len(MOE_STATS) + 1 + len(layers) * cfg.num_tasks * cfg.num_experts
    counts = summed[len(MOE_STATS) + 1:per_layer].reshape(len(layers), cfg.num_tasks, cfg.num_experts)
    own = summed[per_layer:-1].reshape(len(layers), len(LAYER_STATS)).tolist()
    out["per_layer"] = {layer: {"load_balancing": lb / count, "z_loss": z / count,
                                "dropped": dropped / choices if choices else 0.0}
                        for layer, (lb, z, dropped, choices) in zip(layers, own)}
    out["expert_load"] = {task: {layer: (counts[i, t] / counts[i, t].sum()).tolist() for i, layer in enumerate(layers)
                                 if counts[i, t].sum() > 0}
                          for t, task in enumerate(cfg.task_names or []) if counts[:, t].sum() > 0}
    return out


def accepts_task_ids(model: Any) -> bool:
    """Whether the model's forward takes `task_ids` (task-aware layers); plain T5 does not."""
    return "task_ids" in inspect.signature(model.forward).parameters


def count_parameters(model: Any) -> int:
    """Number of parameters (ZeRO-3 partitioned ones counted by their full size)."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
