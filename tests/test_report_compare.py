"""report.compare and ``ncollapse compare``: paired differences over seeds with Student-t intervals, against scipy
and worked examples, on synthetic run directories, and re-rendering the NCMC page's committed CAL − X cells."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from ncollapse.cli import main
from ncollapse.io_safe import LOCK, REGISTRY
from ncollapse.report.compare import (Interval, compare_runs, compare_values, interval_text, mean_std, paired,
                                      render_markdown, t_interval, to_json)
from ncollapse.train.config import config_from_dict, dumps_toml

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ formulas

def test_mean_std_is_the_sample_std_and_drops_nan():
    values = [0.3, 0.5, math.nan, 0.9, 0.4]
    m, sd = mean_std(values)
    assert m == pytest.approx(statistics.mean([0.3, 0.5, 0.9, 0.4]))
    assert sd == pytest.approx(statistics.stdev([0.3, 0.5, 0.9, 0.4]))  # ddof 1
    assert mean_std([0.7])[0] == 0.7 and math.isnan(mean_std([0.7])[1])
    assert all(math.isnan(x) for x in mean_std([math.nan]))


def test_t_interval_worked_example():
    """Differences 0.1, 0.2, 0.0: mean 0.1, s = 0.1, t_{0.975, 2} = 4.302652729911275, half width 0.1·t/√3."""
    d = t_interval([0.1, 0.2, 0.0])
    half = 4.302652729911275 * 0.1 / math.sqrt(3)
    assert d.n == 3 and d.mean == pytest.approx(0.1)
    assert d.low == pytest.approx(0.1 - half) and d.high == pytest.approx(0.1 + half)


@pytest.mark.parametrize("level", [0.8, 0.95, 0.99])
@pytest.mark.parametrize("n", [2, 3, 7])
def test_t_interval_matches_scipy_t_interval(level, n):
    x = np.random.default_rng(n).normal(0.02, 0.03, n)
    low, high = stats.t.interval(level, n - 1, loc=x.mean(), scale=stats.sem(x))  # independent float64 reference
    d = t_interval(x.tolist(), level)
    assert (d.low, d.high, d.mean) == pytest.approx((low, high, x.mean()), rel=1e-12, abs=1e-15)


def test_paired_uses_the_seeds_both_sides_have():
    a, b = {0: 0.5, 1: 0.7, 2: 0.6, 5: math.nan}, {0: 0.4, 1: 0.5, 2: 0.6, 3: 0.1, 5: 0.3}  # 3: unpartnered, 5: NaN
    d = paired(a, b)
    ref = stats.ttest_rel([0.5, 0.7, 0.6], [0.4, 0.5, 0.6]).confidence_interval(0.95)  # scipy's paired t test
    assert d.n == 3 and (d.low, d.high) == pytest.approx((ref.low, ref.high), rel=1e-12)
    one = paired({0: 0.5}, {0: 0.4})
    assert one.n == 1 and one.mean == pytest.approx(0.1) and math.isnan(one.low) and one.resolved == 0
    assert paired({0: 0.5}, {1: 0.4}).n == 0


def test_resolved_and_interval_text():
    assert Interval(0.029, 0.027, 0.031, 3).resolved == 1 and interval_text(Interval(0.029, 0.027, 0.031, 3)) == \
        "+2.9 [+2.7, +3.1] ▲"
    assert interval_text(Interval(-0.022, -0.039, -0.006, 3)) == "-2.2 [-3.9, -0.6] ▼"
    assert interval_text(Interval(0.023, -0.042, 0.087, 3)) == "+2.3 [-4.2, +8.7]"
    assert interval_text(Interval(0.05, math.nan, math.nan, 1)) == "+5.0 (1 seed)"
    assert interval_text(Interval(math.nan, math.nan, math.nan, 0)) == "–"
    assert interval_text(Interval(-0.0123, -0.02, -0.004, 4), percent=False) == "-0.0123 [-0.02, -0.004] ▼"


@pytest.mark.parametrize("level, error", [(0.0, ValueError), (1.0, ValueError), (95, ValueError),
                                          (math.nan, ValueError), ("0.95", TypeError)])
def test_bad_level(level, error):
    with pytest.raises(error, match="level"):
        t_interval([0.1, 0.2], level)


# ------------------------------------------------------------------------------------------ comparisons

VALUES = {("cal", "A", "acc"): {0: 0.80, 1: 0.82, 2: 0.81}, ("ce", "A", "acc"): {0: 0.78, 1: 0.79, 2: 0.785},
          ("al", "A", "acc"): {0: 0.83, 1: 0.85, 2: 0.80, 3: 0.9}, ("cal", "B", "acc"): {0: 0.5, 1: 0.6},
          ("ce", "B", "acc"): {0: 0.5}}


def test_compare_values_cells_and_markdown():
    with pytest.warns(UserWarning) as caught:
        c = compare_values(VALUES, "cal")
    assert [str(w.message) for w in caught] == ["cal vs ce, B: unpaired seeds left out (cal only: 1; ce only: none)",
                                                "cal vs al, A: unpaired seeds left out (cal only: none; al only: 3)"]
    assert c.against == ["ce", "al"] and c.settings == ["A", "B"] and c.metrics == ["acc"]
    assert c.cells[("ce", "A", "acc")] == paired(VALUES[("cal", "A", "acc")], VALUES[("ce", "A", "acc")])
    assert c.cells[("al", "B", "acc")].n == 0 and c.cells[("ce", "B", "acc")].n == 1
    assert c.unpaired == {("ce", "B"): ([1], []), ("al", "A"): ([], [3])}
    text = render_markdown(c, {"cal": "CAL", "ce": "CE", "A": "Set A"})

    def cell(other):  # the Student-t interval of the per-seed differences, by hand
        d = [VALUES[("cal", "A", "acc")][s] - VALUES[(other, "A", "acc")][s] for s in (0, 1, 2)]
        m, half = statistics.mean(d), stats.t.ppf(0.975, 2) * statistics.stdev(d) / math.sqrt(3)
        return f"{100 * m:+.1f} [{100 * (m - half):+.1f}, {100 * (m + half):+.1f}]"

    assert cell("ce") == "+2.5 [+1.3, +3.7]" and cell("al") == "-1.7 [-7.4, +4.1]"
    assert text == ("| CAL − | Set A acc | B acc |\n|---|---|---|\n"
                    f"| CE | {cell('ce')} ▲ | +0.0 (1 seed) |\n| al | {cell('al')} | – |\n")
    data = json.loads(json.dumps(to_json(c), allow_nan=False))
    cell = next(x for x in data["differences"] if x["against"] == "al" and x["setting"] == "B")
    assert cell == {"against": "al", "setting": "B", "metric": "acc", "mean": None, "low": None, "high": None, "n": 0,
                    "resolved": 0}
    assert {"against": "al", "setting": "A", "only_method": [], "only_against": [3]} in data["unpaired"]


def test_compare_values_bad_input():
    with pytest.raises(ValueError, match="method 'sgd' has no values; methods found: cal, ce, al"):
        compare_values(VALUES, "sgd")
    with pytest.raises(ValueError, match="also in against"):
        compare_values(VALUES, "cal", ["ce", "cal"])
    with pytest.raises(ValueError, match="the only method"):
        compare_values({("cal", "A", "acc"): {0: 0.5}}, "cal")


# ------------------------------------------------------------------------------------------ run directories

def _run(root: Path, name: str, method: str, seed: int, final: float, tail: float | None = 0.3, tau: float = 0.01,
         theta: float = 0.2, epochs: int = 30, dataset: str = "mnist") -> Path:
    """A finished run directory as the trainer writes it (config.toml, run.json, summary.json, metrics.jsonl)."""
    raw = {"data": {"name": dataset, "imbalance": tau}, "model": {"name": "lenet"}, "loss": {"name": "ce"},
           "train": {"seed": seed, "epochs": epochs}, "optim": {"lr": 0.05, "weight_decay": 5e-4}}
    if method in ("al", "cal"):
        raw["model"].update(head="multicenter", centers="uniform" if method == "al" else "class_aware", f=20,
                            theta=theta)
        raw["loss"]["name"] = "ncmc_cosine"
    d = root / name
    d.mkdir(parents=True)
    (d / "config.toml").write_text(dumps_toml(config_from_dict(raw, name)))
    (d / "run.json").write_text(json.dumps({"seed": seed}))
    summary = {"final_test_acc": final, "best_test_acc": final, "test_acc_head": 0.9, "test_acc_medium": 0.7,
               "epochs": epochs}
    if tail is not None:
        summary["test_acc_tail"] = tail
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "metrics.jsonl").write_text(json.dumps({"epoch": epochs, "test_acc": final, "ncmc/collapse_mean": 0.1}) + "\n")
    return d


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    for seed, (cal, ce, al) in enumerate([(0.80, 0.78, 0.70), (0.82, 0.79, 0.72), (0.81, 0.80, 0.69)]):
        _run(root, f"cal_s{seed}", "cal", seed, cal, tail=0.5 + seed / 100)
        _run(root, f"ce_s{seed}", "ce", seed, ce, tail=0.3)
        _run(root, f"al_s{seed}", "al", seed, al, tail=0.2)
    _run(root, "cal_s0_fmnist", "cal", 0, 0.6, dataset="fashion-mnist")
    return root


def test_compare_runs_groups_by_method_and_setting_and_pairs_by_seed(runs):
    c = compare_runs([runs], "CAL", metrics=("final", "tail"))
    assert c.method == "CAL" and c.against == ["AL", "CE"]
    assert c.settings == ["Fashion-MNIST", "MNIST"] and c.percent == {"final": True, "tail": True}
    d = c.cells[("CE", "MNIST", "final")]
    assert d == paired({0: 0.80, 1: 0.82, 2: 0.81}, {0: 0.78, 1: 0.79, 2: 0.80})
    assert c.cells[("CE", "MNIST", "tail")].mean == pytest.approx(0.21)
    assert c.cells[("AL", "Fashion-MNIST", "final")].n == 0
    assert render_markdown(c).splitlines()[0] == ("| CAL − | Fashion-MNIST final | Fashion-MNIST tail | "
                                                  "MNIST final | "
                                                  "MNIST tail |")


def test_compare_runs_names_variants_and_budgets(runs):
    """A method with several f / θ is named by them; a setting whose runs differ in their budget is a separate
    setting and its name says so only where the method's own settings differ."""
    _run(runs, "cal_t05_s0", "cal", 0, 0.7, theta=0.5)
    _run(runs, "ce_long_s0", "ce", 0, 0.9, epochs=60)  # another budget: never paired with the 30-epoch CAL
    with pytest.raises(ValueError, match=r"ambiguous: pass one of 'CAL \(θ = 0.2\)', 'CAL \(θ = 0.5\)'"):
        compare_runs([runs], "CAL")
    c = compare_runs([runs], "CAL (theta=0.2)", ["CE"])
    assert c.settings == ["Fashion-MNIST", "MNIST"]
    assert c.cells[("CE", "MNIST", "final")].n == 3  # the 60-epoch CE seed 0 stays out of the pairs


