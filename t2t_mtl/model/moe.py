"""Task-aware mixture-of-experts FFNs for T5.

`MoEFeedForward` replaces the `DenseReluDense` of a `T5LayerFF` (layer norm, dropout and residual stay
T5's) with E experts of the same shape. Routing modes:
- `token`: a linear router over each token (fused router kernel → dispatch plan → permute → experts on
  contiguous segments → gate-weighted combine);
- `task` (Task-MoE, Kudugunta et al. 2021): the route of every token is the top-k of its task's gate row,
  so a batch is grouped by task and each task's segment runs through its k experts — no per-token router,
  no sort; a task can then be served by its experts alone (`extract_task_subnetwork`);
- `hybrid`: token router logits plus the task's gate row (token representation + task embedding).
Aux losses per block, over the real tokens (padding takes no capacity and is left out; `token_masks`): Switch
load balancing E·Σ_e f_e·P_e and the router z-loss mean(logsumexp²);
`TaskAwareT5.forward(..., task_ids=...)` adds `aux_loss_coef·Σ lb + z_loss_coef·Σ z` to `loss`.

The `model.moe` config keys are `MoEConfig`'s fields. `task_ids` (LongTensor [B]) index `task_names`;
`UNSEEN_TASK_ID` (-1) marks a task the model was not trained on (zero-shot evaluation of held-out tasks),
routed as `unseen_task_routing` says: by the mean of the trained tasks' gate rows, like a named trained
task, or refused.
Every expert takes part in every forward (on zero rows when unused), so every parameter gets a gradient on
every data-parallel rank — what DeepSpeed ZeRO's gradient hooks need. Experts are replicated on each rank
(no expert parallelism).
"""
from __future__ import annotations

import copy
import functools
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from transformers import T5Config, T5ForConditionalGeneration
from transformers.generation.utils import GenerateOutput
from transformers.modeling_outputs import Seq2SeqLMOutput

from t2t_kernels.moe import route
from t2t_mtl.model.lora import has_lora
from t2t_mtl.model.moe_config import (UNSEEN_TASK_ROUTINGS, MissingTaskIdsError, MoEConfig, MoEConfigError,
                                      moe_mapping)
from t2t_mtl.model.moe_layer import MoEFeedForward, routing_dtype
from t2t_mtl.model.t5 import (pretrained_generation_config, pretrained_t5_config, saved_config_dict, saves_own_head,
                              unfilled_model, untie_head, untie_head_like)
from t2t_mtl.model.task_routing import (UNSEEN_TASK_ID, TaskConditionedT5, routing_task_id, set_task_ids)

__all__ = [
    "MoEConfig", "MoEConfigError", "MissingTaskIdsError", "MoEFeedForward", "TaskAwareT5",
    "TaskAwareSeq2SeqLMOutput", "UNSEEN_TASK_ID", "UNSEEN_TASK_ROUTINGS", "adopt_task_names", "convert_to_moe",
    "extract_task_subnetwork", "set_task_ids", "load_t5_or_moe", "moe_blocks", "routing_task_id", "token_masks",
    "batch_dependent", "CapacityDrops", "capacity_drops", "lockstep_padding_passes",
]

def moe_blocks(model: nn.Module, stacks: Sequence[str] = ("encoder", "decoder")
               ) -> Iterator[Tuple[str, MoEFeedForward]]:
    """(layer name "encoder.i"/"decoder.i", block) for every MoE FFN of a T5 model (of the given stacks)."""
    for stack_name in stacks:
        stack = getattr(model, stack_name)
        for i, block in enumerate(stack.block):
            ffn = block.layer[-1].DenseReluDense
            if isinstance(ffn, MoEFeedForward):
                yield f"{stack_name}.{i}", ffn


