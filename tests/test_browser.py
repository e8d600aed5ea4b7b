"""Render reports in headless Chromium: every figure present, pixels drawn, no console messages, the headline
row laid out as one row, per-run sections side by side, and no title clipped (scrollWidth > clientWidth).

Outside CI the test skips when Debian's ``chromium`` is missing; with ``CI=true`` it must run (``.ci/run``
installs the package).
"""

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from matplotlib import image as mpimg

from fixtures.report_runs import make_run
from ncollapse.report import write_comparison, write_report
from ncollapse.report.notes import collected

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
WIDTH = 1200
# Appended to a copy of the page (the report itself has no script): after load, with every <details> open,
# list the titles whose text is wider than their box, and where the headline panels and per-run panels sit.
PROBE = """<script>
window.addEventListener("load", () => {
  document.querySelectorAll("details").forEach(d => { d.open = true; });
  const box = el => { const r = el.getBoundingClientRect(); return [Math.round(r.top), Math.round(r.left),
                                                                     Math.round(r.width)]; };
  const titles = [...document.querySelectorAll("h1, h2, h3, summary, figcaption, .ptitle")];
  const out = {
    titles: titles.length,
    clipped: titles.filter(el => el.scrollWidth > el.clientWidth).map(el => el.textContent),
    headline: [...document.querySelectorAll(".row.headline > figure")].map(
      f => [f.querySelector(".ptitle").textContent, ...box(f)]),
    rows: [...document.querySelectorAll(".row.runs")].map(
      r => [...r.children].map(f => [f.querySelector(".ptitle").textContent, ...box(f)])),
  };
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _chromium() -> str:
    path = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {CHROMIUM} is missing; .ci/run installs it with apt-get install chromium")
    pytest.skip(f"headless Chromium not found at {CHROMIUM}; install Debian's chromium to run the browser test")


def _run(chromium, tmp_path, name, *args):
    cmd = [chromium, *FLAGS, f"--user-data-dir={tmp_path / ('profile_' + name)}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)


def _probe(chromium, tmp_path, page, name) -> tuple[str, dict]:
    """(the DOM after load, the PROBE's findings) of a copy of ``page`` with PROBE appended."""
    probed = page.with_name(f"probed_{page.name}")
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = _run(chromium, tmp_path, name, f"--window-size={WIDTH},2000", "--dump-dom", probed.resolve().as_uri()).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, "the probe script did not run"
    return dom, json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                           .replace("&gt;", ">"))


def _headline_is_one_row(probe):
    titles = [t for t, *_ in probe["headline"]]
    assert titles == ["Within-class variabilitync/nc1", "Class-distance variancenc/cdnv",
                      "Distance to simplex ETFnc/etf_error_means", "Self-duality errornc/self_duality",
                      "NCC disagreementnc/ncc_mismatch"]
    tops = {top for _, top, _, _ in probe["headline"]}
    lefts = [left for _, _, left, _ in probe["headline"]]
    assert len(tops) == 1 and lefts == sorted(lefts)  # five panels side by side, in order
    assert all(150 < width < 260 for *_, width in probe["headline"])


def test_report_renders_in_chromium(tmp_path):
    chromium = _chromium()
    run_dir = make_run(tmp_path / "run", epochs=4, nc_every=1, ncmc=True)
    with collected():
        page = write_report(run_dir)
    url = page.resolve().as_uri()
    expected = len(list((run_dir / "report_files").glob("*.png")))
    assert expected == 14

    dom, probe = _probe(chromium, tmp_path, page, "probe")
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', dom)) == expected
    assert "<h1>ncollapse report: run</h1>" in dom
    # the other NC panels grouped under NC1-NC4 and other inside a <details>, each with its own figure
    assert re.findall(r"<h3>(NC\d|other) · ", dom) == ["NC1", "NC2", "NC3", "other"]
    for group in ("nc1", "nc2", "nc3", "other"):
        assert f'alt="nc_{group}"' in dom
    assert probe["titles"] >= 15 and probe["clipped"] == []
    _headline_is_one_row(probe)

    shot = tmp_path / "shot.png"
    result = _run(chromium, tmp_path, "shot", f"--screenshot={shot}", f"--window-size={WIDTH},3000",
                  "--enable-logging=stderr", "--v=0", url)
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []
    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[:2] == (3000, WIDTH)
    non_white = (pixels < 0.95).any(axis=2).mean()
    assert non_white > 0.05  # text, axes and curves, not a blank page
    # matplotlib's first colour (#1f77b4) only comes from the embedded figures: they were decoded and drawn
    c0 = np.abs(pixels - np.array([0x1F, 0x77, 0xB4]) / 255).max(axis=2) < 0.06
    assert c0.sum() > 2000


def test_comparison_renders_side_by_side_in_chromium(tmp_path):
    chromium = _chromium()
    a = make_run(tmp_path / "ce", epochs=4, nc_every=1)
    b = make_run(tmp_path / "cal", epochs=4, nc_every=2, seed=1)
    with collected():
        page = write_comparison([a, b], tmp_path / "compare.html",
                                labels=["CE (linear head)", "CAL (NCMC multi-center head)"])
    _, probe = _probe(chromium, tmp_path, page, "probe")
    assert probe["clipped"] == []
    _headline_is_one_row(probe)
    # Gram heatmaps, spectra and confusion: one row each, the two runs side by side at the same height
    assert len(probe["rows"]) == 3
    for row in probe["rows"]:
        assert [title for title, *_ in row] == ["CE (linear head)", "CAL (NCMC multi-center head)"]
        (_, top_a, left_a, width_a), (_, top_b, left_b, _) = row
        assert top_a == top_b and left_b >= left_a + width_a
