"""Outputs of a transfer study: Markdown table, benefit/harm graph (PNG), heatmap (PNG), JSON."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from t2t_mtl.analysis.plotting import circle_positions, figure_and_axes, matrix_heatmap, save_figure
from t2t_mtl.analysis.transfer import ScoreStat, TransferAnalysis
from t2t_mtl.wording import counted

MARKS = {"benefit": " ↑", "harm": " ↓", "none": ""}


def _cell(stat: Optional[ScoreStat], mark: str = "") -> str:
    if stat is None:
        return "—"
    return f"{stat.mean:.2f} ± {stat.std:.2f}{MARKS.get(mark, '')}"


def markdown_table(analysis: TransferAnalysis) -> str:
    """Tables with a row per test task: STL, +s for each pair partner s, All, Oracle; then, for 3+ tasks (with two,
    all but one is STL), All-but-one (−s).

    ↑/↓ mark a setting that benefits/harms the test task against STL by the study's rule.
    """
    a = analysis
    header = ["test task", "STL", *[f"+{s}" for s in a.tasks], "All", "Oracle", "Oracle set"]
    lines = [
        f"## Transfer (mean ± std over {counted(len(a.seeds), 'seed')}; ↑ benefit / ↓ harm vs STL, k = {a.k:g})",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for t in a.tasks:
        row = [t, _cell(a.stl[t])]
        row += ["—" if s == t else _cell(a.pairs[t][s], a.relations[t][s]) for s in a.tasks]
        row.append(_cell(a.all_tasks[t], a.setting_effect(a.all_tasks[t], t)))
        oracle = a.oracle_scores.get(t)
        row.append(_cell(oracle, a.setting_effect(oracle, t) if oracle else ""))
        row.append(", ".join(a.oracle[t]) or "(none: STL)")
        lines.append("| " + " | ".join(row) + " |")
    if any(a.all_but[t] for t in a.tasks):
        header = ["test task", "STL", *[f"−{s}" for s in a.tasks]]
        lines += ["", "## All-but-one (all tasks except the column's task)", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for t in a.tasks:
            row = [t, _cell(a.stl[t])]
            row += ["—" if s == t else _cell(a.all_but[t][s], a.setting_effect(a.all_but[t][s], t))
                    for s in a.tasks]
            lines.append("| " + " | ".join(row) + " |")
    benefits = [f"{s} → {t}" for t in a.tasks for s in a.tasks if a.relations[t].get(s) == "benefit"]
    harms = [f"{s} → {t}" for t in a.tasks for s in a.tasks if a.relations[t].get(s) == "harm"]
    lines += ["", f"Benefits (s → t: s helps t): {', '.join(benefits) or 'none'}",
              f"Harms (s → t: s hurts t): {', '.join(harms) or 'none'}", ""]
    return "\n".join(lines)


def gain_matrix(analysis: TransferAnalysis) -> np.ndarray:
    """[t, s] = µ({s,t}, t) − µ({t}, t); NaN on the diagonal."""
    a = analysis
    n = len(a.tasks)
    out = np.full((n, n), np.nan)
    for i, t in enumerate(a.tasks):
        for j, s in enumerate(a.tasks):
            if s != t:
                out[i, j] = a.pairs[t][s].mean - a.stl[t].mean
    return out


def plot_heatmap(analysis: TransferAnalysis, path: Path) -> Path:
    """Heatmap of the pairwise gain over STL; cells carry the gain and ↑/↓ when the rule fires."""
    a = analysis
    gains = gain_matrix(a)
    notes = [["" if s == t else f"{gains[i, j]:+.1f}{MARKS[a.relations[t][s]]}" for j, s in enumerate(a.tasks)]
             for i, t in enumerate(a.tasks)]
    return matrix_heatmap(gains, a.tasks, a.tasks, path, title="Pairwise transfer: score gain over STL",
                          xlabel="auxiliary task s", ylabel="test task t",
                          colorbar_label="µ({s,t},t) − µ({t},t)", annotations=notes, symmetric=True)


GRAPH_COLORS = {"benefit": "tab:green", "harm": "tab:red"}


def graph_edges(analysis: TransferAnalysis) -> list[tuple[str, str, str, float]]:
    """The graph's arrows (s, t, 'benefit' | 'harm', curvature): an arrow with one back (t → s, of either kind) is
    curved, so the two never lie on one line."""
    a = analysis
    return [(s, t, kind, 0.15 if a.relations[s].get(t) in GRAPH_COLORS else 0.0)
            for t in a.tasks for s, kind in a.relations[t].items() if kind in GRAPH_COLORS]


def plot_graph(analysis: TransferAnalysis, path: Path) -> Path:
    """Tasks on a circle; an arrow s → t, green when s benefits t and red when s harms t."""
    a = analysis
    pos = circle_positions(len(a.tasks))
    index = {t: i for i, t in enumerate(a.tasks)}
    fig, ax = figure_and_axes((6.5, 6.5))
    for s, t, kind, rad in graph_edges(a):
        ax.annotate("", xy=pos[index[t]], xytext=pos[index[s]],
                    arrowprops=dict(arrowstyle="-|>", color=GRAPH_COLORS[kind], lw=1.8, shrinkA=18, shrinkB=18,
                                    connectionstyle=f"arc3,rad={rad}"))
    for t, (x, y) in zip(a.tasks, pos):
        ax.scatter([x], [y], s=900, color="white", edgecolors="black", zorder=3)
        ax.text(x, y, t, ha="center", va="center", fontsize=8, zorder=4)
    ax.plot([], [], color=GRAPH_COLORS["benefit"], label="s benefits t (s → t)")
    ax.plot([], [], color=GRAPH_COLORS["harm"], label="s harms t (s → t)")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, -0.08), ncol=2, frameon=False)
    ax.set_xlim(-1.4, 1.4)
    ax.set_ylim(-1.4, 1.4)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"Benefit/harm graph (k = {a.k:g}, {len(a.seeds)} seed(s))")
    return save_figure(fig, path)


def write_outputs(analysis: TransferAnalysis, out_dir: Path, spec: Optional[Mapping[str, Any]] = None
                  ) -> dict[str, Path]:
    """Write transfer.json, transfer.md, transfer_graph.png and transfer_heatmap.png into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = analysis.to_dict()
    if spec is not None:
        payload["study"] = dict(spec)
    paths = {"json": out_dir / "transfer.json", "table": out_dir / "transfer.md",
             "graph": out_dir / "transfer_graph.png", "heatmap": out_dir / "transfer_heatmap.png"}
    paths["json"].write_text(json.dumps(payload, indent=2, ensure_ascii=False))
    paths["table"].write_text(markdown_table(analysis))
    plot_graph(analysis, paths["graph"])
    plot_heatmap(analysis, paths["heatmap"])
    return paths
