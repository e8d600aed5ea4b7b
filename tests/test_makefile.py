"""`make demo` / `make test` say what they install, in which order, and roughly how long it takes."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("target", ["demo", "test"])
def test_setup_announces_each_install(tmp_path, target):
    venv = tmp_path / "venv"
    lines = subprocess.run(["make", "-n", "-B", target, f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.splitlines()
    installs = [i for i, line in enumerate(lines) if " install " in line]
    torch = next(i for i in installs if "torch==2.13.0" in lines[i])
    assert torch < next(i for i in installs if " -e " in lines[i]), "torch must be installed before the project"
    for i in installs:  # every install is announced by the line before it
        assert lines[i - 1].startswith("echo"), lines[i]
    first = installs[0]
    assert any("minutes" in line for line in lines[:first]), "no time estimate before the first install"
    assert any(line.startswith("echo") and "minutes" in line for line in lines[installs[-1]:])
