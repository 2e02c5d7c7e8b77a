"""Matplotlib helpers shared by the analyses: figures off pyplot (`t2t_mtl.figures`) and a few drawing
primitives."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import matplotlib.figure
import numpy as np

from t2t_mtl.figures import figure_and_axes


def save_figure(fig: "matplotlib.figure.Figure", path: Path) -> Path:
    """Lay `fig` out tightly and write it to `path` (PNG at 120 dpi, as every analysis plot is); `path`."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def circle_positions(n: int, radius: float = 1.0) -> np.ndarray:
    """[n, 2] points evenly spaced on a circle, the first at the top, going clockwise."""
    angles = math.pi / 2 - 2 * math.pi * np.arange(n) / max(n, 1)
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def matrix_heatmap(matrix: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], path: Path, *,
                   title: str, xlabel: str, ylabel: str, colorbar_label: str,
                   annotations: Optional[Sequence[Sequence[str]]] = None, symmetric: bool = True,
                   cmap: str = "RdBu") -> Path:
    """Save a heatmap of `matrix` (NaN cells blank) with optional per-cell text."""
    rows, cols = matrix.shape
    fig, ax = figure_and_axes((1.2 + 0.9 * max(cols, 3), 1.0 + 0.7 * max(rows, 3)))
    finite = matrix[np.isfinite(matrix)]
    if symmetric:
        bound = float(np.max(np.abs(finite))) if finite.size else 1.0
        vmin, vmax = -(bound or 1.0), bound or 1.0
    else:
        vmin = float(finite.min()) if finite.size else 0.0
        vmax = float(finite.max()) if finite.size else 1.0
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(cols), labels=list(col_labels), rotation=45, ha="right")
    ax.set_yticks(range(rows), labels=list(row_labels))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label=colorbar_label)
    if annotations is not None:
        for i in range(rows):
            for j in range(cols):
                if annotations[i][j]:
                    value = matrix[i, j]
                    strong = np.isfinite(value) and abs(value - (vmin + vmax) / 2) > 0.3 * (vmax - vmin)
                    ax.text(j, i, annotations[i][j], ha="center", va="center", fontsize=8,
                            color="white" if strong else "black")
    return save_figure(fig, path)
