"""One resource guard: memory estimated from user-given sizes before allocating, and bounded input files.

``check_memory(nbytes, what, fix)`` compares an estimate with the memory this process can still get and
refuses with one ``ValueError`` line naming the size asked for, the estimate and the memory available. The
available memory is the smallest of: the kernel's ``MemAvailable`` (or the physical memory where there is no
``/proc``), the cgroup v2 limit less its current use, and the address-space / data limits
(``ulimit -v``, ``RLIMIT_AS``, ``RLIMIT_DATA``) less what this process already maps. On a CUDA device the
free device memory is used instead. Estimates count the arrays that grow with the sizes given (calibrated on
measured peaks where the caller says so).

Input files given on the command line (configs, grids, matrices, data files) go through ``check_input_file``:
FIFOs, character and block devices and sockets are refused (``--grid /dev/zero`` would read forever), and
``read_capped`` reads at most a stated number of bytes (``JSON_FILE_LIMIT`` for a run's JSON files;
``read_lines_capped`` streams a JSON-lines file with the same cap per line). Compressed data is decompressed in a stream and
capped at the size its header implies (``data.formats``).
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

__all__ = ["available_memory", "check_memory", "format_bytes", "check_input_file", "read_capped",
           "read_lines_capped", "read_npy_header", "check_npy_header", "read_npy", "SIDE_FILE_LIMIT", "JSON_FILE_LIMIT"]

SIDE_FILE_LIMIT = 16 << 20  #: largest TOML config / grid file read (16 MiB; real ones are a few KiB)
JSON_FILE_LIMIT = 64 << 20  #: largest run.json / summary.json / results.json, or metrics.jsonl line, read (64 MiB)


def format_bytes(nbytes: float) -> str:
    """``nbytes`` in binary units with three significant digits, e.g. ``"3.2 GiB"``."""
    for unit, shift in (("PiB", 50), ("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 1 << shift:
            value = nbytes / (1 << shift)
            return f"{value:.3g} {unit}" if value < 1000 else f"{value:.0f} {unit}"
    return f"{int(nbytes)} B"


def _proc_kib(path: str, key: str) -> int | None:
    """Bytes of the ``key: N kB`` line of a /proc file (``/proc/meminfo``, ``/proc/self/status``); None if absent."""
    try:
        with open(path, encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _host_memory() -> tuple[int, str] | None:
    """(bytes, what) of the host memory free for use: MemAvailable, else the physical memory."""
    free = _proc_kib("/proc/meminfo", "MemAvailable")
    if free is not None:
        return free, "available memory"
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "physical memory"
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows)
        return None


def _cgroup_memory() -> tuple[int, str] | None:
    base = Path("/sys/fs/cgroup")
    try:
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(int(limit) - int((base / "memory.current").read_text()), 0), "the cgroup's memory limit"
    except (OSError, ValueError):
        return None


def _rlimit_memory() -> list[tuple[int, str]]:
    """Room left under RLIMIT_AS / RLIMIT_DATA: the soft limit less this process's current size."""
    try:
        import resource
    except ImportError:  # Windows
        return []
    found = []
    for name, status_key in (("RLIMIT_AS", "VmSize"), ("RLIMIT_DATA", "VmData")):
        soft = resource.getrlimit(getattr(resource, name))[0]
        if soft == resource.RLIM_INFINITY:
            continue
        used = _proc_kib("/proc/self/status", status_key) or 0
        found.append((max(soft - used, 0), f"the {name} limit (ulimit)"))
    return found


def available_memory(device=None) -> tuple[int, str] | None:
    """(bytes, what) of the memory an allocation on ``device`` (default CPU) can still get; None when unknown."""
    kind = "cpu" if device is None else str(device).split(":")[0]
    if kind == "cuda":
        import torch

        if not torch.cuda.is_available():  # the device check names this problem
            return None
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return free, f"free memory on {device}"
    if kind != "cpu":  # MPS and others report no free memory: let the allocator decide
        return None
    candidates = [c for c in (_host_memory(), _cgroup_memory(), *_rlimit_memory()) if c is not None]
    return min(candidates, default=None)


