"""ncollapse._io: atomic writes leave either the old or the new file, readable by others, and no temp files."""

import json
import os

import pytest

from ncollapse._io import atomic_write_bytes, atomic_write_json, dumps_line


def test_atomic_write_replaces_and_is_world_readable(tmp_path):
    path = tmp_path / "sub" / "out.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "out.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_nan_is_refused_in_json():
    with pytest.raises(ValueError):
        dumps_line({"x": float("nan")})
    with pytest.raises(ValueError):
        atomic_write_json("/nonexistent-never-written.json", {"x": float("inf")})