def batch_dependent(model: nn.Module) -> bool:
    """Whether a row's output of `model` can depend on the other rows of its batch: an MoE layer routing by token
    with an expert capacity (token or hybrid routing, not `dropless`), where which tokens overflow depends on the
    whole batch. False for any other model (dense T5, task routing, dropless)."""
    return isinstance(model, TaskAwareT5) and any(block.moe.routing != "task" and not block.moe.dropless
                                                  for _, block in moe_blocks(model))


@contextmanager
def token_masks(model: nn.Module, encoder: Optional[torch.Tensor] = None,
                decoder: Optional[torch.Tensor] = None) -> Iterator[None]:
    """Within the block, the MoE layers of `model`'s encoder / decoder route only the tokens where `encoder` /
    `decoder` ([B, L], nonzero = a real token) is set, for a stack that gets no 2-D attention mask: a packed
    batch's (4-D masks; its segment id 0 is padding), or a decoder run on labels' padded positions (-100) without
    a decoder_attention_mask. A stack's own 2-D attention mask wins. Nothing to do for a model without MoE layers."""
    if not isinstance(model, TaskAwareT5):
        yield
        return
    before = dict(model.moe_token_masks)
    model.moe_token_masks.update({k: v for k, v in (("encoder", encoder), ("decoder", decoder)) if v is not None})
    try:
        yield
    finally:
        model.moe_token_masks = before


@dataclass
class CapacityDrops:
    """The (token, slot) choices MoE layers routed (`choices`) and dropped over expert capacity (`dropped`), summed
    over their forwards (`capacity_drops`)."""

    dropped: int = 0
    choices: int = 0

    def add(self, block: MoEFeedForward, inputs: Any, output: Any) -> None:
        """Forward hook of an MoE layer: add its forward's counts (`aux`)."""
        self.dropped += int(block.aux["num_dropped"])
        self.choices += int(block.aux["choices"])

    def merge(self, other: "CapacityDrops") -> None:
        """Add the counts of `other` (a batch's, into a whole pass's) to these."""
        self.dropped += other.dropped
        self.choices += other.choices


@contextmanager
def capacity_drops(model: nn.Module) -> Iterator[CapacityDrops]:
    """Within the block, count the (token, slot) choices every MoE layer of `model` routes and drops over capacity
    (the eval_capacity_factor's in eval mode) in its forwards, but for its lockstep padding passes
    (`TaskAwareT5.lockstep_padding`: passes a ZeRO-3 rank runs only to stay in step with the others, their results
    discarded); nothing is counted for a model without MoE layers."""
    drops = CapacityDrops()
    blocks = [block for _, block in moe_blocks(model)] if isinstance(model, TaskAwareT5) else []

    def count(block: MoEFeedForward, inputs: Any, output: Any) -> None:
        if not model.lockstep_padding:
            drops.add(block, inputs, output)

    hooks = [block.register_forward_hook(count) for block in blocks]
    try:
        yield drops
    finally:
        for hook in hooks:
            hook.remove()


@contextmanager
def lockstep_padding_passes(model: nn.Module) -> Iterator[None]:
    """Within the block, `model`'s forwards are lockstep padding (`TaskAwareT5.lockstep_padding`), which
    `capacity_drops` does not count: a ZeRO-3 rank's extra passes, run to stay in step with the other ranks and
    discarded. Nothing to do for a model without MoE layers."""
    if not isinstance(model, TaskAwareT5):
        yield
        return
    before, model.lockstep_padding = model.lockstep_padding, True
    try:
        yield
    finally:
        model.lockstep_padding = before


@dataclass
class TaskAwareSeq2SeqLMOutput(Seq2SeqLMOutput):
    """`Seq2SeqLMOutput` plus `aux_loss` (the weighted MoE aux losses, already included in `loss`)."""

    aux_loss: Optional[torch.FloatTensor] = None


