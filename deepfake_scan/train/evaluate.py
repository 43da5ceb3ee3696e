"""Final evaluation: calibrate on validation, then measure the test split under several views.

Temperature, decision threshold and review band are chosen on the validation split only. Test
metrics are reported on the files as they are, after re-encoding every image identically (the
honest number for data whose classes differ in JPEG quality), and under laundering (JPEG q50,
halved size), with the AUC drop each causes.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from deepfake_scan.detector import Detector
from deepfake_scan.metrics import (
    binary_metrics,
    choose_review_band,
    choose_threshold,
    fit_temperature,
    sigmoid,
)
from deepfake_scan.preprocess import fit_image
from deepfake_scan.train.augment import EVAL_VIEWS, eval_view
from deepfake_scan.train.data import iter_eval_images

VAL_VIEWS = ("as_is", "reencoded")


@torch.inference_mode()
def view_logits(
    detector: Detector,
    images: Iterable,
    views: tuple[str, ...],
    quality: int,
    batch: int = 32,
    keep: int = 64,
) -> tuple[dict[str, np.ndarray], np.ndarray, list]:
    """Raw logits of every image under every view, the labels, and the as-is pixels of the first
    ``keep`` images of each class (for the captioned grid). Streams in batches of ``batch``."""
    pre = detector.card.preprocessing
    pending: dict[str, list] = {v: [] for v in views}
    logits: dict[str, list] = {v: [] for v in views}
    labels: list[int] = []
    kept: list = []
    seen: dict[int, int] = {}

    def flush() -> None:
        for v in views:
            if pending[v]:
                x = detector.normalise(torch.from_numpy(np.stack(pending[v])))
                logits[v].append(detector.model(x).float().cpu().numpy())
                pending[v] = []

    for img, label in images:
        for v in views:
            pending[v].append(fit_image(eval_view(img, v, quality), pre))
        seen[label] = seen.get(label, 0) + 1
        if seen[label] <= keep:
            kept.append((len(labels), pending["as_is"][-1] if "as_is" in views else None))
        labels.append(label)
        if len(pending[views[0]]) == batch:
            flush()
    flush()
    out = {v: np.concatenate(logits[v]) if logits[v] else np.zeros(0) for v in views}
    return out, np.asarray(labels), kept


def calibrate(y: np.ndarray, logits: np.ndarray, max_error: float, max_share: float) -> dict:
    """Temperature, threshold and review band from validation logits."""
    t = fit_temperature(y, logits)
    probs = sigmoid(logits / t)
    threshold = choose_threshold(y, probs)
    band = choose_review_band(y, probs, threshold, max_error, max_share)
    return {"temperature": t, "threshold": threshold, "review_band": band}


def evaluate(detector: Detector, val_rows: list[dict], test_rows: list[dict], cfg) -> dict:
    """Calibrate on val (as-is and re-encoded pooled: archives hold both kinds), measure test."""
    draft = detector.card.preprocessing.input_size
    val_logits, y_val, _ = view_logits(
        detector,
        iter_eval_images(val_rows, draft, cfg.face_geometry()),
        VAL_VIEWS,
        cfg.eval_quality,
    )
    pooled = np.concatenate([val_logits[v] for v in VAL_VIEWS])
    y_pooled = np.tile(y_val, len(VAL_VIEWS))
    cal = calibrate(y_pooled, pooled, cfg.review_max_error, cfg.review_max_share)
    t, thr = cal["temperature"], cal["threshold"]

    def scored(logits: dict[str, np.ndarray], y: np.ndarray) -> dict:
        return {v: binary_metrics(y, sigmoid(z / t), thr) for v, z in logits.items()}

    metrics = {"val": scored(val_logits, y_val)}
    test_logits, y_test, test_pixels = view_logits(
        detector,
        iter_eval_images(test_rows, draft, cfg.face_geometry()),
        EVAL_VIEWS,
        cfg.eval_quality,
    )
    if len(y_test):
        test = scored(test_logits, y_test)
        base = test["reencoded"]["auc"]
        test["auc_drop"] = {v: base - test[v]["auc"] for v in ("jpeg50", "down0.5")}
        metrics["test"] = test
    metrics["calibration"] = {
        "temperature": t,
        "fitted_on": "val, as-is and re-encoded pooled",
        "val_ece_before": binary_metrics(np.tile(y_val, 2), sigmoid(pooled))["ece"],
        "val_ece_after": binary_metrics(np.tile(y_val, 2), sigmoid(pooled / t))["ece"],
    }
    metrics["eval_quality"] = cfg.eval_quality
    extras = {
        "y_test": y_test,
        "test_probs": {v: sigmoid(z / t) for v, z in test_logits.items()},
        "test_pixels": test_pixels,
    }
    return {**cal, "metrics": metrics, "extras": extras}
