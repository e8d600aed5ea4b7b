"""Losses against hand-computed values and float64 references; mixup; bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from ncollapse.geometry import center_angle_cos, multicenter_frame
from ncollapse.losses import (LOSSES, build_loss, class_balanced_weights, ldam_margins, mixup_loss,
                              posthoc_logit_adjust)

T = torch.tensor


def call(loss, logits=None, targets=None, features=None, epoch=0):
    logits = features if logits is None else logits
    features = logits if features is None else features
    return float(loss(features, logits, targets, epoch=epoch))


def test_cross_entropy_hand_value():
    loss = build_loss("ce", [3, 3, 3])
    expected = math.log(1 + math.exp(-2) + math.exp(-3))
    assert call(loss, T([[2.0, 0.0, -1.0]]), T([0])) == pytest.approx(expected, rel=1e-6)


def test_mse_plain_and_rescaled():
    z, y = T([[0.5, -1.0, 2.0], [0.0, 1.0, 0.0]]), T([2, 1])
    assert call(build_loss("mse"), z, y) == pytest.approx(float(F.mse_loss(z, F.one_hot(y, 3).float())), rel=1e-6)
    # Hui & Belkin: (1/K)[k (z_y - M)^2 + sum_{j != y} z_j^2] with k = 2, M = 3
    first = (2 * (2.0 - 3) ** 2 + 0.25 + 1.0) / 3
    second = (2 * (1.0 - 3) ** 2 + 0.0) / 3
    assert call(build_loss("mse", k=2.0, M=3.0), z, y) == pytest.approx((first + second) / 2, rel=1e-6)


def test_ldam_margins_weights_and_drw_switch():
    counts = [625, 16]  # n^(-1/4) = 1/5 and 1/2
    assert torch.allclose(ldam_margins(counts, 0.5), T([0.2, 0.5]))
    beta = 0.9
    raw = [(1 - beta) / (1 - beta ** 625), (1 - beta) / (1 - beta ** 16)]
    assert torch.allclose(class_balanced_weights(counts, beta), T([2 * r / sum(raw) for r in raw]), atol=1e-6)
    loss = build_loss("ldam", counts, s=10.0, drw_epoch=5, beta=beta)
    z, y = T([[0.3, 0.1], [0.2, 0.4]]), T([0, 1])
    l0 = math.log(1 + math.exp(10 * (0.1 - 0.1)))   # true logit 0.3 - 0.2 = 0.1 vs 0.1
    l1 = math.log(1 + math.exp(10 * (0.2 - (-0.1))))  # true logit 0.4 - 0.5 = -0.1 vs 0.2
    assert call(loss, z, y, epoch=4) == pytest.approx((l0 + l1) / 2, rel=1e-5)
    w = [2 * r / sum(raw) for r in raw]
    assert call(loss, z, y, epoch=5) == pytest.approx((w[0] * l0 + w[1] * l1) / (w[0] + w[1]), rel=1e-5)
    no_drw = build_loss("ldam", counts, s=10.0, drw_epoch=None)
    assert call(no_drw, z, y, epoch=1000) == pytest.approx((l0 + l1) / 2, rel=1e-5)


def test_balanced_softmax_equals_logit_adjusted_and_hand_value():
    counts = [3, 1]
    z, y = torch.zeros(1, 2), T([1])
    assert call(build_loss("balanced_softmax", counts), z, y) == pytest.approx(math.log(4), rel=1e-6)
    z = T([[0.3, -0.7], [1.2, 0.1]])
    y = T([0, 1])
    assert call(build_loss("logit_adjusted", counts, tau=1.0), z, y) == pytest.approx(
        call(build_loss("balanced_softmax", counts), z, y), rel=1e-6)
    tau = 0.5  # CE(z + tau log pi) by hand for the second sample
    a = [1.2 + tau * math.log(0.75), 0.1 + tau * math.log(0.25)]
    expected = -a[1] + math.log(math.exp(a[0]) + math.exp(a[1]))
    assert call(build_loss("logit_adjusted", counts, tau=tau), z[1:], y[1:]) == pytest.approx(expected, rel=1e-6)


def test_posthoc_logit_adjust():
    out = posthoc_logit_adjust(torch.zeros(2, 2), [3, 1], tau=2.0)
    assert torch.allclose(out, T([[-2 * math.log(0.75), -2 * math.log(0.25)]] * 2))
    with pytest.raises(ValueError, match="columns"):
        posthoc_logit_adjust(torch.zeros(2, 3), [3, 1])


def test_dot_regression_hand_values():
    frame = torch.eye(2)
    loss = build_loss("dot_regression", [5, 5], frame=frame)
    h = T([[3.0, 4.0]])  # unit 0.6, 0.8; one sample, one class: E = 1
    assert call(loss, features=h, targets=T([0])) == pytest.approx(0.5 * (0.6 - 1) ** 2, rel=1e-6)
    h = T([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    y = T([0, 0, 1])  # B = 3, U = 2: E_0 = sqrt(1.5 / 2), E_1 = sqrt(1.5)
    e0, e1 = math.sqrt(0.75), math.sqrt(1.5)
    expected = 0.5 * ((0.6 * e0 - e0) ** 2 + (1 * e0 - e0) ** 2 + (1 * e1 - e1) ** 2) / 3
    assert call(loss, features=h, targets=y) == pytest.approx(expected, rel=1e-6)
    plain = build_loss("dot_regression", [5, 5], frame=frame, rescale=False)
    assert call(plain, features=h, targets=y) == pytest.approx(0.5 * 0.16 / 3, rel=1e-6)


def supcon_reference(z, y, temperature):
    z = F.normalize(z.double(), dim=1)
    total, anchors = 0.0, 0
    for i in range(len(y)):
        others = [a for a in range(len(y)) if a != i]
        positives = [p for p in others if y[p] == y[i]]
        if not positives:
            continue
        denom = math.log(sum(math.exp(float(z[i] @ z[a]) / temperature) for a in others))
        total += -sum(float(z[i] @ z[p]) / temperature - denom for p in positives) / len(positives)
        anchors += 1
    return total / anchors


def test_supcon_against_reference():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(7, 5, generator=gen)
    y = T([0, 1, 0, 2, 1, 0, 3])  # classes 2 and 3 have no positive
    loss = build_loss("supcon", temperature=0.5)
    assert call(loss, features=z, logits=torch.zeros(7, 4), targets=y) == pytest.approx(
        supcon_reference(z, y, 0.5), rel=1e-5)
    lonely = loss(z[:2].requires_grad_(), torch.zeros(2, 4), T([0, 1]))
    assert float(lonely.detach()) == 0.0 and lonely.requires_grad


@pytest.fixture
def frame():
    return multicenter_frame(12, [1, 2, 4], theta=0.3, seed=1)


def test_ncmc_p_against_float64_reference(frame):
    counts = [10, 5, 2]
    loss = build_loss("ncmc_p", counts, frame=frame, feature_penalty=0.1)
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(5, 12, generator=gen, dtype=torch.float64)
    y = T([0, 1, 2, 2, 1])
    s_bar = (1 * 10 + 2 * 5 + 4 * 2) / 17
    ref = 0.0
    for hi, yi in zip(h, y):  # eq. 18: own centers regress to 1, other centers to 0
        own = sum((float(c @ hi) - 1) ** 2 for c, o in zip(frame.centers, frame.owner) if o == yi)
        other = sum(float(c @ hi) ** 2 for c, o in zip(frame.centers, frame.owner) if o != yi)
        ref += (own + other) / (2 * s_bar) + 0.05 * 17 * float(hi @ hi)  # (λ_H/2)‖h‖² per sample times N = 17
    assert call(loss, features=h.float(), logits=torch.zeros(5, 3), targets=y) == pytest.approx(ref / 5, rel=1e-5)
    exact = loss.double()(h, torch.zeros(5, 3, dtype=torch.float64), y)  # float64 buffers from the exact frame
    assert exact.dtype == torch.float64 and float(exact) == pytest.approx(ref / 5, rel=1e-12)


def test_ncmc_p_full_batch_is_eq19_and_the_ufm_optimum(frame):
    """On the whole training set the deep Loss P is eq. 19 with the same λ_H as the UFM's ncmc_p: at the
    fixed-frame optimum (Cor. 3.7) it equals ``ufm.theory.predict``'s value for ``lambda_h`` = ``feature_penalty``."""
    from ncollapse.ufm import UFMProblem, theory

    counts, lam = (5, 4, 3), 1e-2
    problem = UFMProblem(loss="ncmc_p", counts=counts, dim=12, centers_per_class=(1, 2, 4), theta=0.3, lambda_h=lam)
    pred = theory.predict(problem)
    y = torch.repeat_interleave(torch.arange(3), torch.tensor(counts))
    means = torch.stack([frame.centers[frame.owner == k].double().mean(0) for k in range(3)])
    h = (torch.tensor(pred["feature_norms"], dtype=torch.float64)[:, None] * F.normalize(means, dim=1))[y]
    loss = build_loss("ncmc_p", list(counts), frame=frame, feature_penalty=lam)
    assert call(loss, features=h.float(), logits=torch.zeros(12, 3), targets=y) == pytest.approx(pred["loss"],
                                                                                                 rel=1e-5)


