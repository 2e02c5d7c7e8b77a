"""After training: which weights are evaluated (the best checkpoint under `training.keep_best`), held-in exact match
on validation examples and the zero-shot evaluation of the held-out tasks (`evaluation:`), printed by rank 0 and
written into the run's `TrainResult`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

from t2t_mtl.config import Config
from t2t_mtl.engine import checkpoint as ckpt_io
from t2t_mtl.engine import checkpoint_loading
from t2t_mtl.engine.best import BestValidation
from t2t_mtl.engine.distributed import DistEnv
from t2t_mtl.engine.logging import ScalarSinks, log_held_out, plot_held_out
from t2t_mtl.engine.own_checkpoint_files import check_own_files
from t2t_mtl.wording import counted


def load_best_for_evaluation(engine: Any, best: Optional[Path], best_val: BestValidation, env: DistEnv,
                             final_step: int, nvme_index: Optional[int] = None) -> int:
    """Load the best checkpoint (`training.keep_best`) into the engine for the after-training evaluations;
    returns the step whose weights the engine now holds. A best written under another world size (before a
    resume on more or fewer ranks) would need DeepSpeed's universal loading, set up only at start-up: the
    final weights stay, with a message saying how to evaluate the best one. A rank that cannot use its own files of
    the best checkpoint (`nvme_index`: its folder of optimizer state offloaded to NVMe) stops every rank
    (`check_own_files`)."""
    value = f"mean {best_val.metric} {best_val.value:.4f}"
    why, meta = None, ckpt_io.read_meta(best) if best is not None else None
    if meta is None:
        why = "is not in this run directory's checkpoints/ (the run was resumed from another directory)"
    elif meta["world_size"] != env.world_size and engine.zero_optimization_stage():
        why = f"was written with another world size; evaluate it with t2t-mtl eval --checkpoint {best}"
    if why:
        if env.is_main:
            print(f"evaluating the final model: the best checkpoint (step {best_val.step}, {value}) {why}", flush=True)
        return final_step
    # (a rank stopping alone in the load left the others going)
    check_own_files(best, meta, env, universal=False, nvme_index=nvme_index)
    checkpoint_loading.load_checkpoint(engine, best, env)
    if env.is_main:
        print(f"evaluating the best checkpoint {best} (step {best_val.step}, {value}), not the final step's "
              f"model (training.keep_best)", flush=True)
    return best_val.step


def score_held_in(engine: Any, tokenizer: Any, task_names: Sequence[str], cfg: Config, env: DistEnv,
                  pass_task_ids: bool, result: Any) -> None:
    """Greedy exact match on `data.validation_examples` validation examples per training task, into `result`
    (`held_in_per_task`, `held_in_accuracy`, `chance_accuracy`; for a model whose MoE experts have a capacity,
    `held_in_moe_drops`: the (token, slot) choices its generations routed and dropped over capacity); rank 0 prints
    it, naming the unscored tasks, and warns of drops as the evaluation does."""
    from t2t_mtl.engine.validation import held_in_exact_match
    from t2t_mtl.model.moe import CapacityDrops, batch_dependent

    drops = CapacityDrops() if batch_dependent(engine.module) else None
    scores = held_in_exact_match(engine, tokenizer, task_names, cfg, env, pass_task_ids, drops=drops)
    result.held_in_per_task, result.held_in_accuracy, result.chance_accuracy = scores
    result.held_in_moe_drops = drops
    if not env.is_main:
        return
    per_task = ", ".join(f"{name} {100 * v:.0f}%" for name, v in result.held_in_per_task.items())
    unscored = [name for name in task_names if name not in result.held_in_per_task]
    print(f"held-in exact match (greedy, {counted(cfg.data.validation_examples, 'validation example')} per task): "
          f"{per_task or '-'}", flush=True)
    if unscored:
        print(f"held-in exact match: not scored (no split besides train, or no rows in it): {', '.join(unscored)}",
              flush=True)
    if result.held_in_accuracy is not None:
        print(f"held-in exact match over {counted(len(result.held_in_per_task), 'task')}: "
              f"{100 * result.held_in_accuracy:.1f}% (chance ≈ {100 * result.chance_accuracy:.1f}%)", flush=True)
    if drops is not None and drops.dropped:
        print(f"held-in exact match: the MoE layers dropped {drops.dropped} of the {drops.choices} (token, slot) "
              f"choices they routed over expert capacity (those get no expert output); raise "
              f"model.moe.eval_capacity_factor, or set model.moe.dropless", flush=True)


def evaluation_label(evaluated: Sequence[str], trained: Sequence[str], num_shots: int) -> str:
    """What the `evaluation:` section's scores are, for the messages that print them: "held-out zero-shot" (or
    "held-out k-shot") when no evaluated task is trained; otherwise naming the trained ones, whose scores are not
    held-out transfer."""
    shots = f"{num_shots}-shot" if num_shots else "zero-shot"
    trained = set(trained)
    seen = [name for name in evaluated if name in trained]
    if not seen:
        return f"held-out {shots}"
    if len(seen) == len(evaluated):
        return f"{shots} (trained tasks)"
    return f"{shots} (trained: {', '.join(seen)})"


def score_held_out(engine: Any, tokenizer: Any, cfg: Config, env: DistEnv, run_dir: Path,
                   sinks: Optional[ScalarSinks], result: Any, label: str, plan: Tuple[List[str], Any]) -> None:
    """The `evaluation:` section's evaluation (`plan`: its `evaluation_plan`; report under run_dir/eval), into
    `result` (`held_out_scores`, `held_out_accuracy`, `eval_report`); rank 0 logs, plots and prints it, its lines
    starting with `label` (`evaluation_label`)."""
    from t2t_mtl.engine.validation import zero_shot_evaluation

    zero_shot = zero_shot_evaluation(engine, tokenizer, cfg, env, run_dir / "eval", progress=cfg.training.progress_bar,
                                     plan=plan)
    if zero_shot is None:
        return
    result.held_out_scores, result.held_out_accuracy = zero_shot["tasks"], zero_shot["macro_average"]
    result.eval_report = zero_shot["report"]
    if not env.is_main:
        return
    log_held_out(run_dir / "logs", result.evaluated_step, zero_shot, sinks)
    if cfg.training.plot:
        plot_held_out(run_dir / "logs")
    per_task = ", ".join(f"{name} {v:.1f}" if v is not None else f"{name} -"
                         for name, v in result.held_out_scores.items())
    chance = f" (chance ≈ {zero_shot['chance']:.1f})" if zero_shot["chance"] is not None else ""
    average = "-" if result.held_out_accuracy is None else f"{result.held_out_accuracy:.1f}"
    print(f"{label} (median over templates, 0-100): {per_task}", flush=True)
    print(f"{label} macro average over {counted(len(result.held_out_scores), 'task')}: {average}{chance}; "
          f"report {run_dir / 'eval' / 'report.md'}", flush=True)
