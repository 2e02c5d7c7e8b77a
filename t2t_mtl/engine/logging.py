"""Training logs: a tqdm bar (loss, tokens/s, ETA), JSONL records with per-task loss and example counts (their
scalars also to TensorBoard and Weights & Biases: `ScalarSinks`), and a loss-per-task plot at the end; the
zero-shot evaluations of a run (during and after training) in held_out.jsonl, the sinks and a plot. Only rank 0
writes anything. The JSONL logs are strict JSON: a figure without a finite value (the loss of a window whose
steps were all skipped, a non-finite validation loss) is written as null."""
from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional

from t2t_mtl.json_values import jsonl_records, nonfinite_to_null


HELD_OUT_LOG = "held_out.jsonl"
#: the mappings of a training record that are not {task: figure}: every other one (task_loss, the sampler's
#: `logged_state` names, ...) is written as <name>/<task> scalars
STRUCTURED_FIGURES = ("moe", "gradient_surgery")


class ScalarSinks:
    """The scalar series of a run beyond its JSONL logs: a TensorBoard `SummaryWriter` and/or a W&B writer
    (`t2t_mtl.engine.wandb_logging.WandbWriter`). Training scalars go to both at their step; zero-shot scores to
    TensorBoard at their step and to W&B against its `held_out/step` axis."""

    def __init__(self, tensorboard: Any = None, wandb: Any = None) -> None:
        self.tensorboard, self.wandb = tensorboard, wandb

    def _to_tensorboard(self, scalars: Mapping[str, float], step: int) -> None:
        if self.tensorboard is not None:
            for tag, value in scalars.items():
                self.tensorboard.add_scalar(tag, value, step)

    def training(self, scalars: Mapping[str, float], step: int) -> None:
        """Write training `scalars` (tag → value) at `step` to both sinks."""
        self._to_tensorboard(scalars, step)
        if self.wandb is not None:
            self.wandb.add_scalars(scalars, step)

    def held_out(self, scalars: Mapping[str, float], step: int) -> None:
        """Write zero-shot `scalars` of `step`: to TensorBoard at `step` (flushed), to W&B on its `held_out/step`
        axis."""
        self._to_tensorboard(scalars, step)
        if self.tensorboard is not None:
            self.tensorboard.flush()
        if self.wandb is not None:
            self.wandb.add_held_out(scalars, step)

    def close(self, failed: bool = False) -> None:
        """Close both; `failed` marks the W&B run as failed (a crash or interruption, exit code 1)."""
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.close(failed)


def strict_json(record: Mapping[str, Any]) -> str:
    """`record` as one line of strict JSON (RFC 8259, which jq and other languages' parsers require): non-finite
    floats, at any depth, become null."""
    return json.dumps(nonfinite_to_null(record), allow_nan=False)


def training_scalars(record: Mapping[str, Any]) -> Dict[str, float]:
    """{tag: value} of a training record: train/{loss, lr, tokens_per_s}, task_loss/<task>,
    task_examples/<task>, task_probability/<task> (the sampler's) and each name of its `logged_state` (a bandit's
    bandit_q/<task>, bandit_alpha/<task>, bandit_beta/<task>; a registered sampler's own), task_weight/<task> (the
    loss weighting's), on validation steps val_loss/<task> and val_score/<task>, under an entropy-fed sampler
    (`needs_entropy`, as uncertainty_ema's) entropy/<task>, under gradient surgery grad_norm/<task> and
    grad_cosine/<task>|<task> (each pair once, in the tasks' order) of the tasks the logged step held, and an MoE
    model's moe/{aux_loss, load_balancing, z_loss, dropped}, each MoE layer's moe/{load_balancing, z_loss,
    dropped}/<layer> and, on validation steps of one with an expert capacity, moe/{val_dropped, val_num_dropped,
    val_choices} (its expert_load stays in the JSONL record)."""
    scalars = {"train/loss": record["loss"], "train/lr": record["lr"], "train/tokens_per_s": record["tokens_per_s"]}
    for key, figures in record.items():
        if isinstance(figures, Mapping) and key not in STRUCTURED_FIGURES:
            scalars.update({f"{key}/{task}": value for task, value in figures.items()})
    scalars.update(_surgery_scalars(record.get("gradient_surgery")))
    for key, value in record.get("moe", {}).items():
        if key == "per_layer":
            scalars.update({f"moe/{name}/{layer}": figure for layer, figures in value.items()
                            for name, figure in figures.items()})
        elif key != "expert_load":
            scalars[f"moe/{key}"] = value
    return scalars


