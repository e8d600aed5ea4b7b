"""Downloads against a local HTTP server on 127.0.0.1: verification, resume, atomic rename, archives, CLI."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import threading
from contextlib import contextmanager
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ncollapse.cli import main
from ncollapse.data import load_dataset
from ncollapse.data.fetch import SOURCES, Resource, Source, download, extract_tar, fetch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "mnist").is_dir(), reason=f"real data not found at {DATA}")


class _Handler(BaseHTTPRequestHandler):
    """Serves files under ``directory``; honours ``Range: bytes=N-`` when ``ranges`` is set; logs requests."""

    def __init__(self, *args, directory, ranges, log, **kwargs):
        self.directory, self.ranges, self.log = Path(directory), ranges, log
        super().__init__(*args, **kwargs)

    def do_GET(self):  # noqa: N802 (http.server naming)
        path = self.directory / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        header = self.headers.get("Range")
        self.log.append((self.path, header))
        if header and self.ranges:
            start = int(header.split("=")[1].rstrip("-"))
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@contextmanager
def serve(directory, ranges=True):
    log: list = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=directory, ranges=ranges, log=log))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@needs_data
def test_fetch_mnist_from_local_server_verifies_and_loads(tmp_path):
    with serve(DATA) as (url, log):
        folder = fetch("mnist", tmp_path, base_url=f"{url}/mnist")
    assert folder == (tmp_path / "mnist").resolve()
    for resource in SOURCES["mnist"].files:
        assert _sha256(folder / resource.filename) == resource.sha256
    assert not list(folder.glob("*.part"))
    assert len(load_dataset("mnist", tmp_path, "test")) == 10000
    with serve(DATA) as (url, log):  # already present and verified: nothing is requested
        fetch("mnist", tmp_path, base_url=f"{url}/mnist")
    assert log == []


@needs_data
def test_corrupted_copy_is_rejected_and_nothing_is_written(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    blob = bytearray((DATA / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    blob[100] ^= 0xFF
    (served / "t10k-labels-idx1-ubyte.gz").write_bytes(bytes(blob))
    resource = next(r for r in SOURCES["mnist"].files if r.filename == "t10k-labels-idx1-ubyte.gz")
    dest = tmp_path / "out" / resource.filename
    with serve(served) as (url, _):
        with pytest.raises(ValueError, match=r"failed verification \(sha256 [0-9a-f]{64} != expected f7ae60f9"):
            download(f"{url}/{resource.filename}", dest, resource)
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


@needs_data
@pytest.mark.parametrize("ranges", [True, False])
def test_partial_file_is_resumed_with_range(tmp_path, ranges):
    name = "t10k-labels-idx1-ubyte.gz"
    resource = next(r for r in SOURCES["mnist"].files if r.filename == name)
    dest = tmp_path / name
    original = (DATA / "mnist" / name).read_bytes()
    dest.with_name(name + ".part").write_bytes(original[:1000])
    with serve(DATA / "mnist", ranges=ranges) as (url, log):
        download(f"{url}/{name}", dest, resource)
    assert log == [(f"/{name}", "bytes=1000-")]  # one request, resumed (a server ignoring Range sends it all)
    assert dest.read_bytes() == original and not dest.with_name(name + ".part").exists()


@needs_data
def test_corrupt_partial_file_is_downloaded_again(tmp_path):
    name = "t10k-labels-idx1-ubyte.gz"
    resource = next(r for r in SOURCES["mnist"].files if r.filename == name)
    dest = tmp_path / name
    dest.with_name(name + ".part").write_bytes(b"\0" * 1000)
    with serve(DATA / "mnist") as (url, log):
        download(f"{url}/{name}", dest, resource)
    assert [h for _, h in log] == ["bytes=1000-", None]
    assert _sha256(dest) == resource.sha256


@needs_data
def test_archive_fetch_unpacks_atomically(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    archive = served / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(DATA / "cifar-10-subset" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    fake = Source(".", ("unused",), (Resource(archive.name, _sha256(archive)),), archive_dir="cifar-10-batches-py")
    monkeypatch.setitem(SOURCES, "cifar10", fake)
    root = tmp_path / "root"
    with serve(served) as (url, _):
        folder = fetch("cifar10", root, base_url=url)
    assert folder == (root / "cifar-10-batches-py").resolve() and not (root / archive.name).exists()
    assert len(load_dataset("cifar10", root, "test")) == 1017
    assert [p.name for p in root.iterdir()] == ["cifar-10-batches-py"]  # no temporary folder left


def test_tar_with_escaping_member_is_refused(tmp_path):
    evil = tmp_path / "evil.tar"
    (tmp_path / "payload").write_text("x")
    with tarfile.open(evil, "w") as tar:
        tar.add(tmp_path / "payload", arcname="top/../../payload")
    (tmp_path / "root").mkdir()
    with pytest.raises(ValueError, match=r"refusing member 'top/\.\./\.\./payload'"):
        extract_tar(evil, tmp_path / "root", "top")
    assert list((tmp_path / "root").iterdir()) == []


@needs_data
def test_cli_fetch_exit_codes(tmp_path, capsys):
    served = tmp_path / "served"
    shutil.copytree(DATA / "mnist", served)
    with serve(served) as (url, _):
        assert main(["data", "fetch", "mnist", "--root", str(tmp_path / "ok"), "--base-url", url, "--quiet"]) == 0
        assert capsys.readouterr().out.strip() == str((tmp_path / "ok" / "mnist").resolve())
        (served / "train-labels-idx1-ubyte.gz").write_bytes(b"not the file")
        assert main(["data", "fetch", "mnist", "--root", str(tmp_path / "bad"), "--base-url", url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "failed verification" in err[0]
    assert not (tmp_path / "bad" / "mnist" / "train-labels-idx1-ubyte.gz").exists()
    assert main(["data", "fetch", "mnist", "--root", str(tmp_path / "x"), "--base-url", "http://127.0.0.1:9"]) == 1
    assert "could not download" in capsys.readouterr().err
