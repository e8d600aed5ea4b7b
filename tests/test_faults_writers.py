"""Fault injection for the writers (issue 19, points 1 and 2): the one safe writer (``io_safe.Outputs``) and the
CLI's OS-error boundary. Every refusal is exit 2, exactly one line on stderr, and no earlier file changed
(checksums before and after); read-only, full-disk and long-name cases run on real tmpfs mounts (root only)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from faults_cli_common import assert_unchanged, cli, leftovers, refused, remount_read_only, snapshot, table_run, tmpfs
from fixtures.report_runs import make_run

from ncollapse import _io, io_safe
from ncollapse.io_safe import REGISTRY, Outputs

RUN_FILES = ["config.toml", "metrics.jsonl", "summary.json", "run.json", "nc_state.pt", "checkpoint.pt"]
SMALL = [40, 12, 4]  # head, medium and tail classes: every figure of the report, small
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture
def runs(tmp_path):
    """Two finished runs under tmp_path/runs (what ``table`` reads)."""
    table_run(tmp_path / "runs", "a", 0.5, seed=0)
    table_run(tmp_path / "runs", "b", 0.7, seed=1)
    return tmp_path / "runs"


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    """A full synthetic run directory (metrics, run.json, config.toml, nc_state.pt, summary.json)."""
    return make_run(tmp_path_factory.mktemp("report") / "run", counts=SMALL, dim=4, epochs=2, nc_every=1)


def _copy_run(src: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for p in src.iterdir():
        if p.is_file() and not p.name.startswith("."):
            (dest / p.name).write_bytes(p.read_bytes())
    return dest


def _table(runs, out, *extra):
    return ["table", "--runs", runs, "--out", out, *extra]


# ------------------------------------------------------------------ a run directory's own files, even with --force

@pytest.mark.parametrize("force", [[], ["--force"]], ids=["plain", "force"])
@pytest.mark.parametrize("name", RUN_FILES)
def test_table_never_writes_a_run_file(capsys, runs, name, force):
    target = runs / "a" / name
    refused(capsys, runs, _table(runs, target, *force), str(target), "run directory's own files")


@pytest.mark.parametrize("force", [[], ["--force"]], ids=["plain", "force"])
def test_report_onto_its_runs_metrics(capsys, tmp_path, report_run, force):
    run = _copy_run(report_run, tmp_path / "r")
    refused(capsys, run, ["report", "--run", run, "--out", run / "metrics.jsonl", *force], "metrics.jsonl",
            "run directory's own files")
    assert not (run / "metrics_files").exists()


def test_compare_onto_a_compared_runs_file(capsys, tmp_path, report_run):
    a, b = _copy_run(report_run, tmp_path / "a"), _copy_run(report_run, tmp_path / "b")
    refused(capsys, tmp_path, ["report", "--compare", a, b, "--out", b / "summary.json"], "run directory's own files")


# ------------------------------------------------------------------ a command's own inputs

@pytest.mark.parametrize("force", [[], ["--force"]], ids=["plain", "force"])
def test_sweep_onto_its_own_grid(capsys, tmp_path, force):
    grid = tmp_path / "g.toml"
    grid.write_text('[problem]\nloss = "mse"\nclasses = 3\nper_class = 2\ndim = 3\n\n[grid]\nlambda_h = [1e-3]\n')
    refused(capsys, tmp_path, ["ufm", "sweep", "--grid", grid, "--out", grid, *force], "inputs")


def test_table_onto_an_input_given_as_a_file_path(capsys, runs):
    link = runs.parent / "link.md"
    os.symlink(runs / "a" / "summary.json", link)
    refused(capsys, runs.parent, _table(runs, link, "--force"), "run directory's own files")


# ------------------------------------------------------------------ files ncollapse did not write (or not as this kind)

def test_table_refuses_a_users_file_and_force_replaces_it(capsys, runs, tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("my notes\n")
    refused(capsys, tmp_path, _table(runs, notes), str(notes), "was not written by ncollapse", "--force")
    rc, _, _ = cli(capsys, *_table(runs, notes, "--force"))
    assert rc == 0 and "| CE |" in notes.read_text()


def test_table_replaces_its_own_earlier_table(capsys, runs, tmp_path):
    out = tmp_path / "t.md"
    assert cli(capsys, *_table(runs, out))[0] == 0
    first = out.read_text()
    table_run(runs, "c", 0.9, seed=2)
    assert cli(capsys, *_table(runs, out))[0] == 0
    assert out.read_text() != first and "70.0 ± 20.0" in out.read_text()  # seeds 0, 1, 2: 50, 70, 90 %
    assert json.loads((tmp_path / REGISTRY).read_text())["t.md"]["kind"] == "table"


def test_table_refuses_its_table_after_a_user_edit(capsys, runs, tmp_path):
    out = tmp_path / "t.md"
    assert cli(capsys, *_table(runs, out))[0] == 0
    out.write_text(out.read_text() + "my remark\n")
    refused(capsys, tmp_path, _table(runs, out), "has changed since ncollapse wrote it")


def test_table_refuses_a_sweep_result(capsys, runs, tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text('[problem]\nloss = "mse"\nclasses = 3\nper_class = 2\ndim = 3\n\n[grid]\nlambda_h = [1e-3]\n')
    out = tmp_path / "result.json"
    assert cli(capsys, "ufm", "sweep", "--grid", grid, "--out", out, "--quiet")[0] == 0
    refused(capsys, tmp_path, _table(runs, out), "as ufm sweep json, not table")


def test_table_out_is_a_folder(capsys, runs, tmp_path):
    (tmp_path / "folder").mkdir()
    refused(capsys, tmp_path, _table(runs, tmp_path / "folder", "--force"), "is a folder")


def test_table_out_under_a_file(capsys, runs, tmp_path):
    (tmp_path / "plain").write_text("x")
    refused(capsys, tmp_path, _table(runs, tmp_path / "plain" / "t.md"), "plain")


def test_report_refuses_a_users_html(capsys, tmp_path, report_run):
    page = tmp_path / "page.html"
    page.write_text("<p>mine</p>")
    refused(capsys, tmp_path, ["report", "--run", report_run, "--out", page], "was not written by ncollapse")


def test_report_replaces_a_page_of_an_earlier_version(capsys, tmp_path, report_run):
    page = tmp_path / "page.html"
    page.write_text('<!DOCTYPE html>\n<html lang="en"><head><title>ncollapse report: run</title></head></html>\n')
    assert cli(capsys, "report", "--run", report_run, "--out", page)[0] == 0
    assert "gram" in page.read_text() and (tmp_path / "page_files" / "gram.png").is_file()


def test_report_refuses_a_users_folder_in_the_figure_sets_place(capsys, tmp_path, report_run):
    (tmp_path / "page_files").mkdir()
    (tmp_path / "page_files" / "mine.png").write_bytes(b"png")
    refused(capsys, tmp_path, ["report", "--run", report_run, "--out", tmp_path / "page.html"], "page_files")


def test_ncmc_toy_refuses_a_users_png(capsys, tmp_path):
    (tmp_path / "ncmc_toy.png").write_bytes(b"not mine to lose")
    refused(capsys, tmp_path, ["ncmc", "toy", "--out", tmp_path, "--samples", "200"], "ncmc_toy.png")


def test_experiment_figures_refuse_a_users_png(tmp_path):
    from ncollapse.experiments._common import write_results
    from ncollapse.io_safe import OutputExistsError
    from ncollapse.report.figures import figure

    (tmp_path / "b.png").write_bytes(b"mine")
    before = snapshot(tmp_path)
    with pytest.raises(OutputExistsError, match="b.png exists and was not written by ncollapse"):
        write_results(tmp_path, "demo", {}, {"a": figure(2, 2), "b": figure(2, 2)})
    assert_unchanged(before, tmp_path)
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "results.json").exists()  # claimed before writing


def _no_training(*args, **kwargs):
    raise AssertionError("training started although an output was refused")


def _failed_training(*args, **kwargs):
    raise ValueError("boom")


@pytest.mark.parametrize("name, blocker", [("cdnv-gap", "cdnv_gap.png"), ("test-collapse", "cdnv_train_test.png"),
                                           ("lesde-fit", "report.html"), ("random-labels", "results.json"),
                                           ("fixed-classifiers", "report_files")])
def test_experiment_outputs_are_claimed_before_training(capsys, monkeypatch, tmp_path, name, blocker):
    monkeypatch.setattr("ncollapse.experiments._common.train", _no_training)
    out = tmp_path / "exp"
    out.mkdir()
    if blocker.endswith("_files"):
        (out / blocker).mkdir()  # a user's folder where the report's figure set goes
        (out / blocker / "mine.txt").write_text("mine")
    else:
        (out / blocker).write_bytes(b"a user's file, not ncollapse's")
    refused(capsys, tmp_path, ["experiment", name, "--out", out, "--quiet"], f"{out / blocker} exists")
    assert not (out / "metrics.jsonl").exists()


def test_experiment_into_a_finished_experiment_is_refused_before_training(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("ncollapse.experiments._common.train", _no_training)
    out = tmp_path / "exp"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n')
    refused(capsys, tmp_path, ["experiment", "cdnv-gap", "--out", out],
            f"--out {out} already holds a run (metrics.jsonl)")


def test_experiment_claims_are_released_and_nothing_is_left(tmp_path):
    from ncollapse.experiments import cdnv_gap
    from ncollapse.train.config import config_from_dict

    out = tmp_path / "new" / "exp"
    with pytest.MonkeyPatch.context() as mp, pytest.raises(ValueError, match="boom"):  # fails after the claims
        mp.setattr("ncollapse.experiments._common.train", _failed_training)
        cdnv_gap(config_from_dict({"data": {"name": "digits"}}), out)
    assert not (tmp_path / "new").exists()  # the folders the claims made are gone again
    with Outputs() as outputs:  # and the locks were released
        outputs.claim(out / "cdnv_gap.png", "experiment figure")


def test_demo_outputs_are_claimed_before_training(monkeypatch, tmp_path):
    from ncollapse import demo

    monkeypatch.setattr(demo, "train", _no_training)
    (tmp_path / "report.html").mkdir()
    before = snapshot(tmp_path)
    with pytest.raises(io_safe.OutputExistsError, match="report.html is a folder"):
        demo.run_demo(tmp_path, epochs=1, force=True)
    assert_unchanged(before, tmp_path)
    assert not (tmp_path / "ce").exists()


def test_demo_json_written_through_outputs(monkeypatch, tmp_path):
    from ncollapse import demo

    info = {"report": str(tmp_path / "report.html"), "wall_s": 1.0}
    monkeypatch.setattr(demo, "_run", lambda out, *a: info)
    assert demo.run_demo(tmp_path, epochs=1) == info
    registry = json.loads((tmp_path / REGISTRY).read_text())
    assert json.loads((tmp_path / "demo.json").read_text()) == info
    assert registry["demo.json"]["kind"] == "demo json"


def test_compare_out_refuses_a_users_file_and_replaces_its_own(capsys, tmp_path):
    for seed in (0, 1):
        table_run(tmp_path / "runs", f"a{seed}", 0.5, seed=seed)
    out = tmp_path / "cmp.md"
    out.write_text("my notes")
    refused(capsys, tmp_path, ["compare", "--runs", tmp_path / "runs", "--method", "CE", "--out", out],
            "cmp.md exists and was not written by ncollapse", "--force")
    assert out.read_text() == "my notes"
    refused(capsys, tmp_path, ["compare", "--runs", tmp_path / "runs", "--method", "CE", "--out",
                               tmp_path / "runs" / "a0" / "summary.json"], "run directory's own files")


def test_library_figure_writers_write_through_the_commands_outputs(tmp_path):
    from ncollapse.experiments.ncmc_toy import toy_figure

    png = tmp_path / "toy.png"
    with Outputs() as outputs:
        with pytest.raises(RuntimeError, match="without being claimed"):
            toy_figure(png, (1, 2), exponents=(0.0,), num_samples=50, outputs=outputs)
        assert not png.exists()
        outputs.claim(png, "ncmc toy figure")
        toy_figure(png, (1, 2), exponents=(0.0,), num_samples=50, outputs=outputs)
    entry = json.loads((tmp_path / REGISTRY).read_text())["toy.png"]
    assert entry == {"kind": "ncmc toy figure", "sha256": io_safe._digest(png)}


def test_outputs_remove_only_the_folders_they_made_when_unused(tmp_path):
    (tmp_path / "kept").mkdir()
    with Outputs() as outputs:
        outputs.claim(tmp_path / "a" / "b" / "x.json", "json")
        outputs.claim(tmp_path / "kept" / "y.json", "json")
        outputs.claim(tmp_path / "c" / "z.json", "json")
        outputs.write_json(tmp_path / "c" / "z.json", {"z": 1})
    assert not (tmp_path / "a").exists()  # made and left unused: removed
    assert (tmp_path / "kept").is_dir()  # there before: kept
    assert json.loads((tmp_path / "c" / "z.json").read_text()) == {"z": 1}


# ------------------------------------------------------------------ figure sets

def test_two_reports_into_one_folder_keep_their_own_figures(capsys, tmp_path, report_run):
    other = make_run(tmp_path / "other", counts=SMALL, dim=4, epochs=2, nc_every=1, state=False, seed=1)
    out = tmp_path / "pages"
    assert cli(capsys, "report", "--run", report_run, "--out", out / "a.html")[0] == 0
    first = snapshot(out)
    rc, stdout, _ = cli(capsys, "report", "--run", other, "--out", out / "b.html", "--json")
    assert rc == 0
    figures = json.loads(stdout)["figures"]
    assert_unchanged(first, out)  # the first report's HTML and figures are untouched
    assert {Path(f).parent.name for f in figures} == {"b_files"}
    assert sorted(p.name for p in (out / "b_files").iterdir()) == sorted(Path(f).name for f in figures)


def test_a_later_report_leaves_no_stale_figures(capsys, tmp_path, report_run):
    run = _copy_run(report_run, tmp_path / "r")
    assert cli(capsys, "report", "--run", run)[0] == 0
    assert (run / "report_files" / "gram.png").is_file()
    (run / "nc_state.pt").unlink()  # the next report has no Gram, spectrum or confusion figures
    rc, stdout, _ = cli(capsys, "report", "--run", run, "--json")
    assert rc == 0
    names = sorted(p.name for p in (run / "report_files").iterdir())
    assert names == sorted(Path(f).name for f in json.loads(stdout)["figures"]) and "gram.png" not in names
    assert not leftovers(run)  # no temp folder left


def test_a_page_that_cannot_follow_its_set_keeps_the_old_report(capsys, monkeypatch, tmp_path, report_run):
    """The HTML is renamed into place right after its figure set; when that fails, the old set comes back."""
    out = tmp_path / "page.html"
    assert cli(capsys, "report", "--run", report_run, "--out", out)[0] == 0
    (report_run.parent / "other").mkdir(exist_ok=True)
    other = make_run(report_run.parent / "other" / "run", counts=SMALL, dim=4, epochs=2, nc_every=1, state=False,
                     seed=1)
    real_replace = os.replace

    def fail_on_page(src, dst):
        if Path(dst) == out:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(io_safe.os, "replace", fail_on_page)
    refused(capsys, tmp_path, ["report", "--run", other, "--out", out], str(out), "no space left")
    assert (tmp_path / "page_files" / "gram.png").is_file() and not leftovers(tmp_path)


def test_a_report_locked_by_another_process_is_refused(capsys, tmp_path, report_run):
    out = tmp_path / "page.html"
    code = ("import sys; from ncollapse.io_safe import Outputs; o = Outputs(); o.claim(sys.argv[1], 'report'); "
            "print('held', flush=True); sys.stdin.read()")
    env = {**os.environ, "PYTHONPATH": SRC}
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        refused(capsys, tmp_path, ["report", "--run", report_run, "--out", out], "another ncollapse process")
        assert not out.exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert cli(capsys, "report", "--run", report_run, "--out", out)[0] == 0  # free again once the holder is gone


def test_outputs_must_be_claimed_before_writing(tmp_path):
    with Outputs() as outputs, pytest.raises(RuntimeError, match="without being claimed"):
        outputs.write_text(tmp_path / "x.md", "x")


# ------------------------------------------------------------------ the OS-error boundary (injected errno)

BOUNDARY = [(errno.EROFS, ("read-only", "EROFS")), (errno.ENAMETOOLONG, ("too long", "ENAMETOOLONG")),
            (errno.EACCES, ("permission denied", "EACCES")), (errno.EISDIR, ("is a folder", "EISDIR")),
            (errno.ENOTDIR, ("is a file", "ENOTDIR")), (errno.EPERM, ("not permitted", "EPERM")),
            (errno.ENOSPC, ("no space left", "nothing was written")),  # _io.DiskFullError's own line
            (errno.EDQUOT, ("no space left", "nothing was written"))]


@pytest.mark.parametrize("code, words", BOUNDARY, ids=[errno.errorcode[c] for c, _ in BOUNDARY])
def test_boundary_turns_os_errors_into_one_line(capsys, monkeypatch, runs, tmp_path, code, words):
    out = tmp_path / "t.md"

    def fail(src, dst):
        raise OSError(code, os.strerror(code), str(dst))

    monkeypatch.setattr(_io.os, "replace", fail)
    line = refused(capsys, tmp_path, _table(runs, out), str(out), *words)
    assert "Traceback" not in line and not out.exists()
    assert not leftovers(tmp_path)


@pytest.mark.parametrize("args", [["ncmc", "centers", "--counts", "5,3,1", "--f", "2", "--json"],
                                  ["ncmc", "centers", "--counts", "5,3,1", "--f", "2"],
                                  ["lesde", "--classes", "3", "--steps", "5", "--seeds", "1", "--json"]],
                         ids=["centers-json", "centers-text", "lesde-json"])
def test_stdout_on_a_full_disk(args):
    """--json > FILE on a full disk (/dev/full): exit 2, one line on stderr naming standard output."""
    with open(os.devnull if not os.path.exists("/dev/full") else "/dev/full", "w") as full:
        if full.name == os.devnull:
            pytest.skip("/dev/full is missing on this system")
        done = subprocess.run([sys.executable, "-m", "ncollapse", *args], stdout=full, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": SRC}, timeout=120)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1 and "standard output" in err[0] and "ENOSPC" in err[0], err


def test_data_fetch_root_is_a_file(capsys, tmp_path):
    root = tmp_path / "afile"
    root.write_text("keep")
    refused(capsys, tmp_path, ["data", "fetch", "mnist", "--root", root], "--root", "existing file")


def test_data_fetch_that_fails_leaves_no_empty_folder(capsys, tmp_path):
    root = tmp_path / "new" / "data"
    rc, _, err = cli(capsys, "data", "fetch", "mnist", "--root", root, "--base-url", (tmp_path / "mirror").as_uri(),
                     "--quiet")
    assert rc == 1 and len(err) == 1 and "could not download" in err[0], (rc, err)
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------ real tmpfs mounts (root)

def test_read_only_table(capsys, runs, tmp_path):
    with tmpfs(tmp_path / "ro") as mnt:
        (mnt / "old.md").write_text("earlier\n")
        remount_read_only(mnt)
        refused(capsys, mnt, _table(runs, mnt / "t.md"), "read-only", "EROFS", str(mnt))
        assert (mnt / "old.md").read_text() == "earlier\n"


def test_read_only_report_of_a_run_on_it(capsys, tmp_path, report_run):
    with tmpfs(tmp_path / "ro", "8m") as mnt:
        run = _copy_run(report_run, mnt / "run")
        remount_read_only(mnt)
        refused(capsys, mnt, ["report", "--run", run], "read-only", str(run))


def test_read_only_ncmc_toy(capsys, tmp_path):
    with tmpfs(tmp_path / "ro") as mnt:
        remount_read_only(mnt)
        refused(capsys, mnt, ["ncmc", "toy", "--out", mnt / "toy", "--samples", "200"], "read-only")


def test_read_only_sweep(capsys, tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text('[problem]\nloss = "mse"\nclasses = 3\nper_class = 2\ndim = 3\n\n[grid]\nlambda_h = [1e-3]\n')
    with tmpfs(tmp_path / "ro") as mnt:
        remount_read_only(mnt)
        refused(capsys, mnt, ["ufm", "sweep", "--grid", grid, "--out", mnt / "s.json", "--quiet"], "read-only")


def test_full_disk_report_keeps_the_earlier_report(capsys, tmp_path, report_run):
    with tmpfs(tmp_path / "full", "256k") as mnt:
        assert cli(capsys, "table", "--runs", report_run.parent, "--layout", "auto", "--out", mnt / "t.md")[0] in (0, 2)
        (mnt / "keep.txt").write_text("earlier result\n")
        refused(capsys, mnt, ["report", "--run", report_run, "--out", mnt / "r.html"], "no space left", str(mnt))
        assert not (mnt / "r.html").exists() and not (mnt / "r_files").exists()
        assert not leftovers(mnt)


def _fill(folder: Path) -> None:
    """Write a ballast file until the file system is full."""
    with open(folder / "ballast", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_full_disk_table_replacing_its_table(capsys, runs, tmp_path):
    with tmpfs(tmp_path / "full", "64k") as mnt:
        out = mnt / "t.md"
        assert cli(capsys, *_table(runs, out))[0] == 0
        table_run(runs, "c", 0.9, seed=2)
        _fill(mnt)
        refused(capsys, mnt, _table(runs, out), "no space left", str(out), "previous t.md is kept unchanged")
        assert "60.0 ± 14.1" in out.read_text() and not leftovers(mnt)


def test_full_disk_ncmc_toy(capsys, tmp_path):
    with tmpfs(tmp_path / "full", "64k") as mnt:
        (mnt / "keep.txt").write_text("earlier result\n")
        _fill(mnt)
        refused(capsys, mnt, ["ncmc", "toy", "--out", mnt, "--samples", "200"], "no space left")
        assert not leftovers(mnt)


@pytest.mark.parametrize("length", [250, 255])
def test_long_names_the_os_accepts_work(capsys, runs, tmp_path, report_run, length):
    with tmpfs(tmp_path / "long", "8m") as mnt:
        table = mnt / ("t" * (length - 3) + ".md")
        assert cli(capsys, *_table(runs, table))[0] == 0 and "| CE |" in table.read_text()
        page = mnt / ("p" * (length - 5) + ".html")
        rc, stdout, _ = cli(capsys, "report", "--run", report_run, "--out", page, "--json")
        assert rc == 0 and page.is_file()
        assert all(Path(f).is_file() and len(Path(f).parent.name) <= 255 for f in json.loads(stdout)["figures"])


def test_a_name_too_long_is_one_line(capsys, runs, tmp_path):
    with tmpfs(tmp_path / "long") as mnt:
        refused(capsys, mnt, _table(runs, mnt / ("t" * 256 + ".md")), "too long", "ENAMETOOLONG")
