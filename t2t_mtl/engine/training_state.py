"""What a checkpoint holds of the training loop besides DeepSpeed's own state, and how a resume puts it back.

`trainer_state` (the same on every rank: saved once) holds the loop's `Progress` and the state of the parts
every rank keeps equal (sampler, weighting, gradient surgery, best-checkpoint selection, logging window);
`rank_state` (saved per rank) what differs per rank: the row streams, the batch builder's waiting rows, this
rank's sampler draws and the RNGs. `restore` reads both back; under another world size each task's epoch goes
on with the rows the old ranks had not trained (`reshard_streams_state`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from t2t_mtl.data.batches import waiting_rows
from t2t_mtl.engine import checkpoint_loading, rng_states
from t2t_mtl.engine.distributed import DistEnv
from t2t_mtl.engine.rank_agreement import SharedPart
from t2t_mtl.engine.universal_frozen import fill_frozen


@dataclass
class Progress:
    """The training loop's counters, saved with every checkpoint."""

    step: int = 0  # optimizer steps done (skipped ones included)
    skipped: int = 0  # steps skipped for a non-finite or zero loss
    bad_in_a_row: int = 0  # the current streak of skipped steps (goes on across a resume)
    examples_trained: Dict[str, int] = field(default_factory=dict)  # per task, over all ranks
    seen_examples: Optional[float] = None  # examples drawn over all ranks (None: a checkpoint that lacks it)
    pending_evaluation: Optional[int] = None  # a zero-shot evaluation a SIGTERM deferred to the resumed run
    weighting_stats: Dict[str, Any] = field(default_factory=dict)  # validation KPIs for the next weighting call


@dataclass
class LoopParts:
    """The stateful parts the loop drives besides the DeepSpeed engine (None where the config has none)."""

    sampler: Any
    task_streams: Any
    builder: Any
    weighting: Any
    weighting_optimizer: Optional[torch.optim.Optimizer]
    surgery: Any
    best_validation: Any


