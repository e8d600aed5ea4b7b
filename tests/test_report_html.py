"""HTML reports and the ``ncollapse report`` command: content, self-containment, bad input."""

import base64
import json
import logging
import re
import warnings

import pytest
from matplotlib.figure import Figure

from fixtures.report_runs import make_run
from ncollapse.cli import main
from ncollapse.report import write_comparison, write_report
from ncollapse.report.notes import collected

DATA_IMG = re.compile(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    """A killed run (torn last line) with NCMC metrics, reported through the CLI with --json."""
    run_dir = make_run(tmp_path_factory.mktemp("full") / "run", epochs=5, nc_every=2, ncmc=True, torn_tail=True)
    return run_dir


def test_cli_report_of_a_full_run(full_report, capsys):
    assert main(["report", "--run", str(full_report), "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    page = (full_report / "report.html").read_text()
    assert result["report"] == str(full_report / "report.html")
    names = ["headline_nc1", "headline_cdnv", "headline_etf_error_means", "headline_self_duality", "accuracy",
             "train_loss", "per_class", "nc_nc1", "nc_nc2", "nc_nc3", "nc_other", "gram", "sigma_b_spectrum",
             "confusion"]
    assert result["figures"] == [str(full_report / "report_files" / f"{n}.png") for n in names]
    images = DATA_IMG.findall(page)
    assert [alt for alt, _ in images] == names
    for (alt, data), png in zip(images, result["figures"]):
        assert base64.b64decode(data) == open(png, "rb").read()  # embedded bytes are the PNG beside the page
    # self-contained: no script, no remote or relative resource
    assert "<script" not in page and not re.search(r'(src|href)="(?!data:)', page)
    # the killed run's torn last line: skipped with a warning, on stderr and on the page
    assert "metrics.jsonl:6: skipped a half-written last line" in err
    assert "half-written last line" in page and result["notes"]
    # the headline row: five panels with human titles and the key in small type; NCC mismatch is flat (constant 0)
    # and says so in its place; the line-style convention stated once
    row = page[page.index('<div class="row headline" style="--n:5">'):page.index("<h2>Accuracy and training loss")]
    titles = re.findall(r"<div class=ptitle>([^<]+)<br><small>([^<]+)</small></div>", row)
    assert titles == [("Within-class variability", "nc/nc1"), ("Class-distance variance", "nc/cdnv"),
                      ("Distance to simplex ETF", "nc/etf_error_means"), ("Self-duality error", "nc/self_duality"),
                      ("NCC disagreement", "nc/ncc_mismatch")]
    assert "<div class=flat>not drawn: constant at 0</div>" in row
    assert page.count("<b>solid</b> lines = training set") == 1 and "dashed: train" not in page
    # every other NC panel grouped under a <details>, each group with a line that does not repeat its heading
    details = page[page.index("<details><summary>All other NC metrics"):]
    headings = re.findall(r"<h3>([^<]+)</h3>\s*<p class=sub>([^<]+)</p>", details[:details.index("</details>")])
    assert [h for h, _ in headings] == ["NC1 · within-class variability collapse",
                                       "NC2 · convergence to a simplex ETF", "NC3 · self-duality",
                                       "other · further quantities"]
    for heading, line in headings:
        assert heading.split(" · ")[1] not in line
    assert "panels left out (constant at 5): nc/rank" in err and "panels left out (constant at 0): nc/ncc_mismatch" in err
    assert "Warning" not in err and err.count("ncollapse report: note: ") == len(result["notes"])
    # summary labels final and best (epoch 2 logged test_acc = NaN, so best is searched over finite values)
    assert "final test accuracy (epoch 5)</td><td class=num>71.77 %" in page
    assert "best test accuracy (epoch 5)</td><td class=num>71.77 %" in page
    assert "final test accuracy, tail classes" in page
    assert "Within-class variability (NC1): nc/nc1 (last NC pass, epoch 5)" in page
    assert "[eval]\nnc_every = 2" in page  # resolved config
    assert "environment.device</td><td>cpu" in page and "ncollapse train --config test.toml" in page


def test_missing_nc_state_and_extra_sections(tmp_path):
    run_dir = make_run(tmp_path / "run", epochs=3, nc_every=1, state=False)
    png = tmp_path / "ufm.png"
    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    fig.savefig(png)
    with collected() as notes:
        out = write_report(run_dir, tmp_path / "elsewhere" / "r.html",
                           extra_sections=[("UFM sweep", str(png)), ("Figure", fig), ("Table", "<p id=x>hi</p>")])
    assert any("nc_state.pt not found" in n for n in notes)
    page = out.read_text()
    assert out == tmp_path / "elsewhere" / "r.html"
    alts = [alt for alt, _ in DATA_IMG.findall(page)]
    assert alts == ["headline_nc1", "headline_cdnv", "headline_etf_error_means", "headline_self_duality",
                    "accuracy", "train_loss", "per_class", "nc_nc1", "nc_nc2", "nc_nc3", "nc_other",
                    "sigma_b_spectrum", "extra1", "extra2"]
    assert (tmp_path / "elsewhere" / "r_files" / "sigma_b_spectrum.png").is_file()
    assert "nc_state.pt not found: Gram heatmaps" in page and "<h2>UFM sweep</h2>" in page
    assert "<p id=x>hi</p>" in page
    with pytest.raises(ValueError, match="PNG file .*missing.png not found"):
        write_report(run_dir, tmp_path / "r2.html", extra_sections=[("x", tmp_path / "missing.png")])
    with pytest.raises(TypeError, match=r"\(title, content\) pair"):
        write_report(run_dir, tmp_path / "r2.html", extra_sections=["just a title"])


def test_bad_input_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", "--run", str(tmp_path / "empty")]) == 2
    assert "metrics.jsonl not found" in capsys.readouterr().err
    assert main(["report", "--compare", str(tmp_path / "empty")]) == 2
    assert "--compare needs --out FILE" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["report"])
    assert exc.value.code == 2
    assert not (tmp_path / "empty" / "report.html").exists()


def test_compare_runs_with_different_class_counts(tmp_path, capsys):
    a = make_run(tmp_path / "a", epochs=3, nc_every=1)
    b = make_run(tmp_path / "b", counts=[50, 40, 30, 20, 10, 5, 3], epochs=4, nc_every=2, seed=1, state=False)
    out = tmp_path / "cmp.html"
    assert main(["report", "--compare", str(a), str(b), "--out", str(out), "--labels", "CE", "CAL"]) == 0
    err = capsys.readouterr().err
    assert "runs have different class counts (CE: 6, CAL: 7): per-class overlay left out" in err
    page = out.read_text()
    headline = ["headline_nc1", "headline_cdnv", "headline_etf_error_means", "headline_self_duality",
                "headline_ncc_mismatch"]
    assert [alt for alt, _ in DATA_IMG.findall(page)] == headline + [
        "accuracy", "train_loss", "groups", "nc_nc1", "nc_nc2", "nc_nc3", "nc_nc4", "nc_other", "gram_ce",
        "sigma_b_spectrum_ce", "sigma_b_spectrum_cal", "confusion_ce"]  # per-run sections where the run has them
    assert "CAL: nc_state.pt not found" in page
    # per-run sections side by side: one heading, one row, one titled panel per run
    spectra = page[page.index("<h2>Σ_B spectrum</h2>"):page.index("<h2>Test confusion matrix</h2>")]
    assert spectra.count('<div class="row runs" style="--n:2">') == 1 and spectra.count("<h2>") == 1
    assert re.findall(r"<div class=ptitle>([^<]+)</div><img", spectra) == ["CE", "CAL"]
    assert '<span style="color:#1f77b4">━━</span> CE' in page  # the headline row names the runs' colours
    assert "<td>CE</td><td>ce</td><td>linear</td><td class=num>3</td>" in page


def test_compare_runs_with_the_same_classes(tmp_path):
    a = make_run(tmp_path / "x" / "run", epochs=2, nc_every=2, state=False, summary=False)
    b = make_run(tmp_path / "y" / "run", epochs=2, nc_every=2, seed=3, state=False, summary=False, ncmc=True)
    with collected() as notes:
        out = write_comparison([a, b], tmp_path / "c.html")
    assert notes == ["x/run: summary.json not found: the run has not finished (or was killed)",
                     "x/run: nc_state.pt not found: Gram heatmaps and the final-state spectrum are left out",
                     "y/run: summary.json not found: the run has not finished (or was killed)",
                     "y/run: nc_state.pt not found: Gram heatmaps and the final-state spectrum are left out",
                     "one NC pass (epoch 2): NC curves need at least two passes (train longer or lower "
                     "eval.nc_every); the measured values are shown as a table"]
    page = out.read_text()
    assert [alt for alt, _ in DATA_IMG.findall(page)] == ["accuracy", "train_loss", "groups", "per_class",
                                                         "sigma_b_spectrum_x_run", "sigma_b_spectrum_y_run"]
    # two epochs, one NC pass each (epoch 2 is the last): a table of NC values, no one-point curves
    assert "<h2>Neural collapse at a glance</h2>" in page and "All other NC metrics: 36 values" in page
    assert "One NC pass (epoch 2): curves need at least two" in page
    assert "<th>x/run: training</th><th>x/run: test</th>" in page
    assert "one NC pass (epoch 2): NC curves need at least two passes" in page
    assert re.search(r"<tr><td>Within-class variability \(NC1\)</td><td>nc/nc1</td>(<td class=num>[0-9.e-]+</td>){4}"
                     r"</tr>", page)
    assert "x/run · y/run" in page  # same directory names: labels fall back to parent/name
    with pytest.raises(ValueError, match="labels has 1 entries for 2 runs"):
        write_comparison([a, b], tmp_path / "d.html", labels=["only"])


def test_report_notes_are_log_lines_not_warnings(tmp_path, caplog):
    """``ncollapse experiment`` and scripts see a page's notes as ``report note: …`` log lines (logger
    ncollapse.report.notes, WARNING), never as Python warnings; ``collected`` takes them instead."""
    run_dir = make_run(tmp_path / "run", epochs=3, nc_every=1, state=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warnings.warn anywhere in the page would raise here
        with caplog.at_level(logging.INFO, logger="ncollapse.report.notes"):
            write_report(run_dir)
    lines = [(r.name, r.levelno, r.getMessage()) for r in caplog.records if r.name == "ncollapse.report.notes"]
    assert ("ncollapse.report.notes", logging.WARNING,
            "report note: nc_state.pt not found: Gram heatmaps and the final-state spectrum are left out") in lines
    assert all(message.startswith("report note: ") for _, _, message in lines) and len(lines) >= 2
    caplog.clear()
    with collected() as notes:
        write_report(run_dir)
    assert not [r for r in caplog.records if r.name == "ncollapse.report.notes"]  # taken, not passed on
    assert notes == [message[len("report note: "):] for _, _, message in lines]
    assert logging.getLogger("ncollapse.report.notes").propagate and not logging.getLogger(
        "ncollapse.report.notes").handlers  # restored after the block
