"""Small shared I/O helpers: atomic writes, JSON output, and the OS errors the CLI turns into one line."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path


class DiskFullError(OSError):
    """A write ran out of space; the file it was replacing is unchanged."""


OS_ERRORS = {errno.EROFS: "the file system is read-only; choose a path on a writable one",
             errno.ENOSPC: "no space left on the device; free space or choose another place, then run again",
             errno.EDQUOT: "the disk quota is exceeded; free space or choose another place, then run again",
             errno.ENAMETOOLONG: "the name is too long for the file system; choose a shorter one",
             errno.EACCES: "permission denied; choose a path you can write to (or read, for an input)",
             errno.EPERM: "operation not permitted; choose another path",
             errno.EISDIR: "it is a folder, not a file; give a file path",
             errno.ENOTDIR: "a part of the path is a file, not a folder; fix the path",
             errno.EEXIST: "it already exists as something else; choose another path",
             errno.ENOENT: "no such file or folder (or it cannot be created there); check the path",
             errno.ELOOP: "too many symbolic links; fix the path",
             errno.EMLINK: "too many links; choose another folder"}


def describe_os_error(exc: OSError, where: str = "standard output") -> str:
    """One line for an OS error: the path (``where`` when the error names none), what happened, how to fix it."""
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    path = " -> ".join(map(str, paths)) if paths else where
    code = errno.errorcode.get(exc.errno, str(exc.errno))
    return f"{path}: {OS_ERRORS[exc.errno]} ({code})"


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder and ``os.replace``.

    The temp name is short (``.nc`` + 8 random characters), so any file name the OS accepts can be written.

    A full disk (ENOSPC, EDQUOT) raises ``DiskFullError`` saying that the previous file is kept.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".nc")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = f"the previous {path.name} is kept unchanged" if path.exists() else "nothing was written"
            raise DiskFullError(f"no space left on the device while writing {path} ({len(data) >> 20} MiB); {kept}; "
                                "free space and run again (a training run: --resume)") from None
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def dumps_line(obj) -> str:
    """One JSON object on one line; NaN is refused (convert with ``serialize.to_jsonable`` first)."""
    return json.dumps(obj, allow_nan=False)


def check_out_dir(path, flag: str = "--out") -> Path:
    """Refuse an output folder path that names an existing file (or lies under one); returns it as a Path."""
    path = Path(path)
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        what = "is an existing file" if blocker == path else f"lies under {blocker}, which is a file"
        raise ValueError(f"{flag} {path} {what}; give a folder path (it is created when missing)")
    return path


def check_in_file(path, flag: str) -> Path:
    """Refuse an input file path that is missing or names a folder, naming the option it came from."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{flag} {path}: no such file")
    if path.is_dir():
        hint = f" (did you mean {path / 'config.toml'}?)" if (path / "config.toml").is_file() else ""
        raise IsADirectoryError(f"{flag} {path} is a folder; give a TOML file{hint}")
    return path
