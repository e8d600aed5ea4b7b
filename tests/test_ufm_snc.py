"""Strong neural collapse errors (Mixon et al. 2020): a hand-computed configuration and the small-init flow."""

import math

import pytest
import torch

from ncollapse.ufm.snc import snc_errors


def _snc_point(k=3, n=2):
    """W = n^{1/4} P (so W Wᵀ = √n P because P is a symmetric projection), h_{k,i} = w_k/√n, b = 1/K."""
    p = torch.eye(k, dtype=torch.float64) - 1 / k
    w = n ** 0.25 * p
    labels = torch.arange(k).repeat_interleave(n)
    return w, w[labels] / math.sqrt(n), labels, torch.full((k,), 1 / k, dtype=torch.float64)


def test_the_snc_point_has_zero_errors():
    w, h, labels, b = _snc_point()
    assert max(snc_errors(w, h, labels, b).values()) < 1e-15


def test_errors_of_a_scaled_classifier_and_a_zero_bias_by_hand():
    """W → cW: gram error |c² − 1|; H kept at W's target: ‖(1 − c)W‖/‖cW‖ = |1 − c|/c; b = 0: √K·‖1/K‖ = 1."""
    w, h, labels, b = _snc_point(k=4, n=3)
    c = 1.5
    errors = snc_errors(c * w, h, labels, torch.zeros_like(b))
    assert errors["snc_gram"] == pytest.approx(c * c - 1, rel=1e-12)
    assert errors["snc_feature"] == pytest.approx((c - 1) / c, rel=1e-12)
    assert errors["snc_bias"] == pytest.approx(1.0, rel=1e-12)


def test_bad_inputs_are_clear_errors():
    w, h, labels, b = _snc_point()
    with pytest.raises(ValueError, match="with a bias"):
        snc_errors(w, h, labels, None)
    with pytest.raises(ValueError, match="equal size; got counts"):
        snc_errors(w, h[:-1], labels[:-1], b)
    with pytest.raises(ValueError, match="shapes do not fit"):
        snc_errors(w, h[:, :2], labels, b)