def test_compare_runs_warns_on_unpaired_seeds_and_duplicates(runs):
    _run(runs, "ce_s7", "ce", 7, 0.5)
    _run(runs, "cal_s1_again", "cal", 1, 0.1)
    with pytest.warns(UserWarning) as caught:
        c = compare_runs([runs], "CAL", ["CE"])
    messages = [str(w.message) for w in caught]
    assert any("seed 1 is already" in m and "kept the first" in m for m in messages)
    assert any("unpaired seeds left out (CAL only: none; CE only: 7)" in m for m in messages)
    assert c.cells[("CE", "MNIST", "final")].n == 3


def test_compare_runs_errors(tmp_path, runs):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no finished runs"):
        compare_runs([tmp_path / "empty"], "CAL")
    with pytest.raises(ValueError, match="'SETF' is not among the runs; methods found: AL, CAL, CE"):
        compare_runs([runs], "SETF")
    with pytest.raises(ValueError, match=r"al_s0 has no 'acc' in summary.json, needed for metric 'acc'; .*final"):
        compare_runs([runs], "CAL", metrics=("acc",))
    with pytest.raises(ValueError, match="no metric given"):
        compare_runs([runs], "CAL", metrics=())
    with pytest.raises(ValueError, match="both the method and one it is compared against"):
        compare_runs([runs], "CAL", ["CAL"])
    _run(runs, "al_s9", "al", 9, 0.5, tail=None)
    with pytest.raises(ValueError, match=r"al_s9 has no 'test_acc_tail' in summary.json, needed for metric 'tail'"):
        compare_runs([runs], "CAL", ["AL"], metrics=("tail",))
    mixed = tmp_path / "mixed"
    _run(mixed, "cal", "cal", 0, 0.8, tau=0.01)
    _run(mixed, "ce", "ce", 0, 0.7, tau=0.02)
    with pytest.raises(ValueError, match=r"CAL and CE share no setting \(CAL: MNIST \(τ = 0.01\); "
                                         r"CE: MNIST \(τ = 0.02\)"):
        compare_runs([mixed], "CAL")
    apart = tmp_path / "apart"
    _run(apart, "cal", "cal", 0, 0.8)
    _run(apart, "ce", "ce", 1, 0.7)
    with pytest.warns(UserWarning, match="unpaired"), pytest.raises(ValueError, match="no seed appears in both"):
        compare_runs([apart], "CAL")


