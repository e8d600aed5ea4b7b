"""The one writer of command outputs: checks before the work, a lock while writing, a record of what it wrote.

Every command that writes files (``report``, ``table``, ``compare``, ``ufm sweep / threshold / experiment``,
``ncmc toy``, ``experiment``, ``demo``) opens an ``Outputs``, ``claim``s each output before computing anything (an
experiment's before it trains) and writes each through it (library writers take the ``outputs`` to use). A claim:

- refuses a path that is one of the command's own inputs (``os.path.samefile``), or one of a run directory's own
  files (``RUN_FILES`` in a folder holding ``metrics.jsonl``, ``checkpoint.pt`` or ``run.json``), even with ``--force``;
- refuses to replace an existing file (or folder) unless ncollapse wrote it earlier as the same kind of output
  and it has not changed since, or ``force`` is set;
- takes an exclusive lock on that output, held until the ``Outputs`` closes, so two processes that target the
  same output at once cannot mix their files: the second one stops with one line.

The record is ``.ncollapse-outputs.json`` in the output's folder: ``{name: {"kind": kind, "sha256": hex}}`` (a
figure folder's entry has no digest). A file with no record is still taken as ncollapse's when it carries the
recognisable header of its kind (``SIGNATURES``: a report page's ``<title>ncollapse …``), so pages written before
the record existed are replaced without ``--force``. The locks are POSIX byte-range locks (``fcntl.lockf``) on one byte per
output name in ``.ncollapse.lock`` beside it, so one small file serves every output of the folder and a name of any
length the OS accepts can be locked. Writes are ``_io.atomic_write_bytes`` (a short temp name in the same folder,
then ``os.replace``). A set of figures is written into a temp folder that is renamed into place as a whole, after
the previous set was moved aside; the previous set is removed only after the new one is in place. A folder
that a claim created is removed again when the ``Outputs`` closes with nothing written into it (a refusal or a
failure after the claims leaves no empty output folder behind), unless another process holds a lock there.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path

from ._io import atomic_write_bytes

__all__ = ["Outputs", "OutputExistsError", "OutputBusyError", "RUN_FILES", "REGISTRY", "LOCK"]

REGISTRY = ".ncollapse-outputs.json"
LOCK = ".ncollapse.lock"
RUN_FILES = frozenset({"config.toml", "metrics.jsonl", "summary.json", "checkpoint.pt", "nc_state.pt", "run.json",
                       "run.lock", "results.json", REGISTRY, LOCK})
_RUN_MARKERS = ("metrics.jsonl", "checkpoint.pt", "run.json")
_REGISTRY_BYTE = 0
SIGNATURES = {"report": b"<title>ncollapse "}  # a page of an earlier version (no registry entry) is still ours


class OutputExistsError(FileExistsError):
    """An output would replace a file that ncollapse did not write as this kind of output (or an input)."""


class OutputBusyError(FileExistsError):
    """Another process is writing the same output right now."""


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _signed(path: Path, kind: str) -> bool:
    """True when ``path`` starts with the header ncollapse writes for ``kind`` (``SIGNATURES``)."""
    signature = SIGNATURES.get(kind)
    if signature is None or path.is_symlink() or not path.is_file():
        return False
    with open(path, "rb") as fh:
        return signature in fh.read(1024)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _is_run_file(path: Path) -> bool:
    return path.name in RUN_FILES and any((path.parent / m).exists() for m in _RUN_MARKERS)


def _read_registry(folder: Path) -> dict:
    try:
        data = json.loads((folder / REGISTRY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class Outputs:
    """Claims, locks and writes the outputs of one command (a context manager; see the module docstring).

    ``inputs`` are the files and folders the command reads; ``force`` allows replacing files ncollapse did not write.
    """

    def __init__(self, *, force: bool = False, inputs=()):
        self._locks: dict[Path, int] = {}
        self._claimed: dict[Path, str] = {}
        self._made: list[Path] = []  # folders claim() created, outermost first
        self.force = bool(force)
        self.inputs = [Path(p) for p in inputs if p is not None]

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def __del__(self):
        self.close()

    def close(self) -> None:
        """Remove the folders claim() created that hold nothing but the lock file, then release every lock
        (closing the lock file's one descriptor drops this process's byte locks)."""
        for folder in reversed(self._made):
            self._remove_if_unused(folder)
        self._made.clear()
        for fd in self._locks.values():
            os.close(fd)
        self._locks.clear()

    def _remove_if_unused(self, folder: Path) -> None:
        try:
            if {p.name for p in folder.iterdir()} - {LOCK}:
                return
            fd = self._locks.get(folder.resolve())
            if fd is not None:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 0, 0)  # fails while another process locks here
                os.unlink(folder / LOCK)
            folder.rmdir()
        except OSError:  # in use by another process, or not ours to remove: leave it
            return

    # ------------------------------------------------------------------ checks

    def claim(self, path, kind: str, flag: str = "--out") -> Path:
        """Check that ``path`` may be written as ``kind`` and lock it for this command; returns it as a Path."""
        path = Path(path)
        if path.name in ("", ".", ".."):
            raise ValueError(f"{flag} {path}: give a file name")
        for source in self.inputs:
            if path.exists() and source.exists() and os.path.samefile(path, source):
                raise OutputExistsError(f"{flag} {path} is one of this command's inputs; choose another output path")
        if _is_run_file(path) or (path.is_symlink() and _is_run_file(path.resolve())):
            raise OutputExistsError(f"{flag} {path} is one of the run directory's own files; write the output "
                                    "elsewhere (e.g. a new name beside it)")
        if path.parent.exists() and not path.parent.is_dir():
            raise NotADirectoryError(f"{flag} {path}: {path.parent} is a file, not a folder")
        missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
        path.parent.mkdir(parents=True, exist_ok=True)
        self._made += [p for p in reversed(missing) if p not in self._made]
        self._lock(path, flag)
        if path.exists() or path.is_symlink():
            self._check_replace(path, kind, flag)
        self._claimed[path] = kind
        return path

    def _check_replace(self, path: Path, kind: str, flag: str) -> None:
        want_dir = kind.endswith("/")
        if path.is_dir() != want_dir:
            what = "a folder" if path.is_dir() else "a file"
            raise OutputExistsError(f"{flag} {path} is {what}; choose another path")
        if self.force:
            return
        entry = _read_registry(path.parent).get(path.name)
        if entry is None and _signed(path, kind):  # written before the registry existed
            return
        if isinstance(entry, dict) and entry.get("kind") == kind and not path.is_symlink():
            if want_dir or entry.get("sha256") == _digest(path):
                return
            why = "has changed since ncollapse wrote it"
        elif isinstance(entry, dict) and entry.get("kind"):
            why = f"was written by ncollapse as {entry['kind'].rstrip('/')}, not {kind.rstrip('/')}"
        else:
            why = "was not written by ncollapse"
        raise OutputExistsError(f"{flag} {path} exists and {why}; choose another path or add --force to replace it")

    def _lock(self, path: Path, flag: str) -> None:
        folder = path.parent.resolve()
        fd = self._locks.get(folder)
        if fd is None:
            fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            self._locks[folder] = fd
        offset = 1 + zlib.crc32(path.name.encode("utf-8", "surrogateescape")) % (1 << 30)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            raise OutputBusyError(f"{flag} {path} is being written by another ncollapse process; wait for it to "
                                  "finish or choose another path") from None

    # ------------------------------------------------------------------ writes

    def _claimed_kind(self, path: Path) -> str:
        kind = self._claimed.get(path)
        if kind is None:
            raise RuntimeError(f"{path} was written without being claimed first")
        return kind

    def write_bytes(self, path, data: bytes) -> Path:
        """Write a claimed file atomically and record it."""
        path = Path(path)
        kind = self._claimed_kind(path)
        atomic_write_bytes(path, data)
        self._record(path, kind, hashlib.sha256(data).hexdigest())
        return path

    def write_text(self, path, text: str) -> Path:
        return self.write_bytes(path, text.encode("utf-8"))

    def write_json(self, path, obj) -> Path:
        return self.write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")

    def write_set(self, folder, files: dict[str, bytes], page: tuple[Path, bytes] | None = None) -> list[Path]:
        """Write ``files`` ({name: bytes}) as the claimed folder ``folder``, replacing its previous set as a whole.

        ``page`` = (claimed path, bytes) is the file the set belongs to (a report's HTML): it is written to a temp
        file first and renamed into place right after the set, so a failure (a full disk) leaves the old page with
        the old set, never one without the other."""
        folder = Path(folder)
        kind = self._claimed_kind(folder)
        page_kind = None if page is None else self._claimed_kind(Path(page[0]))
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".nc"))
        aside, page_tmp, writing, swapped = None, None, folder, False
        try:
            os.chmod(tmp, 0o755)
            for name, data in files.items():
                _write_synced(tmp / name, data)
            if page is not None:
                writing = Path(page[0])
                fd, page_tmp = tempfile.mkstemp(dir=writing.parent, prefix=".nc")
                os.close(fd)
                os.chmod(page_tmp, 0o644)
                _write_synced(Path(page_tmp), page[1])
            writing = folder
            if folder.exists() or folder.is_symlink():
                aside = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".nc"))
                os.rename(folder, aside / "old")
            os.rename(tmp, folder)
            swapped = True
            if page_tmp is not None:
                writing = Path(page[0])
                os.replace(page_tmp, page[0])
        except BaseException as exc:
            if swapped:  # the page could not follow its set: take the new set out again
                shutil.rmtree(folder, ignore_errors=True)
            if aside is not None and (aside / "old").exists() and not folder.exists():
                os.rename(aside / "old", folder)
            shutil.rmtree(tmp, ignore_errors=True)
            if page_tmp is not None and os.path.exists(page_tmp):
                os.unlink(page_tmp)
            if isinstance(exc, OSError) and exc.filename is None:  # a failed write() names no file: name it
                raise type(exc)(exc.errno, exc.strerror, str(writing)) from None
            raise
        finally:
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)
        self._record(folder, kind, None)
        if page is not None:
            self._record(Path(page[0]), page_kind, hashlib.sha256(page[1]).hexdigest())
        return [folder / name for name in files]

    def _record(self, path: Path, kind: str, sha256: str | None) -> None:
        folder = path.parent
        fd = self._locks[folder.resolve()]
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, _REGISTRY_BYTE)  # one registry writer at a time (short, blocking)
        try:
            registry = _read_registry(folder)
            registry[path.name] = {"kind": kind} if sha256 is None else {"kind": kind, "sha256": sha256}
            atomic_write_bytes(folder / REGISTRY, (json.dumps(registry, indent=1, sort_keys=True) + "\n").encode())
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, _REGISTRY_BYTE)
