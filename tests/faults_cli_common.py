"""Shared pieces of the fault-injection tests (test_faults_writers.py, test_faults_args.py): checksums of a
folder before and after a command, the CLI's exit status and stderr lines, and real tmpfs mounts (root only)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from ncollapse.cli import main
from ncollapse.io_safe import LOCK, REGISTRY
from ncollapse.train.config import config_from_dict, dumps_toml


def snapshot(root) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> hex digest), the writer's own bookkeeping aside."""
    root = Path(root)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in (REGISTRY, LOCK)}


def leftovers(folder) -> list[str]:
    """Temp files or folders of the writers (``.nc`` + random characters) left in ``folder``."""
    return [p.name for p in Path(folder).iterdir() if p.name.startswith(".nc") and p.name not in (REGISTRY, LOCK)]


def assert_unchanged(before: dict[str, str], root) -> None:
    """Every file of ``before`` is still there with the same content."""
    after = snapshot(root)
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    assert not changed, f"files changed or lost: {changed}"


def cli(capsys, *args) -> tuple[int, str, list[str]]:
    """(exit status, stdout, stderr lines) of ``ncollapse ARGS`` run in this process."""
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err.strip().splitlines()


def refused(capsys, root, args, *words) -> str:
    """Run ``args``; assert exit 2, exactly one stderr line containing ``words``, and no file under ``root``
    changed; returns the line."""
    before = snapshot(root)
    rc, _, err = cli(capsys, *args)
    assert rc == 2 and len(err) == 1, (rc, err)
    for word in words:
        assert word in err[0], (word, err[0])
    assert_unchanged(before, root)
    return err[0]


def table_run(root, name, best=0.5, seed=0, **summary) -> Path:
    """A finished run directory with what ``ncollapse table`` reads (config.toml, run.json, summary.json, metrics)."""
    d = Path(root) / name
    d.mkdir(parents=True)
    cfg = config_from_dict({"data": {"name": "mnist", "imbalance": 0.01}, "model": {"name": "lenet"},
                            "train": {"seed": seed}, "loss": {"name": "ce"}})
    (d / "config.toml").write_text(dumps_toml(cfg))
    (d / "run.json").write_text(json.dumps({"seed": seed}))
    (d / "summary.json").write_text(json.dumps({"best_test_acc": best, "final_test_acc": best, **summary}))
    (d / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "test_acc": best}) + "\n")
    return d


@contextmanager
def tmpfs(path: Path, size: str = "1m"):
    """A real tmpfs of ``size`` mounted at ``path`` (root only: skipped with the reason otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs the suite as root)")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=755", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount_read_only(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
