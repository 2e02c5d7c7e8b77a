"""The plots t2t-mtl writes (evaluation reports, training logs, mixture rates, analyses) leave matplotlib as the
caller had it: a notebook's backend and its open pyplot figures."""
from __future__ import annotations

import importlib
import json

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest

from t2t_mtl.analysis import plotting
from t2t_mtl.cli.mixture import plot_rates
from t2t_mtl.engine.logging import plot_task_losses
from t2t_mtl.evaluation import EvalReport, write_report
from t2t_mtl.evaluation.runner import TemplateResult

PNG = b"\x89PNG\r\n\x1a\n"


def _report(tmp_path):
    result = TemplateResult(task="t", template="x", split="validation", scoring="rank", num_examples=4,
                            metrics={"accuracy": {"accuracy": 0.5}}, primary_metric="accuracy",
                            primary_key="accuracy", score=50.0, majority_baseline=75.0)
    return write_report(EvalReport("m", [result]), tmp_path / "report")["plots"][0]


def _losses(tmp_path):
    records = [{"step": step, "loss": 2.0 / step, "task_loss": {"a": 1.0 / step, "b": 3.0 / step}} for step in (1, 2)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    return plot_task_losses(tmp_path)


def _rates(tmp_path):
    plot_rates({"tasks": ["a", "b"], "epochs": [0], "probabilities": {"a": [0.25], "b": [0.75]}}, "rates",
               str(tmp_path / "rates.png"))
    return tmp_path / "rates.png"


def _heatmap(tmp_path):
    importlib.reload(plotting)  # (imported, as a notebook imports it, once its backend is chosen)
    return plotting.matrix_heatmap(np.array([[0.0, 1.0], [-1.0, 0.0]]), ["a", "b"], ["a", "b"], tmp_path / "heat.png",
                                   title="t", xlabel="x", ylabel="y", colorbar_label="c")


@pytest.fixture()
def notebook_backend():
    """A backend other than Agg chosen, with a figure of the user's open in pyplot, as in a notebook."""
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    figure = plt.figure()
    yield figure
    plt.close("all")
    matplotlib.use(before)


@pytest.mark.parametrize("draw", [_report, _losses, _rates, _heatmap])
def test_a_plot_leaves_the_callers_backend_and_open_figures_alone(draw, notebook_backend, tmp_path):
    # was: every plot called matplotlib.use("Agg") (analysis.plotting on import), which in a notebook switched its
    # inline backend to Agg for the rest of the session (plt.show() then drew nothing: "FigureCanvasAgg is
    # non-interactive") and closed the user's open figures; train() and write_report() plotted so
    assert draw(tmp_path).read_bytes()[:8] == PNG
    assert matplotlib.get_backend() == "svg"
    assert plt.get_fignums() == [notebook_backend.number]


def test_a_figure_off_pyplot_is_the_size_asked_for_as_pyplot_subplots_gives_it(tmp_path):
    # a report's PNG is figsize inches at its dpi (the PNG header's width and height, big-endian after 'IHDR')
    from t2t_mtl.figures import figure_and_axes

    fig, axes = figure_and_axes((3, 2))
    axes.plot([0, 1], [1, 0])
    fig.savefig(tmp_path / "f.png", dpi=50)
    header = (tmp_path / "f.png").read_bytes()[:24]
    assert header[:8] == PNG and header[12:16] == b"IHDR"
    assert (int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")) == (150, 100)
