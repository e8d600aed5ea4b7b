"""Fault injection, readers: corrupt, crafted and unbounded inputs end in exit 2 and one line naming the file
(and the npz member), or in the right result; no earlier file changes.

IDX cases start from copies of the real MNIST test files (../shared/data/mnist); npz cases from small synthetic
files; side files (--grid, --noise-cov, --config) from FIFOs, /dev/zero, oversized (sparse) files and crafted
.npy headers.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import threading
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from faults_cli_common import table_run

from ncollapse.cli import main
from ncollapse.data import formats
from ncollapse.report import runs as report_runs
from ncollapse.report import tables
from ncollapse.resources import JSON_FILE_LIMIT, SIDE_FILE_LIMIT
from ncollapse.train.config import config_from_dict, dumps_toml

from conftest import DATA

needs_mnist = pytest.mark.skipif(not (DATA / "mnist").is_dir(), reason=f"real MNIST not found at {DATA}/mnist")
needs_devzero = pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero on this system")


def _snapshot(folder: Path) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(args, folder: Path, capsys) -> tuple[int, list[str], str]:
    """Run the CLI in-process; return (status, stderr lines, stdout) after checking no file in ``folder`` changed."""
    capsys.readouterr()
    before = _snapshot(folder)
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    after = _snapshot(folder)
    assert {p: h for p, h in after.items() if p in before} == before
    return status, err.strip().splitlines(), out


def refused(args, folder: Path, capsys, *expected: str) -> str:
    status, lines, _ = cli(args, folder, capsys)
    assert status == 2 and len(lines) == 1, lines
    for piece in expected:
        assert piece in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def fifo(tmp_path):
    """A named pipe; a watchdog opens its write end after 20 s so a reader that blocks on it fails, not hangs."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this system")
    path = tmp_path / "pipe"
    os.mkfifo(path)

    def unblock():
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # nobody reading: nothing to unblock
            pass

    timer = threading.Timer(20, unblock)
    timer.start()
    yield path
    timer.cancel()


# -- IDX (real MNIST copies) ------------------------------------------------------------------------------------
@pytest.fixture
def mnist(tmp_path):
    if not (DATA / "mnist").is_dir():
        pytest.skip(f"real MNIST not found at {DATA}/mnist")
    root = tmp_path / "root"
    (root / "mnist").mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copyfile(DATA / "mnist" / name, root / "mnist" / name)
    return root


def info(root) -> list:
    return ["data", "info", "mnist", "--root", root, "--split", "test", "--json"]


LABELS = "mnist/t10k-labels-idx1-ubyte.gz"
IMAGES = "mnist/t10k-images-idx3-ubyte.gz"


def _labels(root: Path) -> np.ndarray:
    return formats.read_idx(root / LABELS)


def test_idx_real_mnist_reads(mnist, tmp_path, capsys):
    status, _, out = cli(info(mnist), tmp_path, capsys)
    report = json.loads(out)
    assert status == 0 and report["num_samples"] == 10000
    assert report["counts"] == np.bincount(_labels(mnist), minlength=10).tolist()


