"""Turning checkpoints into plain Hugging Face model folders, and loading any of them back.

`export_model(run_or_ckpt, out_dir)` rebuilds the run's T5 from its saved config, fills it with the fp32
master weights of the checkpoint — gathered from every ZeRO partition (ZeRO 1–3, through DeepSpeed's
`zero_to_fp32`; the partitions of its bf16 optimizer at ZeRO-1 through `bf16_optimizer_weights`) or, at ZeRO stage 0,
taken from the bf16 optimizer's fp32 copies — and writes `save_pretrained` files plus the tokenizer and
`t2t_mtl_meta.json`, which `T5ForConditionalGeneration.from_pretrained(out_dir)` loads with no t2t-mtl code (an MoE
model is a `TaskAwareT5`: `t2t_mtl.model.moe.load_t5_or_moe`, which `load_trained_model` uses). This runs in one
process without a process group, so a checkpoint of any world size can be exported anywhere.
`export_task_subnetwork(path, task, out_dir)` writes the sub-network of a task-routed MoE model that serves
one task (its experts only, Task-MoE deployment: a plain T5 whose FFNs hold those experts, or an MoE model)
— a trained task, or a registered task it was not trained on (routed by `model.moe.unseen_task_routing`).
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import torch

from t2t_mtl.config import Config, ConfigError, tokenizer_source
from t2t_mtl.engine.bf16_optimizer_weights import bf16_optimizer_weights
from t2t_mtl.engine.checkpoint import CHECKPOINTS, CORRUPT_READ_HINT, DS_TAG, CheckpointError, read_meta
from t2t_mtl.engine.checkpoint_loading import check_loadable
from t2t_mtl.engine.distributed import select_cpu_accelerator
from t2t_mtl.engine.model_meta import (META_FILE, ExportError, checkpoint_of, checkpoint_run_meta, folder_meta,
                                      run_config, run_dir_of)
from t2t_mtl.model import ModelBuildError, build_model, count_parameters, special_ids_of
from t2t_mtl.model.lora import has_task_adapters, lora_settings, merge_lora, select_task_adapter
from t2t_mtl.model.t5 import unfilled
from t2t_mtl.model.task_routing import UNSEEN_TASK_ID
from t2t_mtl.model_folder import is_model_folder
from t2t_mtl.output_paths import OutputPathError, prepare_output_dir, refuse_non_empty_dir
from t2t_mtl.registration import register_tasks
from t2t_mtl.wording import one_line

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _zero_to_fp32_bars_as_transformers() -> Iterator[None]:
    """Inside the block, DeepSpeed's `zero_to_fp32` draws its progress bars ('Loading checkpoint shards', at ZeRO-3
    'Gathering sharded weights'; tqdm's, on stderr) where transformers draws its own ('Loading weights') and not where
    transformers' are hidden (`hidden_transformers_progress_bars`: by export, predict and merge, by eval with
    --no-progress and on its ranks but the first), rather than on every read of a ZeRO checkpoint."""
    from deepspeed.utils import zero_to_fp32
    from transformers.utils.logging import is_progress_bar_enabled

    drawn = zero_to_fp32.tqdm
    zero_to_fp32.tqdm = functools.partial(drawn, disable=not is_progress_bar_enabled())
    try:
        yield
    finally:
        zero_to_fp32.tqdm = drawn


def _gathered_zero_weights(ckpt: Path) -> Dict[str, torch.Tensor]:
    """DeepSpeed's `zero_to_fp32` gathering of a ZeRO checkpoint's fp32 weights, with what DeepSpeed prints kept off
    stdout, which holds the command's own output (predict's answers, eval's report): the lines it prints while
    gathering go to this module's log at debug level (its CPU accelerator chosen by `fp32_state_dict`). The files of
    DeepSpeed's bf16 optimizer (a bf16 ZeRO-1 run accumulating gradients in fp32), which `zero_to_fp32` cannot read,
    are read by `bf16_optimizer_weights`."""
    weights = bf16_optimizer_weights(ckpt)
    if weights is not None:
        return weights
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), _zero_to_fp32_bars_as_transformers():
            return get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag=DS_TAG)
    finally:
        for line in printed.getvalue().splitlines():
            logger.debug(line)


def weight_files(ckpt: Path, zero_stage: int) -> List[Path]:
    """The DeepSpeed files of checkpoint `ckpt` (of ZeRO stage `zero_stage`) from which `fp32_state_dict` reads the
    weights: at stage 0 the module state (its optimizer's fp32 masters inside), at stages 1-3 every module state and
    optimizer partition the folder holds (what `zero_to_fp32` and `bf16_optimizer_weights` read; a missing one is
    named by them)."""
    ds = Path(ckpt) / DS_TAG
    if zero_stage == 0:
        return [ds / "mp_rank_00_model_states.pt"]
    return sorted({*ds.glob("*_model_states.pt"), *ds.glob("*_optim_states.pt")})


def fp32_state_dict(ckpt: Path, model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """The full fp32 state dict of a trainer checkpoint (any ZeRO stage) for `model` (the run's architecture;
    at stage 0 its parameter order names the optimizer's fp32 master weights): the trained weights' fp32 masters,
    the frozen ones (LoRA) as stored. A CheckpointError names a `weight_files` file that cannot be loaded or is
    damaged inside (`check_loadable`: its records against the CRC-32s torch recorded, one read of each file), which
    torch and DeepSpeed would read without a word. DeepSpeed's CPU accelerator is chosen first: the files' classes
    import DeepSpeed, which would otherwise detect the CPU itself and say so in a warning on stdout."""
    select_cpu_accelerator()
    ckpt = Path(ckpt)
    meta = read_meta(ckpt, CORRUPT_READ_HINT)
    zero_stage = meta.get("zero_stage", 0)
    for path in weight_files(ckpt, zero_stage):
        check_loadable(path, CORRUPT_READ_HINT)
    try:
        if zero_stage >= 1:
            gathered = _gathered_zero_weights(ckpt)
            if zero_stage == 3:
                return gathered
        states = torch.load(ckpt / DS_TAG / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
    except Exception as err:  # missing or damaged DeepSpeed files surface as many exception types
        raise CheckpointError(f"{ckpt / DS_TAG}: the DeepSpeed weights cannot be read ({type(err).__name__}: "
                              f"{str(err).strip()[:300]}); {CORRUPT_READ_HINT}") from None
    module = {k: v.float() for k, v in states["module"].items()}
    if zero_stage >= 1:  # ZeRO-1/2 keep whole weights in the module state; ZeRO-1 saves frozen ones (LoRA) only there
        return {**module, **gathered}
    fp32_groups = (states.get("optimizer") or {}).get("fp32_groups")
    if fp32_groups:  # bf16 at stage 0: the master weights of the trained parameters, in the order handed over
        names = [name for name, p in model.named_parameters() if p.requires_grad]
        flat = [p for group in fp32_groups for p in group]
        if len(names) != len(flat):
            raise CheckpointError(f"{ckpt}: the model has {len(names)} parameters but the checkpoint "
                                  f"{len(flat)} fp32 master weights")
        for name, value in zip(names, flat):
            if value.numel() != module[name].numel():
                raise CheckpointError(f"{ckpt}: fp32 master weight for {name} has {value.numel()} elements, "
                                      f"the model {module[name].numel()}")
            module[name] = value.detach().float().reshape(module[name].shape)
    return module


def _tied_aliases(model: torch.nn.Module, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Give every name of a tied parameter (shared ↔ encoder/decoder.embed_tokens ↔ lm_head) the value
    stored under its first name, so a stale alias never overwrites the master weight on loading."""
    first: Dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        canonical = first.setdefault(id(p), name)
        if canonical != name and canonical in state:
            state[name] = state[canonical]
    return state


#: the half precisions a run trains in, by `training.precision` (as its meta records it)
HALF_PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _frozen_originals(model: torch.nn.Module, state: Dict[str, torch.Tensor], precision: Optional[str],
                      source: str, run: Path) -> Dict[str, torch.Tensor]:
    """Frozen weights (LoRA) train in the run's half precision and DeepSpeed keeps fp32 master copies of trained
    weights only: where a frozen weight's stored value is the half-precision rounding of the model as built
    from `model.name_or_path` (`source`, the pretrained fp32 weights), take the built value, so they come back bit
    for bit. Frozen weights the folder no longer gives (overwritten since, or another `model.name_or_path` saved by
    a resume into `run`'s config.yaml) keep their stored rounding, with a warning naming the folder."""
    half = HALF_PRECISIONS.get(precision or "")
    if half is None:
        return state
    frozen, rounded = 0, []
    for name, p in model.named_parameters():
        stored = state.get(name)
        if not p.requires_grad and stored is not None and stored.shape == p.shape:
            built = p.detach().float()
            same = built.to(half).float() == stored
            state[name] = torch.where(same, built, stored)
            frozen += 1
            if not bool(same.all()):
                rounded.append(name)
    if rounded:
        logger.warning(f"{len(rounded)} of the run's {frozen} frozen weights ({rounded[0]}, ...) are not the "
                       f"{precision} rounding of the weights of model.name_or_path {source!r}, which the run's "
                       f"config.yaml names: they keep the checkpoint's {precision} values, not the pretrained fp32 "
                       f"ones; if that folder changed since the run started from it (its checkpoints' "
                       f"initialised_from names the one it started from), point model.name_or_path in "
                       f"{run / 'config.yaml'} at that one")
    return state


def _run_model(cfg: Config, meta: Mapping[str, Any], tokenizer: Any) -> torch.nn.Module:
    """The run's model as training built it, before its checkpoint is loaded: a model from dims is sized by the
    tokenizer and takes its special ids, a pretrained one grows for the task tokens. It is built `unfilled` (no
    random init, a pretrained one's weights not read): the strict load that follows fills every tensor. Only a
    pretrained run with frozen weights (LoRA: every weight outside its adapters, MoE layers and `lora.trainable`)
    trained in half precision is built from its folder, whose frozen weights `_frozen_originals` reads (the
    checkpoint holds their half-precision rounding alone)."""
    def build(filled: bool) -> torch.nn.Module:
        model = build_model(cfg.model, vocab_size=None if cfg.model.name_or_path else meta.get("vocab_size"),
                            task_names=meta.get("tasks"), special_ids=special_ids_of(tokenizer), weights=filled)
        if cfg.model.task_embeddings:  # (a run written before runs recorded vocab_size may grow here)
            from t2t_mtl.analysis.task_embeddings import resize_for_task_tokens

            resize_for_task_tokens(model, tokenizer, mean_resizing=filled)
        return model

    frozen = lora_settings(cfg.model.lora) is not None
    if cfg.model.name_or_path and frozen and meta.get("precision") in HALF_PRECISIONS:
        return build(True)
    return unfilled(lambda: build(False))


def model_from_checkpoint(ckpt: Path) -> Tuple[torch.nn.Module, Any, Dict[str, Any]]:
    """(model in fp32 with the checkpoint's weights — shared LoRA adapters folded into their weights —, the run's
    tokenizer, meta)."""
    from t2t_mtl.tokenizer import load_tokenizer

    ckpt = Path(ckpt)
    run = run_dir_of(ckpt)
    cfg = run_config(run)
    meta = checkpoint_run_meta(ckpt, run, cfg)
    # the run's own copy of its tokenizer (trained for it, configured, or with TE⊕ENC's task tokens); runs written
    # before runs kept a copy of a configured tokenizer read the configured folder
    kept = (run / "tokenizer").is_dir() or tokenizer_source(cfg) is None
    tokenizer = load_tokenizer(str(run / "tokenizer" if kept else tokenizer_source(cfg)))
    try:
        model = _run_model(cfg, meta, tokenizer)
    except ModelBuildError as err:  # e.g. the pretrained folder the run started from has moved since
        raise CheckpointError(f"{ckpt}: the run's model cannot be rebuilt ({err}); "
                              f"{_rebuild_advice(cfg.model.name_or_path, meta, run)}") from None
    state = fp32_state_dict(ckpt, model)
    if cfg.model.name_or_path:  # (a model from dims has no weights of its own: nothing to restore)
        state = _frozen_originals(model, state, meta.get("precision"), cfg.model.name_or_path, run)
    state = _tied_aliases(model, state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if m not in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
                                                "lm_head.weight") or m not in state]
    if missing or unexpected:
        raise CheckpointError(f"{ckpt}: weights do not fit the run's model (missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]})")
    merge_lora(model)  # LoRA adapters folded into their weights: a plain T5 (MoE) model, same outputs
    return model.eval(), tokenizer, meta


def _rebuild_advice(name_or_path: Optional[str], meta: Mapping[str, Any], run: Path) -> str:
    """What to do where a run's pretrained model cannot be rebuilt: where its model.name_or_path is a relative path
    that misses, from this working directory, the folder the run started from (its checkpoints' `initialised_from`,
    by absolute path) and that folder is still there, point model.name_or_path at it; else restore the folder, or
    point model.name_or_path at its new place."""
    started = (meta.get("initialised_from") or {}).get("path")
    config = run / "config.yaml"
    if (name_or_path and started and not Path(name_or_path).is_absolute() and Path(started).is_dir()
            and Path(name_or_path).resolve() != Path(started)):
        return (f"model.name_or_path {name_or_path!r} is read from the working directory, {os.getcwd()}, but the run "
                f"started from {started}, which is there: point model.name_or_path in {config} at it, or run this "
                f"where the run was started")
    return f"restore it, or point model.name_or_path in {config} at its new place"


def export_model(run_or_ckpt: Union[str, Path], out_dir: Union[str, Path], *, overwrite: bool = True) -> Path:
    """Write an HF folder (model, tokenizer, t2t_mtl_meta.json) for a run dir (its latest checkpoint) or a
    checkpoint dir. Returns `out_dir`. `overwrite` false: an `out_dir` that holds files is an ExportError."""
    ckpt = checkpoint_of(run_or_ckpt)
    if (read_meta(ckpt, CORRUPT_READ_HINT).get("lora") or {}).get("per_task"):
        raise ExportError(f"{run_or_ckpt}: the run trains one LoRA adapter per task (model.lora.per_task), which a "
                          f"plain T5 folder cannot hold: export one task with --task NAME (its adapter folded into "
                          f"the weights; a task it was not trained on gets the mean adapter)")
    run = run_dir_of(ckpt)
    _output_dir(out_dir, run, create=False, overwrite=overwrite)  # (a refused export creates no folder)
    model, tokenizer, meta = model_from_checkpoint(ckpt)
    out = _output_dir(out_dir, run)
    _answer_as_the_run(model, meta)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / META_FILE).write_text(json.dumps(meta, indent=1, default=str))
    return out