def tokens_before_the_end(decoder_ids: torch.Tensor, eos_token_id: Union[None, int, Sequence[int]]) -> torch.Tensor:
    """bool [B, t]: True where no end-of-sequence token precedes the position in its row (position 0, the decoder
    start token, never ends a row; the end-of-sequence token itself is a real token)."""
    if eos_token_id is None:
        return torch.ones_like(decoder_ids, dtype=torch.bool)
    ids = torch.tensor(eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id]).to(
        decoder_ids.device, non_blocking=True)  # (called every generation step: a blocking copy waits for the device)
    ends = torch.isin(decoder_ids, ids)
    ends[:, 0] = False
    ended_before = ends.long().cumsum(1) - ends.long()
    return ended_before.eq(0)


class TaskAwareT5(TaskConditionedT5):
    """T5 whose every `moe.every`-th FFN is a `MoEFeedForward`; configured by `config.moe` (a dict).

    `forward(..., task_ids=None)` sets the task ids on the MoE blocks, runs T5, and adds
    `aux_loss = aux_loss_coef·Σ load_balancing + z_loss_coef·Σ z_loss` to `loss` when labels are given.
    `generate(..., task_ids=...)` keeps the ids set for the whole generation. Padding takes no expert capacity and
    no part in the aux losses: each stack gives its MoE blocks its 2-D attention mask (the encoder's
    `attention_mask`, the decoder's `decoder_attention_mask`), else the mask `token_masks` set, else — the
    decoder, when labels are given — the positions whose label is not -100, and in `generate` the tokens fed to
    sequences that have already ended (after their end-of-sequence token).
    `lockstep_padding` is True during forwards whose results are discarded, run only to keep ZeRO-3 ranks in step
    (`lockstep_padding_passes(model)`; in `generate(..., synced_gpus=True)`, the passes a rank runs after its own
    rows are done while another rank's are not): `capacity_drops` leaves them out.
    """

    lockstep_padding: bool = False

    def __init__(self, config: T5Config) -> None:
        super().__init__(config)
        self.moe_config = MoEConfig.from_dict(getattr(config, "moe", None))
        moe = self.moe_config
        self.routing_task_names = list(moe.task_names or []) if moe.routing != "token" else None
        for stack_name, stack in (("encoder", self.encoder), ("decoder", self.decoder)):
            if moe.layers not in ("both", stack_name):
                continue
            for i, block in enumerate(stack.block):
                if i % moe.every == moe.every - 1:
                    name = f"{stack_name}.{i}"
                    ffn = MoEFeedForward(config, moe, moe.expert_ids.get(name))
                    for expert in ffn.experts:
                        self._init_weights(expert)
                    ffn.reset_parameters(config.initializer_factor)
                    block.layer[-1].DenseReluDense = ffn
        layers = [name for name, _ in moe_blocks(self)]
        if not layers:
            depth = max(getattr(config, "num_layers" if stack == "encoder" else "num_decoder_layers")
                        for stack in ("encoder", "decoder") if moe.layers in ("both", stack))
            raise MoEConfigError(f"model.moe.every={moe.every} with layers={moe.layers!r} selects no layer of a "
                                 f"model with {config.num_layers}+{config.num_decoder_layers} layers (layer i of a "
                                 f"stack is an MoE layer when i+1 is a multiple of every): use every <= {depth}")
        stray = sorted(set(moe.expert_ids) - set(layers))
        if stray:
            raise MoEConfigError(f"model.moe.expert_ids names {stray}, which are not MoE layers of this model "
                                 f"(its MoE layers: {layers})")
        self.moe_token_masks: Dict[str, torch.Tensor] = {}  # set by `token_masks`
        for stack_name in ("encoder", "decoder"):
            getattr(self, stack_name).register_forward_pre_hook(functools.partial(self._mask_padding, stack_name),
                                                                with_kwargs=True)

    def _mask_padding(self, stack_name: str, stack: nn.Module, args: tuple, kwargs: Dict[str, Any]) -> None:
        """Forward pre-hook of a stack: its MoE blocks get its 2-D attention mask, else `moe_token_masks`'."""
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        if mask is None or mask.dim() != 2:
            mask = self.moe_token_masks.get(stack_name)
        reads: Dict[tuple, tuple] = {}  # (the stack's MoE layers read the mask from the device once)
        for _, block in moe_blocks(self, (stack_name,)):
            block.token_mask, block.shared_reads = mask, reads

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        """transformers' step inputs; also marks for the MoE blocks which of the decoder tokens `input_ids` [B, t]
        (the sequences so far) are padding: those after a sequence's end-of-sequence token, fed to finished rows
        while the others decode, which would otherwise take expert capacity from the unfinished rows (the decoder's
        `moe_token_masks` entry, for this step; `generate` restores the masks it found)."""
        eos = getattr(self, "_generation_eos", self.generation_config.eos_token_id)
        self.moe_token_masks["decoder"] = tokens_before_the_end(input_ids, eos)
        return super().prepare_inputs_for_generation(input_ids, *args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Union[GenerateOutput, torch.LongTensor]:
        """transformers' `generate`; the end-of-sequence id that marks finished rows is this call's (an
        `eos_token_id` or `generation_config` argument), else the model's."""
        before, padding = dict(self.moe_token_masks), self.lockstep_padding
        config = kwargs.get("generation_config") or self.generation_config
        self._generation_eos = kwargs.get("eos_token_id", config.eos_token_id)
        try:
            return super().generate(*args, **kwargs)
        finally:
            self.moe_token_masks, self.lockstep_padding = before, padding
            del self._generation_eos

    def _has_unfinished_sequences(self, this_peer_finished: bool, synced_gpus: bool, device: torch.device) -> bool:
        """transformers' decoding-loop test, asked before each pass; a rank whose own rows are done
        (`this_peer_finished`) that goes on under `synced_gpus` (another rank's are not) runs `lockstep_padding`
        passes, fed its finished rows again and discarded."""
        self.lockstep_padding = this_peer_finished
        return super()._has_unfinished_sequences(this_peer_finished, synced_gpus, device)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, MoEFeedForward):
            module.reset_parameters(self.config.initializer_factor)
        else:
            super()._init_weights(module)

    def moe_aux_loss(self) -> torch.Tensor:
        """aux_loss_coef·Σ load balancing + z_loss_coef·Σ z-loss over the blocks' last forward."""
        total = None
        for _, block in moe_blocks(self):
            if not block.aux:
                continue
            term = self.moe_config.aux_loss_coef * block.aux["load_balancing"] + \
                self.moe_config.z_loss_coef * block.aux["z_loss"]
            total = term if total is None else total + term
        return total if total is not None else torch.zeros((), device=self.device)

    def forward(self, *args: Any, task_ids: Optional[torch.Tensor] = None, **kwargs: Any
                ) -> Union[TaskAwareSeq2SeqLMOutput, Tuple[torch.Tensor, ...]]:
        """T5's forward with `task_ids` [B] set on the task-conditioned layers; `aux_loss` is added to `loss`
        (labels given) and returned beside it (not in the `return_dict=False` tuple)."""
        for _, block in moe_blocks(self):
            block.aux = {}
        labels = kwargs.get("labels")
        labelled = None if labels is None or "decoder" in self.moe_token_masks else labels.ne(-100)
        with token_masks(self, decoder=labelled):
            out = super().forward(*args, task_ids=task_ids, **kwargs)
        aux = self.moe_aux_loss()
        if isinstance(out, tuple):  # return_dict=False: (loss, logits, ...) when labels were given
            return ((out[0] + aux,) + out[1:]) if kwargs.get("labels") is not None else out
        loss = out.loss + aux if out.loss is not None else None
        return TaskAwareSeq2SeqLMOutput(**{**out, "loss": loss, "aux_loss": aux})


