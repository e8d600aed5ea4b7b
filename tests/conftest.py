"""Shared fixtures: the path of the real data beside the checkout, small synthetic feature sets."""

from __future__ import annotations

import importlib.util
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data sets of ../shared/data; CI always has them, elsewhere the test skips with a reason."""
    if not DATA.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{DATA} is missing under CI; the suite must not skip there")
        pytest.skip(f"real data not found at {DATA} (the checkout expects ../shared beside it)")
    return DATA


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small solver problems run faster on one intra-op thread (no thread hand-off per tiny op)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_features(counts, dim=12, spread=0.5, seed=0, mean_norm=3.0):
    """Gaussian class clusters around random means; returns float64 features, int64 labels, means."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(len(counts), dim))
    means *= mean_norm / np.linalg.norm(means, axis=1, keepdims=True)
    labels = np.repeat(np.arange(len(counts)), counts)
    rng.shuffle(labels)
    features = means[labels] + spread * rng.normal(size=(len(labels), dim))
    return features, labels, means


@pytest.fixture
def balanced():
    return make_features([30] * 6, seed=1)


@pytest.fixture
def longtailed():
    return make_features([200, 120, 60, 25, 12, 5], seed=2)


def file_contents(root) -> dict[str, bytes]:
    """Every file under ``root``, recursively (a run holds a tensorboard/ folder), by relative path."""
    root = Path(root)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def bench():
    """benchmarks/ncmc_cpu.py imported as a module (the NCMC page's protocol and assembly)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "ncmc_cpu.py"
    spec = importlib.util.spec_from_file_location("ncmc_cpu", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def interrupt_at(monkeypatch, loop_module, steps) -> None:
    """Deliver SIGINT to this process when ``loop_module``'s loop asks ``lr_at`` for one of the given global steps
    (the trainer's and the LM loop's resume tests)."""
    pending, real = set(steps), loop_module.lr_at

    def lr_at(step, *args):
        if step in pending:
            pending.discard(step)
            signal.raise_signal(signal.SIGINT)
        return real(step, *args)

    monkeypatch.setattr(loop_module, "lr_at", lr_at)
