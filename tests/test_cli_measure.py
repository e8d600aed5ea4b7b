import json
import math
import subprocess
import sys

import numpy as np
import torch
import pytest

from ncollapse import measure_features
from ncollapse.cli import main

from conftest import make_features
from nc_reference import reference


@pytest.fixture
def feature_file(tmp_path):
    x, y, _ = make_features([40, 20, 10, 5], dim=6, seed=3)
    W = np.random.default_rng(0).normal(size=(4, 6))
    path = tmp_path / "f.npz"
    np.savez(path, features=x, labels=y, weight=W, bias=np.zeros(4))
    return path, x, y, W


def test_measure_json(feature_file, capsys):
    path, x, y, W = feature_file
    assert main(["measure", "--features", str(path), "--json", "--global-mean", "weighted", "--ddof", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    ref = reference(x, y, W=W, global_mean="weighted", ddof=1)
    for key in ("nc1", "cdnv", "self_duality", "ncc_mismatch"):
        assert out[key] == pytest.approx(ref[key], rel=1e-10, abs=1e-14)
    assert isinstance(out["sigma_b_spectrum"], list) and out["rank"] == 3


def test_measure_table(feature_file, capsys):
    assert main(["measure", "--features", str(feature_file[0])]) == 0
    assert "nc1 " in capsys.readouterr().out


def _bad(tmp_path, name, **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("case,message", [
    ("missing", "no such file"),
    ("notnpz", "not a readable .npz"),
    ("nofeatures", "missing array 'features'"),
    ("nolabels", "missing array 'labels'"),
    ("features3d", "must be 2-D"),
    ("length", "inconsistent numbers of samples"),
    ("float_labels", "must be integers"),
    ("negative", "outside"),
    ("nan", "contains NaN"),
    ("single", "at least two classes"),
    ("wshape", "W has shape"),
    ("batch0", "batch_size == 0, must be >= 1"),
])
def test_measure_bad_input_exit_2(tmp_path, case, message):
    x = np.random.default_rng(0).normal(size=(10, 3))
    y = np.arange(10) % 2
    files = {
        "missing": lambda: tmp_path / "absent.npz",
        "notnpz": lambda: (tmp_path / "x.npz").write_text("not a zip") and tmp_path / "x.npz",
        "nofeatures": lambda: _bad(tmp_path, "a.npz", labels=y),
        "nolabels": lambda: _bad(tmp_path, "b.npz", features=x),
        "features3d": lambda: _bad(tmp_path, "c.npz", features=x[:, :, None], labels=y),
        "length": lambda: _bad(tmp_path, "d.npz", features=x, labels=y[:-1]),
        "float_labels": lambda: _bad(tmp_path, "e.npz", features=x, labels=y + 0.5),
        "negative": lambda: _bad(tmp_path, "f.npz", features=x, labels=y - 1),
        "nan": lambda: _bad(tmp_path, "g.npz", features=np.where(x > 1, np.nan, x), labels=y),
        "single": lambda: _bad(tmp_path, "h.npz", features=x, labels=np.zeros(10, dtype=int)),
        "wshape": lambda: _bad(tmp_path, "i.npz", features=x, labels=y, weight=np.zeros((2, 4))),
        "batch0": lambda: _bad(tmp_path, "j.npz", features=x, labels=y),
    }
    path = files[case]()
    extra = ["--batch-size", "0"] if case == "batch0" else []
    result = subprocess.run([sys.executable, "-m", "ncollapse", "measure", "--features", str(path), *extra],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_absent_class_warning_cli(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(12, 3))
    path = _bad(tmp_path, "w.npz", features=x, labels=np.arange(12) % 3, weight=np.ones((4, 3)))
    assert main(["measure", "--features", str(path), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["absent_classes"] == [3]
    assert "no samples" in captured.err


def test_measure_min_count_ood_and_exponent(feature_file, tmp_path, capsys):
    path, x, y, W = feature_file
    ood = np.random.default_rng(4).normal(size=(9, 6))
    ood_path = tmp_path / "ood.npz"
    np.savez(ood_path, features=ood)
    assert main(["measure", "--features", str(path), "--json", "--min-count", "6", "--ood", str(ood_path),
                 "--cdnv-exponent", "1", "--tile-size", "2"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    keep = y < 3  # class 3 has 5 samples
    ref = reference(x[keep], y[keep], W=W, ood=ood, cdnv_exponent=1.0)
    assert out["num_classes_below_min_count"] == 1 and "fewer than min_count=6" in captured.err
    assert "keeps the within-class scatter" not in captured.err  # the rare class's samples were kept
    for key in ("nc1", "nc1_quotient", "cdnv", "nc5_ood", "unc3", "gnc2_log_mean", "orth_error_means", "duality_cos_mean"):
        assert out[key] == pytest.approx(ref[key], rel=1e-10), key
    np.savez(ood_path, labels=y)
    assert main(["measure", "--features", str(path), "--ood", str(ood_path)]) == 2
    assert "ood.npz: missing array 'features'" in capsys.readouterr().err


def test_measure_help_lists_options_and_keys(capsys):
    with pytest.raises(SystemExit):
        main(["measure", "--help"])
    text = capsys.readouterr().out
    for word in ("--min-count", "--ood", "--cdnv-exponent", "--tile-size", "gnc2_log_mean", "gnc2_riesz_mean",
                 "unc3", "duality_cos_mean", "orth_error_weights", "nc5_ood", "num_classes_below_min_count"):
        assert word in text, word


def _stream_file(tmp_path, name, save=np.savez, order="C"):
    rng = np.random.default_rng(5)
    y = rng.integers(0, 7, size=3000)
    x = rng.normal(size=(7, 16))[y] * 3 + rng.normal(size=(3000, 16))
    w, b = rng.normal(size=(7, 16)), rng.normal(size=7)
    path = tmp_path / name
    save(path, features=np.asarray(x, order=order), labels=y, weight=w, bias=b)
    return path, x, y, w, b


@pytest.mark.parametrize("name, save, order", [("stored.npz", np.savez, "C"), ("deflated.npz", np.savez_compressed, "C"),
                                               ("fortran.npz", np.savez, "F")])
def test_measure_streams_the_file_in_blocks(tmp_path, capsys, name, save, order):
    """`measure` reads the features --batch-size rows at a time (stored, compressed and column-major files); the
    result does not depend on the block size and equals the in-memory measure_features (float64 features: to
    1e-10; float32 ones would differ at float32 roundoff, as their GEMMs' inner size changes)."""
    path, x, y, w, b = _stream_file(tmp_path, name, save, order)
    want = measure_features(x, y, W=w, b=b, min_count=400)
    for batch in ("97", "4096"):
        assert main(["measure", "--features", str(path), "--json", "--batch-size", batch, "--min-count", "400"]) == 0
        got = json.loads(capsys.readouterr().out)
        for key, value in want.items():
            if isinstance(value, float) and math.isfinite(value):
                assert got[key] == pytest.approx(value, rel=1e-10, abs=1e-13), (batch, key)


def test_streamed_blocks_hold_only_a_block(tmp_path):
    """A 10 MB feature file read in blocks of 1,000 rows: numpy never holds more than a few blocks at once."""
    import tracemalloc

    from ncollapse.data.features import open_features

    path = tmp_path / "big.npz"
    np.savez(path, features=np.ones((50_000, 50), dtype=np.float32), labels=np.arange(50_000) % 5)
    source = open_features(path)
    tracemalloc.start()
    rows = sum(len(x) for x, _ in source.batches(1000))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert rows == 50_000 and peak < 1_000_000  # one block is 200 kB; the file's features are 10 MB


def test_bad_values_are_named_by_their_row_in_the_file(tmp_path):
    x = np.random.default_rng(0).normal(size=(500, 4))
    x[321, 2] = np.nan
    path = tmp_path / "nan.npz"
    np.savez(path, features=x, labels=np.arange(500) % 3)
    result = subprocess.run([sys.executable, "-m", "ncollapse", "measure", "--features", str(path),
                             "--batch-size", "100"], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "nan.npz: features contains NaN (1 of 400 entries, first in row 321)" in result.stderr


def test_measure_stream_progress_goes_to_stderr(capsys):
    from ncollapse import measure_stream

    x, y, _ = make_features([40, 20, 10, 5], dim=6, seed=3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    blocks = lambda: ((xt[i:i + 25], yt[i:i + 25]) for i in range(0, len(y), 25))  # noqa: E731
    quiet = measure_stream(blocks, 4, 6)
    assert capsys.readouterr().err == ""
    shown = measure_stream(blocks, 4, 6, progress=True, num_samples=len(y))
    err = capsys.readouterr().err
    assert "NC pass 1/2" in err and "NC pass 2/2" in err and "/75.0" in err
    assert shown["nc1"] == quiet["nc1"]
