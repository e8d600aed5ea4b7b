"""Figures: the Gram heatmap formula, scale choices, class ordering, spectrum cut-off."""

import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import ncollapse
from fixtures.report_runs import COUNTS, make_run
from ncollapse.report import ncpanels, plots
from ncollapse.report.runs import load_run


def test_normalized_gram_of_a_shifted_simplex_is_the_etf_gram():
    k, d = 5, 7
    means = 3.0 * ncollapse.simplex_etf(k, d, seed=0).to(torch.float64) + torch.arange(d, dtype=torch.float64)
    gram = plots.normalized_gram(means, center=True)
    expected = np.where(np.eye(k, dtype=bool), 1.0, -1.0 / (k - 1))  # Papyan et al. 2020, NC2
    np.testing.assert_allclose(gram, expected, atol=1e-12)
    # independent float64 reference: cosines of centred rows computed with numpy
    m = means.numpy() - means.numpy().mean(0)
    ref = (m @ m.T) / np.outer(np.linalg.norm(m, axis=1), np.linalg.norm(m, axis=1))
    np.testing.assert_allclose(gram, ref, atol=1e-12)
    w = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    np.testing.assert_allclose(plots.normalized_gram(w, center=False)[0, 1], 1 / math.sqrt(2), rtol=1e-15)


@pytest.mark.parametrize("values, scale", [([1e-3, 1e-1, 2.0], "log"), ([0.0, 0.01, 0.2], "symlog"),
                                           ([-0.2, 0.3], "linear"), ([0.0, 0.0], "linear"),
                                           ([float("nan"), 0.5, 0.6], "log")])
def test_value_scale(values, scale):
    ax = Figure().subplots()
    assert plots._set_value_scale(ax, np.asarray(values)) == scale
    assert ax.get_yscale() == scale


def test_ordered_keys_and_class_order():
    keys = ["nc/dim", "nc/zeta", "nc/cdnv", "nc/nc1", "nc/num_samples", "nc/alpha"]
    assert plots.ordered_nc_keys(keys, "nc/") == ["nc/nc1", "nc/cdnv", "nc/alpha", "nc/zeta"]
    assert plots.sorted_by_size([5, 50, 5, 500]) == [3, 1, 0, 2]


def test_per_class_bars_follow_training_size_and_groups_are_shaded(tmp_path):
    counts = [4, 120, 30, 15, 60, 8]  # unsorted on purpose
    run = load_run(make_run(tmp_path / "run", counts=counts, epochs=2, state=False))
    acc = np.asarray(run.last["test_acc_per_class"])
    groups = run.groups()
    fig = plots.per_class_figure([run], run.class_counts(), groups)
    ax = fig.axes[0]
    order = [1, 4, 2, 3, 5, 0]
    bars = [p for p in ax.patches if p.get_facecolor()[:3] == pytest.approx((0.12, 0.47, 0.71), abs=0.01)]
    np.testing.assert_allclose([b.get_height() for b in bars], 100 * acc[order])
    spans = {p.get_facecolor()[:3]: (p.get_x(), p.get_width()) for p in ax.patches if p not in bars}
    from matplotlib.colors import to_rgb
    assert spans[to_rgb(plots.GROUP_COLORS["head"])] == (-0.5, 1.0)    # class 1
    assert spans[to_rgb(plots.GROUP_COLORS["medium"])] == (0.5, 2.0)  # classes 4, 2
    assert spans[to_rgb(plots.GROUP_COLORS["tail"])] == (2.5, 3.0)    # classes 3, 5, 0
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"c{c}" for c in order]


def test_spectrum_hides_numerically_zero_eigenvalues():
    fig = plots.spectrum_figure([(1, np.array([4.0, 2.0, 1e-12])), (2, np.array([3.0, 3.0, 0.0]))])
    lines = fig.axes[0].get_lines()
    assert [np.isnan(line.get_ydata()).tolist() for line in lines] == [[False, False, True], [False, False, True]]
    assert fig.axes[0].get_yscale() == "log"


def test_metric_grid_has_one_panel_per_key(tmp_path):
    run = load_run(make_run(tmp_path / "run", epochs=3, nc_every=1, state=False))
    keys = plots.ordered_nc_keys(run.scalar_keys("nc/"), "nc/")
    fig = plots.metric_grid([run], keys)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == [ncpanels.title(k[3:]) for k in keys]
    assert [ax.texts[0].get_text().split(" (")[0] for ax in visible] == keys
    nc1 = visible[0].get_lines()[0]
    np.testing.assert_allclose(nc1.get_ydata(), run.series("nc/nc1")[1])
    assert visible[0].get_yscale() == "log"
    assert len(COUNTS) == run.num_classes


def _outside_or_covered(fig) -> list[str]:
    """What does not fit: an axes (title, labels, drawn ticks), a legend or a figure text reaching outside the
    figure, or an axes title under a legend."""
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    boxes = [(ax.get_title() or ax.get_ylabel(), ax.get_tightbbox(renderer)) for ax in fig.axes if ax.get_visible()]
    boxes += [("legend", legend.get_window_extent(renderer)) for legend in fig.legends]
    boxes += [(t.get_text(), t.get_window_extent(renderer)) for t in fig.texts if t.get_text()]
    width, height = fig.bbox.width, fig.bbox.height
    bad = [name for name, box in boxes if box.x0 < -1 or box.y0 < -1 or box.x1 > width + 1 or box.y1 > height + 1]
    legends = [legend.get_window_extent(renderer) for legend in fig.legends]
    legends += [ax.get_legend().get_window_extent(renderer) for ax in fig.axes if ax.get_legend()]
    bad += [f"{ax.get_title()} (under a legend)" for ax in fig.axes
            if ax.get_title() and any(ax.title.get_window_extent(renderer).overlaps(box) for box in legends)]
    return bad


