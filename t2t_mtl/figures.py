"""Plots drawn off pyplot: `figure_and_axes` makes a matplotlib `Figure` that holds its own canvas, so drawing and
saving one (as PNG through Agg) neither chooses the process's backend (a notebook's inline one stays) nor leaves a
figure in pyplot's list of open ones; a figure is freed as any object once dropped."""
from __future__ import annotations

from typing import Tuple

from matplotlib.axes import Axes
from matplotlib.figure import Figure


def figure_and_axes(figsize: Tuple[float, float]) -> Tuple[Figure, Axes]:
    """A new figure of `figsize` inches holding one axes, as `pyplot.subplots(figsize=...)` gives them."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots()