def test_ncmc_cosine_reference_closed_form_and_stationary_point(frame):
    theta, fk = 0.3, torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    loss = build_loss("ncmc_cosine", [10, 5, 2], frame=frame, lam=0.01)
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(4, 12, generator=gen, dtype=torch.float64)
    y = T([2, 0, 1, 2])
    ref = 0.0
    for hi, yi in zip(h, y):
        u = hi / hi.norm()
        beta = math.sqrt((math.cos(theta) ** 2 + float(fk[yi]) * math.sin(theta) ** 2) / float(fk[yi]))
        own = sum((float(c @ u) - 1) ** 2 for c, o in zip(frame.centers, frame.owner) if o == yi)
        ref += beta * own + 0.01 * (float(hi.norm()) - 1) ** 2
    assert call(loss, features=h.float(), logits=torch.zeros(4, 3), targets=y) == pytest.approx(ref / 4, rel=1e-5)
    assert float(loss.double()(h, torch.zeros(4, 3), y)) == pytest.approx(ref / 4, rel=1e-12)
    assert torch.equal(loss.centers, frame.centers) and loss.float().centers.dtype == torch.float32
    # at the NCMC point h = w̄^(k)/||w̄^(k)||: loss = cos α f_k (1 - cos α)^2 (Thm 3.3), and it is stationary
    means = frame.mean_centers()
    h = (means / means.norm(dim=1, keepdim=True)).float().requires_grad_()
    cos_a = center_angle_cos(fk, theta)
    value = loss(h, torch.zeros(3, 3), T([0, 1, 2]))
    assert float(value.detach()) == pytest.approx(float((cos_a * fk * (1 - cos_a) ** 2).mean()), rel=1e-5)
    value.backward()
    assert float(h.grad.abs().max()) < 1e-6
    unweighted = build_loss("ncmc_cosine", [10, 5, 2], frame=frame, weighted=False)
    assert float(unweighted(h.detach(), torch.zeros(3, 3), T([0, 1, 2]))) == pytest.approx(
        float((fk * (1 - cos_a) ** 2).mean()), rel=1e-5)