def _answer_as_the_run(model: torch.nn.Module, meta: Mapping[str, Any]) -> None:
    """Set the generation config the folder is saved with to the run's own decoding (`max_new_tokens`, `num_beams`,
    as `t2t-mtl predict` and `eval` of the run take them: evaluation's, else `data.max_target_length`; one sequence
    an input, as ids: `ONE_SEQUENCE_EACH` over a pretrained folder's settings), so a plain `generate()` of the
    exported folder answers as they do; transformers' own default stops at 20 tokens. A meta without a run's config
    (a folder from elsewhere) leaves it as it is."""
    from t2t_mtl.evaluation.generation import ONE_SEQUENCE_EACH
    from t2t_mtl.evaluation.run_settings import run_setting

    if not meta.get("config"):
        return
    config = model.generation_config
    config.max_new_tokens = run_setting(meta, "max_new_tokens")
    config.num_beams = run_setting(meta, "num_beams")
    config.early_stopping = config.num_beams > 1  # (as evaluation's generate)
    config.update(**ONE_SEQUENCE_EACH)


def export_task_subnetwork(path: Union[str, Path], task: str, out_dir: Union[str, Path], *,
                           overwrite: bool = True, keep_moe: bool = False) -> Path:
    """Write the sub-network that serves `task` as an HF folder (model, tokenizer, t2t_mtl_meta.json with `task`,
    `tasks: [task]` — its task id is 0 — and `source`, `path` made absolute): per-task LoRA adapters
    (`model.lora.per_task`) keep the task's adapter, folded into the weights; a task-routed MoE model keeps the task's
    top-k experts per MoE layer, as a plain T5 each of whose MoE layers' FFN holds those experts side by side
    (`t2t_mtl.model.dense_task.dense_t5`; the meta's `dense_from_experts` names each layer's experts and gates, its
    `zero_padding` what holding k > 1 experts adds to the other FFNs, `dense_task.zero_padding` with the folder's
    `weights`), or, with `keep_moe`, as an MoE model.
    `task` is a trained task, or a registered task the model was not trained on (a held-out one, built in or in
    the run's `data.tasks_dir`): it gets the mean adapter and the experts of the unseen-task route
    (`model.moe.unseen_task_routing`, recorded in the meta). `path`: a run dir, checkpoint dir or exported folder.
    Raises ExportError for a model with neither (hybrid routing: neither), or for a name that is neither trained nor
    registered (with the closest of either), and `MoEConfigError` for an unseen task when `unseen_task_routing` is
    'error'; `overwrite` false: an ExportError for an `out_dir` that holds files;
    `keep_moe` for a model without MoE layers: an ExportError."""
    from t2t_mtl.model.dense_task import dense_blocker, dense_t5, task_routes, zero_padding
    from t2t_mtl.model.moe import TaskAwareT5, extract_task_subnetwork

    run = None if is_model_folder(path) else run_dir_of(checkpoint_of(path))
    if Path(out_dir).resolve() == Path(path).resolve():
        raise ExportError(f"--out {out_dir} is the model being exported; choose another folder")
    _output_dir(out_dir, run, create=False, overwrite=overwrite)
    model, tokenizer, meta = load_trained_model(path)
    adapters = has_task_adapters(model)
    moe_routed = isinstance(model, TaskAwareT5) and model.moe_config.routing != "token"
    if not adapters and not moe_routed:
        raise ExportError(f"{path}: --task needs a task-routed MoE model (model.moe with routing: task) or per-task "
                          f"LoRA adapters (model.lora.per_task); this model serves every task alike — export it "
                          f"without --task")
    if keep_moe and not moe_routed:
        why = ("this model's MoE layers route by token, so every task may use any expert (its --task export keeps "
               "them all, its per-task LoRA adapter folded)" if isinstance(model, TaskAwareT5) else
               "this model has no MoE layers (its per-task LoRA adapter is folded into a plain T5)")
        raise ExportError(f"{path}: --keep-moe keeps the experts of a task-routed MoE model; {why}: export it "
                          f"without --keep-moe")
    if not adapters and moe_routed and model.moe_config.routing == "hybrid":
        raise ExportError(f"{path}: --task needs a task-routed MoE model (model.moe with routing: task) or per-task "
                          f"LoRA adapters (model.lora.per_task); {dense_blocker(model.moe_config)}: no expert can be "
                          f"left out for one task — export it without --task")
    if adapters and moe_routed and model.moe_config.routing == "hybrid":
        raise ExportError(f"{path}: per-task LoRA adapters under hybrid MoE routing have no single-task form (the "
                          f"experts route every token by its task and its representation): evaluate the run itself "
                          f"(t2t-mtl eval --checkpoint {path})")
    names = list(model.routing_task_names or [])
    unseen = task not in names and _is_registered_task(task, (meta.get("config") or {}).get("data") or {})
    served = _unseen_task_service(model.moe_config if moe_routed else None, adapters)
    if task not in names and not unseen:
        raise ExportError(_unknown_task_message(task, names, served))
    if adapters:
        select_task_adapter(model, UNSEEN_TASK_ID if unseen else names.index(task))
    sub = extract_task_subnetwork(model, task, unseen=unseen) if moe_routed else model
    if unseen:  # (as predict warns of an input's task the model was not trained on; once served: not refused)
        logger.warning(f"task {task!r} is not one the model was trained on ({', '.join(names)}), so the folder "
                       f"gets {served}, as evaluation serves a held-out task{_closest_hint(task, names)}")
    routes = task_routes(sub) if moe_routed and not keep_moe else None
    padding = None
    if routes is not None:  # task routing: the same experts in each MoE layer for every token, a plain T5
        padding = zero_padding(sub)
        sub = dense_t5(sub, routes=routes)
    out = _output_dir(out_dir, run)
    _answer_as_the_run(sub, meta)
    sub.save_pretrained(out)
    tokenizer.save_pretrained(out)
    meta = {**meta, "task": task, "tasks": [task], "source": os.path.abspath(path)}
    if routes is not None:
        meta["dense_from_experts"] = routes
    if padding is not None:
        meta["zero_padding"] = {**padding, "weights": count_parameters(sub)}
    if unseen and adapters:
        meta["unseen_task_adapter"] = "mean"
    if unseen and moe_routed:
        meta["unseen_task_routing"] = model.moe_config.unseen_task_routing
    (out / META_FILE).write_text(json.dumps(meta, indent=1, default=str))
    return out