def test_idx_corrupt_deflate_stream(mnist, tmp_path, capsys):
    raw = bytearray((mnist / IMAGES).read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(64)  # a run of zeros in the middle of the deflate data
    (mnist / IMAGES).write_bytes(raw)
    refused(info(mnist), tmp_path, capsys, "t10k-images-idx3-ubyte.gz", "corrupt")


def test_idx_truncated_gzip(mnist, tmp_path, capsys):
    raw = (mnist / IMAGES).read_bytes()
    (mnist / IMAGES).write_bytes(raw[: len(raw) // 2])
    refused(info(mnist), tmp_path, capsys, "t10k-images-idx3-ubyte.gz", "truncated")


def test_idx_gzip_bomb_is_read_only_to_the_header_size(mnist, tmp_path, capsys):
    """The labels file followed by 1 GiB of zeros (1 MB gzipped): reading stops one byte past the size the
    header implies, so Python-level memory stays far below the expansion."""
    labels = gzip.decompress((mnist / LABELS).read_bytes())
    stream = io.BytesIO()
    with gzip.GzipFile(fileobj=stream, mode="wb", compresslevel=9) as gz:
        gz.write(labels)
        zeros = bytes(1 << 24)
        for _ in range(64):
            gz.write(zeros)
    (mnist / LABELS).write_bytes(stream.getvalue())
    assert (mnist / LABELS).stat().st_size < 4 << 20
    tracemalloc.start()
    try:
        refused(info(mnist), tmp_path, capsys, "t10k-labels-idx1-ubyte.gz", "more bytes")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 << 20, peak


def test_idx_header_larger_than_deflate_can_hold(mnist, tmp_path, capsys):
    (mnist / LABELS).write_bytes(gzip.compress(struct.pack(">BBBBI", 0, 0, 8, 1, 4_000_000_000) + bytes(100)))
    refused(info(mnist), tmp_path, capsys, "t10k-labels-idx1-ubyte.gz", "promises shape (4000000000,)", "at most")


def test_idx_plain_header_size_mismatch(mnist, tmp_path, capsys):
    for name in (LABELS, IMAGES):
        (mnist / name.removesuffix(".gz")).write_bytes(gzip.decompress((mnist / name).read_bytes()))
        (mnist / name).unlink()
    (mnist / "mnist/t10k-labels-idx1-ubyte").write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 10001) + bytes(10000))
    refused(info(mnist), tmp_path, capsys, "t10k-labels-idx1-ubyte", "promises shape (10001,)")


def _float_labels(values: np.ndarray) -> bytes:
    return gzip.compress(struct.pack(">BBBBI", 0, 0, 0x0D, 1, len(values)) + values.astype(">f4").tobytes())


def test_idx_float_labels_with_fractions_refused(mnist, tmp_path, capsys):
    labels = _labels(mnist).astype(np.float32)
    labels[7] += 0.5
    (mnist / LABELS).write_bytes(_float_labels(labels))
    refused(info(mnist), tmp_path, capsys, "t10k-labels-idx1-ubyte.gz", "must be integers", f"such as {labels[7]}")


def test_idx_integral_float_labels_read_exactly(mnist, tmp_path, capsys):
    expected = _labels(mnist)
    (mnist / LABELS).write_bytes(_float_labels(expected.astype(np.float32)))
    status, _, out = cli(info(mnist), tmp_path, capsys)
    assert status == 0 and json.loads(out)["counts"] == np.bincount(expected, minlength=10).tolist()


def test_idx_nan_labels_refused(mnist, tmp_path, capsys):
    labels = _labels(mnist).astype(np.float32)
    labels[3] = np.nan
    (mnist / LABELS).write_bytes(_float_labels(labels))
    refused(info(mnist), tmp_path, capsys, "must be integers", "nan")


def test_idx_fifo_refused(mnist, fifo):
    with pytest.raises(ValueError, match=r"IDX file .*pipe is a FIFO \(named pipe\), not a regular file"):
        formats.read_idx_pair(mnist / IMAGES, fifo)


# -- npz feature files ------------------------------------------------------------------------------------------
RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 6)).astype(np.float32)
Y = np.repeat(np.arange(4), 10)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def _npy_with_header(shape, payload: bytes, descr: str = "<f4") -> bytes:
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}".encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