def _surgery_scalars(stats: Optional[Mapping[str, Any]]) -> Dict[str, float]:
    """grad_norm/<task> and grad_cosine/<a>|<b> of a record's `gradient_surgery` stats, leaving out the nulls (a task
    the step did not hold, a zero gradient)."""
    if not stats:
        return {}
    tasks, norms, cosine = stats["tasks"], stats["grad_norms"], stats["grad_cosine"]
    scalars = {f"grad_norm/{task}": norm for task, norm in zip(tasks, norms) if norm is not None}
    for i, j in ((i, j) for i in range(len(tasks)) for j in range(i + 1, len(tasks))):
        if cosine[i][j] is not None:
            scalars[f"grad_cosine/{tasks[i]}|{tasks[j]}"] = cosine[i][j]
    return scalars


def held_out_scalars(record: Mapping[str, Any]) -> Dict[str, float]:
    """{tag: value} of a zero-shot evaluation record (`log_held_out`): held_out/<task>, held_out/macro_average
    (unscored tasks left out)."""
    scalars = {f"held_out/{task}": score for task, score in record["tasks"].items() if score is not None}
    if record["macro_average"] is not None:
        scalars["held_out/macro_average"] = record["macro_average"]
    return scalars


class TrainLogger:
    """Accumulates per-step figures and flushes one record every `log_every` steps (to metrics.jsonl, the bar and
    `sinks`, which the caller owns and closes). A resumed run (`start_step` > 0) appends to the logs, once the
    records of the steps it trains again (written by a run that crashed after its checkpoint) are dropped; a fresh
    one starts metrics.jsonl and held_out.jsonl over."""

    def __init__(self, log_dir: Path, *, total_steps: int, start_step: int, log_every: int, enabled: bool,
                 progress_bar: bool = True, sinks: Optional[ScalarSinks] = None):
        self.log_dir = Path(log_dir)
        self.enabled = enabled
        self.log_every = log_every
        self.total_steps = total_steps
        self.bar = None
        self.sinks = sinks if enabled else None
        self.jsonl = None
        self._paused_at: Optional[float] = None
        self._reset_window()
        self.run_tokens = 0
        self.run_start = time.perf_counter()
        if not enabled:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if not start_step:  # a fresh run's logs start over (a run that died before its first checkpoint left some)
            (self.log_dir / HELD_OUT_LOG).unlink(missing_ok=True)
        else:  # a resumed run appends: not onto a record the crashed run left half-written, nor after its records
            for name in ("metrics.jsonl", HELD_OUT_LOG):  # of the steps the resumed run now trains again
                drop_unterminated_line(self.log_dir / name)
                if start_step < total_steps:  # (one that trains nothing keeps them)
                    drop_records_after(self.log_dir / name, start_step)
        self.jsonl = open(self.log_dir / "metrics.jsonl", "a" if start_step else "w", encoding="utf-8")
        if progress_bar and start_step < total_steps:  # (none where nothing is left to train: tqdm drops a total
            from tqdm.auto import tqdm  # the count has passed, "70step")
            self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)

    def _reset_window(self) -> None:
        self.window_start = time.perf_counter()
        self.window_tokens = 0
        self.window_loss: List[float] = []
        self.window_weighted_loss: List[float] = []
        self.task_loss: Dict[str, List[float]] = defaultdict(list)
        self.task_examples: Dict[str, int] = defaultdict(int)

    def add(self, tokens: int, per_task_examples: Mapping[str, int]) -> None:
        """Count one step's real tokens and per-task examples (summed over ranks)."""
        self.window_tokens += tokens
        self.run_tokens += tokens
        for task, n in per_task_examples.items():
            self.task_examples[task] += n

    def step(self, step: int, loss: float, *, task_loss: Mapping[str, float], lr: float, skipped_total: int,
             weighted_loss: Optional[float] = None, extra: Optional[Mapping[str, Any]] = None,
             flush: bool = False) -> Optional[Dict[str, Any]]:
        """Record the optimizer step `step` (1-based) with its loss, per-task losses and, when given, the weighted
        loss it optimised (averaged over ranks); returns the flushed record on logging steps (every `log_every`-th,
        the last, and any with `flush`, e.g. a step that carries validation results in `extra`). The losses of a
        record are means over the steps of its window (non-finite ones left out); `extra` is the step's own."""
        if math.isfinite(loss):
            self.window_loss.append(loss)
        if weighted_loss is not None and math.isfinite(weighted_loss):
            self.window_weighted_loss.append(weighted_loss)
        for task, value in task_loss.items():
            self.task_loss[task].append(value)
        if self.bar is not None:
            self.bar.update(1)
        if not self.logs(step, flush):
            return None
        elapsed = max(self._clock() - self.window_start, 1e-9)
        record: Dict[str, Any] = {
            "step": step,
            "loss": _mean(self.window_loss),
            "lr": lr,
            "tokens_per_s": self.window_tokens / elapsed,
            "skipped_steps": skipped_total,
            "task_loss": {t: sum(v) / len(v) for t, v in sorted(self.task_loss.items())},
            "task_examples": dict(sorted(self.task_examples.items())),
            "time": time.time(),
            "process_time": time.process_time(),  # CPU seconds of this process (robust to a shared machine)
        }
        if weighted_loss is not None:
            record["weighted_loss"] = _mean(self.window_weighted_loss)
        if extra:
            record.update(extra)
        if self.enabled:
            self.jsonl.write(strict_json(record) + "\n")
            self.jsonl.flush()
            if self.sinks is not None:
                self.sinks.training(training_scalars(record), step)
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
        self._reset_window()
        return record

    def logs(self, step: int, flush: bool = False) -> bool:
        """Whether `step(step, ..., flush=flush)` writes a record: every `log_every`-th step, the last, and a flushed
        one. The figures only a record shows (`extra`) need to be read from the device on these steps only."""
        return not (step % self.log_every and step != self.total_steps and not flush)

    def state_dict(self) -> Dict[str, Any]:
        """The open logging window (losses, examples, tokens and seconds since the last record), for checkpoints:
        a resumed run's first record then averages the same steps as an uninterrupted run's (its tokens/s over
        the window's training time, not the time since the resume)."""
        return {"window_loss": list(self.window_loss), "window_weighted_loss": list(self.window_weighted_loss),
                "task_loss": {t: list(v) for t, v in self.task_loss.items()},
                "task_examples": dict(self.task_examples), "window_tokens": self.window_tokens,
                "window_seconds": self._clock() - self.window_start}

    def _clock(self) -> float:
        """The training clock: `perf_counter`, stopped while `paused`."""
        return self._paused_at if self._paused_at is not None else time.perf_counter()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Leave the time spent inside out of tokens/s (the window's and the run's): work between training
        steps, such as zero-shot evaluations, validations and checkpoint saves."""
        if self._paused_at is not None:  # (nested: the outer pause counts)
            yield
            return
        self._paused_at = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - self._paused_at
            self._paused_at = None
            self.window_start += spent
            self.run_start += spent

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Reopen a `state_dict()`'s logging window (a checkpoint without its weighted losses or seconds starts
        those afresh)."""
        self.window_loss = list(state["window_loss"])
        self.window_weighted_loss = list(state.get("window_weighted_loss", []))  # (older checkpoints)
        self.task_loss = defaultdict(list, {t: list(v) for t, v in state["task_loss"].items()})
        self.task_examples = defaultdict(int, state["task_examples"])
        self.window_tokens = int(state["window_tokens"])
        self.window_start = time.perf_counter() - float(state.get("window_seconds", 0.0))  # (older checkpoints)

    def held_out(self, step: int, zero_shot: Mapping[str, Any], label: str) -> None:
        """Log an `evaluation:` section's evaluation made during training (`log_held_out`, to this logger's sinks);
        its message starts with `label` (`final_evaluation.evaluation_label`)."""
        if self.enabled:
            log_held_out(self.log_dir, step, zero_shot, self.sinks)
            self.message(f"step {step}: {label} macro average {_score(zero_shot['macro_average'])}")

    def message(self, text: str) -> None:
        """Print `text` (above the progress bar when there is one); nothing on a logger that is not enabled."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        """Close the progress bar and the JSONL log."""
        if self.bar is not None:
            self.bar.close()
        if self.jsonl is not None:
            self.jsonl.close()


class _MessageHandler(logging.Handler):
    """Writes each record as a `TrainLogger` message."""

    def __init__(self, train_logger: TrainLogger, level: int) -> None:
        super().__init__(level)
        self.train_logger = train_logger

    def emit(self, record: logging.LogRecord) -> None:
        self.train_logger.message(self.format(record))


def show_logger(name: str, train_logger: TrainLogger, level: int = logging.INFO) -> Callable[[], None]:
    """Show the records of the library logger `name` from `level` up as `train_logger` messages (the train
    output: beside the bar, or stdout) instead of through logging's handlers, which `t2t-mtl train` never
    configures (an INFO record was dropped). Returns the function that undoes it."""
    log = logging.getLogger(name)
    handler = _MessageHandler(train_logger, level)
    saved = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False  # (not twice where the caller configured logging)

    def restore() -> None:
        log.removeHandler(handler)
        log.setLevel(saved[0])  # (not by assignment: that leaves logging's cache of the enabled levels as it was)
        log.propagate = saved[1]

    return restore


def open_tensorboard(log_dir: Path, purge_step: Optional[int] = None) -> Any:
    """A `SummaryWriter` on `<log_dir>/tensorboard` (None where tensorboard is not installed)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an install requirement; tolerate its absence in minimal envs
        return None
    return SummaryWriter(str(Path(log_dir) / "tensorboard"), purge_step=purge_step)