def adopt_task_names(model: TaskAwareT5, task_names: Sequence[str]) -> None:
    """Name the tasks of a token-routed `model` (one loaded from a folder) as the run that trains it next does: its
    task ids index them there, which under token routing only the per-task expert counts read. An
    `unseen_task_routing` naming a task of the old list (never read under token routing) becomes "mean", so the
    config stays valid. Task and hybrid routing keep theirs: their gate rows belong to those tasks."""
    cfg = model.moe_config
    if cfg.routing != "token":
        return
    cfg.task_names = list(task_names)
    if cfg.unseen_task_routing not in (*UNSEEN_TASK_ROUTINGS, *cfg.task_names):
        cfg.unseen_task_routing = "mean"
    model.config.moe = cfg.to_dict()


def convert_to_moe(model: T5ForConditionalGeneration, moe_cfg: Union[Mapping[str, Any], MoEConfig],
                   task_names: Optional[Sequence[str]] = None) -> TaskAwareT5:
    """A `TaskAwareT5` with the dense model's weights and MoE FFNs in every `every`-th layer.

    With `upcycle` (default) every expert starts as a copy of the FFN it replaces (sparse upcycling);
    otherwise experts are freshly initialised. `task_names` overrides `moe_cfg["task_names"]`.
    An already-converted model is returned unchanged.
    """
    if isinstance(model, TaskAwareT5):
        return model
    if has_lora(model):
        raise MoEConfigError("the model has LoRA adapters, which the MoE model would drop: convert first and add the "
                             "adapters after (as build_model does), or fold them into the weights "
                             "(t2t_mtl.model.lora.merge_lora)")
    data = moe_cfg.to_dict() if isinstance(moe_cfg, MoEConfig) else moe_mapping(moe_cfg)
    if task_names is not None:  # (a string is kept whole, for `validate` to refuse, not split into letters)
        data["task_names"] = task_names if isinstance(task_names, str) else list(task_names)
    cfg = MoEConfig.from_dict(data)
    config = copy.deepcopy(model.config)
    config.moe = cfg.to_dict()
    config.architectures = ["TaskAwareT5"]
    new = TaskAwareT5(config).to(dtype=model.dtype, device=model.device)
    untie_head_like(new, model)
    dense_state = model.state_dict()
    own = new.state_dict()
    state = {}
    for key, value in own.items():
        if key in dense_state:
            state[key] = dense_state[key]
        elif cfg.upcycle and ".DenseReluDense.experts." in key:
            head, tail = key.split(".DenseReluDense.experts.")
            dense_key = f"{head}.DenseReluDense.{tail.split('.', 1)[1]}"
            state[key] = dense_state[dense_key]
        else:
            state[key] = value  # router / task gate / non-upcycled experts keep their fresh init
    new.load_state_dict(state)
    new.train(model.training)
    return new


