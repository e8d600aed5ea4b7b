"""Figures: the Gram heatmap formula, scale choices, class ordering, spectrum cut-off."""

import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import ncollapse
from fixtures.report_runs import COUNTS, make_run
from ncollapse.report import plots
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
    fig = plots.metric_grid([run], keys, "nc/", "NC")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title().split(" (")[0] for ax in visible] == [k[3:] for k in keys]
    nc1 = visible[0].get_lines()[0]
    np.testing.assert_allclose(nc1.get_ydata(), run.series("nc/nc1")[1])
    assert visible[0].get_yscale() == "log"
    assert len(COUNTS) == run.num_classes
