"""The CLI starts without torch for --version, --help and commands that need no tensors; a closed pipe is quiet."""

import os
import subprocess
import sys

import pytest

from ncollapse.cli import build_parser, command_names

PROBE = """
import sys
from ncollapse.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("torch" in sys.modules, code, file=sys.stderr)
"""


def _modules_after(argv):
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120)
    loaded, code = result.stderr.strip().splitlines()[-1].split()
    return loaded == "True", int(code), result.stdout


@pytest.mark.parametrize("argv", [
    ["--version"], ["--help"], ["data", "fetch", "--help"], ["measure", "--help"], ["train", "--help"],
    ["table", "--help"], ["report", "--help"], ["ncmc", "centers", "--help"], ["experiment", "--help"],
    ["ufm", "--help"], ["ufm", "sweep", "--help"], ["ufm", "experiment", "--help"],
])
def test_no_torch_for_version_and_help(argv):
    torch_loaded, code, out = _modules_after(argv)
    assert code == 0 and out
    assert not torch_loaded, f"ncollapse {' '.join(argv)} imported torch"


def test_import_ncollapse_is_lazy_but_complete():
    code = "import sys, ncollapse; assert 'torch' not in sys.modules; ncollapse.ClassStats; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "True"


def test_every_command_has_a_summary_and_registers():
    parser = build_parser()
    listed = parser.format_help()
    for name in command_names():
        assert name in listed
    assert build_parser("measure").parse_args(["measure", "--features", "f.npz"]).features == "f.npz"


def test_closed_pipe_exits_quietly():
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte is written, as with `ncollapse ... | head -0`
    try:
        argv = [sys.executable, "-m", "ncollapse", "ncmc", "centers", "--counts", "50,20,5", "--f", "2"]
        result = subprocess.run(argv, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert result.returncode == 141
    assert result.stderr == ""


def test_ufm_names_match_the_registries_they_mirror():
    from ncollapse import geometry
    from ncollapse import ufm_names as names
    from ncollapse.ufm.experiments import EXPERIMENTS

    assert names.FIXED_FRAME_NAMES == tuple(geometry.FIXED_FRAMES)
    assert names.EXPERIMENT_NAMES == tuple(EXPERIMENTS)
