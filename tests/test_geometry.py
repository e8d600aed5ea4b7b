import math

import pytest
import torch

from ncollapse.geometry import (FIXED_FRAMES, center_angle_cos, class_aware_centers, dcube_vertices,
                                dorthoplex_vertices, fixed_frame, multicenter_frame, orthonormal_frame, simplex_etf)
from ncollapse.nn.build import HEADS
from ncollapse.nn.heads import FixedHead
from ncollapse.ufm.problem import FIXED, UFMProblem


@pytest.mark.parametrize("k,d,seed", [(2, 1, None), (5, 4, None), (10, 10, 3), (7, 32, 0)])
def test_simplex_etf_gram(k, d, seed):
    m = simplex_etf(k, d, seed=seed)
    assert m.shape == (k, d)
    expected = (k / (k - 1)) * (torch.eye(k, dtype=torch.float64) - 1.0 / k)
    torch.testing.assert_close(m @ m.T, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(m.sum(0), torch.zeros(d, dtype=torch.float64), atol=1e-12, rtol=0)


def test_simplex_etf_seeded_rotation_is_reproducible_and_different():
    assert torch.equal(simplex_etf(4, 9, seed=5), simplex_etf(4, 9, seed=5))
    assert not torch.allclose(simplex_etf(4, 9, seed=5), simplex_etf(4, 9, seed=6))


def test_simplex_etf_rejects_small_dim():
    with pytest.raises(ValueError, match="dim >= 9"):
        simplex_etf(10, 8)


def test_orthonormal_frame():
    w = orthonormal_frame(6, 10, seed=1)
    torch.testing.assert_close(w @ w.T, torch.eye(6, dtype=torch.float64), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="dim >= 6"):
        orthonormal_frame(6, 5)


def test_dcube_vertices_are_distinct_unit_cube_corners():
    v = dcube_vertices(10)
    assert v.shape == (10, 4)
    torch.testing.assert_close(v.abs(), torch.full_like(v, 0.5))
    assert len({tuple(r) for r in v.tolist()}) == 10
    with pytest.raises(ValueError, match="ceil"):
        dcube_vertices(10, dim=3)


def test_dorthoplex_vertices():
    v = dorthoplex_vertices(5, dim=6, seed=2)
    g = v @ v.T
    torch.testing.assert_close(torch.diagonal(g), torch.ones(5, dtype=torch.float64))
    assert abs(float(g[0, 1]) + 1.0) < 1e-12  # e_0 and -e_0
    assert abs(float(g[0, 2])) < 1e-12


def test_class_aware_centers_worked_example():
    assert class_aware_centers([1, 3, 3], 3) == [4, 4, 1]


def test_class_aware_centers_cifar10_lt():
    counts = [int(5000 * 0.01 ** (k / 9)) for k in range(10)]
    assert sum(counts) == 12406
    assert class_aware_centers(counts, 20) == [2, 3, 4, 5, 7, 11, 17, 28, 46, 77]


def test_class_aware_centers_sorted_order_maps_back():
    counts = [int(5000 * 0.01 ** (k / 9)) for k in range(10)]
    perm = [3, 0, 9, 1, 8, 2, 7, 4, 6, 5]
    f = class_aware_centers([counts[i] for i in perm], 20, order="sorted")
    assert f == [[2, 3, 4, 5, 7, 11, 17, 28, 46, 77][i] for i in perm]
    assert sum(f) == 200


@pytest.mark.parametrize("bad,err", [((-1,), ValueError), ((0,), ValueError), ((2.5,), TypeError)])
def test_class_aware_centers_bad_f(bad, err):
    with pytest.raises(err, match="f"):
        class_aware_centers([3, 2, 1], *bad)


def test_class_aware_centers_empty_counts():
    with pytest.raises(ValueError, match="empty"):
        class_aware_centers([], 3)


def test_multicenter_frame_orthonormal_and_angles():
    f, theta = [2, 3, 5], 0.2
    frame = multicenter_frame(20, f, theta, seed=1)
    k, total = len(f), sum(f)
    v = (frame.centers - math.sin(theta) * frame.classifier[frame.owner]) / math.cos(theta)
    basis = torch.cat([frame.classifier, v])
    torch.testing.assert_close(basis @ basis.T, torch.eye(total + k, dtype=torch.float64), atol=1e-12, rtol=0)
    g = frame.centers @ frame.centers.T
    same = frame.owner[:, None] == frame.owner[None, :]
    off = same & ~torch.eye(total, dtype=torch.bool)
    torch.testing.assert_close(g[off], torch.full_like(g[off], math.sin(theta) ** 2), atol=1e-12, rtol=0)
    torch.testing.assert_close(g[~same], torch.zeros_like(g[~same]), atol=1e-12, rtol=0)
    # ||w̄^(k)|| = cos α*_k = sqrt((cos²θ + f_k sin²θ)/f_k)
    torch.testing.assert_close(frame.mean_centers().norm(dim=1), center_angle_cos(f, theta), atol=1e-12, rtol=0)
    assert abs(float(center_angle_cos(2, 0.2)) - 0.721) < 1e-3  # ncmc.md §1 worked numbers


def test_multicenter_frame_bad_input():
    with pytest.raises(ValueError, match="width >= 12"):
        multicenter_frame(11, [3, 3, 3], 0.2)
    with pytest.raises(ValueError, match="theta"):
        multicenter_frame(30, [1, 1], 2.0)
    with pytest.raises(ValueError, match="at least one"):
        multicenter_frame(30, [1, 0], 0.2)


def test_fixed_frame_registry_is_shared_by_heads_and_the_ufm():
    assert set(FIXED_FRAMES) < set(HEADS) and set(FIXED_FRAMES) < set(FIXED)
    for name, build in FIXED_FRAMES.items():
        torch.testing.assert_close(fixed_frame(name, 4, 4, seed=2), build(4, 4, seed=2), atol=0, rtol=0)
        torch.testing.assert_close(FixedHead.from_geometry(name, 4, 4, seed=2).weight.double(), build(4, 4, seed=2),
                                   atol=1e-6, rtol=0)
        problem = UFMProblem(loss="ce", counts=(2,) * 4, dim=4, fixed_classifier=name, seed=2)
        torch.testing.assert_close(problem.fixed_weights(), build(4, 4, seed=2), atol=0, rtol=0)
    with pytest.raises(ValueError, match="fixed frame == 'etff', must be one of etf, .*did you mean 'etf'"):
        fixed_frame("etff", 4, 4)
