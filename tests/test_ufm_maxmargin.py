"""Max-margin program of the UFM (Ji et al. 2022): closed form, the comparison measures, the missing-extra message."""

import math
import sys

import numpy as np
import pytest
import torch

from ncollapse import _extras
from ncollapse.ufm.maxmargin import compare_direction, max_margin


@pytest.fixture(scope="module")
def balanced():
    pytest.importorskip("cvxpy", reason="the theory extra is not installed")
    return max_margin((3, 3, 3))


def test_balanced_optimum_is_the_centred_label_matrix(balanced):
    """Z_c = I − 11ᵀ/K and ‖Z*‖_* = (K − 1)√n (docs/ufm.md, "Max-margin limit")."""
    assert balanced["objective"] == pytest.approx(2 * math.sqrt(3), rel=1e-6)
    assert np.allclose(balanced["class_logits"], np.eye(3) - 1 / 3, atol=1e-5)
    assert balanced["logits"].shape == (3, 9)


def test_the_optimum_itself_scores_one_and_a_rotation_does_not_matter(balanced):
    """(W, H) = c · [U S^½; V S^½] Q for any rotation Q and scale c has cosines 1 and margin ratio 1."""
    u, s, vt = np.linalg.svd(balanced["logits"])
    root = np.sqrt(s[:2])
    x = np.concatenate([u[:, :2] * root, vt[:2].T * root])
    x = np.pad(x, ((0, 0), (0, 2)))
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))
    x = torch.from_numpy(3.0 * x @ q)
    labels = torch.arange(3).repeat_interleave(3)
    out = compare_direction(x[:3], x[3:], labels, balanced)
    assert out == pytest.approx({"cos_logits": 1.0, "cos_params": 1.0, "margin_ratio": 1.0}, rel=1e-5)
    noisy = compare_direction(x[:3], x[3:] + 0.3 * torch.randn(9, 4, dtype=torch.float64), labels, balanced)
    assert max(noisy.values()) < 1.0


def test_too_small_dimension_is_a_clear_error(balanced):
    labels = torch.arange(3).repeat_interleave(3)
    with pytest.raises(ValueError, match="dim == 1 is below rank"):
        compare_direction(torch.ones(3, 1), torch.ones(9, 1), labels, balanced)


def test_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "cvxpy", None)  # import cvxpy now raises ImportError
    with pytest.raises(_extras.MissingExtraError, match=r"max-margin program needs cvxpy .*ncollapse\[theory\]"):
        max_margin((2, 2))
