"""UFMProblem validation: one clear error per bad input, default penalties, batch keys."""

import pytest

from ncollapse.ufm import UFMProblem
from ncollapse.ufm.problem import DEFAULT_LAMBDA


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(loss="ce", counts=(3, 0, 2), dim=4), ValueError, r"counts\[1\] == 0"),
    (dict(loss="ce", counts=(3, 3), dim=4, lambda_w=-1e-3), ValueError, "lambda_w == -0.001, must be >= 0"),
    (dict(loss="hinge", counts=(3, 3), dim=4), ValueError, "loss == 'hinge', must be one of"),
    (dict(loss="ce", counts=(3,) * 6, dim=4), ValueError, "dim == 4 is below K - 1 = 5"),
    (dict(loss="ce", counts=(3, 3), dim=4, normalize="features", lambda_h=1e-3), ValueError,
     "lambda_h == 0.001 has no minimiser here because the features are normalised"),
    (dict(loss="ce", counts=(3, 3), dim=4, fixed_classifier="etf", lambda_w=1e-3), ValueError, "set lambda_w to 0"),
    (dict(loss="ncmc_p", counts=(3, 3), dim=8), ValueError, "needs centers_per_class"),
    (dict(loss="ncmc_p", counts=(3, 3), dim=5, centers_per_class=(2, 2)), ValueError, "dim >= F \\+ K = 4 \\+ 2 = 6"),
    (dict(loss="supcon", counts=(3, 1), dim=4), ValueError, "at least two samples per class"),
    (dict(loss="ce", counts=(3, 3), dim=4, extra_layers=("conv",)), ValueError, "extra_layers entry == 'conv'"),
    (dict(loss="ce", counts=(3, 3), dim=4, theta=2.0), ValueError, "theta == 2.0"),
    (dict(loss="ce", counts=(3, 3), dim=4, constraint="ball", lambda_h=1e-3), ValueError,
     "constraint='ball' bounds the energies"),
    (dict(loss="ce", counts=(3, 3), dim=4, constraint="ball", bias="free"), ValueError, "layer-peeled model"),
    (dict(loss="ce", counts=(3, 3), dim=4, constraint="ball", energy_h=0.0), ValueError, "energy_h == 0.0"),
    (dict(loss="ce", counts=(3, 3), dim=4, ncmc_frame="learned"), ValueError, "use loss='ncmc_p'"),
    (dict(loss="ce", counts=(3, 3), dim=4, constraint="sphere"), ValueError, "constraint == 'sphere'"),
])
def test_bad_input_raises_one_clear_error(kwargs, error, match):
    with pytest.raises(error, match=match):
        UFMProblem(**kwargs)


def test_orthogonal_frame_needs_dim_at_least_k():
    with pytest.raises(ValueError, match="needs dim >= 4"):
        UFMProblem(loss="ce", counts=(3,) * 4, dim=3, fixed_classifier="orthogonal")


def test_default_penalties_follow_the_rules():
    p = UFMProblem.balanced(3, 2, 4, loss="ce")
    assert (p.lambda_w, p.lambda_h, p.lambda_b) == (DEFAULT_LAMBDA, DEFAULT_LAMBDA, 0.0)
    q = UFMProblem.balanced(3, 2, 4, loss="ce", bias="decay", normalize="both")
    assert (q.lambda_w, q.lambda_h, q.lambda_b) == (0.0, 0.0, DEFAULT_LAMBDA)
    r = UFMProblem.balanced(3, 2, 12, loss="ncmc_p", centers_per_class=(2, 2, 2))
    assert r.fixed_classifier == "multicenter" and r.lambda_w == 0.0 and r.lambda_h == DEFAULT_LAMBDA
    assert UFMProblem.balanced(3, 2, 4, loss="supcon").normalize == "features"


def test_labels_batch_key_and_dict():
    p = UFMProblem(loss="mse", counts=(2, 1, 3), dim=3, seed=1)
    assert p.labels().tolist() == [0, 0, 1, 2, 2, 2] and not p.is_balanced and p.num_samples == 6
    assert p.batch_key() == p.replace(seed=5, lambda_h=0.1, counts=(1, 1, 1)).batch_key()
    assert p.batch_key() != p.replace(bias="free").batch_key()
    assert p.to_dict()["counts"] == [2, 1, 3]
