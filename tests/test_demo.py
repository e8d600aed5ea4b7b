import json

from ncollapse.cli import main
from ncollapse.demo import demo_configs


def test_demo_writes_report_and_five_line_summary(tmp_path, capsys):
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
    ufm = {(r["loss"], r["imbalance"]): r for r in info["ufm"]}
    assert len(ufm) == 6
    # the UFM optimum: CE minority class means collapse under heavy imbalance, NCMC's stay near the simplex angle
    assert ufm[("ce", 0.01)]["minority_cos_means"] > 0.1
    assert abs(ufm[("ncmc_cosine", 0.01)]["minority_cos_means"] + 1 / 9) < 0.05
    assert ufm[("ce", 1.0)]["nc1"] < 1e-6


def test_demo_configs_cal_uses_class_aware_centers():
    cfgs = demo_configs(epochs=3)
    assert cfgs["ce"].loss.name == "ce" and cfgs["ce"].model.head == "linear"
    assert cfgs["cal"].model.centers == "class_aware" and cfgs["cal"].loss.name == "ncmc_cosine"
    assert cfgs["cal"].data.imbalance == 0.1 and cfgs["cal"].train.epochs == 3
