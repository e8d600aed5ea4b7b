import json
import warnings

from ncollapse.cli import main
from ncollapse import demo
from ncollapse.demo import IMBALANCES, MINORITY_RATIOS, SEEDS, demo_configs, sweep_stats


def test_demo_writes_report_and_five_line_summary(tmp_path, capsys, monkeypatch):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "2", "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == f"report: {out / 'report.html'}"
    summary = lines[1:]
    assert len(summary) == 5
    assert summary[0].startswith("digits-LT (imbalance 0.1): 579 training images, class counts 143 → 14")
    assert summary[1].startswith("CE (linear head)") and summary[2].startswith("CAL (NCMC multi-center head)")
    html = (out / "report.html").read_text()
    assert html.count("<img") >= 6 and "UFM sweep" in html
    info = json.loads((out / "demo.json").read_text())
    for key in ("ce", "cal"):
        metrics = [json.loads(line) for line in (out / key / "metrics.jsonl").read_text().splitlines()]
        assert [m["epoch"] for m in metrics] == [1, 2]
        assert 0.1 < info["runs"][key]["final_test_acc"] <= 1.0
    run = json.loads((out / "cal" / "run.json").read_text())
    assert run["head"] == "multicenter" and run["loss"] == "ncmc_cosine"
    assert run["class_counts"] == info["class_counts"] and sum(run["class_counts"]) == 579
    report = (out / "report.html").read_bytes()
    assert main(["demo", "--out", str(out), "--epochs", "1", "--quiet"]) == 2  # an earlier demo is not replaced
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds an earlier demo" in err[0] and "--force" in err[0]
    assert (out / "report.html").read_bytes() == report
    monkeypatch.setattr(demo, "ufm_sweep", lambda seed: info["ufm"])  # solved above; only the runs are redone
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["demo", "--out", str(out), "--epochs", "1", "--force"]) == 0  # --force replaces it
    assert not [w for w in caught if issubclass(w.category, UserWarning)]  # page notes are log lines
    err = capsys.readouterr().err
    assert "report note: panels left out" in err and "Warning" not in err
    assert f"{len(IMBALANCES)} imbalance ratios 1 … 0.01 of which {len(MINORITY_RATIOS)} have a minority" in err
    for key in ("ce", "cal"):
        metrics = [json.loads(line) for line in (out / key / "metrics.jsonl").read_text().splitlines()]
        assert [m["epoch"] for m in metrics] == [1]
    assert (out / "report.html").read_bytes() != report
    info = json.loads((out / "demo.json").read_text())
    assert len(info["ufm"]) == 2 * len(IMBALANCES) * SEEDS and SEEDS >= 3
    stats = sweep_stats(info["ufm"], "minority_cos_means")
    assert len(stats["ce"][0]) >= 8 and len(stats["ncmc_cosine"][0]) >= 8  # ratios with minority cosines
    cos = {loss: dict(zip(taus, means)) for loss, (taus, means, _) in stats.items()}
    # the UFM optimum: CE minority class means collapse under heavy imbalance, NCMC's stay near the simplex angle
    assert cos["ce"][0.01] > 0.1 and cos["ncmc_cosine"][0.01] < 0.0  # simplex: -1/9
    assert max(r["nc1"] for r in info["ufm"] if r["loss"] == "ce" and r["imbalance"] == 1.0) < 1e-6
    assert html.count(" ± ") >= 3 * 2 * 8  # NC1 and both cosines, mean ± std, per loss and imbalanced ratio
    # NCMC's cosine loss fixes directions only: its raw NC1 is the spread of norms, NC1 of h/‖h‖ is collapse
    unit = sweep_stats(info["ufm"], "nc1_unit")
    assert unit["ce"][0] == unit["ncmc_cosine"][0] == list(IMBALANCES)  # NC1 at all 9 ratios, cosines at 8
    assert max(unit["ncmc_cosine"][1]) < 1e-2 < max(sweep_stats(info["ufm"], "nc1")["ncmc_cosine"][1])
    assert stats["ce"][0] == list(MINORITY_RATIOS) and "the cosines cover the 8 ratios τ &lt; 1" in html


def test_demo_configs_cal_uses_class_aware_centers():
    cfgs = demo_configs(epochs=3)
    assert cfgs["ce"].loss.name == "ce" and cfgs["ce"].model.head == "linear"
    assert cfgs["cal"].model.centers == "class_aware" and cfgs["cal"].loss.name == "ncmc_cosine"
    assert cfgs["cal"].data.imbalance == 0.1 and cfgs["cal"].train.epochs == 3


def test_sweep_stats_mean_and_std_over_seeds():
    rows = [{"loss": "ce", "imbalance": 0.1, "seed": s, "x": v} for s, v in enumerate([1.0, 2.0, 4.0])]
    rows += [{"loss": "ce", "imbalance": 1.0, "seed": 0, "x": 5.0}, {"loss": "ce", "imbalance": 0.5, "seed": 0, "x": None}]
    taus, means, stds = sweep_stats(rows, "x")["ce"]
    assert taus == [1.0, 0.1] and means == [5.0, 7 / 3]  # IMBALANCES order; a missing value leaves its ratio out
    assert stds[0] == 0.0 and abs(stds[1] - (((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 3) ** 0.5) < 1e-15
