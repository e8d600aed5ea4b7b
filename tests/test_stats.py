import numpy as np
import pytest
import torch

from ncollapse import ClassStats
from ncollapse.stats import NCMCStats
from ncollapse.geometry import center_angle_cos, multicenter_frame

from conftest import make_features


def _scatter_reference(x, y, k):
    x = np.asarray(x, dtype=np.float64)
    means = np.stack([x[y == c].mean(0) for c in range(k)])
    centred = x - means[y]
    return means, centred.T @ centred, np.array([np.sum(centred[y == c] ** 2) for c in range(k)])


def _whole(x, y, k, **kw):
    s = ClassStats(k, x.shape[1], **kw)
    s.update(torch.from_numpy(x), torch.from_numpy(y))
    return s


@pytest.mark.parametrize("batch", [1, 7, 1024])
def test_streaming_equals_one_batch(longtailed, batch):
    x, y, _ = longtailed
    whole = _whole(x, y, 6)
    s = ClassStats(6, x.shape[1])
    for i in range(0, len(y), batch):
        s.update(torch.from_numpy(x[i:i + batch]), torch.from_numpy(y[i:i + batch]))
    assert torch.equal(s.counts, whole.counts)
    torch.testing.assert_close(s.means, whole.means, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(s.scatter, whole.scatter, atol=1e-10, rtol=1e-11)
    torch.testing.assert_close(s.sq_dev, whole.sq_dev, atol=1e-10, rtol=1e-11)


def test_matches_float64_reference(longtailed):
    x, y, _ = longtailed
    s = _whole(x, y, 6)
    means, scatter, sq_dev = _scatter_reference(x, y, 6)
    np.testing.assert_allclose(s.means.numpy(), means, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(s.scatter.numpy(), scatter, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(s.sq_dev.numpy(), sq_dev, rtol=1e-12)


def test_reading_the_state_mid_stream_changes_nothing(longtailed):
    """Reads fold the open window in (one correction); later batches open a new window around the running
    means. Reading after every few batches must give the float64 reference, as must never reading."""
    x, y, _ = longtailed
    means, scatter, sq_dev = _scatter_reference(x, y, 6)
    for every in (1, 3, None):
        s = ClassStats(6, x.shape[1], per_class_cov=True)
        for step, i in enumerate(range(0, len(y), 16)):
            s.update(torch.from_numpy(x[i:i + 16]), torch.from_numpy(y[i:i + 16]))
            if every and step % every == 0:
                assert int(s.counts.sum()) == min(i + 16, len(y))
        np.testing.assert_allclose(s.means.numpy(), means, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(s.scatter.numpy(), scatter, rtol=1e-11, atol=1e-11)
        np.testing.assert_allclose(s.sq_dev.numpy(), sq_dev, rtol=1e-12)
        np.testing.assert_allclose(s.class_scatter.sum(0).numpy(), scatter, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("dim", [1, 3, 5, 13])
def test_block_triangular_scatter_is_whole_and_symmetric(dim):
    """A batch computes only the block upper triangle of zᵀz; every read sees the whole, exactly symmetric
    scatter, also for widths that do not split into four equal blocks."""
    x, y, _ = make_features([25, 15, 9], dim=dim, seed=dim)
    _, scatter, _ = _scatter_reference(x, y, 3)
    s = ClassStats(3, dim)
    for i in range(0, len(y), 10):
        s.update(torch.from_numpy(x[i:i + 10]).float(), torch.from_numpy(y[i:i + 10]))
        if i == 20:
            assert torch.equal(s.scatter, s.scatter.T)
    assert torch.equal(s.scatter, s.scatter.T)
    np.testing.assert_allclose(s.scatter.numpy(), scatter, rtol=1e-5, atol=1e-5 * np.abs(scatter).max())


def test_changing_input_dtype_inside_a_window():
    """A shift is exact only in the dtype it was rounded to: a batch of another dtype folds the window in
    first, so float64, float32 and bfloat16 batches mixed in one stream give the reference of the inputs
    as the GEMMs saw them. Means of norm ~1e4 with unit spread: a float64 shift used in float32 would move
    the means by ~1e-3."""
    rng = np.random.default_rng(5)
    y = np.tile(np.arange(3), 30)
    x = 1e4 + rng.normal(size=(3, 8))[y] * 10 + rng.normal(size=(90, 8))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    parts = [xt[:30], xt[30:60].float(), xt[60:].to(torch.bfloat16)]
    s = ClassStats(3, 8)
    for part, i in zip(parts, (0, 30, 60)):
        s.update(part, yt[i:i + len(part)])
    seen = torch.cat([part.double() for part in parts]).numpy()
    means, scatter, sq_dev = _scatter_reference(seen, y, 3)
    np.testing.assert_allclose(s.means.numpy(), means, rtol=0, atol=1e-5)
    np.testing.assert_allclose(s.scatter.numpy(), scatter, rtol=1e-5, atol=1e-5 * np.abs(scatter).max())
    np.testing.assert_allclose(s.sq_dev.numpy(), sq_dev, rtol=1e-5)


def test_merge_of_shards_equals_whole(longtailed):
    x, y, _ = longtailed
    whole = _whole(x, y, 6, per_class_cov=True)
    parts = [ClassStats(6, x.shape[1], per_class_cov=True) for _ in range(3)]
    for i, part in enumerate(parts):
        part.update(torch.from_numpy(x[i::3]), torch.from_numpy(y[i::3]))
    merged = parts[0].merge(parts[1]).merge(parts[2])
    assert torch.equal(merged.counts, whole.counts)
    torch.testing.assert_close(merged.scatter, whole.scatter, atol=1e-10, rtol=1e-11)
    torch.testing.assert_close(merged.class_scatter, whole.class_scatter, atol=1e-10, rtol=1e-11)
    torch.testing.assert_close(merged.class_scatter.sum(0), whole.scatter, atol=1e-10, rtol=1e-11)


def _near_collapsed():
    """Within-class std 1e-4 around means of norm 10, float32 input."""
    rng = np.random.default_rng(0)
    k, d, n = 5, 16, 400
    means = rng.normal(size=(k, d))
    means *= 10 / np.linalg.norm(means, axis=1, keepdims=True)
    y = np.repeat(np.arange(k), n)
    return (means[y] + 1e-4 * rng.normal(size=(k * n, d))).astype(np.float32), y


@pytest.mark.parametrize("precision,tol", [("float64", 1e-9), ("auto", 2e-6)])
def test_near_collapsed_features_keep_precision(precision, tol):
    """float64 path: 1e-9 of the float64 reference; float32 GEMMs on shifted data: a few float32 ulps of the
    scatter (the docstring's argument), still orders of magnitude better than the raw-moment formula."""
    x32, y = _near_collapsed()
    s = ClassStats(5, 16, precision=precision)
    for i in range(0, len(y), 64):
        s.update(torch.from_numpy(x32[i:i + 64]), torch.from_numpy(y[i:i + 64]))
    _, scatter, sq_dev = _scatter_reference(x32.astype(np.float64), y, 5)
    np.testing.assert_allclose(s.scatter.numpy(), scatter, rtol=tol, atol=tol * np.abs(scatter).max())
    np.testing.assert_allclose(s.sq_dev.numpy(), sq_dev, rtol=tol)
    raw = x32.T.astype(np.float32) @ x32 - sum(400 * np.outer(m, m) for m in s.means.numpy()).astype(np.float32)
    assert np.abs(raw - scatter).max() > 100 * np.abs(s.scatter.numpy() - scatter).max()


def _minority_fixture():
    """Ten classes, float32 features; the five minority means lie within 1e-3 of each other."""
    rng = np.random.default_rng(0)
    k, d = 10, 32
    means = rng.normal(size=(k, d))
    means *= 10 / np.linalg.norm(means, axis=1, keepdims=True)
    means[5:] = means[5] + 1e-3 / np.sqrt(d) * rng.normal(size=(5, d))
    y = np.repeat(np.arange(k), [200] * 5 + [20] * 5)
    rng.shuffle(y)
    return (means[y] + 4e-4 * rng.normal(size=(len(y), d))).astype(np.float32), y


def test_minority_fixture_keeps_the_float64_answer():
    from ncollapse import measure
    from nc_reference import reference

    x, y = _minority_fixture()
    want = reference(x.astype(np.float64), y)["nc1"]
    for precision in ("auto", "float64"):
        s = ClassStats(10, 32, precision=precision)
        for i in range(0, len(y), 128):
            s.update(torch.from_numpy(x[i:i + 128]), torch.from_numpy(y[i:i + 128]))
        out = measure(s)
        assert out["rank"] == 9, precision
        assert out["nc1"] == pytest.approx(want, rel=1e-6), precision


def test_half_precision_input_runs_float32_gemms_float64_state():
    x, y, _ = make_features([40, 30, 20], dim=8, seed=3)
    ref = _whole(x, y, 3)
    s = _whole(x.astype(np.float32), y, 3)
    t = ClassStats(3, 8)
    t.update(torch.from_numpy(x).to(torch.bfloat16), torch.from_numpy(y))
    assert s.scatter.dtype == t.scatter.dtype == torch.float64
    torch.testing.assert_close(s.scatter, ref.scatter, rtol=1e-5, atol=1e-5)
    xb = torch.from_numpy(x).to(torch.bfloat16).double().numpy()
    _, scatter, _ = _scatter_reference(xb, y, 3)
    np.testing.assert_allclose(t.scatter.numpy(), scatter, rtol=1e-5, atol=1e-5)


def test_state_dict_roundtrip(balanced):
    x, y, _ = balanced
    s = _whole(x, y, 6)
    t = ClassStats(6, x.shape[1])
    t.load_state_dict(s.state_dict())
    torch.testing.assert_close(t.scatter, s.scatter)
    assert torch.equal(t.counts, s.counts)
    with pytest.raises(ValueError, match="expected"):
        ClassStats(5, x.shape[1]).load_state_dict(s.state_dict())


def test_from_state_dict_rebuilds_sizes_and_options(balanced):
    x, y, _ = balanced
    s = ClassStats.from_features(x, y, per_class_cov=True, rare_below=4)
    t = ClassStats.from_state_dict(s.state_dict())
    assert (t.num_classes, t.dim, t.per_class_cov, t.rare_below) == (6, x.shape[1], True, 4)
    assert torch.equal(t.rare_samples, s.rare_samples) and torch.equal(t.class_scatter, s.class_scatter)
    with pytest.raises(ValueError, match="not a ClassStats.state_dict"):
        ClassStats.from_state_dict({"counts": s.counts})


def test_state_dict_saved_before_rare_below_loads(balanced):
    """nc_state.pt files of earlier runs have no 'rare_below': they kept no samples and load as rare_below = 1."""
    x, y, _ = balanced
    old = {k: v for k, v in _whole(x, y, 6).state_dict().items() if k not in ("rare_below", "rare_samples")}
    t = ClassStats(6, x.shape[1])
    t.load_state_dict(old)
    assert torch.equal(t.scatter, old["scatter"]) and t.rare_samples is None
    with pytest.raises(ValueError, match="missing keys: \\['rare_samples'\\]"):
        ClassStats(6, x.shape[1], rare_below=3).load_state_dict(old)


def test_update_bad_input():
    s = ClassStats(3, 4)
    with pytest.raises(ValueError, match="2-D"):
        s.update(torch.zeros(2, 4, 1), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="outside"):
        s.update(torch.zeros(2, 4), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="inconsistent"):
        s.update(torch.zeros(2, 4), torch.tensor([0]))
    with pytest.raises(ValueError, match="NaN"):
        s.update(torch.tensor([[0.0, float("nan"), 0, 0]]), torch.tensor([1]))
    with pytest.raises(ValueError, match="dim=4"):
        s.update(torch.zeros(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="integers"):
        s.update(torch.zeros(2, 4), torch.tensor([0.5, 1.0]))


def test_float32_accumulation_is_allowed():
    x, y, _ = make_features([10, 10], dim=3)
    s = ClassStats(2, 3, dtype=torch.float32)
    s.update(torch.from_numpy(x).float(), torch.from_numpy(y))
    assert s.scatter.dtype == torch.float32
    assert s.finalize().scatter.dtype == torch.float64


def test_ncmc_stats_at_exact_collapse():
    f, theta = [2, 3, 4], 0.2
    frame = multicenter_frame(20, f, theta, seed=0)
    y = torch.tensor([0, 1, 2, 2, 1, 0, 0])
    h = 5.0 * frame.mean_centers()[y]
    acc = NCMCStats(frame)
    acc.update(h[:3], y[:3])
    acc.update(h[3:], y[3:])
    from ncollapse.metrics import measure_ncmc

    out = measure_ncmc(acc)
    assert out["ncmc_collapse_mean"] < 1e-24 and out["ncmc_collapse_std"] < 1e-12
    # at NCMC the variability of class k is 1 − cos ρ*_k, cos ρ*_k = sin θ / cos α*_k (ncmc.md §1)
    cos_rho = np.sin(theta) / center_angle_cos(f, theta).numpy()
    assert abs(out["ncmc_variability"] - np.mean(1 - cos_rho[y.numpy()])) < 1e-12


class _MatmulDtypes(torch.overrides.TorchFunctionMode):
    """Records the dtype of every matrix product run inside the block."""

    def __init__(self):
        super().__init__()
        self.dtypes = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in ("matmul", "__matmul__", "mm", "addmm", "bmm"):
            self.dtypes.append(args[0].dtype)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("precision,want", [("auto", {torch.float32}), ("float64", {torch.float64})])
def test_gemms_run_in_the_features_precision(precision, want):
    x, y, _ = make_features([20, 15, 10], dim=6, seed=8)
    s = ClassStats(3, 6, per_class_cov=True, precision=precision)
    s.update(torch.from_numpy(x[:20]).float(), torch.from_numpy(y[:20]))
    with _MatmulDtypes() as seen:
        s.update(torch.from_numpy(x[20:]).float(), torch.from_numpy(y[20:]))
        s.scatter  # folding the window in runs its correction GEMM in the same precision
    assert len(seen.dtypes) >= 3 and set(seen.dtypes) == want
    assert s.scatter.dtype == torch.float64


def test_gemm_dtype_rule():
    from ncollapse.stats.contract import _gemm_dtype

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert _gemm_dtype(torch.float64, torch.float64, "auto", cpu) == torch.float64  # float64 stays float64
    assert _gemm_dtype(torch.bfloat16, torch.float64, "auto", cpu) == torch.float32
    assert _gemm_dtype(torch.float64, torch.float64, "auto", cuda) == torch.float32  # never a float64 GEMM on CUDA
    assert _gemm_dtype(torch.float32, torch.float64, "float64", cuda) == torch.float64  # unless asked


def test_kernels_block_scatter_and_kept_samples():
    from ncollapse.stats.kernels import add_upper_blocks, append_rare, keep_rare, mirror_blocks

    z = torch.randn(9, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    scatter = torch.zeros(7, 7, dtype=torch.float64)
    add_upper_blocks(scatter, z)
    assert torch.equal(torch.triu(scatter, 2), torch.triu(z.T @ z, 2))  # blocks of 2 columns: above the band
    mirror_blocks(scatter)
    torch.testing.assert_close(scatter, z.T @ z, rtol=1e-15, atol=1e-15)
    # 2 slots per class; class 0 has 1 sample seen before, class 2 none; batch: 0, 2, 0, 2, 2
    buffer = torch.zeros(3, 2, 1, dtype=torch.float64)
    buffer[0, 0] = -1.0
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]], dtype=torch.float64)
    present, inverse = torch.unique(torch.tensor([0, 2, 0, 2, 2]), return_inverse=True)
    keep_rare(buffer, torch.tensor([1, 0]), x, inverse, present, torch.bincount(inverse))
    assert buffer[:, :, 0].tolist() == [[-1.0, 1.0], [0.0, 0.0], [2.0, 4.0]]
    other = torch.tensor([[[7.0], [8.0]], [[9.0], [0.0]], [[6.0], [0.0]]], dtype=torch.float64)
    merged = append_rare(torch.tensor([[[1.0], [0.0]], [[0.0], [0.0]], [[2.0], [4.0]]], dtype=torch.float64),
                         torch.tensor([1, 0, 5]), other, torch.tensor([2, 1, 1]))
    assert merged[:, :, 0].tolist() == [[1.0, 7.0], [9.0, 0.0], [2.0, 4.0]]
