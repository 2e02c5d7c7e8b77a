"""Training logs: a tqdm bar (loss, tokens/s, ETA), JSONL + TensorBoard records with per-task loss and
example counts, and a loss-per-task plot at the end. Only rank 0 writes anything."""
from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional


class TrainLogger:
    """Accumulates per-step figures and flushes one record every `log_every` steps."""

    def __init__(self, log_dir: Path, *, total_steps: int, start_step: int, log_every: int, enabled: bool,
                 progress_bar: bool = True, tensorboard: bool = True):
        self.log_dir = Path(log_dir)
        self.enabled = enabled
        self.log_every = log_every
        self.total_steps = total_steps
        self.bar = None
        self.tb = None
        self.jsonl = None
        self._reset_window()
        self.run_tokens = 0
        self.run_start = time.perf_counter()
        if not enabled:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(self.log_dir / "metrics.jsonl", "a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(self.log_dir / "tensorboard"), purge_step=start_step + 1)
            except ImportError:  # tensorboard is an install requirement; tolerate its absence in minimal envs
                self.tb = None
        if progress_bar:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)

    def _reset_window(self) -> None:
        self.window_start = time.perf_counter()
        self.window_tokens = 0
        self.window_loss: List[float] = []
        self.task_loss: Dict[str, List[float]] = defaultdict(list)
        self.task_examples: Dict[str, int] = defaultdict(int)

    def add(self, tokens: int, per_task_examples: Mapping[str, int]) -> None:
        """Count one step's real tokens and per-task examples (summed over ranks)."""
        self.window_tokens += tokens
        self.run_tokens += tokens
        for task, n in per_task_examples.items():
            self.task_examples[task] += n

    def step(self, step: int, loss: float, *, task_loss: Mapping[str, float], lr: float, skipped_total: int,
             extra: Optional[Mapping[str, Any]] = None) -> Optional[Dict[str, Any]]:
        """Record the optimizer step `step` (1-based) with its loss and per-task losses (averaged over ranks);
        returns the flushed record on logging steps."""
        if math.isfinite(loss):
            self.window_loss.append(loss)
        for task, value in task_loss.items():
            self.task_loss[task].append(value)
        if self.bar is not None:
            self.bar.update(1)
        if step % self.log_every and step != self.total_steps:
            return None
        elapsed = max(time.perf_counter() - self.window_start, 1e-9)
        record: Dict[str, Any] = {
            "step": step,
            "loss": sum(self.window_loss) / len(self.window_loss) if self.window_loss else float("nan"),
            "lr": lr,
            "tokens_per_s": self.window_tokens / elapsed,
            "skipped_steps": skipped_total,
            "task_loss": {t: sum(v) / len(v) for t, v in sorted(self.task_loss.items())},
            "task_examples": dict(sorted(self.task_examples.items())),
            "time": time.time(),
            "process_time": time.process_time(),  # CPU seconds of this process (robust to a shared machine)
        }
        if extra:
            record.update(extra)
        if self.enabled:
            self.jsonl.write(json.dumps(record) + "\n")
            self.jsonl.flush()
            if self.tb is not None:
                self.tb.add_scalar("train/loss", record["loss"], step)
                self.tb.add_scalar("train/lr", lr, step)
                self.tb.add_scalar("train/tokens_per_s", record["tokens_per_s"], step)
                for task, value in record["task_loss"].items():
                    self.tb.add_scalar(f"task_loss/{task}", value, step)
                for task, n in record["task_examples"].items():
                    self.tb.add_scalar(f"task_examples/{task}", n, step)
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
        self._reset_window()
        return record

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
        if self.jsonl is not None:
            self.jsonl.close()


def read_metrics(log_dir: Path) -> List[Dict[str, Any]]:
    """The JSONL records of a run, keeping the last record of each step (a resumed run rewrites steps)."""
    path = Path(log_dir) / "metrics.jsonl"
    by_step: Dict[int, Dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                by_step[rec["step"]] = rec
    return [by_step[s] for s in sorted(by_step)]


def plot_task_losses(log_dir: Path, out: Optional[Path] = None) -> Optional[Path]:
    """Write a PNG of each task's training loss over steps (from metrics.jsonl); returns its path."""
    records = read_metrics(log_dir)
    if not records:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: Dict[str, List[tuple]] = defaultdict(list)
    for rec in records:
        for task, value in rec.get("task_loss", {}).items():
            series[task].append((rec["step"], value))
    fig, ax = plt.subplots(figsize=(8, 5))
    for task, points in sorted(series.items()):
        xs, ys = zip(*points)
        ax.plot(xs, ys, label=task, linewidth=1.2)
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], "k--", label="total", linewidth=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.set_title("loss per task")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    out = Path(out) if out else Path(log_dir) / "loss_per_task.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