def test_compare_runs_reads_tracker_style_runs(tmp_path):
    """Run directories as ``NCTracker`` writes them (branch h20a: [data] name "custom", [loss] name = the user's
    method, [train] seed, [hparams]; summary.json with final_test_acc and the last nc/ scalars): methods from the
    loss name, and any summary key as a metric, shown unscaled."""
    root = tmp_path / "tracked"
    nc1 = {("mine", 0): 0.5, ("mine", 1): 0.4, ("mine", 2): 0.45, ("baseline", 0): 0.9, ("baseline", 1): 0.7,
           ("baseline", 2): 0.8}
    for (method, seed), value in nc1.items():
        d = root / f"{method}_{seed}"
        d.mkdir(parents=True)
        (d / "config.toml").write_text(f'[data]\nname = "custom"\n\n[model]\nname = "mlp"\n\n[loss]\n'
                                       f'name = "{method}"\n\n[train]\nseed = {seed}\n\n[hparams]\nlr = 0.1\n')
        (d / "run.json").write_text(json.dumps({"dataset": "custom", "method": method, "seed": seed}))
        (d / "summary.json").write_text(json.dumps({"final_test_acc": 0.6 + seed / 100, "nc/nc1": value}))
        (d / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "nc/nc1": value}) + "\n")
    c = compare_runs([root], "mine", metrics=("nc/nc1",))
    assert c.against == ["baseline"] and c.settings == ["custom"] and c.percent == {"nc/nc1": False}
    d = c.cells[("baseline", "custom", "nc/nc1")]
    assert d == paired({s: nc1[("mine", s)] for s in range(3)}, {s: nc1[("baseline", s)] for s in range(3)})
    assert d.resolved == -1 and render_markdown(c).endswith(f"| baseline | {interval_text(d, percent=False)} |\n")


