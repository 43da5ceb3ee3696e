import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    recall_score,
    roc_auc_score,
)

from deepfake_scan.metrics import (
    binary_metrics,
    calibrated,
    choose_review_band,
    choose_threshold,
    eer,
    expected_calibration_error,
    fit_temperature,
    fit_upsample_calibration,
    sigmoid,
)
from deepfake_scan.preprocess import Preprocessing, upscale_log2


@pytest.fixture
def scored():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    scores = np.clip(0.5 + (y - 0.5) * 0.4 + rng.normal(0, 0.25, 400), 0, 1)
    return y, scores


def test_binary_metrics_agree_with_scikit_learn(scored):
    y, s = scored
    m = binary_metrics(y, s, threshold=0.6)
    pred = (s >= 0.6).astype(int)
    assert m["auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["ap"] == pytest.approx(average_precision_score(y, s))
    assert m["acc"] == pytest.approx(accuracy_score(y, pred))
    assert m["fake_acc"] == pytest.approx(recall_score(y, pred, pos_label=1))
    assert m["real_acc"] == pytest.approx(recall_score(y, pred, pos_label=0))
    assert (m["n"], m["n_real"] + m["n_fake"]) == (400, 400)


def test_one_class_gives_nan_ranking_metrics_not_zero():
    m = binary_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert np.isnan(m["auc"]) and np.isnan(m["eer"]) and np.isnan(m["real_acc"])
    assert m["fake_acc"] == pytest.approx(2 / 3)


def test_eer_extremes_and_symmetric_case():
    assert eer([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert eer([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 1.0
    # One real above one fake out of two each: both error rates meet at 0.5.
    assert eer([0, 0, 1, 1], [0.1, 0.7, 0.6, 0.9]) == pytest.approx(0.5)


def test_ece_by_hand():
    # Two bins used: confidence 0.9 (both right) and 0.6 (one of two right).
    y = [1, 0, 1, 1]
    p = [0.9, 0.1, 0.6, 0.4]
    expected = 0.5 * abs(1.0 - 0.9) + 0.5 * abs(0.5 - 0.6)
    assert expected_calibration_error(y, p) == pytest.approx(expected)


def test_temperature_recovers_the_generating_temperature():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 6, 20000)
    y = (rng.random(20000) < sigmoid(logits / 3.0)).astype(int)
    t = fit_temperature(y, logits)
    assert t == pytest.approx(3.0, rel=0.08)
    before = expected_calibration_error(y, sigmoid(logits))
    after = expected_calibration_error(y, sigmoid(logits / t))
    assert after < before


def test_threshold_and_review_band(scored):
    y, s = scored
    thr = choose_threshold(y, s)
    assert 0.3 < thr < 0.7
    lo, hi = choose_review_band(y, s, thr, max_error=0.05, max_share=1.0)
    assert lo <= thr <= hi
    outside = (s < lo) | (s >= hi)
    errors = ((s[outside] >= thr) != y[outside].astype(bool)).mean()
    assert errors <= 0.05
    assert outside.mean() > 0.2  # the band does not swallow everything


def test_review_band_holds_at_most_its_share_when_errors_are_confident():
    """A model that is confidently wrong on 10 % of images: no band meets 2 % error outside, so
    the band stops at its share instead of sending nearly everything to review."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 500)
    s = np.where(y == 1, rng.uniform(0.6, 1.0, 1000), rng.uniform(0.0, 0.4, 1000))
    s[:50] = 0.999  # confident errors: reals scored as certain fakes
    thr = choose_threshold(y, s)
    lo, hi = choose_review_band(y, s, thr, max_error=0.02, max_share=0.2)
    inside = ((s >= lo) & (s < hi)).mean()
    assert 0.15 <= inside <= 0.2
    lo, hi = choose_review_band(y, s, thr, max_error=0.02, max_share=1.0)
    assert ((s >= lo) & (s < hi)).mean() > 0.7  # uncapped: most images go to review


def test_perfect_scores_need_no_review_band():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.8, 0.9])
    thr = choose_threshold(y, s)
    assert choose_review_band(y, s, thr) == (thr, thr)


def test_upscale_is_log2_of_how_far_the_fit_enlarges():
    pre = Preprocessing(input_size=250)
    got = upscale_log2([250, 1000, 125, 300, 62.5, -1], [250, 800, 300, 125, 62.5, -1], pre)
    np.testing.assert_allclose(got, [0, 0, 1, 1, 2, 0])  # unknown sizes (-1) count as fitting
    assert upscale_log2(100, 400, Preprocessing(input_size=50, resize="squash")) == 0


def test_upsample_calibration_pulls_small_images_to_what_the_model_knows():
    """Scores of enlarged images that are biased high and carry no signal end up near the base
    rate; images that were not enlarged keep plain temperature scaling."""
    rng = np.random.default_rng(0)
    n = 4000
    y = rng.integers(0, 2, n)
    u = np.repeat([1.0, 2.0], n // 2)
    # Halved: some signal, biased towards fake; quartered: none, strongly biased towards fake.
    logits = np.where(u == 1, 2.0 + 1.5 * (2 * y - 1), 4.0) + rng.normal(0, 1, n)
    a, b = fit_upsample_calibration(y, logits, u, temperature=2.0)
    p = calibrated(logits, 2.0, u, (a, b))
    assert abs(p[u == 2].mean() - y[u == 2].mean()) < 0.05  # no signal: the base rate
    assert p[(u == 1) & (y == 1)].mean() > p[(u == 1) & (y == 0)].mean() + 0.2  # signal kept
    assert expected_calibration_error(y, p) < expected_calibration_error(y, sigmoid(logits / 2))
    np.testing.assert_allclose(calibrated(logits, 2.0, np.zeros(n), (a, b)), sigmoid(logits / 2))
    assert fit_upsample_calibration(y, logits, np.zeros(n), 2.0) == (0.0, 0.0)  # none enlarged
