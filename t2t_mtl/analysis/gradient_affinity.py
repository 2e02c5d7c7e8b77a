"""Gradient affinity: per-pair cosine of task gradients over training, and a clustering of tasks by it.

Gradient surgery computes the T×T Gram matrix G of the per-task gradients every step it runs, so the
cosines cos(g_i, g_j) = G_ij / sqrt(G_ii G_jj) come for free and are logged to the run's JSONL log. This
module reads them back into a [steps, T, T] series, summarises them over the steps each pair was measured at
(mean, last, fraction of steps in conflict, i.e. with a negative cosine), plots them, and clusters the tasks
hierarchically (scipy, average linkage) on the distance 1 − mean cosine.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from t2t_mtl.analysis.errors import GradientLogError
from t2t_mtl.json_values import JsonLineError, jsonl_records
from t2t_mtl.task_names import task_name_list
from t2t_mtl.wording import counted


@dataclasses.dataclass
class CosineSeries:
    """Per-step T×T cosine matrices of task gradients; NaN where a pair was not measured at a step."""

    tasks: list[str]
    steps: np.ndarray  # [N]
    cosines: np.ndarray  # [N, T, T]
    source: str = "the gradient cosine series"  # what the errors name (read_cosine_log: the run directory)

    def __post_init__(self) -> None:
        n, t = len(self.steps), len(self.tasks)
        if self.cosines.shape != (n, t, t):
            raise GradientLogError(f"cosine series shape {self.cosines.shape} does not match {n} steps × "
                                   f"{t} tasks")
        if n == 0:
            raise GradientLogError("the gradient cosine series is empty")

    def pair_series(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """(steps, cosines) of pair (i, j) where it was measured."""
        values = self.cosines[:, i, j]
        keep = np.isfinite(values)
        return self.steps[keep], values[keep]

    def mean(self) -> np.ndarray:
        """[T, T] mean cosine over the steps each pair was measured at (1 on the diagonal)."""
        with np.errstate(invalid="ignore"):
            counts = np.isfinite(self.cosines).sum(axis=0)
            total = np.nansum(self.cosines, axis=0)
            out = np.where(counts > 0, total / np.maximum(counts, 1), np.nan)
        np.fill_diagonal(out, 1.0)
        return out

    def last(self) -> np.ndarray:
        """[T, T] cosine of each pair at the last step it was measured at (NaN: never measured; 1 on the diagonal),
        as `mean` counts the steps each pair was measured at."""
        finite = np.isfinite(self.cosines)
        latest = len(self.steps) - 1 - finite[::-1].argmax(axis=0)  # [T, T]: the last step with a finite cosine
        out = np.where(finite.any(axis=0), np.take_along_axis(self.cosines, latest[None], axis=0)[0], np.nan)
        np.fill_diagonal(out, 1.0)
        return out

    def tasks_never_measured(self) -> list[str]:
        """The tasks whose gradient never met another task's in a logged step: no cosine with any task."""
        off_diagonal = np.isfinite(self.cosines) & ~np.eye(len(self.tasks), dtype=bool)
        return [task for task, seen in zip(self.tasks, off_diagonal.any(axis=(0, 2))) if not seen]

    def check_comparable(self) -> None:
        """GradientLogError unless the series compares something: two or more tasks, and at least one pair of
        them measured at one logged step."""
        if len(self.tasks) < 2:
            raise GradientLogError(f"{self.source}: the run logged gradient cosines of one task ({self.tasks[0]}); "
                                   f"task affinity compares the gradients of two or more tasks: train on several")
        if len(self.tasks_never_measured()) == len(self.tasks):
            raise GradientLogError(
                f"{self.source}: no two tasks' gradients were measured in one logged step "
                f"({counted(len(self.steps), 'step')} logged, every cross-task cosine null), so there is nothing to "
                f"compare. Cosines are logged at logging steps, between the tasks that step's micro-batches drew: "
                f"log more steps (training.log_every, a longer run) or draw more tasks per step (training.grad_accum)")

    def conflict_fraction(self) -> np.ndarray:
        """[T, T] fraction of measured steps at which cos(g_i, g_j) < 0."""
        finite = np.isfinite(self.cosines)
        counts = finite.sum(axis=0)
        negative = (np.where(finite, self.cosines, 0.0) < 0).sum(axis=0)
        out = np.where(counts > 0, negative / np.maximum(counts, 1), np.nan)
        np.fill_diagonal(out, 0.0)
        return out


COSINE_KEY = "grad_cosine"


def _find_cosine_stats(record: Any, depth: int = 0) -> Optional[Mapping[str, Any]]:
    """The mapping holding `grad_cosine` ([T][T], None where undefined) in a log record, searched two levels
    deep (GradientSurgery.stats() logged at the top level or under a key such as "gradient_surgery")."""
    if not isinstance(record, Mapping) or depth > 2:
        return None
    if COSINE_KEY in record:
        return record
    for value in record.values():
        found = _find_cosine_stats(value, depth + 1)
        if found is not None:
            return found
    return None


