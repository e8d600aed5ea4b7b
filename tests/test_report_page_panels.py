"""NCMC page figure panels (report.page_panels): each shape renders to a PNG and refuses numbers that do not fit its labels."""

import numpy as np
import pytest

from ncollapse.report.page_panels import bar_panels, heatmap_panels, line_panels
from ncollapse.report.figures import png_bytes

PNG = b"\x89PNG"


def test_line_panels_log_axis_drops_non_positive_values():
    fig = line_panels([("a", {"x": ([1, 2, 3], [1.0, 0.0, 0.1])}), ("b", {})], "epoch", "value", log=True,
                      styles={"x": {"linestyle": "--"}})
    line = fig.axes[0].lines[0]
    assert list(line.get_xdata()) == [1, 3] and line.get_linestyle() == "--"
    assert fig.axes[0].get_yscale() == "log" and png_bytes(fig).startswith(PNG)


def test_bar_panels_and_mismatched_series():
    fig = bar_panels([("p", ["c0", "c1"], {"AL": [0.5, 0.2], "CAL": [0.6, 0.4]})], "accuracy")
    assert len(fig.axes[0].patches) == 4 and png_bytes(fig).startswith(PNG)
    with pytest.raises(ValueError, match="1 values for 2 categories"):
        bar_panels([("p", ["c0", "c1"], {"AL": [0.5]})], "accuracy")


def test_heatmap_panels_annotate_cells_and_check_shapes():
    m = np.array([[0.1, 0.9], [0.5, np.nan]])
    fig = heatmap_panels([("g", m, ["f2", "f5"], ["0", "0.2"], [["a", "b"], ["c", "d"]])], vmin=0, vmax=1)
    assert [t.get_text() for t in fig.axes[0].texts] == ["a", "b", "c", "d"] and png_bytes(fig).startswith(PNG)
    with pytest.raises(ValueError, match="2 row and 1 column labels"):
        heatmap_panels([("g", m, ["f2", "f5"], ["0"], None)], vmin=0, vmax=1)
    with pytest.raises(ValueError, match="at least one panel"):
        line_panels([], "x", "y")