def check_memory(nbytes: float, what: str, fix: str, device=None) -> None:
    """Refuse an allocation of about ``nbytes`` that does not fit (one line: ``what`` needs X, Y available; fix).

    ``what`` names the user-given size (e.g. "ufm --certify with K = 300 classes") and ``fix`` says how to
    lower it. Call it before allocating, from the sizes alone."""
    if not math.isfinite(nbytes):
        raise ValueError(f"{what}: the memory estimate is not a finite size ({nbytes}); {fix}")
    if nbytes <= 0:  # negative sizes: the caller's own validation names them
        return
    room = available_memory(device)
    if room is not None and nbytes > room[0]:
        raise ValueError(f"{what} needs about {format_bytes(nbytes)} of memory, more than the "
                         f"{format_bytes(room[0])} of {room[1]}; {fix}")


def _named(flag: str, path: Path) -> str:
    return f"{flag} {path}" if flag else str(path)


def check_input_file(path, flag: str) -> Path:
    """``path`` as a Path when it names an existing regular file; a folder, a FIFO, a device or a socket is
    refused naming ``flag`` (the option or role it came from; empty: the path alone names it)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{_named(flag, path)}: no such file") from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{_named(flag, path)} is a folder; give a file")
    if not stat.S_ISREG(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
                else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file")
        raise ValueError(f"{_named(flag, path)} is {kind}, not a regular file; save the data to a file and pass that")
    return path


def read_capped(path, limit: int, flag: str, hint: str = "") -> bytes:
    """The bytes of the regular file ``path``, refused when larger than ``limit`` (checked before reading, and
    again while reading in case the file grows)."""
    path = check_input_file(path, flag)
    size = path.stat().st_size
    if size <= limit:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
        size = max(size, len(data))
    if size > limit:
        raise ValueError(f"{_named(flag, path)} holds {size} bytes, more than the {limit} ({format_bytes(limit)}) "
                         f"such a file can hold{hint}; check that this is the file you meant")
    return data


def read_lines_capped(path, limit: int, flag: str = ""):
    """An iterator of (line number, text or None) over the lines of the regular file ``path`` (checked now, read
    as it is consumed); a line longer than ``limit`` bytes is read past in blocks and given as None (the caller
    skips it), never held whole."""
    return _capped_lines(check_input_file(path, flag), limit)


def _capped_lines(path: Path, limit: int):
    with path.open("rb") as fh:
        number = 0
        while line := fh.readline(limit + 1):
            number += 1
            if len(line) > limit and not line.endswith(b"\n"):
                while (rest := fh.readline(1 << 20)) and not rest.endswith(b"\n"):
                    pass
                yield number, None
            else:
                yield number, line.decode("utf-8", errors="replace")


def read_npy_header(fp) -> tuple[tuple[int, ...], bool, object]:
    """(shape, fortran_order, dtype) of the ``.npy`` stream ``fp`` (format 1.0 or 2.0), left after the header."""
    import numpy as np

    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fp)
    raise ValueError(f"unsupported .npy format version {version}")


def check_npy_header(shape, dtype, data_bytes: int, name: str) -> None:
    """Refuse an ``.npy`` header whose shape (negative sizes) or dtype (object, empty) is invalid, or whose
    size ``prod(shape) · itemsize`` differs from the ``data_bytes`` that follow the header (NEP 1 format)."""
    if any(n < 0 for n in shape) or dtype.hasobject or dtype.itemsize == 0:
        raise ValueError(f"{name} declares shape {tuple(shape)} of dtype {dtype}; expected non-negative sizes of "
                         "a numeric dtype")
    need = math.prod(shape) * dtype.itemsize
    if need != data_bytes:
        raise ValueError(f"{name} declares shape {tuple(shape)} of dtype {dtype} ({need} bytes) but holds "
                         f"{data_bytes} bytes of data; the file is corrupt")


def read_npy(path, limit: int, flag: str, hint: str = ""):
    """A numeric ``.npy`` array from a regular file of at most ``limit`` bytes, its header checked against the
    bytes that follow it before any array is made."""
    import io

    import numpy as np

    data = read_capped(path, limit, flag, hint)
    fp = io.BytesIO(data)
    try:
        shape, fortran, dtype = read_npy_header(fp)
    except ValueError as exc:
        raise ValueError(f"{flag} {path}: not a readable .npy file ({exc})") from None
    check_npy_header(shape, dtype, len(data) - fp.tell(), f"{flag} {path}")
    array = np.frombuffer(data, dtype=dtype, offset=fp.tell())
    return array.reshape(shape, order="F" if fortran else "C").copy()  # writable, like np.load's
