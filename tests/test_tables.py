"""ncollapse.tables and `ncollapse table`: fake run directories rendered in the paper's layouts, exact cells."""

from __future__ import annotations

import json
import math

import pytest

from ncollapse.report import tables
from ncollapse.cli import main
from ncollapse.train.config import config_from_dict, dumps_toml


CPU = {"model": "lenet", "epochs": 30, "lr": 0.05, "weight_decay": 5e-4}  # benchmarks/ncmc_cpu.py's budget


def _cfg(dataset="cifar100", tau=0.01, method="cal", model="resnet50", mixup=False, f=20, theta=0.2, seed=0,
         epochs=200, lr=0.1, weight_decay=5e-4, penalty=None):
    raw = {"data": {"name": dataset, "imbalance": tau}, "model": {"name": model},
           "train": {"seed": seed, "mixup_alpha": 1.0 if mixup else 0.0, "epochs": epochs},
           "optim": {"lr": lr, "weight_decay": weight_decay}, "loss": {}}
    if method == "ce":
        raw["loss"]["name"] = "ce"
    elif method == "setf":
        raw["model"]["head"], raw["loss"]["name"] = "etf", "dot_regression"
    elif method in ("al", "cal", "lossp"):
        raw["model"].update(head="multicenter", centers="uniform" if method == "al" else "class_aware", f=f,
                            theta=theta)
        raw["loss"]["name"] = "ncmc_p" if method == "lossp" else "ncmc_cosine"
        if penalty is not None:
            raw["loss"]["options"] = {"feature_penalty": penalty}
    elif method == "ldam_drw":
        raw["model"]["head"] = "normed"
        raw["loss"].update(name="ldam", options={"drw_epoch": 160})
    return config_from_dict(raw)


def _run(root, name, best, final=None, tail=None, collapse=None, **cfg):
    d = root / name
    d.mkdir(parents=True)
    config = _cfg(**cfg)
    (d / "config.toml").write_text(dumps_toml(config))
    (d / "run.json").write_text(json.dumps({"seed": config.train.seed}))
    (d / "summary.json").write_text(json.dumps({"best_test_acc": best, "final_test_acc": final or best,
                                                "test_acc_tail": tail, "best_epoch": 3, "epochs": 3}))
    lines = [{"epoch": 1, "test_acc": 0.1}, {"epoch": 2, "test_acc": 0.2, "ncmc/collapse_mean": collapse}]
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"epoch": 3, "te')
    return d


def test_method_labels_from_configs():
    labels = {m: tables.method_label(_cfg(method=m).to_dict())
              for m in ("ce", "setf", "al", "cal", "lossp", "ldam_drw")}
    assert labels == {"ce": "CE", "setf": "SETF", "al": "AL", "cal": "CAL", "lossp": "Loss P",
                      "ldam_drw": "LDAM-DRW"}
    raw = _cfg(method="ce").to_dict()
    raw["loss"]["name"], raw["eval"]["logit_adjust_tau"] = "balanced_softmax", 1.0
    assert tables.method_label(raw) == "BS+PLA"
    raw["loss"]["name"], raw["eval"]["logit_adjust_tau"] = "logit_adjusted", 0.0
    assert tables.method_label(raw) == "LA"
    raw = _cfg(method="ldam_drw").to_dict()
    raw["loss"]["options"]["drw_epoch"] = None
    assert tables.method_label(raw) == "LDAM"
    attrs = tables.run_attributes(_cfg(method="cal", tau=0.005, mixup=True, f=10, seed=4).to_dict())
    assert attrs == {"dataset": "cifar100", "tau": 0.005, "model": "resnet50", "method": "CAL", "mixup": True,
                     "f": 10, "theta": 0.2, "seed": 4, "epochs": 200, "lr": 0.1, "weight_decay": 5e-4, "penalty": None}
    assert tables.run_attributes(_cfg(method="ce").to_dict())["f"] is None
    assert tables.run_attributes(_cfg(method="lossp").to_dict())["penalty"] == 5e-4  # the loss's default


