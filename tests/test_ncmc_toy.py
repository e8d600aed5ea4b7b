"""Prop. 3.1 / C.1 toy: GCR beats RCR on hard-to-predict features when f_k and P{E_k} ascend."""

import pytest

from ncollapse.experiments.ncmc_toy import simulate_rcr_gcr, toy_figure


def test_prop_3_1_gcr_at_least_rcr_and_matches_closed_forms():
    f, probs = [1, 2, 3, 4, 5], [1, 2, 3, 4, 5]
    r = simulate_rcr_gcr(f, probs, num_samples=20000, seed=0)
    assert r["assumptions_hold"]
    assert r["p_rcr_theory"] == pytest.approx(0.2)
    assert r["p_gcr_theory"] == pytest.approx(sum(a * b for a, b in zip(f, probs)) / 15 / 15)  # = 11/45
    assert abs(r["p_rcr"] - r["p_rcr_theory"]) < 4 * r["se_rcr"]
    assert abs(r["p_gcr"] - r["p_gcr_theory"]) < 4 * r["se_gcr"]
    assert r["p_gcr"] - r["p_rcr"] > 4 * (r["se_gcr"] + r["se_rcr"])
    for share, fk in zip(r["share_gcr"], f):  # GCR assigns class k with probability f_k / F
        assert share == pytest.approx(fk / 15, abs=0.015)


def test_equal_centers_or_uniform_hardness_give_no_gain():
    flat = simulate_rcr_gcr([3, 3, 3], [1, 2, 4], num_samples=5000)
    assert flat["p_gcr_theory"] == pytest.approx(flat["p_rcr_theory"])
    uniform = simulate_rcr_gcr([1, 2, 6], [1, 1, 1], num_samples=5000)
    assert uniform["p_gcr_theory"] == pytest.approx(1 / 3)
    reversed_f = simulate_rcr_gcr([6, 2, 1], [1, 2, 4], num_samples=5000)
    assert not reversed_f["assumptions_hold"] and reversed_f["p_gcr_theory"] < 1 / 3


def test_ncmc_frame_gcr_favours_classes_with_more_centers():
    r = simulate_rcr_gcr([1, 2, 4, 8], [1, 2, 4, 8], frame="ncmc", theta=0.2, num_samples=20000)
    assert r["p_gcr"] > r["p_rcr"] + 4 * (r["se_gcr"] + r["se_rcr"])
    assert r["share_gcr"][-1] > r["share_gcr"][0]
    assert all(abs(s - 0.25) < 0.02 for s in r["share_rcr"])  # ⟨w_k, μ'⟩ = sin θ / K for every k


def test_toy_figure_writes_png(tmp_path):
    path = tmp_path / "toy" / "rcr_gcr.png"
    runs = toy_figure(path, (1, 2, 3), exponents=(0.0, 2.0), num_samples=2000)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(runs) == 4 and runs[1]["p_gcr_theory"] > runs[1]["p_rcr_theory"]


@pytest.mark.parametrize("kwargs,match", [
    (dict(centers_per_class=[1, 0], hard_probs=[1, 1]), r"centers_per_class\[1\] == 0"),
    (dict(centers_per_class=[1, 2], hard_probs=[1, 1, 1]), "hard_probs"),
    (dict(centers_per_class=[1, 2], hard_probs=[1, 1], frame="ncmc", theta=3.0), "pi/2"),
    (dict(centers_per_class=[1, 2], hard_probs=[1, 1], frame="learned"), "frame"),
    (dict(centers_per_class=[1, 2], hard_probs=[1, 1], dim=4), "dim == 4"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate_rcr_gcr(**kwargs)
