"""NC panel groups, y labels, panels left out for lack of information, symlog zeros, loss and confusion figures."""

import json
from dataclasses import replace

import numpy as np
from matplotlib.figure import Figure

from fixtures.report_runs import make_run
from ncollapse.report import ncpanels, plots
from ncollapse.report.runs import load_run


def test_groups_and_labels_follow_papyan():
    keys = ["nc/nc1", "nc/cdnv_tail", "nc/etf_error_weights", "nc/self_duality", "nc/ncc_mismatch", "nc/rank",
            "nc/nc1_quotient"]
    assert ncpanels.grouped(keys, "nc/") == {"NC1": ["nc/nc1", "nc/cdnv_tail", "nc/nc1_quotient"],
                                             "NC2": ["nc/etf_error_weights"], "NC3": ["nc/self_duality"],
                                             "NC4": ["nc/ncc_mismatch"], "other": ["nc/rank"]}
    assert ncpanels.y_label("nc1") == "tr(Σ_W Σ_B⁺) / K" and ncpanels.y_label("nc1_quotient_tail") == "tr Σ_W / tr Σ_B"
    assert ncpanels.y_label("something_new") == "something_new"


def _with_series(tmp_path, series, counts=(120, 60, 30, 15, 8)):
    run_dir = make_run(tmp_path / "run", counts=list(counts), epochs=3, nc_every=1, state=False)
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for line, i in zip(lines, range(3)):
        line.update({k: v[i] for k, v in series.items()})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return load_run(run_dir)


def test_uninformative_panels_are_named_with_the_reason(tmp_path):
    run = _with_series(tmp_path, {"nc/rank": [4, 4, 4], "nc/equinorm_weights": [1e-15, 2e-15, 1e-15],
                                  "nc/minority_cos_means_std": [0.1, 0.2, 0.3], "nc/cdnv_tail": [None] * 3,
                                  "nc/ncc_mismatch": [0.2, 0.0, 0.0], "nc/nc1": [1.0, 0.5, 0.1],
                                  "nc/nc1_quotient": [None, None, 0.4]},  # one NC pass: a value, not a flat line
                       counts=(120, 60, 30, 15, 8))  # two tail classes (< 20 samples)
    keys = ["nc/rank", "nc/equinorm_weights", "nc/minority_cos_means_std", "nc/cdnv_tail", "nc/ncc_mismatch",
            "nc/nc1", "nc/nc1_quotient"]
    out = ncpanels.uninformative([run], keys, "nc/")
    assert out == {"nc/rank": "constant at 4",
                   "nc/equinorm_weights": "numerically zero (|value| ≤ 2e-15, e.g. a fixed classifier)",
                   "nc/minority_cos_means_std": "a std over 2 minority classes", "nc/cdnv_tail": "no finite value"}


def test_symlog_keeps_zeros_inside_the_axis():
    ax = Figure().subplots()
    assert plots._set_value_scale(ax, np.asarray([0.2, 0.01, 0.0, 0.0])) == "symlog"
    bottom, top = ax.get_ylim()
    assert bottom < 0 < top  # markers at 0 are drawn whole


def test_symlog_axis_labels_its_zero():
    for values in ([0.2, 0.01, 0.0], [0.02, 0.015, 0.0], [1.0, 1e-5, 0.0]):  # 1-3 decades, < 1, > 3
        fig = Figure()
        ax = fig.subplots()
        ax.plot(np.arange(len(values)), values)
        assert plots._set_value_scale(ax, np.asarray(values)) == "symlog"
        fig.draw_without_rendering()
        labels = {t.get_position()[1]: t.get_text() for t in ax.get_yticklabels()}
        assert labels.get(0.0, "").replace("$\\mathdefault{0}$", "0") == "0", (values, labels)
        assert sum(1 for y, text in labels.items() if y > 0 and text) >= 2, (values, labels)