def log_held_out(log_dir: Path, step: int, zero_shot: Mapping[str, Any], sinks: Optional[ScalarSinks] = None
                 ) -> Dict[str, Any]:
    """Append a zero-shot evaluation at `step` (the summary `zero_shot_evaluation` returns) to held_out.jsonl as
    {step, macro_average, chance, tasks: {task: median score 0-100}, report}; `sinks` also get its
    `held_out_scalars`. An evaluation equal to the one already logged at `step` (a finished run resumed, whose
    after-training evaluation runs again; the best checkpoint's, evaluated during training too) is not logged twice.
    Returns the record."""
    record = {"step": step, "macro_average": zero_shot["macro_average"], "chance": zero_shot["chance"],
              "tasks": dict(zero_shot["tasks"]), "report": str(zero_shot["report"])}
    logged = {rec["step"]: rec for rec in _read_by_step(Path(log_dir) / HELD_OUT_LOG)}
    if json.loads(strict_json(record)) == logged.get(step):  # (compared as read back: NaN is written as null)
        return record
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(log_dir) / HELD_OUT_LOG, "a", encoding="utf-8") as f:
        f.write(strict_json(record) + "\n")
    if sinks is not None:
        sinks.held_out(held_out_scalars(record), step)
    return record


def _mean(values: List[float]) -> float:
    """The mean of `values`, NaN (null in the logs) for none."""
    return sum(values) / len(values) if values else float("nan")


