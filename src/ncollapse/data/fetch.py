"""Download the official data files: resumable, verified, atomic.

A file is fetched into ``NAME.part`` next to its final place; an existing ``.part`` is resumed with an HTTP
``Range`` request (a server that ignores the range restarts it from byte 0). The finished bytes must match
every digest listed for the file (sha256, and md5 where the publisher gives one) before ``os.replace`` moves
them into place, so a reader never sees a half-written or corrupted file. A mismatch after a resumed
download retries once from scratch; a mismatch on a fresh download deletes the ``.part`` and raises.
Archives (CIFAR, STL-10) are then unpacked through a temporary folder and renamed into place.

Digests: MNIST and Fashion-MNIST sha256 are those of the byte-identical copies in ``shared/data``
(their md5 equal the publishers' / torchvision's); CIFAR-10/100 and SVHN sha256 are the values pinned by
Keras and torchvision; for STL-10 no sha256 is pinned here, only the publisher's md5 (as in torchvision).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

__all__ = ["Resource", "Source", "SOURCES", "download", "fetch", "extract_tar", "file_digests"]

log = logging.getLogger(__name__)

Progress = Callable[[str, int, "int | None"], None]  # (file name, bytes done, total bytes or None)


@dataclass(frozen=True)
class Resource:
    """One file to download: its name and the digests it must match (at least one)."""

    filename: str
    sha256: str | None = None
    md5: str | None = None


@dataclass(frozen=True)
class Source:
    """A data set's files, the mirrors that serve them, and where they go under the root."""

    subdir: str
    mirrors: tuple[str, ...]
    files: tuple[Resource, ...]
    archive_dir: str | None = None  # set for tar.gz archives: the folder they unpack to