def test_table4_cells_bold_underline_missing(tmp_path):
    # CAL (mixup) at tau 0.01: 0.40, 0.42, 0.44 -> 42.0 ± 2.0; Loss P w/o mixup 0.35, 0.36 -> 35.5 ± 0.7;
    # Loss P w/ mixup one seed 0.381 -> 38.1; nothing at tau 0.005 / 0.02 for Loss P.
    for s, v in enumerate((0.40, 0.42, 0.44)):
        _run(tmp_path, f"cal{s}", v, method="cal", mixup=True, seed=s)
    for s, v in enumerate((0.35, 0.36)):
        _run(tmp_path, f"p{s}", v, method="lossp", seed=s)
    _run(tmp_path, "pm0", 0.381, method="lossp", mixup=True)
    _run(tmp_path, "cal_other_tau", 0.30, method="cal", mixup=True, tau=0.005)
    with pytest.warns(UserWarning, match="cell") as record:
        table = tables.build_table("ncmc-table4", tables.load_runs([tmp_path]), "best")
    assert any("5 cell(s) without runs" in str(w.message) for w in record)
    texts = [[tables.cell_text(c, True) for c in row] for row in table.cells]
    assert texts == [["–", "35.5 ± 0.7", "–"], ["–", "38.1", "–"], ["30.0", "42.0 ± 2.0", "–"]]
    md = tables.render_markdown(table)
    assert "| Loss P w/o Mixup | – | 35.5 ± 0.7 | – |" in md
    assert "| Loss P w/ Mixup | – | <u>38.1</u> | – |" in md
    assert "| CAL | **30.0** | **42.0 ± 2.0** | – |" in md
    assert "| Method | CIFAR-100 0.005 | CIFAR-100 0.01 | CIFAR-100 0.02 |" in md
    tex = tables.render_latex(table)
    assert r"CAL & \textbf{30.0} & \textbf{42.0 $\pm$ 2.0} & -- \\" in tex
    assert r"Loss P w/ Mixup & -- & \underline{38.1} & -- \\" in tex
    assert r"\multicolumn{3}{c}{CIFAR-100}" in tex and r"Method & 0.005 & 0.01 & 0.02 \\" in tex


def test_marker_rows_and_columns_table3(tmp_path):
    _run(tmp_path, "ce", 0.70, method="ce", dataset="cifar10", tau=0.01)
    _run(tmp_path, "cal", 0.75, method="cal", dataset="cifar10", tau=0.01, mixup=True)
    _run(tmp_path, "cal_nomix", 0.99, method="cal", dataset="cifar10", tau=0.01)  # matches no cell of Table 3
    with pytest.warns(UserWarning) as record:
        table = tables.build_table("ncmc-table3", tables.load_runs([tmp_path]), "best")
    assert any("1 run(s) match no cell: cal_nomix" in str(w.message) for w in record)
    md = tables.render_markdown(table)
    assert "| KCL† | † | † | † | † | † | † | † |" in md
    assert "| ARBLoss‡ | ‡ | ‡ | ‡ | ‡ | ‡ | ‡ | ‡ |" in md
    assert "| CE | – | <u>70.0</u> | – | – | – | – | § |" in md
    assert "| CAL | – | **75.0** | – | – | – | – | § |" in md
    assert "† reported in the paper from Kang et al." in md and "§ ImageNet-LT: no config shipped" in md
    assert r"KCL$^\dagger$ & $^\dagger$" in tables.render_latex(table)
    t7 = tables.render_markdown(tables.build_table("ncmc-table7", tables.load_runs([tmp_path]), "best"))
    assert "| RBL† | † |" in t7 and "| RBL + PLA† |" in t7 and "not implemented" in t7


def test_metrics_final_tail_collapse_and_duplicate_seed(tmp_path):
    _run(tmp_path, "a", 0.9, final=0.8, tail=0.5, collapse=0.25, dataset="mnist", tau=0.01, method="cal", **CPU)
    _run(tmp_path, "b", 0.9, final=0.6, tail=0.7, collapse=0.75, dataset="mnist", tau=0.01, method="al", **CPU)
    _run(tmp_path, "c", 0.1, dataset="mnist", tau=0.01, method="al", **CPU)  # same seed 0 as "b"
    runs = tables.load_runs([tmp_path / "a", tmp_path / "b", tmp_path / "c"])
    assert runs[1].last["ncmc/collapse_mean"] == 0.75  # the half-written last line is ignored
    with pytest.warns(UserWarning, match="seed 0 already in this cell"):
        final = tables.build_table("cpu", runs, "final")
    assert [tables.cell_text(r[0], True) for r in final.cells] == ["–", "–", "–", "–", "–", "60.0", "80.0"]
    with pytest.warns(UserWarning):
        tail = tables.build_table("cpu", runs, "tail")
        ncmc = tables.build_table("cpu-ncmc", runs, "collapse")
    assert [c[0].rank for c in tail.cells] == [0, 0, 0, 0, 0, 1, 2]
    assert [tables.cell_text(r[0], False) for r in ncmc.cells] == ["0.75", "0.25"]
    assert [r[0].rank for r in ncmc.cells] == [2, 1]  # lower collapse is better
    assert tables.compare_methods(runs, "CAL", "AL", "final").startswith("MNIST 0.01: +20.0 pp; Fashion-MNIST 0.01: n/a")