def trainer_state(progress: Progress, parts: LoopParts, log_window: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The checkpoint's trainer state (the same on every rank)."""
    return {"step": progress.step, "skipped_steps": progress.skipped, "bad_in_a_row": progress.bad_in_a_row,
            "sampler": parts.sampler.state_dict(),
            "examples_trained": dict(progress.examples_trained), "seen_examples": progress.seen_examples,
            "weighting": parts.weighting.state_dict(), "weighting_stats": progress.weighting_stats,
            "weighting_optimizer": _state_or_none(parts.weighting_optimizer),
            "gradient_surgery": _state_or_none(parts.surgery),
            "best_validation": _state_or_none(parts.best_validation),
            "pending_evaluation": progress.pending_evaluation, "log_window": log_window}


#: the sampler's state_dict keys of its draw position, which differ per rank where the ranks draw apart (mixed-mode
#: packed micro-batches: each rank draws as many rows as fit its own batches)
DRAW_POSITION = ("rng_state", "block_rng_state", "position", "drawn")


def shared_parts(state: Mapping[str, Any], parts: LoopParts) -> List[SharedPart]:
    """The parts of `trainer_state` `state` that every rank must hold alike (`rank_agreement.disagreement`): the
    sampler (its settings; unless mixed-mode packing has each rank draw its own rows, also its draw position, its
    probabilities and what its strategy learned, its extra state but the keys its `RANK_OWN_STATE` names), the loss
    weighting with its optimizer, and the gradient method (where the run has gradient surgery)."""
    sampler = parts.sampler
    alike = not (parts.builder.packed and sampler.mode == "mixed")
    sampled = {key: value for key, value in state["sampler"].items()
               if key != "extra" and (alike or key not in DRAW_POSITION)}
    if alike:  # (packed: what a strategy learns may follow its rank's own draws, as bandit_thompson's target credit
        # does where its updates give no trained counts)
        sampled["probabilities"] = sampler.probabilities()
        sampled["extra"] = {key: value for key, value in state["sampler"]["extra"].items()
                            if key not in sampler.RANK_OWN_STATE}
    found = [SharedPart("sampler", "sampling.strategy", sampler, sampled,
                        "a sampler draws from the seed it is given (the same on every rank, not offset by its rank) "
                        "and learns from the stats update() feeds it (the same on every rank) alone"),
             SharedPart("loss weighting", "weighting.method", parts.weighting,
                        {"weighting": state["weighting"], "optimizer": state["weighting_optimizer"]},
                        "a weighting learning from its rank's own losses makes what it learns the same on every "
                        "rank in synchronize(all_reduce_sum), which training calls after every step")]
    if parts.surgery is not None:
        found.append(SharedPart("gradient method", "gradient_surgery.method", parts.surgery.surgery.method,
                                state["gradient_surgery"],
                                "a gradient method learns from the Gram matrices it is given (the same on every "
                                "rank) alone"))
    return found


def rank_state(parts: LoopParts) -> Dict[str, Any]:
    """This rank's part of the checkpoint: its row streams, waiting rows, sampler draws and RNG states."""
    return {"task_streams": parts.task_streams.state_dict(), "batches": parts.builder.state_dict(),
            "sampler": parts.sampler.state_dict(), "rng": rng_states.rng_state()}


def restore(engine: Any, resume_from: Path, parts: LoopParts, env: DistEnv, *, universal: bool
            ) -> Tuple[Progress, Optional[Dict[str, Any]]]:
    """Load the checkpoint into the engine and `parts`; return the loop's progress and the logging window the
    interrupted run had open. `universal`: the checkpoint loads through DeepSpeed's universal format (another
    world size or ZeRO stage), its frozen parameters and buffers then written from its module state
    (`universal_frozen`)."""
    state, own, meta = checkpoint_loading.load_checkpoint(engine, resume_from, env, universal=universal)
    if universal:  # (DeepSpeed's universal load restores the trained parameters alone)
        fill_frozen(engine.module, resume_from, int(meta["zero_stage"]), int(meta["world_size"]))
    progress = Progress(step=int(state["step"]), skipped=int(state["skipped_steps"]),
                        bad_in_a_row=int(state.get("bad_in_a_row", 0)),
                        examples_trained=dict(state.get("examples_trained", {})),
                        seen_examples=state.get("seen_examples"), pending_evaluation=state.get("pending_evaluation"),
                        weighting_stats=dict(state.get("weighting_stats") or {}))
    parts.sampler.load_state_dict(state["sampler"])
    parts.weighting.load_state_dict(state["weighting"])
    if parts.weighting_optimizer is not None and state.get("weighting_optimizer"):
        parts.weighting_optimizer.load_state_dict(state["weighting_optimizer"])
    if parts.surgery is not None and state.get("gradient_surgery"):
        parts.surgery.load_state_dict(state["gradient_surgery"])
    if parts.best_validation is not None:
        parts.best_validation.load_state_dict(state.get("best_validation"))
    if own is not None:
        parts.task_streams.load_state_dict(own["task_streams"])
        parts.builder.load_state_dict(own["batches"])
        if own.get("sampler") is not None:  # this rank's own draws (packed mixed batches differ)
            parts.sampler.load_state_dict(own["sampler"])
        rng_states.set_rng_state(own["rng"])
    else:  # another world size: each task's epoch goes on with the rows the old ranks had not trained
        parts.task_streams.load_state_dict(reshard_streams_state(
            checkpoint_loading.load_rank_states(resume_from, int(meta["world_size"])), env))
    return progress, state.get("log_window")


def reshard_streams_state(rank_states: Sequence[Mapping[str, Any]], env: DistEnv) -> Dict[str, Any]:
    """TaskStreams state of this rank of a new world size, from the checkpointed states of all old ranks: each
    task's interrupted epoch goes on, dealt to the new ranks in its global order, with the rows the old ranks
    had not trained (those waiting in their batch builders first); nothing is skipped or repeated."""
    from t2t_mtl.sampling.streams import resharded_state

    untrained = [pair for state in rank_states for pair in waiting_rows(state["batches"])]
    return resharded_state([state["task_streams"] for state in rank_states], untrained, rank=env.rank,
                           world_size=env.world_size)


def _state_or_none(part: Any) -> Optional[Dict[str, Any]]:
    return part.state_dict() if part is not None else None