SOURCES: dict[str, Source] = {
    "mnist": Source("mnist", ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"), (
        Resource("train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                 "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        Resource("train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                 "d53e105ee54ea40749a09fcbcd1e9432"),
        Resource("t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                 "9fb629c4189551a2d022fa330f9573f3"),
        Resource("t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                 "ec29112dd5afa0611ce80d1b7f02629c"))),
    "fashion-mnist": Source("fashion-mnist", ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",), (
        Resource("train-images-idx3-ubyte.gz", "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                 "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        Resource("train-labels-idx1-ubyte.gz", "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                 "25c81989df183df01b3e8a0aad5dffbe"),
        Resource("t10k-images-idx3-ubyte.gz", "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                 "bef4ecab320f06d8554ea6380940ec79"),
        Resource("t10k-labels-idx1-ubyte.gz", "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                 "bb300cfdad3c16e7a12a480ee83cd310"))),
    "cifar10": Source(".", ("https://www.cs.toronto.edu/~kriz/",), (
        Resource("cifar-10-python.tar.gz", "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                 "c58f30108f718f92721af3b95e74349a"),), archive_dir="cifar-10-batches-py"),
    "cifar100": Source(".", ("https://www.cs.toronto.edu/~kriz/",), (
        Resource("cifar-100-python.tar.gz", "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
                 "eb9058c3a382ffc7106e4002c42a8d85"),), archive_dir="cifar-100-python"),
    "svhn": Source("svhn", ("http://ufldl.stanford.edu/housenumbers/",), (
        Resource("train_32x32.mat", "435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8",
                 "e26dedcc434d2e4c54c9b2d4a06d8373"),
        Resource("test_32x32.mat", "cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b",
                 "eb5a983be6a315427106f1b164d9cef3"),
        Resource("extra_32x32.mat", "a133a4beb38a00fcdda90c9489e0c04f900b660ce8a316a5e854838379a71eb3",
                 "a93ce644f1a588dc4d68dda5feec44a7"))),
    "stl10": Source(".", ("http://ai.stanford.edu/~acoates/stl10/",), (
        Resource("stl10_binary.tar.gz", None, "91f7769df0f17e558f3565bffb0c7dfb"),), archive_dir="stl10_binary"),
}

_CHUNK = 1 << 20


def file_digests(path, algorithms=("sha256", "md5")) -> dict[str, str]:
    """Hex digests of a file, read once in 1 MiB chunks."""
    hashes = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            for h in hashes.values():
                h.update(block)
    return {a: h.hexdigest() for a, h in hashes.items()}


def _mismatch(path: Path, resource: Resource) -> str | None:
    """None if ``path`` matches every digest of ``resource``, else a description of the first mismatch."""
    want = {a: getattr(resource, a) for a in ("sha256", "md5") if getattr(resource, a)}
    if not want:
        raise ValueError(f"{resource.filename}: no digest to verify against")
    got = file_digests(path, tuple(want))
    for a, w in want.items():
        if got[a] != w.lower():
            return f"{a} {got[a]} != expected {w}"
    return None


def _transfer(url: str, part: Path, progress: Progress | None, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (resuming with a Range request when ``part`` is not empty)."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "ncollapse-fetch"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the range starts at the end: the part file is already complete
            return
        raise
    with response:
        if offset and response.status != 206:  # the server ignored the range: start over
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with open(part, "ab" if offset else "wb") as fh:
            done = offset
            try:
                for block in iter(lambda: response.read(_CHUNK), b""):
                    fh.write(block)
                    done += len(block)
                    if progress:
                        progress(part.name[: -len(".part")], done, total)
            except http.client.HTTPException as exc:
                raise ValueError(f"{url}: transfer broke off after {done} bytes ({type(exc).__name__}); "
                                 "run the command again to resume") from None
            finally:
                fh.flush()
                os.fsync(fh.fileno())
    if total is not None and done != total:
        raise ValueError(f"{url}: connection closed after {done} of {total} bytes; run the command again to resume")


def download(url: str, dest, resource: Resource, *, progress: Progress | None = None, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest`` through ``dest.part`` (resumed if present), verify it, then rename atomically."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(2):
        resumed = part.exists() and part.stat().st_size > 0
        _transfer(url, part, progress, timeout)
        problem = _mismatch(part, resource)
        if problem is None:
            os.replace(part, dest)
            return dest
        part.unlink()
        if not resumed:
            break
        log.warning("%s: resumed file failed verification (%s); downloading it again from the start", dest, problem)
    raise ValueError(f"{url}: downloaded file failed verification ({problem}); it was deleted, nothing was written "
                     f"to {dest}; the mirror may be serving a different or corrupted file")


def extract_tar(archive, root, top: str) -> Path:
    """Unpack ``archive`` (tar, any compression) whose members all lie under ``top/`` into ``root/top``.

    Members outside ``top/``, absolute paths and links are refused; the folder appears only when complete.
    """
    archive, root = Path(archive), Path(root)
    target = root / top
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{top}.") as tmp:
        try:
            with tarfile.open(archive) as tar:
                for member in tar.getmembers():
                    parts = Path(member.name).parts
                    if not parts or parts[0] != top or ".." in parts or member.issym() or member.islnk():
                        raise ValueError(f"{archive}: refusing member {member.name!r} (expected files under {top}/)")
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ValueError(f"{archive}: not a readable tar archive ({exc})") from None
        if target.exists():
            shutil.rmtree(target)
        os.replace(Path(tmp) / top, target)
    return target


def _fetch_files(source, folder: Path, mirrors, progress, timeout: float) -> None:
    for resource in source.files:
        dest = folder / resource.filename
        if dest.is_file() and _mismatch(dest, resource) is None:
            log.info("%s: present and verified", dest)
            continue
        errors = []
        for mirror in mirrors:
            try:
                download(mirror + resource.filename, dest, resource, progress=progress, timeout=timeout)
                break
            except (urllib.error.URLError, OSError) as exc:
                errors.append(f"{mirror}{resource.filename}: {exc}")
        else:
            raise OSError(f"could not download {resource.filename}: {'; '.join(errors)}")
        if source.archive_dir:
            extract_tar(dest, folder, source.archive_dir)
            dest.unlink()


def fetch(name: str, root, *, base_url: str | None = None, progress: Progress | None = None,
          timeout: float = 60.0) -> Path:
    """Download (and unpack) data set ``name`` under ``root``; returns the folder ``load_dataset`` reads.

    ``base_url`` replaces the official mirrors (a file's address is ``base_url/filename``). Files already in
    place and matching their digests are not downloaded again.
    """
    if name not in SOURCES:
        raise ValueError(f"cannot fetch {name!r}; choose one of {', '.join(SOURCES)}")
    source = SOURCES[name]
    folder = Path(root).expanduser() / source.subdir
    if source.archive_dir and (folder / source.archive_dir).is_dir():
        log.info("%s already unpacked in %s", name, folder / source.archive_dir)
        return (folder / source.archive_dir).resolve()
    mirrors = (base_url.rstrip("/") + "/",) if base_url else source.mirrors
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # innermost first
    try:
        _fetch_files(source, folder, mirrors, progress, timeout)
    except BaseException:  # no empty folder left behind (a partial .part file keeps its folder, to resume)
        for path in made:
            try:
                path.rmdir()
            except OSError:
                break
        raise
    return (folder / source.archive_dir if source.archive_dir else folder).resolve()