def _score(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}"


def drop_unterminated_line(path: Path) -> None:
    """Cut a JSONL log back to its last newline: a record a crash (a kill mid-write, a full disk) left cut short,
    which the next appended record would otherwise continue on the same, unreadable line."""
    if not path.exists():
        return
    with open(path, "rb+") as fh:
        end = fh.seek(0, os.SEEK_END)
        keep = end
        while keep > 0:
            start = max(0, keep - 65536)
            fh.seek(start)
            newline = fh.read(keep - start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            keep = start
        if keep == end:  # (the last record is whole)
            return
        fh.truncate(keep)


def drop_records_after(path: Path, step: int) -> None:
    """Drop the records of steps after `step` from a JSONL log: those a run killed after its last checkpoint wrote,
    which the run resumed from that checkpoint writes again (as TensorBoard's `purge_step` drops them from its event
    files). The file is replaced atomically; lines without a step are kept."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if not _step_after(line, step)]
    if len(kept) < len(lines):
        from t2t_mtl.engine.durable_writes import write_text_atomic

        write_text_atomic(path, "".join(kept))


def _step_after(line: str, step: int) -> bool:
    """Whether a JSONL line is a record of a step after `step`."""
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] > step


def _read_by_step(path: Path) -> List[Dict[str, Any]]:
    """The records of a JSONL log, keeping the last record of each step (a step logged twice: the evaluation of the
    best checkpoint after training, logs of runs resumed before resumes dropped the steps they redo); an
    unterminated last line that does not parse (a record a crash cut short) is left out."""
    by_step: Dict[int, Dict[str, Any]] = {}
    if path.exists():
        for _, rec in jsonl_records(path):
            by_step[rec["step"]] = rec
    return [by_step[s] for s in sorted(by_step)]


def read_metrics(log_dir: Path) -> List[Dict[str, Any]]:
    """The training records of a run (metrics.jsonl), the last of each step (a figure without a finite value is
    None)."""
    return _read_by_step(Path(log_dir) / "metrics.jsonl")


def read_held_out(log_dir: Path) -> List[Dict[str, Any]]:
    """The zero-shot evaluations of a run (held_out.jsonl, see `log_held_out`), the last of each step."""
    return _read_by_step(Path(log_dir) / HELD_OUT_LOG)


def _per_task_series(records: List[Dict[str, Any]], key: str) -> Dict[str, List[tuple]]:
    """{task: [(step, value), ...]} from the records' `key` mappings (None values skipped)."""
    series: Dict[str, List[tuple]] = defaultdict(list)
    for rec in records:
        for task, value in rec.get(key, {}).items():
            if value is not None:
                series[task].append((rec["step"], value))
    return series


def _plot_over_steps(out: Path, series: Mapping[str, List[tuple]], total: List[tuple], total_label: str, *,
                     ylabel: str, title: str, log_scale: bool = False, marker: Optional[str] = None,
                     baseline: Optional[float] = None) -> Path:
    """One line per task, the total as a dashed black line, an optional dotted baseline; saved as a PNG."""
    from t2t_mtl.figures import figure_and_axes

    fig, ax = figure_and_axes((8, 5))
    for task, points in sorted(series.items()):
        ax.plot(*zip(*points), marker=marker, label=task, linewidth=1.2)
    if total:
        ax.plot(*zip(*total), "k--", marker=marker and "s", label=total_label, linewidth=1.5)
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle=":", label="chance")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if log_scale:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def plot_task_losses(log_dir: Path, out: Optional[Path] = None) -> Optional[Path]:
    """Write a PNG of each task's training loss over steps (from metrics.jsonl); returns its path."""
    records = read_metrics(log_dir)
    if not records:
        return None
    return _plot_over_steps(Path(out) if out else Path(log_dir) / "loss_per_task.png",
                            _per_task_series(records, "task_loss"),
                            [(r["step"], r["loss"]) for r in records if r["loss"] is not None],
                            "total", ylabel="training loss", title="loss per task", log_scale=True)


def plot_held_out(log_dir: Path, out: Optional[Path] = None) -> Optional[Path]:
    """Write a PNG of each held-out task's zero-shot score and their macro average over steps (from
    held_out.jsonl); returns its path, or None when the run made no zero-shot evaluation."""
    records = read_held_out(log_dir)
    if not records:
        return None
    chance = [r["chance"] for r in records if r["chance"] is not None]
    return _plot_over_steps(Path(out) if out else Path(log_dir) / "held_out.png", _per_task_series(records, "tasks"),
                            [(r["step"], r["macro_average"]) for r in records if r["macro_average"] is not None],
                            "macro average", ylabel="zero-shot score (median over templates, 0-100)",
                            title="held-out tasks over training", marker="o", baseline=chance[-1] if chance else None)