def extract_task_subnetwork(model: TaskAwareT5, task: Union[int, str], *, unseen: bool = False) -> TaskAwareT5:
    """The sub-network that serves one task of a task-routed model: its top-k experts per layer only.

    The result keeps the task's full gate row (so its gates are unchanged), knows one task (id 0, named as
    in the original) and gives the same outputs for that task as the full model. With `unseen=True`, a task
    name the model was not trained on gets the sub-network of the unseen-task route (`unseen_task_routing`:
    the mean row or a named task's row becomes its row), named `task`, with the full model's outputs for
    `UNSEEN_TASK_ID`. The sub-network routes any other task like its own one (unless the original refuses
    unseen tasks). Token and hybrid routing pick experts per token, so they have no per-task sub-network:
    `MoEConfigError`.
    """
    cfg = model.moe_config
    if cfg.routing != "task":
        raise MoEConfigError(f"extract_task_subnetwork needs model.moe.routing='task'; with {cfg.routing!r} routing "
                             "every token may use any expert, so no expert can be removed for a task")
    if has_lora(model):
        raise MoEConfigError("the model has LoRA adapters, which the sub-network (a plain MoE model) would drop: fold "
                             "them into the weights first (t2t_mtl.model.lora.merge_lora; select_task_adapter for "
                             "per-task adapters), as `t2t-mtl export --task` does")
    name, rows = _served_gate_rows(model, task, unseen)
    chosen = {layer: sorted(route(row[None], cfg.top_k, score=cfg.score, renormalize=cfg.renormalize,
                                  backend="reference").topk_idx[0].tolist())
              for layer, row in rows.items()}
    config = copy.deepcopy(model.config)
    fallback = "error" if cfg.unseen_task_routing == "error" else "mean"  # the mean of its one row
    config.moe = {**cfg.to_dict(), "task_names": [name], "expert_ids": chosen, "unseen_task_routing": fallback}
    sub = unfilled_model(TaskAwareT5, config, model.dtype, model.device)  # (no random init: every weight loaded below)
    untie_head_like(sub, model)
    source = model.state_dict()
    state = {}
    old_blocks = dict(moe_blocks(model))
    for key, value in sub.state_dict().items():
        if ".DenseReluDense.task_gate." in key:
            state[key] = rows[_layer_of(key)][None].to(value.dtype)
        elif ".DenseReluDense.experts." in key:
            layer = _layer_of(key)
            head, tail = key.split(".DenseReluDense.experts.")
            local, rest = tail.split(".", 1)
            original = old_blocks[layer].expert_ids.index(chosen[layer][int(local)])
            state[key] = source[f"{head}.DenseReluDense.experts.{original}.{rest}"]
        else:
            state[key] = source[key]
    sub.load_state_dict(state)
    sub.train(model.training)
    return sub


