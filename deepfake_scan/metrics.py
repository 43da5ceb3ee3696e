"""Binary detection metrics, decision threshold, review band and temperature scaling.

Shared by training (per-epoch validation, final test) and evaluation. Scores are probabilities
that an image is fake (label 1); real is label 0. scikit-learn does the ranking metrics so the
numbers agree with what anyone else would compute from the same scores.
"""

from __future__ import annotations

import math

import numpy as np


def _as_arrays(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{len(y)} labels but {len(s)} scores")
    return y, s


def eer(y_true, scores) -> float:
    """Equal error rate: where the false-positive rate equals the false-negative rate."""
    from sklearn.metrics import roc_curve

    y, s = _as_arrays(y_true, scores)
    if len(np.unique(y)) < 2:
        return float("nan")
    fpr, tpr, _ = roc_curve(y, s)
    fnr = 1.0 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2)


def expected_calibration_error(y_true, probs, n_bins: int = 15) -> float:
    """ECE with equal-width bins: sum over bins of |accuracy - confidence| weighted by bin size.

    Confidence is the probability of the predicted class, as in Guo et al. (2017).
    """
    y, p = _as_arrays(y_true, probs)
    if len(y) == 0:
        return float("nan")
    pred = (p >= 0.5).astype(np.int64)
    conf = np.where(pred == 1, p, 1.0 - p)
    correct = (pred == y).astype(np.float64)
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    # Confidence lies in [0.5, 1]; the last bin is closed so 1.0 is counted.
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = idx == b
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(total)


def binary_metrics(y_true, scores, threshold: float = 0.5) -> dict:
    """AUC, AP, accuracy, real/fake accuracy, EER and ECE for fake-probability ``scores``.

    Ranking metrics are NaN when only one class is present (they are undefined, not zero).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, s = _as_arrays(y_true, scores)
    pred = s >= threshold
    both = len(np.unique(y)) == 2
    real, fake = y == 0, y == 1
    return {
        "n": int(len(y)),
        "n_real": int(real.sum()),
        "n_fake": int(fake.sum()),
        "auc": float(roc_auc_score(y, s)) if both else float("nan"),
        "ap": float(average_precision_score(y, s)) if both else float("nan"),
        "acc": float((pred == y.astype(bool)).mean()) if len(y) else float("nan"),
        "real_acc": float((~pred[real]).mean()) if real.any() else float("nan"),
        "fake_acc": float(pred[fake].mean()) if fake.any() else float("nan"),
        "eer": eer(y, s) if both else float("nan"),
        "ece": expected_calibration_error(y, s),
        "threshold": float(threshold),
    }


def fit_temperature(y_true, logits, grid: np.ndarray | None = None) -> float:
    """Temperature T minimising the negative log-likelihood of sigmoid(logit / T).

    A 1-D problem, so a log-spaced grid refined around its best point is exact enough and has
    no optimiser state to go wrong.
    """
    y, z = _as_arrays(y_true, logits)
    if len(y) == 0 or len(np.unique(y)) < 2:
        return 1.0

    def nll(t: float) -> float:
        u = z / t
        # log(1 + exp(-|u|)) form is stable for large logits.
        return float(np.mean(np.logaddexp(0.0, u) - y * u))

    grid = np.geomspace(0.05, 20.0, 121) if grid is None else grid
    best = min(grid, key=nll)
    fine = np.geomspace(best / 1.06, best * 1.06, 41)
    return float(min(fine, key=nll))


def calibrated(logits, temperature: float, upscale=None, coef=None) -> np.ndarray:
    """Fake probabilities from raw logits: temperature scaling, and for images the scan enlarged
    (``upscale``: log2 of the factor, ``preprocess.upscale_log2``) the upsample calibration
    ``coef`` = (a, b): sigmoid(logit / T * max(0, 1 + a u) + b u). At u = 0 (images at or above
    the input size) it is temperature scaling alone."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    if coef is not None and upscale is not None:
        a, b = coef
        u = np.asarray(upscale, dtype=np.float64)
        z = z * np.maximum(0.0, 1.0 + a * u) + b * u
    return sigmoid(z)


