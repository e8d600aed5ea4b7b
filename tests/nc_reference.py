"""An independent float64 numpy reference of the NC metrics, written plainly (loops allowed here)."""

from __future__ import annotations

import itertools

import numpy as np


def reference(features, labels, W=None, b=None, global_mean="uniform", ddof=0):
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
    out["cdnv"] = np.mean([(var[i] + var[j]) / (2 * np.sum((means[i] - means[j]) ** 2))
                           for i, j in itertools.combinations(range(k), 2)])
    norms = np.linalg.norm(mc, axis=1)
    out["equinorm_means"] = np.std(norms, ddof=1) / np.mean(norms)
    cos = [mc[i] @ mc[j] / (norms[i] * norms[j]) for i, j in itertools.combinations(range(k), 2)]
    out["equiangularity_means"] = np.std(cos)
    out["max_angle_means"] = np.mean(np.abs(np.array(cos) + 1 / (k - 1)))

    def etf(g):
        return np.linalg.norm(g / np.linalg.norm(g) - (np.eye(k) - 1 / k) / np.sqrt(k - 1))

    out["etf_error_means"] = etf(mc @ mc.T)
    if W is not None:
        w = np.asarray(W, dtype=np.float64)[classes]
        wn = np.linalg.norm(w, axis=1)
        out["equinorm_weights"] = np.std(wn, ddof=1) / np.mean(wn)
        wcos = [w[i] @ w[j] / (wn[i] * wn[j]) for i, j in itertools.combinations(range(k), 2)]
        out["equiangularity_weights"] = np.std(wcos)
        out["max_angle_weights"] = np.mean(np.abs(np.array(wcos) + 1 / (k - 1)))
        out["etf_error_weights"] = etf(w @ w.T)
        out["self_duality"] = etf(w @ mc.T)
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
