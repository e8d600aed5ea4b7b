"""Fault injection, memory guard: every command that allocates from user-given sizes refuses (exit 2, one line
naming the size, the estimate and the available memory) before allocating.

Each command runs in a subprocess whose address space is capped (``RLIMIT_AS``, set in ``preexec_fn``) at what
the imports take plus 1 GiB, so a missing guard fails with a MemoryError traceback (or is killed) instead of
swapping the machine. The child arms a 5 s alarm once its imports are done: a refusal that is not immediate
fails the test (SIGALRM), which is a generous timeout, not a timing assertion. No earlier file may change.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

resource = pytest.importorskip("resource", reason="RLIMIT_AS needs a POSIX system")
if not sys.platform.startswith("linux"):
    pytest.skip("the address-space cap is measured from /proc (Linux)", allow_module_level=True)

SRC = Path(__file__).resolve().parents[1] / "src"
GiB = 1 << 30

# The child: import everything the commands load lazily, report its address-space size (VmPeak) when asked,
# else arm the alarm and run the CLI.
DRIVER = """
import signal, sys
import torch, numpy, matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot
import ncollapse.cli, ncollapse.ufm, ncollapse.ufm.phase, ncollapse.ufm.experiments, ncollapse.lesde
import ncollapse.experiments.ncmc_toy, ncollapse.metrics, ncollapse.data.features, ncollapse.data.formats
import ncollapse.data.datasets, ncollapse.train.trainer, sklearn.datasets
if sys.argv[1:] == ["--vm-peak"]:
    print(next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmPeak:")))
    sys.exit(0)
signal.alarm(5)
sys.exit(ncollapse.cli.main(sys.argv[1:]))
"""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "MPLBACKEND": "Agg"}


@pytest.fixture(scope="module")
def address_cap() -> int:
    """The imports' peak address space plus 1 GiB (measured once: torch alone maps a few GiB)."""
    out = subprocess.run([sys.executable, "-c", DRIVER, "--vm-peak"], capture_output=True, text=True, env=_env(),
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return int(out.stdout) + GiB


def _snapshot(folder: Path) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_capped(args, cap: int, cwd: Path) -> subprocess.CompletedProcess:
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    return subprocess.run([sys.executable, "-c", DRIVER, *map(str, args)], capture_output=True, text=True,
                          env=_env(), cwd=cwd, preexec_fn=limit, timeout=300)


def refused(args, cap: int, tmp_path: Path, *expected: str) -> str:
    """Run ``args`` under the cap; assert exit 2, one stderr line holding every ``expected`` piece, no changed file."""
    before = _snapshot(tmp_path)
    out = run_capped(args, cap, tmp_path)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert len(lines) == 1, out.stderr
    for piece in expected:
        assert piece in lines[0], lines[0]
    after = _snapshot(tmp_path)
    assert {p: h for p, h in after.items() if p in before} == before
    return lines[0]


MEMORY = ("needs about", "of memory, more than the")


def test_cap_catches_a_missing_guard(address_cap, tmp_path):
    """The harness itself: 2 GiB allocated after the imports fails under the cap, so a missing guard cannot
    pass unnoticed (it would end in a traceback, not in exit 2 and one line)."""
    blow = subprocess.run([sys.executable, "-c", "import torch; torch.ones(2 << 28)"], capture_output=True,
                          text=True, env=_env(), cwd=tmp_path, timeout=300,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (address_cap, address_cap)))
    assert blow.returncode != 0 and "memory" in blow.stderr.lower(), blow.stderr[-2000:]


def test_certify_300_classes(address_cap, tmp_path):
    line = refused(["ufm", "--classes", "300", "--per-class", "2", "--dim", "300", "--certify", "--steps", "1"],
                   address_cap, tmp_path, *MEMORY, "K = 300")
    assert "TiB" in line  # ~200 K^4 bytes: 1.5 TiB


def test_ufm_dim(address_cap, tmp_path):
    refused(["ufm", "--classes", "4", "--dim", "100000000"], address_cap, tmp_path, *MEMORY,
            "40 x 100000000", "lower --dim or the counts")


def test_phase_diagram_million_by_million(address_cap, tmp_path):
    refused(["ufm", "sweep", "--ratios", "1:100:1000000", "--lambdas", "1e-4:1e-3:1000000", "--out", "phase"],
            address_cap, tmp_path, *MEMORY, "1000000 ratios x 1000000 lambdas")
    assert not (tmp_path / "phase" / "phase.json").exists()


def test_values_list_too_long(address_cap, tmp_path):
    refused(["ufm", "sweep", "--ratios", "1:100:1000000000000", "--lambdas", "1e-4", "--out", "phase"],
            address_cap, tmp_path, *MEMORY, "N = 1000000000000")


def test_toml_grid_of_many_points(address_cap, tmp_path):
    values = ", ".join(f"{1e-3 * (1 + i / 3000):.6g}" for i in range(3000))
    (tmp_path / "grid.toml").write_text(f'[problem]\nloss = "ce"\ncounts = [5, 5]\ndim = 4\n'
                                        f"[grid]\nlambda_w = [{values}]\nlambda_h = [{values}]\n")
    refused(["ufm", "sweep", "--grid", "grid.toml", "--out", "sweep.json"], address_cap, tmp_path, *MEMORY,
            "grid of 3000 x 3000 points")
    assert not (tmp_path / "sweep.json").exists()


def test_lesde_many_classes(address_cap, tmp_path):
    refused(["lesde", "--classes", "100000"], address_cap, tmp_path, *MEMORY, "K = 100000")


def test_lesde_separability_many_classes(address_cap, tmp_path):
    refused(["lesde", "--classes", "100000", "--separability", "1"], address_cap, tmp_path, *MEMORY,
            "K = 100000", "10000 paths")


def test_lesde_many_seeds(address_cap, tmp_path):
    refused(["lesde", "--classes", "100", "--seeds", "100000"], address_cap, tmp_path, *MEMORY, "100000 seeds")


def test_ncmc_toy_many_centers(address_cap, tmp_path):
    refused(["ncmc", "toy", "--centers", "1,100000", "--out", "toy"], address_cap, tmp_path, *MEMORY,
            "F = 100001 centers")
    assert not (tmp_path / "toy").exists()


def _features(tmp_path: Path, rows=2000, dim=512, classes=100) -> Path:
    rng = np.random.default_rng(0)
    labels = np.arange(rows) % classes
    path = tmp_path / "f.npz"
    np.savez(path, features=rng.normal(size=(rows, dim)).astype(np.float32), labels=labels)
    return path


def test_min_count_capped_at_largest_class(address_cap, tmp_path):
    """--min-count 100000 on 2,000 rows: K·(m−1)·d would be 41 GB; the kept samples are capped at the largest
    class (20 rows), so the command gives its real answer: no class has that many samples."""
    _features(tmp_path)
    line = refused(["measure", "--features", "f.npz", "--min-count", "100000"], address_cap, tmp_path,
                   "at least min_count=100000")
    assert "memory" not in line


def test_min_count_above_some_classes_measures(address_cap, tmp_path):
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), [1500, 400, 100])
    np.savez(tmp_path / "lt.npz", features=rng.normal(size=(2000, 512)).astype(np.float32), labels=labels)
    out = run_capped(["measure", "--features", "lt.npz", "--min-count", "200", "--json"], address_cap, tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    report = json.loads(out.stdout)
    assert report["num_classes_below_min_count"] == 1 and report["num_measured_classes"] == 2


def test_model_width():
    from ncollapse.nn import build_model

    with pytest.raises(ValueError, match=r"model 'mlp' with at least .* parameters .* lower the widths"):
        build_model("mlp", 10, widths=(10**6, 10**6))


def test_model_feature_dim_in_a_training_config(address_cap, tmp_path):
    (tmp_path / "c.toml").write_text('[data]\nname = "digits"\n[model]\nname = "mlp"\nfeature_dim = 1000000000\n'
                                     '[train]\nepochs = 1\n[schedule]\nwarmup_epochs = 0\n')
    refused(["train", "--config", "c.toml", "--out", "run", "--device", "cpu", "--quiet"], address_cap, tmp_path,
            *MEMORY, "feature width 1000000000")


def test_gram_samples_capped_and_checked_before_training():
    """eval.gram_samples = 10⁸ keeps at most the largest class per class; a pass too large for memory is refused
    by build_run's check, before the first epoch."""
    from ncollapse.train.build import check_nc_memory, gram_slots
    from ncollapse.train.config import config_from_dict

    cfg = config_from_dict({"eval": {"gram_samples": 10**8}})
    assert gram_slots(cfg, [50, 7, 3]) == 50
    check_nc_memory(cfg, [50, 7, 3], 512, "cpu")  # 3 x 50 x 512 float64: fine
    with pytest.raises(ValueError, match=r"eval.gram_samples = 100000000 needs about .* of memory"):
        check_nc_memory(cfg, [10**7] * 1000, 4096, "cpu")


# -- the estimates, tied to what they count ---------------------------------------------------------------------
def test_classstats_estimate_is_its_state():
    import torch

    from ncollapse.stats import ClassStats
    from ncollapse.stats.classes import state_bytes

    stats = ClassStats(7, 5, per_class_cov=True, rare_below=4)
    state = stats.state_dict()
    held = sum(state[key].nbytes for key in ("means", "scatter", "class_scatter", "rare_samples"))
    assert state_bytes(7, 5, torch.float64, per_class_cov=True, kept=3) == held


def test_resnet_estimate_counts_the_stage_convolutions():
    """9w²(11 + 21(2n − 1)) is every 3 × 3 convolution of the three stages; only the stem adds to it."""
    from ncollapse.nn import build_model
    from ncollapse.nn.build import _least_params

    for name in ("resnet8", "resnet20"):
        for width in (4, 8):
            model = build_model(name, 3, width=width)
            convs = [p.numel() for n, p in model.backbone.named_parameters() if p.dim() == 4 and "stem" not in n]
            assert _least_params(name, 3, 32, {"width": width}) == (sum(convs), 4 * width)


def test_mlp_estimate_counts_its_linear_layers():
    from ncollapse.nn import build_model
    from ncollapse.nn.build import _least_params

    model = build_model("mlp", 3, in_channels=1, image_size=8, widths=(16, 8), batch_norm=False)
    linear = sum(p.numel() for p in model.backbone.parameters())
    assert _least_params("mlp", 1, 8, {"widths": (16, 8)}) == (linear, 8)


def test_certificate_and_solver_estimates():
    import torch

    from ncollapse.ufm import UFMProblem
    from ncollapse.ufm.certify import program_bytes
    from ncollapse.ufm.solve import solve_bytes

    assert program_bytes(300) == 200 * 300**4 > 1.4 * 2**40
    problems = [UFMProblem(loss="ce", counts=(5, 3), dim=4), UFMProblem(loss="ce", counts=(6, 2), dim=4)]
    assert solve_bytes(problems, torch.float64, "adam") == 8 * 8 * 2 * (8 + 2) * 4
    assert solve_bytes(problems, torch.float32, "lbfgs", history_size=5) == (8 + 10) * 4 * 2 * (8 + 2) * 4


def test_guard_reads_the_address_space_limit(address_cap, tmp_path):
    code = ("import resource; from ncollapse.resources import available_memory, check_memory; "
            "print(available_memory()[1]); check_memory(2 << 30, 'two GiB', 'fix it')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=300,
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (address_cap, address_cap)))
    assert out.stdout.strip() == "the RLIMIT_AS limit (ulimit)"
    assert "two GiB needs about 2 GiB of memory, more than the" in out.stderr and "fix it" in out.stderr


def test_input_file_kinds(tmp_path):
    from ncollapse.resources import check_input_file, format_bytes, read_capped

    os.mkfifo(tmp_path / "p")
    with pytest.raises(ValueError, match=r"--x .*p is a FIFO \(named pipe\), not a regular file"):
        check_input_file(tmp_path / "p", "--x")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        check_input_file(tmp_path, "--x")
    with pytest.raises(FileNotFoundError, match="no such file"):
        check_input_file(tmp_path / "missing", "--x")
    (tmp_path / "f").write_bytes(b"12345")
    assert read_capped(tmp_path / "f", 5, "--x") == b"12345"
    with pytest.raises(ValueError, match=r"--x .*f holds 5 bytes, more than the 4 \(4 B\) such a file can hold"):
        read_capped(tmp_path / "f", 4, "--x")
    assert [format_bytes(n) for n in (512, 3 << 20, 1023 << 30, 3.2 * 2**30)] == ["512 B", "3 MiB", "1023 GiB",
                                                                               "3.2 GiB"]