def _zip(path: Path, members: dict, compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _flip(path: Path, needle: bytes, offset: int = 3) -> None:
    raw = bytearray(path.read_bytes())
    at = raw.find(needle)
    assert at >= 0
    raw[at + offset] ^= 0xFF
    path.write_bytes(raw)


def measure(path) -> list:
    return ["measure", "--features", path, "--json"]


def test_npz_good_file_measures(tmp_path, capsys):
    path = _zip(tmp_path / "ok.npz", {"features.npy": _npy(X), "labels.npy": _npy(Y)})
    status, _, out = cli(measure(path), tmp_path, capsys)
    assert status == 0 and json.loads(out)["num_samples"] == 40


def test_npz_bad_crc_in_features(tmp_path, capsys):
    path = _zip(tmp_path / "crc.npz", {"features.npy": _npy(X), "labels.npy": _npy(Y)})
    _flip(path, X.tobytes()[:32])
    refused(measure(path), tmp_path, capsys, "crc.npz", "member 'features.npy'", "CRC")


def test_npz_bad_crc_in_labels(tmp_path, capsys):
    path = _zip(tmp_path / "crc.npz", {"features.npy": _npy(X), "labels.npy": _npy(Y)})
    _flip(path, Y.astype(np.int64).tobytes()[8:40])
    refused(measure(path), tmp_path, capsys, "crc.npz", "member 'labels.npy'", "CRC")


def test_npz_invalid_deflate_block(tmp_path, capsys):
    big = RNG.normal(size=(4000, 6)).astype(np.float32)
    path = _zip(tmp_path / "deflate.npz", {"features.npy": _npy(big), "labels.npy": _npy(np.arange(4000) % 4)},
                zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("features.npy")
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + 200, start + 260):
        raw[i] ^= 0x5A
    path.write_bytes(raw)
    refused(measure(path), tmp_path, capsys, "deflate.npz", "member 'features.npy'", "corrupt")


@pytest.mark.parametrize("shape, expected", [((4, 10**11), "declares shape (4, 100000000000)"),
                                             ((-40, 6), "declares shape (-40, 6)"),
                                             ((80, 6), "declares shape (80, 6)")])
def test_npz_features_header_against_member_size(tmp_path, capsys, shape, expected):
    path = _zip(tmp_path / "hdr.npz", {"features.npy": _npy_with_header(shape, X.tobytes()), "labels.npy": _npy(Y)})
    refused(measure(path), tmp_path, capsys, "hdr.npz", "member 'features.npy'", expected)


def test_npz_labels_header_too_large(tmp_path, capsys):
    path = _zip(tmp_path / "hdr.npz", {"features.npy": _npy(X),
                                       "labels.npy": _npy_with_header((10**11,), Y.astype("<i8").tobytes(), "<i8")})
    refused(measure(path), tmp_path, capsys, "member 'labels.npy'", "declares shape (100000000000,)")


def test_npz_object_member_refused(tmp_path, capsys):
    path = _zip(tmp_path / "obj.npz", {"features.npy": _npy(X), "labels.npy": _npy(Y),
                                       "weight.npy": _npy(np.array([{"a": 1}] * 4, dtype=object))})
    refused(measure(path), tmp_path, capsys, "member 'weight.npy'", "dtype object")


def test_bare_npy_is_not_loaded(tmp_path, capsys):
    (tmp_path / "x.npy").write_bytes(_npy_with_header((10**6, 10**6), b""))
    refused(measure(tmp_path / "x.npy"), tmp_path, capsys, "x.npy", "not a readable .npz file")


@pytest.mark.parametrize("key", ["weight", "bias"])
def test_npz_complex_classifier_refused(tmp_path, capsys, key):
    weight = RNG.normal(size=(4, 6))
    arrays = {"features": X, "labels": Y, "weight": weight, "bias": np.zeros(4)}
    arrays[key] = arrays[key] + 1j
    np.savez(tmp_path / "c.npz", **arrays)
    refused(measure(tmp_path / "c.npz"), tmp_path, capsys, "c.npz", "must be real", "complex")


def test_npz_corrupt_ood_file(tmp_path, capsys):
    good = _zip(tmp_path / "ok.npz", {"features.npy": _npy(X), "labels.npy": _npy(Y)})
    ood = _zip(tmp_path / "ood.npz", {"features.npy": _npy(X)})
    _flip(ood, X.tobytes()[:32])
    refused(["measure", "--features", good, "--ood", ood], tmp_path, capsys, "ood.npz", "CRC")


def test_npz_fifo_refused(tmp_path, capsys, fifo):
    refused(measure(fifo), tmp_path, capsys, "pipe", "FIFO")


@needs_devzero
def test_npz_character_device_refused(tmp_path, capsys):
    refused(measure("/dev/zero"), tmp_path, capsys, "/dev/zero", "character device")


# -- side files: --grid, --noise-cov, --config -------------------------------------------------------------------
@needs_devzero
def test_grid_dev_zero(tmp_path, capsys):
    refused(["ufm", "sweep", "--grid", "/dev/zero", "--out", tmp_path / "s.json"], tmp_path, capsys,
            "--grid /dev/zero", "character device")


def test_grid_fifo(tmp_path, capsys, fifo):
    refused(["ufm", "sweep", "--grid", fifo, "--out", tmp_path / "s.json"], tmp_path, capsys, "FIFO")


def _sparse(path: Path, size: int) -> Path:
    with path.open("wb") as fh:
        fh.truncate(size)
    return path


def test_grid_oversized(tmp_path, capsys):
    grid = _sparse(tmp_path / "big.toml", SIDE_FILE_LIMIT + 1)
    refused(["ufm", "sweep", "--grid", grid, "--out", tmp_path / "s.json"], tmp_path, capsys, "big.toml",
            "16 MiB")


@needs_devzero
def test_noise_cov_dev_zero(tmp_path, capsys):
    refused(["lesde", "--classes", "3", "--noise-cov", "/dev/zero"], tmp_path, capsys, "--noise-cov /dev/zero",
            "character device")


def test_noise_cov_fifo(tmp_path, capsys, fifo):
    refused(["lesde", "--classes", "3", "--noise-cov", fifo], tmp_path, capsys, "--noise-cov", "FIFO")


def test_noise_cov_text_larger_than_k_implies(tmp_path, capsys):
    np.savetxt(tmp_path / "cov.txt", np.eye(100))
    refused(["lesde", "--classes", "3", "--noise-cov", tmp_path / "cov.txt"], tmp_path, capsys, "cov.txt",
            "for K = 3 (a 9 x 9 matrix)")


def test_noise_cov_npy_header_lies(tmp_path, capsys):
    (tmp_path / "cov.npy").write_bytes(_npy_with_header((10**5, 10**5), np.eye(9).tobytes(), "<f8"))
    refused(["lesde", "--classes", "3", "--noise-cov", tmp_path / "cov.npy"], tmp_path, capsys, "cov.npy",
            "declares shape (100000, 100000)")


def test_noise_cov_npy_read(tmp_path, capsys):
    np.save(tmp_path / "cov.npy", 0.01 * np.eye(9))
    status, _, out = cli(["lesde", "--classes", "3", "--noise-cov", tmp_path / "cov.npy", "--steps", "20",
                          "--seeds", "2", "--json"], tmp_path, capsys)
    assert status == 0 and json.loads(out)["noise"].endswith("cov.npy")


@needs_devzero
def test_config_dev_zero(tmp_path, capsys):
    refused(["train", "--config", "/dev/zero", "--out", tmp_path / "run"], tmp_path, capsys,
            "config file /dev/zero", "character device")
    assert not (tmp_path / "run").exists()


def test_config_oversized(tmp_path, capsys):
    config = _sparse(tmp_path / "c.toml", SIDE_FILE_LIMIT + 1)
    refused(["train", "--config", config, "--out", tmp_path / "run"], tmp_path, capsys, "c.toml", "16 MiB")
    assert not (tmp_path / "run").exists()


# -- CIFAR / SVHN / STL-10 / image folders: every reader entry refuses a FIFO before opening it -----------------
CIFAR10 = DATA / "cifar-10-subset" / "cifar-10-batches-py"
needs_cifar = pytest.mark.skipif(not CIFAR10.is_dir(), reason=f"real CIFAR-10 subset not found at {CIFAR10}")


@needs_cifar
def test_cifar_batch_fifo_refused(fifo):
    with pytest.raises(ValueError, match=r"CIFAR file .*pipe is a FIFO \(named pipe\), not a regular file"):
        formats.read_cifar([fifo], CIFAR10 / "batches.meta")


def test_cifar_meta_fifo_refused(fifo):
    with pytest.raises(ValueError, match=r"CIFAR file .*pipe is a FIFO"):
        formats.read_cifar([], fifo)


def test_svhn_fifo_refused(fifo):
    with pytest.raises(ValueError, match=r"SVHN file .*pipe is a FIFO"):
        formats.read_svhn_mat(fifo)


def _stl_files(tmp_path: Path, n: int = 3, size: int = 4) -> tuple[Path, Path]:
    x = np.arange(n * 3 * size * size, dtype=np.uint64).astype(np.uint8)
    x.tofile(tmp_path / "x.bin")
    np.array([1, 5, 10][:n], dtype=np.uint8).tofile(tmp_path / "y.bin")
    return tmp_path / "x.bin", tmp_path / "y.bin"


@pytest.mark.parametrize("which", ["images", "labels", "class names"])
def test_stl10_fifo_refused(tmp_path, fifo, which):
    x, y = _stl_files(tmp_path)
    paths = {"images": (fifo, y, None), "labels": (x, fifo, None), "class names": (x, y, fifo)}[which]
    with pytest.raises(ValueError, match=rf"STL-10 {which} file .*pipe is a FIFO"):
        formats.read_stl10(*paths, size=4)


def test_stl10_small_files_read(tmp_path):
    x, y = _stl_files(tmp_path)
    (tmp_path / "names.txt").write_text("\n".join(f"c{k}" for k in range(10)) + "\n")
    images, labels, classes = formats.read_stl10(x, y, tmp_path / "names.txt", size=4)
    raw = np.fromfile(x, dtype=np.uint8).reshape(3, 3, 4, 4)
    assert images.shape == (3, 3, 4, 4) and np.array_equal(images, raw.transpose(0, 1, 3, 2))
    assert labels.tolist() == [0, 4, 9] and classes == [f"c{k}" for k in range(10)]


def test_image_folder_fifo_refused(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this system")
    (tmp_path / "cat").mkdir()
    os.mkfifo(tmp_path / "cat" / "a.png")
    with pytest.raises(ValueError, match=r"image file .*a.png is a FIFO"):
        formats.read_image_folder(tmp_path)


# -- the run readers of report / table / compare: bounded JSON, FIFOs named ------------------------------------
def _fifo_at(path: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this system")
    path.unlink()
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("name", ["run.json", "summary.json", "metrics.jsonl", "config.toml"])
def test_table_skips_a_run_with_a_fifo(tmp_path, capsys, name):
    table_run(tmp_path / "runs", "a", 0.5, seed=0)
    bad = table_run(tmp_path / "runs", "b", 0.7, seed=1)
    _fifo_at(bad / name)
    status, lines, out = cli(["table", "--runs", tmp_path / "runs"], tmp_path, capsys)
    assert status == 0
    skipped = [line for line in lines if "unreadable run" in line]
    assert len(skipped) == 1 and f"{bad / name} is a FIFO" in skipped[0], lines
    assert "| CE | **50.0** |" in out  # run a alone: run b skipped, not averaged in


def test_table_skips_an_oversized_summary(tmp_path, capsys):
    table_run(tmp_path / "runs", "a", 0.5, seed=0)
    bad = table_run(tmp_path / "runs", "b", 0.7, seed=1)
    with open(bad / "summary.json", "r+b") as fh:  # sparse: no disk used, never read
        fh.truncate(JSON_FILE_LIMIT + 1)
    status, lines, out = cli(["table", "--runs", tmp_path / "runs"], tmp_path, capsys)
    skipped = [line for line in lines if "unreadable run" in line]
    assert status == 0 and len(skipped) == 1, lines
    assert f"{bad / 'summary.json'} holds {JSON_FILE_LIMIT + 1} bytes, more than the {JSON_FILE_LIMIT}" in skipped[0]


def test_compare_skips_a_run_with_a_fifo(tmp_path, capsys):
    for seed in (0, 1):
        table_run(tmp_path / "runs", f"ce{seed}", 0.5 + seed / 10, seed=seed)
        bs = table_run(tmp_path / "runs", f"bs{seed}", 0.6 + seed / 10, seed=seed)
        cfg = config_from_dict({"data": {"name": "mnist", "imbalance": 0.01}, "model": {"name": "lenet"},
                                "train": {"seed": seed}, "loss": {"name": "balanced_softmax"}})
        (bs / "config.toml").write_text(dumps_toml(cfg))
    _fifo_at(bs / "summary.json")
    status, lines, out = cli(["compare", "--runs", tmp_path / "runs", "--method", "BS"], tmp_path, capsys)
    assert status == 0 and "| CE | +10.0 (1 seed) |" in out  # seed 0 alone: BS 60 % − CE 50 %
    assert [line for line in lines if f"{bs / 'summary.json'} is a FIFO" in line and "skipped" in line], lines


def test_report_refuses_a_fifo_metrics_file(tmp_path, capsys):
    run = table_run(tmp_path, "a", 0.5)
    _fifo_at(run / "metrics.jsonl")
    refused(["report", "--run", run, "--out", tmp_path / "r.html"], tmp_path, capsys, "metrics.jsonl is a FIFO")
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("name", ["run.json", "summary.json", "config.toml"])
def test_report_notes_a_fifo_side_file(tmp_path, name):
    run = table_run(tmp_path, "a", 0.5)
    _fifo_at(run / name)
    loaded = report_runs.load_run(run)
    assert [n for n in loaded.notes if f"{run / name} is a FIFO" in n], loaded.notes
    assert loaded.last["test_acc"] == 0.5  # the metrics are still read


def test_metrics_line_over_the_cap_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(report_runs, "JSON_FILE_LIMIT", 64)
    path = tmp_path / "metrics.jsonl"
    long = json.dumps({"epoch": 2, "pad": "x" * 200})
    path.write_text(json.dumps({"epoch": 1, "a": 1}) + "\n" + long + "\n" + json.dumps({"epoch": 3, "a": 3}) + "\n")
    records, skipped = report_runs.parse_metrics(path)
    assert [r["epoch"] for r in records] == [1, 3]
    assert skipped == [f"{path}:2: skipped a line longer than 64 B"]


def test_metrics_half_written_last_line_still_named(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2,\n{"epoch": 3}\n{"epo')
    records, skipped = report_runs.parse_metrics(path)
    assert [r["epoch"] for r in records] == [1, 3]
    assert skipped == [f"{path}:2: skipped a line that is not JSON",
                       f"{path}:4: skipped a half-written last line (killed run?)"]


def test_tables_json_object_is_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "JSON_FILE_LIMIT", 8)
    (tmp_path / "s.json").write_text('{"best_test_acc": 0.5}')
    with pytest.raises(ValueError, match=r"s.json holds 22 bytes, more than the 8"):
        tables._json_object(tmp_path / "s.json")