def _unseen_task_service(moe: Optional[Any], adapters: bool) -> str:
    """What a task a model was not trained on gets in its sub-network, in words: the experts of the unseen-task route
    of `moe` (the MoE settings of a task-routed model, else None), the mean adapter (`adapters`: per-task LoRA)."""
    served = ["the mean adapter"] if adapters else []
    if moe is not None:
        served.append("no experts: model.moe.unseen_task_routing is error, which refuses it"
                      if moe.unseen_task_routing == "error" else
                      f"the experts that model.moe.unseen_task_routing ({moe.unseen_task_routing}) routes it to")
    return " and ".join(served)


def _closest_hint(task: str, names: List[str]) -> str:
    """'; did you mean NAME?' with the one of `names` closest to `task`, or '' for none close."""
    from task_registry.errors import close_matches

    close = close_matches(task, names, n=1, cutoff=0.6, substrings=False)
    return f"; did you mean {close[0]!r}?" if close else ""


def _unknown_task_message(task: str, names: List[str], served: str) -> str:
    """The refusal of `export --task task` for a name that is neither one of the model's trained tasks `names` nor a
    registered task (`_is_registered_task`, which registered the run's own), saying what a held-out task would get
    (`served`, `_unseen_task_service`), with the closest of either."""
    import task_registry

    return (f"--task {task!r} is neither a task the model was trained on ({', '.join(names)}) nor a registered task "
            f"(a held-out task gets {served}){_closest_hint(task, [*names, *task_registry.list_tasks()])}")


