"""The figures as a reader sees them, rendered: labelled axes, class names on heat maps, legends that name
methods, and the best epoch marked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from atlens.plots.curves import plot_curves
from atlens.plots.heatmap import matrix_family, plot_matrix

pytestmark = pytest.mark.figures
DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.fixture
def rendered(monkeypatch):
    """Every figure rendered during the test, in order."""
    figures: list[Figure] = []
    savefig = Figure.savefig

    def keep(self, *args, **kwargs):
        figures.append(self)
        return savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def data_axes(fig: Figure) -> list:
    """The panels that plot data (colour bars and empty panels aside)."""
    return [ax for ax in fig.axes if ax.lines or ax.collections or ax.images]


def test_training_curves_label_every_panel_and_mark_the_best_epoch(tmp_path, rendered):
    rows = [{"epoch": e, "lr": 0.1 if e <= 5 else 0.01, "train_robust_acc": 0.05 * e, "test_clean_acc": 0.5,
             "test_robust_acc": 0.3 - 0.02 * abs(e - 4), "train_loss": 2 - 0.1 * e, "cas": 5 + 0.1 * e}
            for e in range(1, 11)]
    plot_curves(rows, tmp_path / "curves.png", "pgd_at", selection="test_robust_acc")
    assert Image.open(tmp_path / "curves.png").size[0] > 1000
    fig = rendered[0]
    assert len(data_axes(fig)) == 4
    for ax in data_axes(fig):
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel(), ax.get_title()
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "best (epoch 4)" in legend and "lr decay" in legend


def test_a_sampled_run_shows_its_class_probabilities_by_class_name(tmp_path, rendered):
    probabilities = [[0.5, 0.3, 0.2] if e > 2 else [1 / 3] * 3 for e in range(1, 5)]
    rows = [{"epoch": e, "lr": 0.1, "train_robust_acc": 0.1, "test_robust_acc": 0.2, "test_clean_acc": 0.4,
             "train_loss": 2.0, "extra_class_probabilities": p} for e, p in zip(range(1, 5), probabilities)]
    plot_curves(rows, tmp_path / "curves.png", "pgd_at", classes=["airplane", "cat", "ship"])
    ax = data_axes(rendered[0])[-1]
    assert ax.get_xlabel() == "epoch" and "probability" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["airplane", "cat", "ship"]
    assert list(ax.lines[0].get_ydata()) == pytest.approx([100 / 3, 100 / 3, 50, 50])


def test_heat_maps_name_the_classes_on_both_axes(tmp_path, rendered):
    classes = ["airplane", "cat", "ship"]
    plot_matrix(torch.eye(3), classes, tmp_path / "cas.png", "best: CAS = 0.00", matrix_family(False, 3))
    ax = rendered[0].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == classes
    assert [t.get_text() for t in ax.get_yticklabels()] == classes
    assert ax.get_title().startswith("best")


def test_runs_compared_are_labelled_by_method(tmp_path, rendered):
    from atlens.report import write_report
    from atlens.report.tables import RunView, write_markdown

    studies = DOCS / "studies"
    write_markdown([RunView(studies / "cpu_pgd_at"), RunView(studies / "cpu_swa")], tmp_path / "compared.md")
    write_report([studies / "cpu_eps" / "epsilon-2_255", studies / "cpu_eps" / "epsilon-4_255"], tmp_path / "r.html")
    legends = [[t.get_text() for t in fig.axes[0].get_legend().get_texts()] for fig in rendered]
    assert legends == [["PGD-AT", "PGD-AT + SWA"], ["PGD-AT, ε 2/255", "PGD-AT, ε 4/255"]]
    for ax in data_axes(rendered[0]):
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel()


def test_every_analysis_figure_labels_its_axes(tmp_path, rendered, digits):
    from atlens.analysis.runner import ANALYSES, AnalysisSettings, analyze_models
    from atlens.attacks import ThreatModel
    from atlens.data import DatasetInfo, PreparedData
    from atlens.models import build_model

    train, test = digits
    info = DatasetInfo("digits", [str(c) for c in range(10)], (0.3,), (0.38,), 8, 1)
    data = PreparedData(info, train.subset(torch.arange(40)), test.subset(torch.arange(40)), None, None)
    torch.manual_seed(0)
    models = {name: (build_model("cnn", 10, 1, 8, [0.3], [0.38], {"width": 8, "hidden": 16}), epoch)
              for name, epoch in (("best", 3), ("last", 9))}
    settings = AnalysisSettings(examples=20, train_examples=20, weight_examples=8, lsc_mu=(-0.1, 0.0, 0.1),
                                lsc_directions=1, weight_radii=(0.0, 0.1), weight_directions=1, surface_examples=1,
                                tsne_classes=2, tsne_per_class=8, gradcam_examples=2)
    analyze_models(models, data, ThreatModel("linf", 0.1), tmp_path, list(ANALYSES), settings=settings)
    assert len(rendered) == len(ANALYSES)
    for name, fig in zip(ANALYSES, rendered):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000, name
        if name == "gradcam":  # images with captions, no axes
            continue
        for ax in data_axes(fig):
            assert ax.get_xlabel() and ax.get_ylabel(), (name, ax.get_title())