def test_cpu_layout_keeps_runs_off_the_protocol_budget_out(tmp_path):
    """benchmarks/ncmc_cpu.py's folder also holds Loss P runs with another lr, weight decay, budget or penalty:
    the cpu layout's cells take only runs of the shared budget, so `--runs runs/ncmc_cpu` is exact."""
    common = dict(dataset="mnist", tau=0.01, method="lossp", **CPU)
    _run(tmp_path, "protocol", 0.3, **common)
    for name, change in (("lr", {"lr": 0.5}), ("wd", {"weight_decay": 0.0}), ("long", {"epochs": 120}),
                         ("noreg", {"penalty": 0.0})):
        _run(tmp_path, name, 0.9, **{**common, **change})
    with pytest.warns(UserWarning, match="4 run\\(s\\) match no cell"):
        table = tables.build_table("cpu", tables.load_runs([tmp_path]), "final")
    assert [tables.cell_text(r[0], True) for r in table.cells][4] == "30.0"  # the Loss P row


def test_ranks_within_backbone_groups_table2(tmp_path):
    _run(tmp_path, "r_ce", 0.70, method="ce", dataset="cifar10", tau=0.02)
    _run(tmp_path, "d_ce", 0.60, method="ce", dataset="cifar10", tau=0.02, model="densenet")
    _run(tmp_path, "d_cal", 0.65, method="cal", dataset="cifar10", tau=0.02, model="densenet", mixup=True, f=10)
    with pytest.warns(UserWarning, match="ResNet50 SETF / CIFAR-10 0.005"):
        md = tables.render_markdown(tables.build_table("ncmc-table2", tables.load_runs([tmp_path]), "best"))
    assert "| ResNet50 CE | – | – | **70.0** | – | – | – |" in md
    assert "| DenseNet150 CE | – | – | <u>60.0</u> | – | – | – |" in md
    assert "| DenseNet150 CAL | – | – | **65.0** | – | – | – |" in md


def test_std_is_sample_std():
    cell = tables.Cell([0.1, 0.2, 0.6])
    assert tables.cell_text(cell, True) == f"30.0 ± {100 * math.sqrt(((0.2) ** 2 + 0.1 ** 2 + 0.3 ** 2) / 2):.1f}"


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unknown layout 'ncmc-table9'"):
        tables.build_table("ncmc-table9", [])
    with pytest.raises(ValueError, match="unknown metric"):
        tables.build_table("cpu", [], "median")
    with pytest.warns(UserWarning, match="no summary.json"):
        d = _run(tmp_path, "x", 0.5)
        (d / "summary.json").unlink()
        assert tables.load_runs([tmp_path]) == []
    with pytest.raises(FileNotFoundError):
        tables.load_runs([tmp_path / "nope"])


def test_cli_table(tmp_path, capsys):
    _run(tmp_path / "runs", "cal", 0.75, method="cal", dataset="cifar100", tau=0.005, mixup=True, theta=0.5)
    out = tmp_path / "t6.tex"
    assert main(["table", "--layout", "ncmc-table6", "--runs", str(tmp_path / "runs"), "--format", "both",
                 "--out", str(out)]) == 0
    text = out.read_text()
    assert "| f = 20 | – | – | **75.0** | – | – |" in text and r"\begin{tabular}{lccccc}" in text
    assert "warning: ncmc-table6: 14 cell(s) without runs" in capsys.readouterr().err
    assert main(["table", "--layout", "cpu", "--runs", str(tmp_path / "runs")]) == 2  # no cell filled
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cpu: none of the 1 run(s) found fills a cell" in err[0] and "--layout auto" in err[0]
    assert main(["table", "--layout", "nope", "--runs", str(tmp_path / "runs")]) == 2
    assert "unknown layout 'nope'" in capsys.readouterr().err
    assert main(["table", "--layout", "cpu", "--runs", str(tmp_path / "missing")]) == 2


def test_auto_layout_builds_rows_and_columns_from_the_runs(tmp_path, capsys):
    root = tmp_path / "runs"
    _run(root, "ce_a", 0.50, method="ce", model="lenet", dataset="mnist", tau=0.01)
    _run(root, "ce_b", 0.70, method="ce", model="lenet", dataset="mnist", tau=0.01, seed=1)
    _run(root, "cal", 0.80, method="cal", model="lenet", dataset="mnist", tau=0.01)
    _run(root, "cal_bal", 0.90, method="cal", model="lenet", dataset="fashion-mnist", tau=1.0)
    with pytest.warns(UserWarning, match="1 cell"):
        table = tables.build_table("auto", tables.load_runs([root]), "best")
    assert [r.label for r in table.layout.rows] == ["CAL", "CE"]
    assert [c.label for c in table.layout.columns] == ["Fashion-MNIST balanced", "MNIST τ = 0.01"]
    assert [[c.values for c in line] for line in table.cells] == [[[0.9], [0.8]], [[], [0.5, 0.7]]]
    assert main(["table", "--runs", str(root)]) == 0
    out = capsys.readouterr().out
    assert "| CE | – | <u>60.0 ± 14.1</u> |" in out  # std with ddof 1 over the two seeds
    with pytest.raises(ValueError, match="no finished runs"):
        tables.auto_layout([])