def test_metric_grid_overlays_test_features_and_labels_axes(tmp_path):
    run = _with_series(tmp_path, {"nc/nc1": [1.0, 0.5, 0.1], "nc_test/nc1": [2.0, 1.0, 0.5]})
    fig = plots.metric_grid([run], ["nc/nc1"])
    ax = fig.axes[0]
    styles = sorted(line.get_linestyle() for line in ax.get_lines())
    assert styles == ["-", "--"] and ax.get_ylabel() == "tr(Σ_W Σ_B⁺) / K"
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["training", "test"]
    assert ax.get_title() == "Within-class variability (NC1)"  # human title, the key in small type under it
    assert [t.get_text() for t in ax.texts] == ["nc/nc1"] and ax.texts[0].get_fontsize() < ax.title.get_fontsize()


def test_human_titles():
    assert ncpanels.title("etf_error_means") == "Distance to a simplex ETF, class means"
    assert ncpanels.title("nc1_quotient_tail") == "Trace ratio Σ_W / Σ_B, tail classes"
    assert ncpanels.title("minority_cos_weights_std") == "Minority-class cosine, classifier, std"
    assert ncpanels.title("something_new") == "something_new"
    assert list(ncpanels.HEADLINE) == ["nc1", "cdnv", "etf_error_means", "self_duality", "ncc_mismatch"]


def test_a_flat_run_is_left_out_of_a_shared_axis(tmp_path):
    """A fixed classifier's weight metrics sit at 1e-16: drawn with a learnt head's 0.1 … 0.001 they would stretch
    the log axis over 13 decades and flatten the other curve; they are named in the panel instead."""
    varying = _with_series(tmp_path / "a", {"nc/etf_error_weights": [0.1, 0.01, 0.001]})
    fixed = _with_series(tmp_path / "b", {"nc/etf_error_weights": [1e-16, 2e-16, 1e-16]})
    fixed = replace(fixed, name="fixed")
    assert ncpanels.flat_runs([varying, fixed], "nc/etf_error_weights") == {"fixed": 1e-16}
    assert ncpanels.flat_runs([fixed], "nc/etf_error_weights") == {}  # nothing varies: uninformative() decides
    # a fixed frame measures the same value each pass: left out when a decade or more off the other curves
    frame = replace(_with_series(tmp_path / "c", {"nc/equiangularity_weights": [3e-8, 3e-8, 3e-8],
                                                  "nc/max_angle_weights": [0.11, 0.11, 0.11]}), name="frame")
    learnt = _with_series(tmp_path / "d", {"nc/equiangularity_weights": [0.2, 0.1, 0.05],
                                           "nc/max_angle_weights": [0.2, 0.1, 0.09]})
    assert ncpanels.flat_runs([learnt, frame], "nc/equiangularity_weights") == {"frame": 3e-8}
    assert ncpanels.flat_runs([learnt, frame], "nc/max_angle_weights") == {}  # within the others' range: drawn
    fig = plots.metric_grid([varying, fixed], ["nc/etf_error_weights"])
    ax = fig.axes[0]
    drawn = np.concatenate([line.get_ydata() for line in ax.get_lines()])
    assert drawn.min() >= 1e-3 and ax.get_ylim()[0] > 1e-4  # the axis spans the learnt head's decades only
    assert any(t.get_text() == "not drawn (flat):\nfixed = 1e-16" for t in ax.texts)


def test_loss_and_confusion_figures(tmp_path):
    run = _with_series(tmp_path, {})
    ax = plots.loss_figure([run]).axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylabel().startswith("training loss")
    confusion = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    fig = plots.confusion_figure(confusion, ["a", "b", "c"], [1, 0, 2], epoch=7)
    shown = fig.axes[0].get_images()[0].get_array()
    np.testing.assert_allclose(shown[0], [0.75, 0.25, 0.0])  # row "b": 3 of 4 right, 1 taken for "a"
    np.testing.assert_allclose(shown[1], [0.2, 0.8, 0.0])
    assert np.ma.getmaskarray(shown[2]).all()  # a class without test samples stays empty (NaN, masked)