def test_ncmc_losses_accept_the_model_head(frame):
    from ncollapse.nn import build_model
    model = build_model("mlp", 3, in_channels=1, image_size=2, widths=(12,), head="multicenter",
                        centers_per_class=[1, 2, 4], theta=0.3)
    with torch.no_grad():
        features, logits = model(torch.randn(4, 1, 2, 2))
    a = build_loss("ncmc_cosine", [3, 2, 1], frame=model.head.frame)
    b = build_loss("ncmc_cosine", [3, 2, 1], frame=model.head)
    assert float(a(features, logits, T([0, 1, 2, 2]))) == pytest.approx(float(b(features, logits, T([0, 1, 2, 2]))))


def make(name, frame, counts=(4, 3, 2)):
    options = {"dot_regression": {"frame": torch.linalg.qr(torch.randn(12, 3))[0].T},
               "ncmc_p": {"frame": frame}, "ncmc_cosine": {"frame": frame}}.get(name, {})
    return build_loss(name, list(counts), **options)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_mixup_for_every_loss(name, frame):
    loss = make(name, frame)
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(6, 12, generator=gen, requires_grad=True)
    logits = torch.randn(6, 3, generator=gen, requires_grad=True)
    ya, yb = T([0, 1, 2, 0, 1, 2]), T([1, 1, 0, 2, 2, 0])
    lam = 0.3
    mixed = mixup_loss(loss, features, logits, ya, yb, lam, epoch=1)
    a, b = loss(features, logits, ya, epoch=1), loss(features, logits, yb, epoch=1)
    assert mixed.item() == pytest.approx(lam * a.item() + (1 - lam) * b.item(), rel=1e-6)
    same = mixup_loss(loss, features, logits, ya, ya, lam)
    assert same.item() == pytest.approx(loss(features, logits, ya).item(), rel=1e-6)
    mixed.backward()
    grads = [g for g in (features.grad, logits.grad) if g is not None]
    assert grads and all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_mixup_ce_equals_soft_target_cross_entropy():
    z, ya, yb, lam = torch.randn(5, 4), T([0, 1, 2, 3, 0]), T([3, 3, 1, 0, 2]), 0.35
    soft = lam * F.one_hot(ya, 4).float() + (1 - lam) * F.one_hot(yb, 4).float()
    assert float(mixup_loss(build_loss("ce"), z, z, ya, yb, lam)) == pytest.approx(
        float(F.cross_entropy(z, soft)), rel=1e-6)