def _is_registered_task(name: str, data: Mapping[str, Any]) -> bool:
    """Whether `name` is a built-in task or one that the run's config section `data` registers (`task_modules`'
    and `tasks_dir`'s, as `eval` registers them; only when needed, so a trained task exports without them)."""
    import task_registry

    task_registry.load_builtin_tasks()
    if name not in task_registry.list_tasks():
        # (as training registers them; '': a run trained before data.task_modules '' was refused, which imported none)
        register_tasks(data.get("tasks_dir"), data.get("task_modules") or None)
    return name in task_registry.list_tasks()


class OccupiedOutError(ExportError):
    """An export's `out_dir` holds files and `overwrite` is false (worded for a Python caller: `t2t-mtl export` words
    it again for its options)."""


def _output_dir(out_dir: Union[str, Path], run: Optional[Path] = None, create: bool = True,
                overwrite: bool = True) -> Path:
    """`out_dir`, created (with `create`); ExportError when it (or a parent) exists and is not a folder, when
    it is the run folder `run` or lies in its checkpoints/ (the exported model files would shadow the run's
    checkpoints), or, without `overwrite`, when it holds files (an earlier export it would overwrite)."""
    out = Path(out_dir).resolve()
    if run is not None and (out == run.resolve() or (run / CHECKPOINTS).resolve() in (out, *out.parents)):
        raise ExportError(f"--out {out_dir} is the run being exported ({run}) or lies in its {CHECKPOINTS}/; "
                          f"choose another folder (e.g. {run / 'hf'})")
    try:
        if not overwrite:
            refuse_non_empty_dir(out_dir, "out_dir", "overwrite=True")
    except OutputPathError as error:
        raise OccupiedOutError(str(error)) from None
    try:
        return prepare_output_dir(out_dir, "--out", create=create)
    except OutputPathError as error:
        raise ExportError(str(error)) from None