def _two_runs(tmp_path):
    from dataclasses import replace
    a = load_run(make_run(tmp_path / "a", epochs=4, nc_every=1, ncmc=True))
    b = load_run(make_run(tmp_path / "b", epochs=4, nc_every=2, seed=1))
    return [replace(a, name="CE (linear head)"), replace(b, name="CAL (NCMC multi-center head)")]


def test_titles_and_legends_fit_every_report_figure(tmp_path):
    runs = _two_runs(tmp_path)
    a = runs[0]
    state = a.nc_state
    final = state["stats"].finalize()
    keys = plots.ordered_nc_keys(a.scalar_keys("nc/"), "nc/")
    figures = {"accuracy 1": plots.accuracy_figure([a]), "accuracy 2": plots.accuracy_figure(runs),
               "loss": plots.loss_figure(runs), "groups": plots.group_bars_figure(runs),
               "per class 1": plots.per_class_figure([a], a.class_counts(), a.groups()),
               "per class 2": plots.per_class_figure(runs, a.class_counts(), a.groups()),
               "grid": plots.metric_grid(runs, keys), "headline": plots.metric_panel(runs, "nc/cdnv"),
               "gram": plots.gram_figure(final.means, state["weight"], state["epoch"]),
               "spectrum": plots.spectrum_figure([(e, np.linspace(5.0, 4.0, 5)) for e in range(1, 9)]),
               "confusion": plots.confusion_figure(state["test_confusion"].numpy(), None, list(range(6)), 4)}
    assert {name: bad for name, fig in figures.items() if (bad := _outside_or_covered(fig))} == {}


def test_zero_bars_show_and_every_mark_is_in_a_legend(tmp_path):
    runs = _two_runs(tmp_path)
    for run in runs:
        run.last["test_acc_per_class"][-1] = 0.0  # the rarest class never predicted
        run.last["test_acc_tail"] = 0.0
    fig = plots.per_class_figure(runs, runs[0].class_counts(), runs[0].groups())
    ax = fig.axes[0]
    stubs = [p for p in ax.patches if p.get_hatch() == "////"]
    assert len(stubs) == 2 and all(p.get_height() == plots.ZERO_STUB for p in stubs)
    assert all(4.5 < p.get_x() + p.get_width() / 2 < 5.5 for p in stubs)  # at the last (rarest) class
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["head (1)", "medium (2)", "tail (3)", "CE (linear head)", "CAL (NCMC multi-center head)",
                      "training samples\n(right axis)", "0 %"]  # the count line and the stub have entries
    bars = plots.group_bars_figure(runs)
    stubs = [p for p in bars.axes[0].patches if p.get_hatch() == "////"]
    assert len(stubs) == 2 and all(2.5 < p.get_x() + p.get_width() / 2 < 3.5 for p in stubs)  # the tail group
    assert "0.0" in [t.get_text() for t in bars.axes[0].texts]  # and its value label
    assert [t.get_text() for t in bars.legends[0].get_texts()] == ["CE (linear head)", "CAL (NCMC multi-center head)",
                                                                  "0 %"]


def test_one_line_style_convention(tmp_path):
    """Training solid, test dashed in the accuracy figure as in every NC panel."""
    run = load_run(make_run(tmp_path / "run", epochs=3, nc_every=1, state=False))
    ax = plots.accuracy_figure([run]).axes[0]
    styles = {line.get_label(): line.get_linestyle() for line in ax.get_lines()}
    assert styles == {"train": "-", "test": "--"}
    grid = plots.metric_grid([run], ["nc/nc1"]).axes[0]
    assert [line.get_linestyle() for line in grid.get_lines()] == ["-", "--"]  # nc/nc1, then nc_test/nc1


def test_experiment_figures_follow_the_line_style_convention():
    """The experiments' pages carry the same convention: training solid, test dashed, anything else dotted."""
    from ncollapse.experiments import cdnv, split_collapse
    rows = [{"epoch": e, "train/nc1": 1.0 / e, "test/nc1": 2.0 / e, "test_weak/nc1": 1.5 / e, "train/cdnv": 0.5 / e,
             "test/cdnv": 0.8 / e, "gap": 0.1 * e} for e in (1, 2, 3)]
    ax = split_collapse._curves(rows, "nc1", "NC1").axes[0]
    assert [(line.get_label(), line.get_linestyle()) for line in ax.get_lines()] == [
        ("train (labels)", "-"), ("test, strong (true labels)", "--"), ("test, weak (predicted labels)", "--")]
    fig = cdnv._figures(rows)["cdnv_gap"]
    styles = {line.get_label(): line.get_linestyle() for ax in fig.axes for line in ax.get_lines()}
    assert styles == {"CDNV train": "-", "CDNV test": "--", "gap (train − test acc)": ":"}
