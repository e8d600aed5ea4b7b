"""An independent float64 numpy reference of the NC metrics, written plainly (loops allowed here)."""

from __future__ import annotations

import itertools

import numpy as np


def reference(features, labels, W=None, b=None, global_mean="uniform", ddof=0, cdnv_exponent=2.0, ood=None,
              ood_centering="none"):
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    classes = sorted(set(y.tolist()))
    k = len(classes)
    means = np.array([x[y == c].mean(0) for c in classes])
    counts = np.array([(y == c).sum() for c in classes])
    n = len(y)
    mu_g = means.mean(0) if global_mean == "uniform" else x.mean(0)
    sw = np.zeros((x.shape[1], x.shape[1]))
    for i in range(n):
        c = classes.index(y[i])
        diff = x[i] - means[c]
        sw += np.outer(diff, diff)
    sw /= n - ddof * k
    mc = means - mu_g
    sb = sum(np.outer(m, m) for m in mc) / k
    out = {"nc1": np.trace(sw @ np.linalg.pinv(sb, rcond=1e-10, hermitian=True)) / k,
           "nc1_quotient": np.trace(sw) / np.trace(sb)}
    var = [np.sum((x[y == c] - means[i]) ** 2) / (counts[i] - ddof) for i, c in enumerate(classes)]
    out["cdnv"] = np.mean([(var[i] + var[j]) / (2 * np.linalg.norm(means[i] - means[j]) ** cdnv_exponent)
                           for i, j in itertools.combinations(range(k), 2)])
    norms = np.linalg.norm(mc, axis=1)
    out["equinorm_means"] = np.std(norms, ddof=1) / np.mean(norms)
    cos = [mc[i] @ mc[j] / (norms[i] * norms[j]) for i, j in itertools.combinations(range(k), 2)]
    out["equiangularity_means"] = np.std(cos)
    out["max_angle_means"] = np.mean(np.abs(np.array(cos) + 1 / (k - 1)))

    def etf(g):
        return np.linalg.norm(g / np.linalg.norm(g) - (np.eye(k) - 1 / k) / np.sqrt(k - 1))

    def orth(g):
        return np.linalg.norm(g / np.linalg.norm(g) - np.eye(k) / np.sqrt(k))

    out["etf_error_means"] = etf(mc @ mc.T)
    out["orth_error_means"] = orth(means @ means.T)
    units = mc / norms[:, None]
    dists = np.array([np.linalg.norm(units[i] - units[j]) for i, j in itertools.combinations(range(k), 2)])
    out["gnc2_log_mean"] = np.mean(np.log(1 / dists))
    out["gnc2_log_var"] = np.var(np.log(1 / dists))
    out["gnc2_riesz_mean"] = np.mean(dists ** -(x.shape[1] - 2.0))
    if ood is not None:
        # Ammar et al. 2024, eq. 5: uncentred class means and OOD mean; "global_mean" centres both at mu_G
        centre = mu_g if ood_centering == "global_mean" else 0.0
        direction = np.asarray(ood, dtype=np.float64).mean(0) - centre
        vectors = [m + mu_g - centre for m in mc]
        out["nc5_ood"] = np.mean([abs(v @ direction) / (np.linalg.norm(v) * np.linalg.norm(direction)) for v in vectors])
    if W is not None:
        w = np.asarray(W, dtype=np.float64)[classes]
        wn = np.linalg.norm(w, axis=1)
        out["equinorm_weights"] = np.std(wn, ddof=1) / np.mean(wn)
        wcos = [w[i] @ w[j] / (wn[i] * wn[j]) for i, j in itertools.combinations(range(k), 2)]
        out["equiangularity_weights"] = np.std(wcos)
        out["max_angle_weights"] = np.mean(np.abs(np.array(wcos) + 1 / (k - 1)))
        out["etf_error_weights"] = etf(w @ w.T)
        out["self_duality"] = etf(w @ mc.T)
        out["orth_error_weights"] = orth(w @ w.T)
        sims = np.array([w[i] @ mc[i] for i in range(k)])
        out["unc3"] = np.std(sims, ddof=1) / np.mean(sims)
        out["duality_cos_per_class"] = sims / (wn * norms)
        out["duality_cos_mean"] = np.mean(out["duality_cos_per_class"])
        out["duality_papyan"] = np.sum((w / np.linalg.norm(w) - mc / np.linalg.norm(mc)) ** 2)
        full_w = np.asarray(W, dtype=np.float64)
        bias = np.zeros(full_w.shape[0]) if b is None else np.asarray(b, dtype=np.float64)
        agree = correct = 0
        for i in range(n):
            d = [np.sum((x[i] - means[j]) ** 2) for j in range(k)]
            ncc = classes[int(np.argmin(d))]
            net = int(np.argmax(full_w @ x[i] + bias))
            agree += ncc == net
            correct += ncc == y[i]
        out["ncc_mismatch"] = 1 - agree / n
        out["ncc_accuracy"] = correct / n
    return out