def load_trained_model(path: Union[str, Path]) -> Tuple[torch.nn.Module, Any, Dict[str, Any]]:
    """(model, tokenizer, meta) from an exported HF folder, a run directory (latest checkpoint) or a
    checkpoint directory. Raises ExportError when the path is none of these, or is a model folder (a config.json)
    whose files cannot be loaded (weights missing or damaged, no tokenizer) or that holds no T5 (UMT5, LongT5)."""
    path = Path(path)
    if is_model_folder(path):
        from safetensors import SafetensorError

        from t2t_mtl.model.moe import load_t5_or_moe
        from t2t_mtl.tokenizer import load_tokenizer

        try:
            return load_t5_or_moe(str(path)).eval(), load_tokenizer(str(path)), folder_meta(path)
        except ModelBuildError as err:  # (not a T5)
            raise ExportError(f"model folder {path}: {err}") from None
        except (OSError, ValueError, KeyError, SafetensorError) as err:  # (as evaluation's load_checkpoint)
            raise ExportError(f"model folder {path} could not be loaded: {one_line(err)}; pass a folder written "
                              f"whole by save_pretrained or `t2t-mtl export`, a run directory or a checkpoint"
                              ) from None
    return model_from_checkpoint(checkpoint_of(path))


#: what an exported folder's t2t_mtl_meta.json says of where its weights came from (a run's checkpoint, its step,
#: the task of an `export --task`, a merge's recipe, the folder that run was itself initialised from)
PROVENANCE_KEYS = ("run_dir", "checkpoint", "step", "task", "merge", "initialised_from")


def initialisation_record(name_or_path: Optional[str]) -> Optional[Dict[str, Any]]:
    """Where a run's initial weights come from, for its checkpoints' meta: None for a model built from model.dims;
    `{"hub_id": ...}` for a hub model; for a local folder its resolved path and its t2t_mtl_meta.json's
    `PROVENANCE_KEYS` as they are when the run starts (an export overwritten later leaves the record true; a run
    fine-tuned from a fine-tune keeps the chain). Raises ConfigError for a t2t_mtl_meta.json it cannot read."""
    if name_or_path is None:
        return None
    path = Path(name_or_path)  # (as is_local_model and the loaders read it: no ~ expansion)
    if not path.is_dir():
        return {"hub_id": name_or_path}
    try:
        folder = folder_meta(path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"model.name_or_path {name_or_path}: its {META_FILE} could not be read: {one_line(err)}; "
                          f"restore it, or delete it if the folder did not come from t2t-mtl") from None
    return {"path": str(path.resolve()), **{key: folder[key] for key in PROVENANCE_KEYS if folder.get(key) is not None}}
