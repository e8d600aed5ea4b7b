"""Bad input gives one stderr line and exit 2 (CLI) or one clear ValueError / TypeError (Python API)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from ncollapse import measure_features
from ncollapse._io import check_in_file, check_out_dir
from ncollapse.cli import main
from ncollapse.serialize import brief_list
from ncollapse.train import load_config
from ncollapse.validation import check_features, check_memory, infer_num_classes

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quick" / "mnist_lt_ce.toml"
X = np.random.default_rng(0).normal(size=(40, 5))
Y = np.arange(40) % 4


def _one_line_exit_2(capsys, argv, message):
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1, captured.err
    assert message in err[0]
    assert captured.out == ""
    return err[0]


def _npz(tmp_path, name, **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _big_label():
    y = Y.copy()
    y[0] = 10**12
    return y


@pytest.mark.parametrize("case, arrays, message", [
    ("label_1e12", dict(features=X, labels=_big_label()), "labels go up to 1000000000000 but only 5 distinct values"),
    ("sparse", dict(features=X, labels=Y * 1000), "labels go up to 3000 but only 4 distinct values occur"),
    ("overflow", dict(features=X * 1e200, labels=Y), "their squares overflow float64"),
    ("complex", dict(features=X + 1j * X, labels=Y), "features must be real; got dtype torch.complex128"),
    ("empty", dict(features=np.zeros((0, 5)), labels=np.zeros(0, dtype=np.int64)), "labels is empty (0 samples)"),
])
def test_measure_refuses_bad_arrays(tmp_path, capsys, case, arrays, message):
    line = _one_line_exit_2(capsys, ["measure", "--features", str(_npz(tmp_path, f"{case}.npz", **arrays))], message)
    assert f"{case}.npz" in line


def test_sparse_labels_hint_the_remap(tmp_path, capsys):
    path = _npz(tmp_path, "s.npz", features=X, labels=Y * 1000)
    line = _one_line_exit_2(capsys, ["measure", "--features", str(path)], "pass num_classes or remap labels to 0..3")
    assert len(line) < 300


def test_zero_byte_npz(tmp_path, capsys):
    path = tmp_path / "zero.npz"
    path.touch()
    _one_line_exit_2(capsys, ["measure", "--features", str(path)], "zero.npz: empty file (0 bytes)")


def test_sparse_labels_with_a_classifier_warn_briefly(tmp_path, capsys):
    path = _npz(tmp_path, "w.npz", features=X, labels=Y * 1000, weight=np.ones((3001, 5)))
    assert main(["measure", "--features", str(path)]) == 0
    captured = capsys.readouterr()
    assert "(2997 in all)" in captured.err and len(captured.err) < 300
    assert max(len(line) for line in captured.out.splitlines()) < 200


@pytest.mark.parametrize("argv, message", [
    (["ufm", "--classes", "4", "--dim", "100000000"], "lower --dim or the counts"),
    (["ufm", "--dim", "8"], "give the class sizes: --counts N1,N2,... or --classes K"),
])
def test_ufm_sizes(capsys, argv, message):
    _one_line_exit_2(capsys, argv, message)


def test_out_pointing_at_a_file(tmp_path, capsys):
    file = tmp_path / "taken"
    file.write_text("keep me")
    for argv in (["train", "--config", str(CONFIG), "--out", str(file)],
                 ["train", "--config", str(CONFIG), "--out", str(file / "run")],
                 ["ncmc", "toy", "--out", str(file), "--samples", "10"],
                 ["ufm", "experiment", "minority_collapse", "--size", "tiny", "--out", str(file)],
                 ["experiment", "transfer", "--out", str(file)],
                 ["demo", "--out", str(file), "--epochs", "1"]):
        _one_line_exit_2(capsys, argv, f"--out {file}")
    assert file.read_text() == "keep me"


def test_config_pointing_at_a_folder(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text("")
    line = _one_line_exit_2(capsys, ["train", "--config", str(run), "--out", str(tmp_path / "x")], "is a folder")
    assert f"did you mean {run / 'config.toml'}" in line
    _one_line_exit_2(capsys, ["experiment", "transfer", "--config", str(tmp_path), "--out", str(tmp_path / "y")],
                     "is a folder; give a TOML file")
    _one_line_exit_2(capsys, ["ufm", "sweep", "--grid", str(tmp_path)], f"--grid {tmp_path} is a folder")
    _one_line_exit_2(capsys, ["train", "--config", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "x")],
                     "no such file")


def test_api_infers_classes_only_from_dense_labels():
    assert infer_num_classes(torch.tensor([0, 2, 2, 1])) == 3
    assert infer_num_classes(torch.tensor([0, 3])) == 4  # two of four classes empty: still allowed
    with pytest.raises(ValueError, match="labels go up to 4 but only 2 distinct values"):
        infer_num_classes(torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="remap labels"):
        measure_features(X, Y * 1000)
    with pytest.warns(UserWarning, match=r"classes \[1, 3, 5\] have no samples"):
        report = measure_features(X, Y * 2, num_classes=7)  # an explicit num_classes is the user's decision
    assert report["absent_classes"] == [1, 3, 5]


def test_api_features_must_be_real_and_not_overflow():
    with pytest.raises(TypeError, match="must be real"):
        check_features(torch.ones(3, 2, dtype=torch.complex64))
    check_features(torch.full((4, 3), 1e150, dtype=torch.float64))
    with pytest.raises(ValueError, match="overflow float64"):
        check_features(torch.full((4, 3), 1e154, dtype=torch.float64))
    with pytest.raises(ValueError, match="overflow float32"):
        check_features(torch.full((4, 3), 1e19, dtype=torch.float32))
    check_features(torch.full((4, 3), 1e19, dtype=torch.float32), finite=False)  # hot loops may opt out


def test_memory_guard_and_brief_lists():
    check_memory(1 << 20, "a small buffer", "never shown")
    with pytest.raises(ValueError, match=r"needs about .* of memory, more than the .* lower it"):
        check_memory(1 << 60, "a huge buffer", "lower it")
    assert brief_list([4]) == "[4]"
    assert brief_list(range(1, 2998)) == "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ... (2997 in all)]"


def test_path_checks(tmp_path):
    assert check_out_dir(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    (tmp_path / "f").touch()
    with pytest.raises(ValueError, match="lies under .*f, which is a file"):
        check_out_dir(tmp_path / "f" / "run")
    with pytest.raises(FileNotFoundError, match="--grid .* no such file"):
        check_in_file(tmp_path / "g.toml", "--grid")


def test_load_config_names_a_folder(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder; give a TOML file"):
        load_config(tmp_path)