def log_files(run_dir: str | Path) -> list[Path]:
    """JSONL logs of a run: `<run>/logs/*.jsonl` and `<run>/*.jsonl` (metrics.jsonl first)."""
    run = Path(run_dir)
    if run.is_file():
        raise GradientLogError(f"run directory {run} is a file: pass the folder of a run (its logs/*.jsonl)")
    if not run.is_dir():
        raise GradientLogError(f"run directory {run} does not exist")
    files = sorted(run.glob("logs/*.jsonl")) + sorted(run.glob("*.jsonl"))
    return sorted(files, key=lambda p: (p.name != "metrics.jsonl", str(p)))


def read_cosine_log(run_dir: str | Path) -> CosineSeries:
    """The per-step task-gradient cosines logged by gradient surgery in a run's JSONL log(s).

    A record contributes when it has a `step` and, at its top level or nested, a mapping with
    `grad_cosine` ([T][T]) and `tasks` (here or in the record); one with a step and `grad_cosine` but no `tasks`,
    or a matrix of another size, raises GradientLogError naming its file and line. A resumed run's repeated steps
    keep the last record; an unterminated last line that does not parse (a record a crash cut short) is left out.
    Raises GradientLogError naming the files read when no record has cosines. A null or non-finite cosine counts
    as not measured.
    """
    files = log_files(run_dir)
    by_step: dict[int, tuple[list[str], list[list[Optional[float]]]]] = {}
    for path in files:
        try:
            for lineno, record in jsonl_records(path):
                stats = _find_cosine_stats(record)
                if stats is None or "step" not in record:
                    continue
                tasks = stats.get("tasks", record.get("tasks"))
                matrix = stats[COSINE_KEY]
                if not tasks or len(matrix) != len(tasks) or any(len(row) != len(tasks) for row in matrix):
                    raise GradientLogError(f"{path}:{lineno}: grad_cosine must be a [T][T] matrix with T = "
                                           f"len(tasks); got tasks {tasks} and {len(matrix)} rows")
                by_step[int(record["step"])] = (list(tasks), matrix)
        except JsonLineError as exc:
            raise GradientLogError(f"{path}:{exc.lineno} is not valid JSON ({exc.error}); fix or remove that "
                                   f"line") from None
    if not by_step:
        names = ", ".join(str(p) for p in files) or "no *.jsonl file"
        raise GradientLogError(f"no gradient cosines in the logs of {run_dir} ({names}): train with "
                               f"`gradient_surgery: {{method: ...}}` to log them")
    tasks: list[str] = []
    for names, _ in by_step.values():
        tasks += [t for t in names if t not in tasks]
    index = {t: i for i, t in enumerate(tasks)}
    steps = sorted(by_step)
    cos = np.full((len(steps), len(tasks), len(tasks)), np.nan)
    for n, step in enumerate(steps):
        names, matrix = by_step[step]
        rows = [index[t] for t in names]
        for a, i in enumerate(rows):
            for b, j in enumerate(rows):
                value = matrix[a][b]
                value = np.nan if value is None else float(value)
                cos[n, i, j] = value if np.isfinite(value) else np.nan  # (a log not written by the engine)
    return CosineSeries(tasks, np.asarray(steps), cos, source=str(run_dir))


def cosines_from_gram(gram: np.ndarray, eps: float = 1e-30) -> np.ndarray:
    """Cosine matrix G_ij / sqrt(G_ii G_jj) of a square Gram matrix [T, T] (NaN where a gradient has zero norm),
    clipped to [-1, 1] as the training log's are: a rounded (float32) Gram's cosine of parallel gradients can pass
    ±1."""
    gram = np.asarray(gram, dtype=np.float64)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise GradientLogError(f"a Gram matrix is square, [T, T] for T tasks; got shape {list(gram.shape)}")
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    denom = np.outer(norms, norms)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > eps, np.clip(gram / np.where(denom > eps, denom, 1.0), -1.0, 1.0), np.nan)