@pytest.mark.parametrize("name", ["ce", "mse", "ldam", "balanced_softmax", "logit_adjusted", "ncmc_p", "ncmc_cosine"])
def test_per_sample_losses_are_batch_means(name, frame):
    loss = make(name, frame)
    features, logits, y = torch.randn(5, 12), torch.randn(5, 3), T([0, 2, 1, 1, 0])
    whole = float(loss(features, logits, y))
    singles = [float(loss(features[i:i + 1], logits[i:i + 1], y[i:i + 1])) for i in range(5)]
    assert whole == pytest.approx(sum(singles) / 5, rel=1e-5)


def test_autocast_inputs_give_float32_loss(frame):
    loss = make("ncmc_cosine", frame)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(torch.randn(4, 12).bfloat16(), torch.randn(4, 3).bfloat16(), T([0, 1, 2, 0]))
    assert value.dtype == torch.float32


@pytest.mark.parametrize("call_,match", [
    (lambda fr: build_loss("focal", [1, 2]), "unknown loss"),
    (lambda fr: build_loss("ce", [1, 2], gamma=2), r"unknown option\(s\) \['gamma'\]"),
    (lambda fr: build_loss("ldam", [5, 0, 3]), r"class_counts\[1\] == 0"),
    (lambda fr: build_loss("ldam"), "needs class_counts"),
    (lambda fr: build_loss("ldam", [5, 3], beta=1.0), "beta"),
    (lambda fr: build_loss("dot_regression", [5, 3]), "frame=model.head.weight"),
    (lambda fr: build_loss("dot_regression", [5, 3, 1, 1], frame=torch.eye(3)), "3 rows"),
    (lambda fr: build_loss("ncmc_cosine", [5, 3, 1], frame=torch.eye(3)), "frame=model.head.frame"),
    (lambda fr: build_loss("ncmc_p", [5, 3], frame=fr), "3 classes; class_counts has 2"),
    (lambda fr: build_loss("ncmc_cosine", [5, 3, 1], frame=fr, lam=-1.0), "lam == -1.0"),
    (lambda fr: build_loss("supcon", temperature=0), "temperature"),
    (lambda fr: build_loss("ncmc_cosine", [5, 3, 1], frame=fr)(torch.randn(2, 5), torch.randn(2, 3), T([0, 1])),
     "width 5"),
    (lambda fr: build_loss("ce", [5, 3])(torch.randn(2, 5), torch.randn(2, 3), T([0, 1])), "3 columns"),
    (lambda fr: build_loss("ce")(torch.randn(2, 5), torch.randn(2, 3), T([0.0, 1.0])), "int64"),
    (lambda fr: build_loss("ce")(torch.randn(2, 5), torch.randn(3, 3), T([0, 1])), "batch sizes differ"),
])
def test_bad_input_is_a_clear_error(call_, match, frame):
    with pytest.raises((ValueError, TypeError), match=match):
        call_(frame)


def test_bad_frame_parameters_are_reported():
    with pytest.raises(ValueError, match=r"pi/2"):
        multicenter_frame(12, [1, 2], theta=1.7)
    with pytest.raises(ValueError, match="centers_per_class"):
        multicenter_frame(12, [0, 2])
