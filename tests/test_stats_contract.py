"""The state contract shared by ClassStats, NCCCounts and NCMCStats: reset, to, merge checks,
state_dict round trip, finalize on an empty state, and all_reduce sending only state-device tensors."""

import numpy as np
import pytest
import torch
import torch.distributed as dist

from ncollapse import ClassStats, NCCCounts
from ncollapse.geometry import multicenter_frame
from ncollapse.stats import NCMCStats

from conftest import make_features

X, Y, _ = make_features([30, 20, 10, 6], dim=12, seed=11)
X, Y = torch.from_numpy(X), torch.from_numpy(Y)


def _class_stats():
    return ClassStats(4, 12, per_class_cov=True, rare_below=8)


def _ncc():
    return NCCCounts.from_stats(ClassStats.from_features(X, Y), W=torch.eye(4, 12), tile_size=3)


def _ncmc():
    return NCMCStats(multicenter_frame(12, [1, 2, 1, 2], 0.3, seed=0))


MAKERS = {"ClassStats": _class_stats, "NCCCounts": _ncc, "NCMCStats": _ncmc}


def _tensors(acc):
    return {k: v for k, v in acc.state_dict().items() if torch.is_tensor(v)}


def _as_sets(key, value, tensors):
    """Kept rare samples are compared as sets, for the classes that fit their slots (a merge appends the other
    shard's samples after its own; which samples a class with more samples than slots keeps is irrelevant)."""
    if key != "rare_samples":
        return value
    fits = tensors["counts"] <= value.shape[1]
    order = value[..., 0].argsort(dim=1)
    return torch.take_along_dim(value, order[..., None], dim=1)[fits]


@pytest.mark.parametrize("kind", MAKERS)
def test_finalize_without_samples_is_a_clear_error(kind):
    with pytest.raises(ValueError, match=f"{kind} has accumulated no samples"):
        MAKERS[kind]().finalize()


@pytest.mark.parametrize("kind", MAKERS)
def test_reset_state_dict_and_merge(kind):
    make = MAKERS[kind]
    whole, a, b = make(), make(), make()
    whole.update(X, Y)
    a.update(X[::2], Y[::2])
    b.update(X[1::2], Y[1::2])
    merged = a.merge(b)
    for key, value in _tensors(whole).items():
        torch.testing.assert_close(_as_sets(key, _tensors(merged)[key], _tensors(merged)),
                                   _as_sets(key, value, _tensors(whole)), atol=1e-11, rtol=1e-11, msg=key)
    copy = make()
    copy.load_state_dict(whole.state_dict())
    for key, value in _tensors(whole).items():
        assert torch.equal(_tensors(copy)[key], value), key
    whole.reset()
    assert all(not bool(v.any()) for v in _tensors(whole).values())
    with pytest.raises(ValueError, match="no samples"):
        whole.finalize()


def test_merge_checks_shape_dtype_and_kind():
    with pytest.raises(ValueError, match="num_classes"):
        ClassStats(4, 8).merge(ClassStats(5, 8))
    with pytest.raises(ValueError, match="dtype torch.float32"):
        ClassStats(4, 8).merge(ClassStats(4, 8, dtype=torch.float32))
    with pytest.raises(TypeError, match="can only merge a ClassStats"):
        ClassStats(4, 8).merge(_ncmc())
    with pytest.raises(ValueError, match="different class means"):
        _ncc().merge(NCCCounts(torch.zeros(4, 12), W=torch.eye(4, 12)))
    with pytest.raises(ValueError, match="expected"):
        ClassStats(4, 8).load_state_dict(ClassStats(4, 9).state_dict())
    with pytest.raises(ValueError, match="missing keys"):
        _ncmc().load_state_dict({"num_classes": 4})


@pytest.mark.parametrize("kind", MAKERS)
def test_to_moves_every_tensor(kind):
    acc = MAKERS[kind]()
    acc.update(X, Y)
    acc.to("meta")
    assert acc.device == torch.device("meta")
    assert all(v.device.type == "meta" for v in _tensors(acc).values())


@pytest.mark.parametrize("kind", MAKERS)
def test_all_reduce_sends_only_state_device_tensors(kind, monkeypatch):
    """NCCL rejects CPU tensors: every all_reduce operand must live on the state's device (here 'meta')."""
    acc = MAKERS[kind]()
    acc.update(X, Y)
    acc.to("meta")
    sent = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "all_reduce", lambda tensor, group=None: sent.append(tensor.device))
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "all_gather", lambda out, tensor, group=None: sent.extend(t.device for t in [tensor, *out]))
    acc.all_reduce()
    assert sent and set(sent) == {torch.device("meta")}
    assert all(v.device.type == "meta" for v in _tensors(acc).values())


def test_ncc_tiles_match_untiled():
    stats = ClassStats.from_features(X, Y)
    W, b = np.random.default_rng(0).normal(size=(4, 12)), np.random.default_rng(1).normal(size=4)
    one, tiled = NCCCounts.from_stats(stats, W=W, b=b, tile_size=100), NCCCounts.from_stats(stats, W=W, b=b, tile_size=1)
    one.update(X, Y)
    tiled.update(X, Y)
    for key, value in one.finalize().items():
        assert torch.equal(tiled.finalize()[key], value), key
    logits = X @ torch.from_numpy(W).T + torch.from_numpy(b)
    assert int(one.net_correct.sum()) == int((logits.argmax(1) == Y).sum())