@dataclasses.dataclass
class TaskClustering:
    """Hierarchical clustering of tasks on 1 − mean gradient cosine; tasks never measured beside another are left
    out of the tree (`linked` are its leaves), each a cluster of its own."""

    tasks: list[str]
    distance: np.ndarray  # [T, T]
    linkage: np.ndarray  # scipy linkage matrix [len(linked)-1, 4] over `linked`
    labels: list[int]  # cluster number (1-based) of each task
    threshold: float
    linked: list[str]  # the tasks in the tree, in task order

    def cut_height(self) -> float:
        """Distance at which the tree is cut: the threshold, or (for a cluster count) between the merges kept
        and the first merge refused."""
        k = len({label for task, label in zip(self.tasks, self.labels) if task in self.linked})
        heights = self.linkage[:, 2]
        n = len(self.linked)
        if k <= 1:
            return float(max(heights[-1] * 1.02, self.threshold))
        below, above = heights[n - k - 1] if n - k - 1 >= 0 else 0.0, heights[n - k]
        return float(self.threshold if below < self.threshold <= above else (below + above) / 2)

    def clusters(self) -> list[list[str]]:
        """The tasks grouped by cluster label (labels ascending; task order kept within a group)."""
        groups: dict[int, list[str]] = {}
        for task, label in zip(self.tasks, self.labels):
            groups.setdefault(label, []).append(task)
        return [groups[k] for k in sorted(groups)]


def measured_tasks(mean_cosine: np.ndarray) -> np.ndarray:
    """Bool [T]: the tasks with a finite cosine to at least one other task."""
    off_diagonal = np.isfinite(mean_cosine) & ~np.eye(len(mean_cosine), dtype=bool)
    return off_diagonal.any(axis=0) | off_diagonal.any(axis=1)


