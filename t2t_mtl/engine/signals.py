"""The signals adaptive samplers learn from during training: validation figures made safe to feed, per-task means
of training-forward entropies, and CA-MTL's uncertainty-selected micro-batches."""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Sequence

import torch

from t2t_mtl.data import BatchBuilder
from t2t_mtl.engine.distributed import DistEnv
from t2t_mtl.engine.logging import TrainLogger
from t2t_mtl.model.moe import token_masks


def finite_validation(results: Mapping[str, Mapping[str, float]], step: int, logger: TrainLogger
                      ) -> Dict[str, Dict[str, float]]:
    """Validation `results` ({"val_loss": {task: x}, ...}) without their non-finite figures (a diverged task's
    loss), each left out with a warning naming the task: the samplers skip that task's update this time (they
    refuse non-finite feedback) and training goes on. The logged results keep them (null in metrics.jsonl)."""
    out = {}
    for metric, per_task in results.items():
        out[metric] = {task: value for task, value in per_task.items() if math.isfinite(value)}
        dropped = {task: value for task, value in per_task.items() if task not in out[metric]}
        if dropped:
            what = "loss" if metric == "val_loss" else "score"
            logger.message(f"warning: step {step}: validation {what} of task(s) "
                           f"{', '.join(map(repr, dropped))} is not finite ({', '.join(map(str, dropped.values()))}): "
                           f"the sampler skips their update this time")
    return out


def task_means(sums_and_counts: torch.Tensor, task_names: Sequence[str]) -> Dict[str, float]:
    """{task: sum / count} from a [2T] (sums | counts) tensor, for tasks with a count and a finite mean (the tensor
    read once)."""
    T = len(task_names)
    values = sums_and_counts.tolist()
    out = {}
    for i, name in enumerate(task_names):
        if values[T + i] > 0:
            value = values[i] / values[T + i]
            if math.isfinite(value):
                out[name] = value
    return out


@torch.no_grad()
def candidate_entropies(engine: Any, batch: Mapping[str, torch.Tensor], pass_task_ids: bool,
                        device: torch.device) -> torch.Tensor:
    """Per-candidate prediction entropy (nats, mean over target tokens) from one teacher-forced forward."""
    from t2t_mtl.sampling import generation_entropy

    # copies of the collated host tensors, which nothing changes after: no need to wait for the device
    labels = batch["labels"].to(device, non_blocking=True)
    kwargs = {"input_ids": batch["input_ids"].to(device, non_blocking=True),
              "attention_mask": batch["attention_mask"].to(device, non_blocking=True),
              "decoder_input_ids": engine.module._shift_right(labels), "use_cache": False}  # (no decoding here)
    if pass_task_ids:
        kwargs["task_ids"] = batch["task_ids"].to(device, non_blocking=True)
    with token_masks(engine.module, decoder=labels.ne(-100)):
        logits = engine(**kwargs).logits
    return generation_entropy(logits, labels != -100, normalise=False)


def select_candidate_chunk(builder: BatchBuilder, engine: Any, pass_task_ids: bool, env: DistEnv,
                           task_tokens: Any = None) -> Any:
    """One CA-MTL micro-batch: the sampler's candidate pool scored by `candidate_entropies`, the top
    micro_batch_size kept. Every task generates text, so its answer space is the vocabulary (S' = log V).
    `task_tokens` (TE⊕ENC): the candidates are scored with their task token in front, as they are trained."""
    vocab = int(engine.module.config.vocab_size)
    sizes = {name: vocab for name in builder.task_names}

    def score(batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        if task_tokens is not None:
            batch = task_tokens(batch)
        return candidate_entropies(engine, batch, pass_task_ids, env.device)

    return builder.next_selected_chunk(score, sizes)
