"""`ncollapse ncmc centers | toy`: class-aware f_k (Yan et al. 2024, §3.5) and the RCR/GCR toy figure (§3.1)."""

from __future__ import annotations

import json

from ncollapse.cli import main


def _json(capsys):
    return json.loads(capsys.readouterr().out)


def test_centers_cifar10_profile(capsys):
    # ncmc.md §3: CIFAR-10-LT tau 0.01 (5000 ... 50), f = 20 -> [2,3,4,5,7,11,17,28,46,77], width >= 210
    assert main(["ncmc", "centers", "--n-max", "5000", "--classes", "10", "--imbalance", "0.01", "--f", "20",
                 "--json"]) == 0
    out = _json(capsys)
    assert out["counts"] == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert out["centers_per_class"] == [2, 3, 4, 5, 7, 11, 17, 28, 46, 77]
    assert (out["total_centers"], out["min_width"]) == (200, 210)
    assert out["f_times_n"][:2] == [10000, 8991]


def test_centers_paper_example_and_orders(capsys):
    # the paper's worked example (1,3,3), f = 3 -> (4,4,1) on the counts as given
    assert main(["ncmc", "centers", "--counts", "1,3,3", "--f", "3", "--order", "given", "--json"]) == 0
    assert _json(capsys)["centers_per_class"] == [4, 4, 1]
    # sorted head to tail (3,3,1): a = (3,3,1) -> reversed (1,3,3) -> +1 twice -> (2,4,3), mapped back to classes
    assert main(["ncmc", "centers", "--counts", "1,3,3", "--f", "3", "--json"]) == 0
    assert _json(capsys)["centers_per_class"] == [3, 2, 4]
    assert main(["ncmc", "centers", "--counts", "1,3,3", "--f", "3", "--strategy", "al"]) == 0
    text = capsys.readouterr().out
    assert "f_k:   3 3 3" in text and "width >= F + K = 12" in text


def test_centers_bad_input(capsys):
    assert main(["ncmc", "centers", "--counts", "5,0,3", "--f", "3"]) == 2
    assert "--counts[1] == 0" in capsys.readouterr().err
    assert main(["ncmc", "centers", "--counts", "5,x", "--f", "3"]) == 2
    assert "comma-separated integers" in capsys.readouterr().err
    assert main(["ncmc", "centers", "--counts", "5,3", "--f", "0"]) == 2
    assert "--f == 0" in capsys.readouterr().err
    assert main(["ncmc", "centers", "--f", "3"]) == 2
    assert "either --counts or --n-max" in capsys.readouterr().err
    assert main(["ncmc"]) == 2


def test_toy_figure(tmp_path, capsys):
    assert main(["ncmc", "toy", "--out", str(tmp_path), "--samples", "4000", "--centers", "1,2,4", "--json"]) == 0
    out = _json(capsys)
    assert (tmp_path / "ncmc_toy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = json.loads((tmp_path / "ncmc_toy.json").read_text())
    assert len(runs) == 10 and {r["frame"] for r in runs} == {"independent", "ncmc"}
    # most skewed P{E_k} ∝ k^3 = (1, 8, 27)/36: P_RCR = 1/3, P_GCR = (1 + 16 + 108)/(7 * 36) (Prop. 3.1)
    assert abs(out["p_rcr_theory"] - 1 / 3) < 1e-12
    assert abs(out["p_gcr_theory"] - 125 / 252) < 1e-12
    assert abs(out["p_gcr"] - 125 / 252) < 0.04 and out["gcr_beats_rcr"] is True
