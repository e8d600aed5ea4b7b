"""Render a report in headless Chromium: every figure present, pixels drawn, no console messages.

Outside CI the test skips when Debian's ``chromium`` is missing; with ``CI=true`` it must run (``.ci/run``
installs the package).
"""

import os
import re
import shutil
import subprocess
import warnings

import numpy as np
import pytest
from matplotlib import image as mpimg

from fixtures.report_runs import make_run
from ncollapse.report import write_report

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


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


def test_report_renders_in_chromium(tmp_path):
    chromium = _chromium()
    run_dir = make_run(tmp_path / "run", epochs=4, nc_every=2, ncmc=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        page = write_report(run_dir)
    url = page.resolve().as_uri()
    expected = len(list((run_dir / "report_files").glob("*.png")))
    assert expected == 11

    dom = _run(chromium, tmp_path, "dom", "--dump-dom", url).stdout
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', dom)) == expected
    assert "<h1>ncollapse report: run</h1>" in dom
    # the NC panels grouped under NC1-NC4 and other, each with a definition and its own figure
    headings = re.findall(r"<h2>(NC\d|other): ", dom)
    assert headings == ["NC1", "NC2", "NC3", "NC4", "other"]
    for group in ("nc1", "nc2", "nc3", "nc4", "other"):
        assert f'alt="nc_{group}"' in dom

    shot = tmp_path / "shot.png"
    result = _run(chromium, tmp_path, "shot", f"--screenshot={shot}", "--window-size=1200,3000",
                  "--enable-logging=stderr", "--v=0", url)
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []
    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[:2] == (3000, 1200)
    non_white = (pixels < 0.95).any(axis=2).mean()
    assert non_white > 0.05  # text, axes and curves, not a blank page
    # matplotlib's first colour (#1f77b4) only comes from the embedded figures: they were decoded and drawn
    c0 = np.abs(pixels - np.array([0x1F, 0x77, 0xB4]) / 255).max(axis=2) < 0.06
    assert c0.sum() > 2000