def cluster_tasks(tasks: Sequence[str], mean_cosine: np.ndarray, *, threshold: float = 1.0,
                  n_clusters: Optional[int] = None, method: str = "average") -> TaskClustering:
    """Agglomerative clustering on d_ij = 1 − mean cos_ij (symmetrised, 0 on the diagonal).

    Clusters are cut at distance `threshold`: only merges below it are kept (1.0: merged groups have a
    positive mean cosine under average linkage) unless `n_clusters` is given. A task with no cosine to any
    task (never measured beside another) is a cluster of its own under any cut and counts as one of
    `n_clusters` (the measured tasks make at least one). A pair never measured between measured tasks
    counts as orthogonal (d = 1), so with the default threshold it is never merged on that evidence.
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    tasks = task_name_list(tasks, GradientLogError, argument="tasks")
    cos = np.array(mean_cosine, dtype=np.float64)
    if cos.shape != (len(tasks), len(tasks)):  # (a task beyond the matrix would be clustered as never measured)
        raise GradientLogError(f"mean_cosine must be [T, T] for the {len(tasks)} tasks {tasks}, got shape "
                               f"{list(cos.shape)}")
    linked = [i for i, seen in enumerate(measured_tasks(cos)) if seen]
    if len(linked) < 2:
        raise GradientLogError(f"clustering needs at least 2 tasks measured beside another, got "
                               f"{[tasks[i] for i in linked]} of {tasks}")
    cos = np.where(np.isfinite(cos), cos, 0.0)
    dist = 1.0 - (cos + cos.T) / 2.0
    np.fill_diagonal(dist, 0.0)
    dist = np.clip(dist, 0.0, 2.0)
    links = linkage(squareform(dist[np.ix_(linked, linked)], checks=False), method=method)
    if n_clusters is not None:
        cut = fcluster(links, t=max(n_clusters - (len(tasks) - len(linked)), 1), criterion="maxclust")
    else:
        cut = fcluster(links, t=np.nextafter(threshold, -np.inf), criterion="distance")  # fcluster keeps <= t
    labels = dict(zip(linked, (int(x) for x in cut)))
    alone = [i for i in range(len(tasks)) if i not in labels]
    labels.update({i: int(cut.max()) + 1 + n for n, i in enumerate(alone)})
    return TaskClustering(tasks, dist, links, [labels[i] for i in range(len(tasks))], threshold,
                          [tasks[i] for i in linked])


def plot_cosines_over_training(series: CosineSeries, path: Path) -> Path:
    """One line per task pair: cosine of their gradients against the training step."""
    from t2t_mtl.analysis.plotting import figure_and_axes, save_figure

    fig, ax = figure_and_axes((8, 4.5))
    t = len(series.tasks)
    for i in range(t):
        for j in range(i + 1, t):
            steps, values = series.pair_series(i, j)
            if len(values):
                ax.plot(steps, values, lw=1.2, marker="." if len(values) < 30 else None,
                        label=f"{series.tasks[i]} · {series.tasks[j]}")
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("cos(g_i, g_j)")
    ax.set_title("Task gradient cosine over training")
    if t * (t - 1) // 2 <= 15:
        ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_dendrogram(clustering: TaskClustering, path: Path) -> Path:
    """Dendrogram of the task clustering with the cut threshold drawn."""
    from scipy.cluster.hierarchy import dendrogram

    from t2t_mtl.analysis.plotting import figure_and_axes, save_figure

    fig, ax = figure_and_axes((max(5, 0.6 * len(clustering.tasks) + 2), 4))
    cut = clustering.cut_height()
    dendrogram(clustering.linkage, labels=clustering.linked, ax=ax, leaf_rotation=45, color_threshold=cut)
    ax.axhline(cut, color="gray", ls="--", lw=0.8)
    ax.set_ylim(top=max(ax.get_ylim()[1], cut * 1.05))  # the cut in view when it is above every merge
    ax.set_ylabel("1 − mean cosine")
    alone = [t for t in clustering.tasks if t not in clustering.linked]
    ax.set_title("Tasks clustered by gradient affinity" + (f"\n(never measured, alone: {', '.join(alone)})"
                                                           if alone else ""))
    return save_figure(fig, path)


def write_gradient_affinity(series: CosineSeries, out_dir: str | Path, *, threshold: float = 1.0,
                            n_clusters: Optional[int] = None) -> dict[str, Path]:
    """Write gradient_affinity.json and the over-training, mean-cosine heatmap and dendrogram PNGs.

    Raises GradientLogError (and writes nothing) when the series has one task or measured no pair of tasks."""
    from t2t_mtl.analysis.plotting import matrix_heatmap

    series.check_comparable()
    mean = series.mean()
    clustering = cluster_tasks(series.tasks, mean, threshold=threshold, n_clusters=n_clusters)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = len(series.tasks)

    def matrix_json(m: np.ndarray) -> list[list[Optional[float]]]:
        return [[float(v) if np.isfinite(v) else None for v in row] for row in m]

    payload: dict[str, Any] = {
        "tasks": series.tasks,
        "num_steps_logged": int(len(series.steps)),
        "tasks_never_measured": series.tasks_never_measured(),  # no cosine with any task: clustered alone
        "mean_cosine": matrix_json(mean),
        "last_cosine": matrix_json(series.last()),
        "conflict_fraction": matrix_json(series.conflict_fraction()),
        "pairs": {f"{series.tasks[i]}|{series.tasks[j]}": {
            "steps": [int(s) for s in series.pair_series(i, j)[0]],
            "cosine": [float(v) for v in series.pair_series(i, j)[1]]}
            for i in range(t) for j in range(i + 1, t)},
        "clustering": {"method": "average linkage on 1 - mean cosine",
                       "threshold": None if n_clusters is not None else clustering.threshold,
                       "n_clusters": n_clusters, "cut_height": clustering.cut_height(),
                       "labels": dict(zip(series.tasks, clustering.labels)),
                       "clusters": clustering.clusters(), "linkage": clustering.linkage.tolist(),
                       "linkage_tasks": clustering.linked},
    }
    paths = {"json": out / "gradient_affinity.json", "over_training": out / "gradient_cosine.png",
             "heatmap": out / "gradient_cosine_heatmap.png", "dendrogram": out / "gradient_clusters.png"}
    paths["json"].write_text(json.dumps(payload, indent=2))
    plot_cosines_over_training(series, paths["over_training"])
    notes = [[f"{mean[i, j]:+.2f}" if np.isfinite(mean[i, j]) else "" for j in range(t)] for i in range(t)]
    matrix_heatmap(mean, series.tasks, series.tasks, paths["heatmap"], title="Mean task gradient cosine",
                   xlabel="task", ylabel="task", colorbar_label="mean cos(g_i, g_j)", annotations=notes,
                   symmetric=True)
    plot_dendrogram(clustering, paths["dendrogram"])
    return paths


def affinity_summary(payload: Mapping[str, Any]) -> list[str]:
    """Lines to print of a gradient_affinity.json `payload`: each task pair's mean cosine and its steps with
    conflicting gradients (cos < 0), the most aligned pair first and pairs never measured last, then the clusters."""
    rows = []
    for pair, measured in payload["pairs"].items():
        cosines = measured["cosine"]
        mean = sum(cosines) / len(cosines) if cosines else None
        conflicting = f"{sum(c < 0 for c in cosines)} of {len(cosines)}" if cosines else "never measured"
        rows.append((mean, pair.replace("|", " / "), "—" if mean is None else f"{mean:+.2f}", conflicting))
    rows.sort(key=lambda row: (row[0] is None, -(row[0] or 0.0)))
    header = ("task pair", "mean cosine", "steps conflicting")
    widths = [max(len(text) for text in column) for column in zip(header, *(row[1:] for row in rows))]
    table = [f"{a.ljust(widths[0])}  {b.rjust(widths[1])}  {c.rjust(widths[2])}"
             for a, b, c in [header, *(row[1:] for row in rows)]]
    clustering = payload["clustering"]
    how = (f"{clustering['n_clusters']}, by {clustering['method']}" if clustering["n_clusters"] is not None
           else f"{clustering['method']}, cut at {clustering['threshold']}")
    clusters = " | ".join(", ".join(cluster) for cluster in clustering["clusters"])
    return [f"mean gradient cosine over {counted(payload['num_steps_logged'], 'logged step')}, most aligned pair "
            f"first:", *table, f"clusters ({how}): {clusters}"]