def test_cli_compare(runs, tmp_path, capsys):
    assert main(["compare", "--runs", str(runs), "--method", "CAL", "--against", "CE", "AL", "--metric", "final"]) == 0
    out = capsys.readouterr().out
    cal = {0: 0.80, 1: 0.82, 2: 0.81}
    ce = interval_text(paired(cal, {0: 0.78, 1: 0.79, 2: 0.80}))
    al = interval_text(paired(cal, {0: 0.7, 1: 0.72, 2: 0.69}))
    assert out.startswith("**CAL − X, paired by seed**") and not ce.endswith("▲") and al.endswith("▲")
    assert (f"| CAL − | Fashion-MNIST final | MNIST final |\n|---|---|---|\n| CE | – | {ce} |\n"
            f"| AL | – | {al} |\n") in out
    target = tmp_path / "out" / "compare.json"
    assert main(["compare", "--runs", str(runs), "--method", "CAL", "--json", "--out", str(target)]) == 0
    data = json.loads(target.read_text())
    assert data["method"] == "CAL" and {x["against"] for x in data["differences"]} == {"AL", "CE"}
    written = [p.name for p in target.parent.iterdir() if p.name not in (REGISTRY, LOCK)]  # the writer's own files
    assert written == ["compare.json"]  # atomic: no temp file left
    assert json.loads((target.parent / REGISTRY).read_text())["compare.json"]["kind"] == "comparison"
    assert capsys.readouterr().err == f"wrote {target}\n"
    for argv, message in ((["--method", "SETF"], "'SETF' is not among the runs"),
                          (["--method", "CAL", "--level", "2"], "level == 2.0, must be < 1"),
                          (["--method", "CAL", "--metric", "acc"], "has no 'acc' in summary.json")):
        assert main(["compare", "--runs", str(runs), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("ncollapse compare: error:") and message in err[0]
    assert main(["compare", "--runs", str(tmp_path / "missing"), "--method", "CAL"]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_cli_help_needs_no_torch():
    probe = ("import sys\nfrom ncollapse.cli import main\ntry:\n    main(['compare', '--help'])\n"
             "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.stderr.split() == ["0", "False"] and "examples:" in result.stdout


def test_cli_help_has_examples_under_runs(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "ncollapse compare --runs runs/ce runs/cal --method CAL --metric final tail --out runs/compare.md" in out


# ------------------------------------------------------------------------------------------ the NCMC page

def test_ncmc_page_cells_rerender_from_the_committed_jsonl(bench, monkeypatch):
    """docs/results/ncmc_cpu_runs.jsonl keeps each run's last-epoch test_acc and test_acc_tail: the page's
    differences() and claims() rebuilt from it through report.compare give the committed page's CAL − X overall
    and tail cells and claims 1–6 byte for byte (head accuracies and NC curves are not in the jsonl)."""
    page = (ROOT / "docs" / "results" / "ncmc_cpu.md").read_text(encoding="utf-8")
    runs = {r["name"]: r for r in bench.plan()}
    done = {}
    for line in (ROOT / bench.JSONL).read_text().splitlines():
        rec = json.loads(line)
        done[rec["name"]] = {"run": runs[rec["name"]], "metrics": [
            {"test_acc": rec["final_test_acc"], "test_acc_tail": rec["final_tail_acc"]}]}
    assert len(done) == len(runs)
    table, result = bench.differences(done)

    def without_head(text: str) -> list[list[str]]:
        rows = [line.split(" | ") for line in text.splitlines()]
        keep = [i for i, name in enumerate(rows[0]) if not name.endswith(" head")]
        return [[row[i] for i in keep] for row in rows if not row[0].startswith("|---")]

    committed = page[page.index("| CAL − |"):]
    committed = committed[:committed.index("\n\n") + 1]
    assert without_head(table) == without_head(committed)
    cells = [cell for row in without_head(table)[1:] for cell in row[1:]]  # 6 methods × 4 settings × overall, tail
    assert len(cells) == 48 and all(" [" in cell for cell in cells) and any("▲" in cell for cell in cells)
    monkeypatch.setattr(bench, "collapse_said", lambda done: "")
    monkeypatch.setattr(bench, "penalty_said", lambda done: "")
    claims = bench.claims(done, result, bench.grid_table(done)[1]).splitlines()[:6]
    assert all(f"\n{line}\n" in page for line in claims)
