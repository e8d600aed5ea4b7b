"""ClassStats state dicts are checked on load (issue 18, part 5): tampered counts, means, squared deviations,
scatters and shapes are refused with one line, and ``ncollapse report`` turns such an nc_state.pt into a note."""

import numpy as np
import pytest
import torch

from ncollapse import ClassStats, measure
from ncollapse.cli import main
from ncollapse.report.runs import load_run

from conftest import make_features
from fixtures.report_runs import make_run


@pytest.fixture
def state():
    x, y, _ = make_features([30, 20, 10], dim=4, seed=7)
    return ClassStats.from_features(x, y, per_class_cov=True, rare_below=3).state_dict()


def _tampered(state, key, edit):
    state = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in state.items()}
    state[key] = edit(state[key])
    return state


def _set(index, value):
    def edit(t):
        t[index] = value
        return t
    return edit


CASES = [
    ("counts", _set(1, -3), "'counts' has negative entries"),
    ("counts", lambda t: t.to(torch.float64) + 0.5, "'counts' holds non-integer values"),
    ("means", _set((0, 1), float("nan")), "'means' holds NaN or Inf"),
    ("means", _set((2, 0), float("inf")), "'means' holds NaN or Inf"),
    ("sq_dev", _set(2, -1.0), "'sq_dev' is negative for class 2"),
    ("scatter", _set((1, 1), -5.0), "'scatter' has a negative diagonal entry"),
    ("class_scatter", _set((0, 2, 2), -5.0), "'class_scatter' has a negative diagonal entry"),
    ("scatter", lambda t: t[:3, :3], r"'scatter' has shape \(3, 3\); expected \(4, 4\)"),
    ("means", lambda t: t.tolist(), "'means' is a list; expected a tensor"),
    ("num_classes", lambda v: 3.5, "'num_classes' is 3.5; expected a positive integer"),
    ("feature_dtype", lambda v: "int8", "'feature_dtype' is 'int8'; expected a floating dtype"),
    ("rare_samples", lambda t: t[:, :, :2], r"'rare_samples' has shape \(3, 2, 2\); expected \(3, m, 4\)"),
]


@pytest.mark.parametrize("key, edit, match", CASES)
def test_tampered_states_are_refused(state, key, edit, match):
    bad = _tampered(state, key, edit)
    with pytest.raises(ValueError, match=match) as exc:
        ClassStats.from_state_dict(bad)
    assert "\n" not in str(exc.value)
    if key != "num_classes":
        target = ClassStats(3, 4, per_class_cov=True, rare_below=3)
        with pytest.raises(ValueError, match=match):
            target.load_state_dict(bad)
        assert int(target.counts.sum()) == 0  # nothing half-loaded


def test_valid_states_still_load(state):
    x, y, _ = make_features([30, 20, 10], dim=4, seed=7)
    loaded = ClassStats.from_state_dict(state)
    assert measure(loaded)["nc1"] == pytest.approx(measure(ClassStats.from_features(x, y))["nc1"], rel=1e-14)
    integral_float = _tampered(state, "counts", lambda t: t.to(torch.float64))
    assert ClassStats.from_state_dict(integral_float).counts.dtype == torch.int64


def test_identical_samples_in_float32_leave_a_loadable_state():
    """Rounding may leave a sum of squares a hair below zero; that is not refused."""
    x = np.tile(np.float32([[3.1, -7.3, 1e3]]), (50, 1))
    y = np.repeat([0, 1], 25)
    s = ClassStats(2, 3)
    for i in range(0, 50, 7):
        s.update(x[i:i + 7], y[i:i + 7])
    ClassStats.from_state_dict(s.state_dict())


def test_report_turns_a_tampered_state_into_a_note(tmp_path):
    run_dir = make_run(tmp_path / "run", epochs=2, nc_every=1)
    saved = torch.load(run_dir / "nc_state.pt", weights_only=True)
    saved["stats"]["sq_dev"][0] = -1.0
    torch.save(saved, run_dir / "nc_state.pt")
    run = load_run(run_dir)
    assert run.nc_state is None
    assert any("nc_state.pt could not be read" in n and "'sq_dev' is negative" in n for n in run.notes)
    out = tmp_path / "report.html"
    assert main(["report", "--run", str(run_dir), "--out", str(out)]) == 0
    page = out.read_text()
    assert "sq_dev" in page and "is negative for class 0" in page


def test_check_state_directly_names_the_entry(state):
    """stats.state_check.check_state on its own: a valid state passes, a missing key or a non-dict is named."""
    from ncollapse.stats.state_check import check_state

    check_state(state, torch.float64)
    with pytest.raises(ValueError, match=r"missing keys: \['scatter'\]"):
        check_state({k: v for k, v in state.items() if k != "scatter"}, torch.float64)
    with pytest.raises(TypeError, match="state must be a dict"):
        check_state([state], torch.float64)