def fit_upsample_calibration(y_true, logits, upscale, temperature: float) -> tuple[float, float]:
    """The (a, b) of ``calibrated`` minimising the negative log-likelihood on enlarged images.

    A model trained at its input size may score enlarged (small) images high whatever they are;
    fitted on enlarged validation copies, (a, b) pull those scores towards what the model really
    knows about them (towards 0.5 where it knows nothing). A grid refined around its best point,
    like ``fit_temperature``. (0, 0) when no enlarged image of both classes is given.
    """
    y, z = _as_arrays(y_true, logits)
    u = np.asarray(upscale, dtype=np.float64)
    big = u > 0
    if not big.any() or len(np.unique(y[big])) < 2:
        return (0.0, 0.0)
    y, z, u = y[big], z[big] / temperature, u[big]

    def nll(a: float, b: np.ndarray) -> np.ndarray:  # for one a, every b at once
        w = (z * np.maximum(0.0, 1.0 + a * u))[None, :] + b[:, None] * u[None, :]
        return np.mean(np.logaddexp(0.0, w) - y[None, :] * w, axis=1)

    def search(a_grid: np.ndarray, b_grid: np.ndarray) -> tuple[float, float]:
        best = (np.inf, 0.0, 0.0)
        for a in a_grid:
            losses = nll(float(a), b_grid)
            i = int(np.argmin(losses))
            best = min(best, (float(losses[i]), float(a), float(b_grid[i])))
        return best[1], best[2]

    a, b = search(np.linspace(-1.0, 1.0, 81), np.linspace(-8.0, 8.0, 161))
    a, b = search(np.linspace(a - 0.025, a + 0.025, 11), np.linspace(b - 0.1, b + 0.1, 21))
    return round(a, 4), round(b, 4)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def choose_threshold(y_true, scores) -> float:
    """The threshold maximising balanced accuracy (mean of real- and fake-accuracy).

    Balanced, because archives are mostly real and a validation set's class mix is not theirs.
    """
    from sklearn.metrics import roc_curve

    y, s = _as_arrays(y_true, scores)
    if len(np.unique(y)) < 2:
        return 0.5
    fpr, tpr, thr = roc_curve(y, s)
    i = int(np.argmax(tpr - fpr))
    t = float(thr[i])
    return 0.5 if not math.isfinite(t) else min(max(t, 0.0), 1.0)


def choose_review_band(
    y_true, scores, threshold: float, max_error: float = 0.02, max_share: float = 0.2
) -> tuple[float, float]:
    """A band [low, high) around the threshold whose outside has at most ``max_error`` error rate.

    The band widens symmetrically in rank around the threshold until the images left outside it
    are classified with error at or below ``max_error``; images inside go to human review. It
    never holds more than ``max_share`` of the images: a model with confident errors would
    otherwise send nearly everything to review (a face-crop model here got [0.03, 1.0)).
    """
    y, s = _as_arrays(y_true, scores)
    if len(y) == 0:
        return (threshold, threshold)
    order = np.argsort(np.abs(s - threshold))  # closest to the threshold first
    wrong = ((s >= threshold) != y.astype(bool))[order]
    # Errors left outside after removing the k closest scores, for every k.
    left = wrong.sum() - np.concatenate([[0], np.cumsum(wrong)])
    outside = len(y) - np.arange(len(y) + 1)
    rate = np.divide(left, outside, out=np.zeros(len(y) + 1), where=outside > 0)
    # The fewest closest scores (k) to send to review for the rest to meet max_error; if no k
    # within the share does, the whole share.
    met = rate[: int(max_share * len(y)) + 1] <= max_error
    k = int(np.argmax(met)) if met.any() else len(met) - 1
    if k == 0:
        return (threshold, threshold)
    width = float(np.abs(s[order[k - 1]] - threshold))
    lo, hi = max(0.0, threshold - width), min(1.0, threshold + width + 1e-9)
    return (float(lo), float(hi))
