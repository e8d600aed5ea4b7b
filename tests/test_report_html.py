"""HTML reports and the ``ncollapse report`` command: content, self-containment, bad input."""

import base64
import json
import re

import pytest
from matplotlib.figure import Figure

from fixtures.report_runs import make_run
from ncollapse.cli import main
from ncollapse.report import write_comparison, write_report

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
    names = ["accuracy", "train_loss", "per_class", "nc_nc1", "nc_nc2", "nc_nc3", "nc_other", "gram",
             "sigma_b_spectrum", "confusion"]
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
    # NC panels grouped, each group with its one-line definition; flat panels left out with a note
    for group in ("NC1: within-class variability collapse", "NC2: class means", "NC3: self-duality", "other: "):
        assert f"<h2>{group}" in page
    assert "self-duality: the classifier rows align with the centred class means" in page
    assert "panels left out (constant at 5): nc/rank" in err and "panels left out (constant at 0): nc/ncc_mismatch" in err
    # summary labels final and best (epoch 2 logged test_acc = NaN, so best is searched over finite values)
    assert "final test accuracy (epoch 5)</td><td class=num>71.77 %" in page
    assert "best test accuracy (epoch 5)</td><td class=num>71.77 %" in page
    assert "final test accuracy, tail classes" in page and "nc/nc1 (last NC pass, epoch 5)" in page
    assert "[eval]\nnc_every = 2" in page  # resolved config
    assert "environment.device</td><td>cpu" in page and "ncollapse train --config test.toml" in page


def test_missing_nc_state_and_extra_sections(tmp_path):
    run_dir = make_run(tmp_path / "run", epochs=3, nc_every=1, state=False)
    png = tmp_path / "ufm.png"
    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    fig.savefig(png)
    with pytest.warns(UserWarning, match="nc_state.pt not found"):
        out = write_report(run_dir, tmp_path / "elsewhere" / "r.html",
                           extra_sections=[("UFM sweep", str(png)), ("Figure", fig), ("Table", "<p id=x>hi</p>")])
    page = out.read_text()
    assert out == tmp_path / "elsewhere" / "r.html"
    alts = [alt for alt, _ in DATA_IMG.findall(page)]
    assert alts == ["accuracy", "train_loss", "per_class", "nc_nc1", "nc_nc2", "nc_nc3", "nc_other",
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
    assert [alt for alt, _ in DATA_IMG.findall(page)] == [
        "accuracy", "train_loss", "groups", "nc_nc1", "nc_nc2", "nc_nc3", "nc_nc4", "nc_other", "gram_ce", "sigma_b_spectrum_ce",
        "confusion_ce", "sigma_b_spectrum_cal"]  # per-run Gram heatmaps and spectra where the run has them
    assert "CAL: nc_state.pt not found" in page and "<h2>Gram matrices of normalised class means and classifier (CE)" in page
    assert "<td>CE</td><td>ce</td><td>linear</td><td class=num>3</td>" in page


def test_compare_runs_with_the_same_classes(tmp_path):
    a = make_run(tmp_path / "x" / "run", epochs=2, nc_every=1, state=False, summary=False)
    b = make_run(tmp_path / "y" / "run", epochs=2, nc_every=1, seed=3, state=False, summary=False, ncmc=True)
    with pytest.warns(UserWarning):
        out = write_comparison([a, b], tmp_path / "c.html")
    page = out.read_text()
    assert [alt for alt, _ in DATA_IMG.findall(page)] == ["accuracy", "train_loss", "groups", "per_class", "nc_nc1",
                                                         "nc_nc2", "nc_nc3", "nc_nc4", "nc_other",
                                                         "sigma_b_spectrum_x_run",
                                                         "sigma_b_spectrum_y_run"]
    assert "x/run · y/run" in page  # same directory names: labels fall back to parent/name
    with pytest.raises(ValueError, match="labels has 1 entries for 2 runs"):
        write_comparison([a, b], tmp_path / "d.html", labels=["only"])