def _served_gate_rows(model: TaskAwareT5, task: Union[int, str], unseen: bool) -> Tuple[str, Dict[str, torch.Tensor]]:
    """(name of the served task, {layer: its gate row in the dtype the layer routes in}) for
    `extract_task_subnetwork`."""
    cfg = model.moe_config
    names = cfg.task_names or []
    if not (unseen and isinstance(task, str) and task not in names):
        tid = cfg.task_index(task)
        return names[tid], {layer: block.task_gate.weight[tid].detach().to(routing_dtype(block.task_gate.weight.dtype))
                            for layer, block in moe_blocks(model)}
    if cfg.unseen_task_routing == "error":
        raise MoEConfigError(f"task {task!r} is not one of the MoE model's tasks {names} and "
                             "model.moe.unseen_task_routing='error' refuses unseen tasks; set it to 'mean' or to a "
                             "trained task's name")
    return task, {layer: block.unseen_task_row().detach() for layer, block in moe_blocks(model)}


def _layer_of(key: str) -> str:
    stack, _, i = key.split(".")[:3]
    return f"{stack}.{i}"


def load_t5_or_moe(path: str, saved: Optional[Dict[str, Any]] = None, weights: bool = True,
                   **kwargs: Any) -> T5ForConditionalGeneration:
    """`from_pretrained` that builds a `TaskAwareT5` when the saved config has a `moe` section; `saved`: the config
    dict already read from `path` (None: read it); `kwargs` go to `from_pretrained`. `weights=False`: the same model
    built from the config alone, freshly initialised, `kwargs` unused (under `torch.device("meta")`: its parameter
    names and shapes, no weight read or allocated; an LM head of its own where `saves_own_head` says the model has
    one, and the generation config, as `from_pretrained` builds and reads them). Either way a generation_config.json
    that cannot be read is a ModelBuildError naming it (`pretrained_generation_config`)."""
    saved = saved if saved is not None else saved_config_dict(path)  # (read once: the config, then the head)
    config = pretrained_t5_config(path, saved)
    generation = pretrained_generation_config(path)
    cls = TaskAwareT5 if getattr(config, "moe", None) else T5ForConditionalGeneration
    if weights:
        return cls.from_pretrained(path, config=config, generation_config=generation, **kwargs)
    model = cls(config)
    if saves_own_head(path, saved):
        untie_head(model)
    model.generation_config = generation
    return model
