import json
import subprocess
import sys

import numpy as np
import pytest

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
    }
    path = files[case]()
    result = subprocess.run([sys.executable, "-m", "ncollapse", "measure", "--features", str(path)],
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
