"""configs/ncmc: every shipped config loads with the trainer's loader, builds its model head and loss, follows the
paper's protocol, and fills exactly the runnable cells of the table layouts ncmc-table1..7."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ncollapse import geometry
from ncollapse.data.longtail import longtail_counts
from ncollapse.losses import mixup_loss
from ncollapse.nn import build as nn_build
from ncollapse.report import tables
from ncollapse.train import load_config
from ncollapse.train.build import build_loss_for, build_model_for

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "ncmc").glob("*.toml"))
# Training-split facts of the literature protocol (test-only): classes, channels, image size, n_max of the profile.
SPLITS = {"cifar10": (10, 3, 32, (5000,)), "cifar100": (100, 3, 32, (500,)), "stl10": (10, 3, 96, (500,)),
          "svhn": (10, 3, 32, (73257 / 10, 531131 / 10))}  # SVHN-LT: train and extra profiles, concatenated


def _counts(name: str, tau: float) -> list[int]:
    k, _, _, n_maxes = SPLITS[name]
    parts = [longtail_counts(n, k, tau) if tau < 1 else [int(n)] * k for n in n_maxes]
    return [sum(c) for c in zip(*parts)]


class _Width(nn.Module):
    """Stand-in backbone with the real backbone's feature width (building ResNet-50 118 times is too slow)."""

    def __init__(self, out_dim: int):
        super().__init__()
        self.out_dim = out_dim


@pytest.fixture(scope="module")
def light_models():
    """MODELS with resnet50/densenet as width-only stand-ins; the real width is measured once per option set."""
    patched = dict(nn_build.MODELS)
    for name in ("resnet50", "densenet"):
        real = nn_build.MODELS[name]

        @functools.lru_cache(maxsize=None)
        def width(c, opts, real=real):
            return real(c, 32, **dict(opts)).out_dim

        @functools.wraps(real)
        def make(c, s, real=real, width=width, **opts):
            return _Width(width(c, tuple(sorted(opts.items()))))

        patched[name] = make
    return patched


def test_there_are_configs():
    assert len(CONFIGS) >= 100


def test_every_config_builds_head_and_loss(light_models, monkeypatch):
    monkeypatch.setattr(nn_build, "MODELS", light_models)
    # the canonical basis instead of a QR of a random (d, F+K) matrix: the frames' geometry is tested in
    # test_geometry; here only the shapes, widths and the loss construction matter (a 2112 x 2100 QR per config is slow)
    monkeypatch.setattr(geometry, "orthonormal_basis",
                        lambda dim, rank, seed=None: torch.eye(dim, rank, dtype=torch.float64))
    gen = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only contend
    try:
        _build_all(gen)
    finally:
        torch.set_num_threads(threads)


def _build_all(gen):
    for path in CONFIGS:
        cfg = load_config(path)
        k, c, s, _ = SPLITS[cfg.data.name]
        counts = _counts(cfg.data.name, cfg.data.imbalance)
        fake = SimpleNamespace(class_counts=lambda counts=counts: counts, num_classes=k,
                               images=torch.zeros(1, c, s, s, dtype=torch.uint8))
        model = build_model_for(cfg, fake)
        loss_fn = build_loss_for(cfg, model, counts)
        dim = cfg.model.feature_dim or model.backbone.out_dim
        h = torch.randn(8, dim, generator=gen)
        if cfg.model.normalize_features:
            h = torch.nn.functional.normalize(h, dim=1)
        model.train()
        with torch.no_grad():
            features, logits = model.head(h)
        y = torch.arange(8) % k
        with torch.no_grad():
            loss = loss_fn(features, logits, y) if cfg.train.mixup_alpha == 0 else \
                mixup_loss(loss_fn, features, logits, y, y.flip(0), 0.3)
        assert logits.shape == (8, k) and torch.isfinite(loss), path.name
        if cfg.model.head == "multicenter":
            f_k = model.head.centers_per_class
            assert sum(f_k) == cfg.model.f * k, path.name
            assert cfg.model.feature_dim >= (cfg.model.f + 1) * k, path.name
            assert cfg.model.feature_dim >= model.backbone.out_dim, path.name
            if cfg.model.centers == "class_aware" and cfg.data.imbalance < 1:
                assert f_k[0] < f_k[-1], path.name  # minority classes get more centers


def test_protocol_of_ncmc_section6():
    for path in CONFIGS:
        cfg = load_config(path)
        assert (cfg.train.epochs, cfg.train.batch_size, cfg.optim.name, cfg.optim.lr, cfg.optim.momentum,
                cfg.optim.weight_decay) == (200, 128, "sgd", 0.1, 0.9, 2e-4), path.name
        assert (cfg.schedule.name, cfg.schedule.milestones, cfg.schedule.warmup_epochs, cfg.schedule.gamma) == \
            ("multistep", (160, 180), 5.0, 0.1), path.name
        assert cfg.train.mixup_alpha in (0.0, 1.0)
        if cfg.loss.name == "ncmc_cosine":
            assert cfg.loss.options == {"lam": 6e-4, "weighted": True}
        assert cfg.model.normalize_features == (cfg.model.head == "multicenter" and
                                                (cfg.data.name in ("svhn", "stl10") or cfg.model.name == "densenet"))
        if cfg.model.name == "densenet":
            assert cfg.model.options["growth_rate"] == (32 if cfg.data.name in ("svhn", "stl10") else 12)


def test_configs_fill_exactly_the_runnable_cells():
    attrs = {p.name: tables.run_attributes(load_config(p).to_dict()) for p in CONFIGS}
    used = set()
    for n in range(1, 8):
        layout = tables.LAYOUTS[f"ncmc-table{n}"]
        for row in layout.rows:
            for col in layout.columns:
                if row.note or col.note:
                    continue
                want = {**col.match, **row.match}
                hits = [name for name, a in attrs.items() if tables._matches(a, want)]
                assert len(hits) == 1, (layout.name, row.label, col.label, hits)
                used.update(hits)
    assert used == set(attrs)  # no config outside the tables
    # Table 1 / 3 / 4 / 7 CAL: f = 20, theta = 0.2; Table 2 / 5 CAL: f = 10 (App. F.2); Table 6 grid
    t6 = {(a["f"], round(a["theta"], 3)) for a in attrs.values() if a["tau"] == 0.005 and a["dataset"] == "cifar100"
          and a["method"] == "CAL" and a["mixup"] and a["model"] == "resnet50"}
    assert t6 == {(f, round(t, 3)) for f in (5, 10, 20) for t in (0.0, 0.2, 0.5, math.pi / 4, math.pi / 2)}
    assert attrs["cifar10_lt_0.01_cal_mixup_resnet50.toml"]["f"] == 20
    assert attrs["cifar10_lt_0.01_cal_mixup_f10_densenet150.toml"]["f"] == 10
