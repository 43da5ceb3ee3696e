"""Final evaluation: calibrate on validation, then measure the test split under several views.

Temperature, decision threshold and review band are chosen on the validation split only, and so
is the upsample calibration: for images the scan enlarges to the input size (shrunk copies of the
validation images), whose raw scores a model trained at its input size does not know how to
read. Test metrics are reported on the files as they are, after re-encoding every image
identically (the honest number for data whose classes differ in JPEG quality), and under
laundering (JPEG q50, halved size), with the AUC drop each causes.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from deepfake_scan.detector import Detector
from deepfake_scan.metrics import (
    binary_metrics,
    calibrated,
    choose_review_band,
    choose_threshold,
    fit_temperature,
    fit_upsample_calibration,
    sigmoid,
)
from deepfake_scan.models.artifact import ModelCard
from deepfake_scan.preprocess import fit_image, upscale_log2
from deepfake_scan.train.augment import EVAL_VIEWS, eval_view
from deepfake_scan.train.data import iter_eval_images

VAL_VIEWS = ("as_is", "reencoded")
# Shrunk validation copies the upsample calibration is fitted on (each then fitted back up).
UPSAMPLE_VIEWS = ("down0.8", "down0.65", "down0.5", "down0.25")


@torch.inference_mode()
def view_logits(
    detector: Detector,
    images: Iterable,
    views: tuple[str, ...],
    quality: int,
    batch: int = 32,
    keep: int = 64,
) -> tuple[dict[str, np.ndarray], np.ndarray, list, dict[str, np.ndarray]]:
    """Raw logits of every image (``data.eval_pair``, label) under every view, the labels, the
    as-is pixels of the first ``keep`` images of each class (for the captioned grid), and how
    far the fit enlarged each view of each image (``upscale_log2``). Streams in batches of
    ``batch``."""
    pre = detector.card.preprocessing
    pending: dict[str, list] = {v: [] for v in views}
    logits: dict[str, list] = {v: [] for v in views}
    sizes: dict[str, list] = {v: [] for v in views}
    labels: list[int] = []
    kept: list = []
    seen: dict[int, int] = {}

    def flush() -> None:
        for v in views:
            if pending[v]:
                x = detector.normalise(torch.from_numpy(np.stack(pending[v])))
                logits[v].append(detector.model(x).float().cpu().numpy())
                pending[v] = []

    for (scanned, full), label in images:
        for v in views:
            viewed = scanned if v == "as_is" else eval_view(full, v, quality)
            pending[v].append(fit_image(viewed, pre))
            sizes[v].append(viewed.size)
        seen[label] = seen.get(label, 0) + 1
        if seen[label] <= keep:
            kept.append((len(labels), pending["as_is"][-1] if "as_is" in views else None))
        labels.append(label)
        if len(pending[views[0]]) == batch:
            flush()
    flush()
    out = {v: np.concatenate(logits[v]) if logits[v] else np.zeros(0) for v in views}
    upscale = {v: upscale_log2(*np.array(sizes[v]).reshape(-1, 2).T, pre) for v in views}
    return out, np.asarray(labels), kept, upscale


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
    val_logits, y_val, _, val_upscale = view_logits(
        detector,
        iter_eval_images(val_rows, draft, cfg.face_geometry()),
        VAL_VIEWS + UPSAMPLE_VIEWS,
        cfg.eval_quality,
    )
    pooled = np.concatenate([val_logits[v] for v in VAL_VIEWS])
    y_pooled = np.tile(y_val, len(VAL_VIEWS))
    cal = calibrate(y_pooled, pooled, cfg.review_max_error, cfg.review_max_share)
    t, thr = cal["temperature"], cal["threshold"]
    coef = cal["upsample_calibration"] = _fit_upsampling(val_logits, val_upscale, y_val, t)

    def probs(logits: dict[str, np.ndarray], upscale: dict[str, np.ndarray]) -> dict:
        return {v: calibrated(z, t, upscale[v], coef) for v, z in logits.items()}

    def scored(logits: dict[str, np.ndarray], upscale: dict[str, np.ndarray], y) -> dict:
        return {v: binary_metrics(y, p, thr) for v, p in probs(logits, upscale).items()}

    val_logits = {v: val_logits[v] for v in VAL_VIEWS}
    metrics = {"val": scored(val_logits, val_upscale, y_val)}
    test_logits, y_test, test_pixels, test_upscale = view_logits(
        detector,
        iter_eval_images(test_rows, draft, cfg.face_geometry()),
        EVAL_VIEWS,
        cfg.eval_quality,
    )
    if len(y_test):
        test = scored(test_logits, test_upscale, y_test)
        base = test["reencoded"]["auc"]
        test["auc_drop"] = {v: base - test[v]["auc"] for v in ("jpeg50", "down0.5")}
        metrics["test"] = test
    metrics["calibration"] = {
        "temperature": t,
        "upsample_calibration": list(coef),
        "upsample_fitted_on": f"val, {', '.join(UPSAMPLE_VIEWS)} fitted back up",
        "fitted_on": "val, as-is and re-encoded pooled",
        "val_ece_before": binary_metrics(np.tile(y_val, 2), sigmoid(pooled))["ece"],
        "val_ece_after": binary_metrics(np.tile(y_val, 2), sigmoid(pooled / t))["ece"],
    }
    metrics["eval_quality"] = cfg.eval_quality
    extras = {
        "y_test": y_test,
        "test_probs": probs(test_logits, test_upscale),
        "test_pixels": test_pixels,
    }
    return {**cal, "metrics": metrics, "extras": extras}


def apply_evaluation(card: ModelCard, ev: dict) -> dict:
    """Write ``evaluate``'s decision, calibration and metrics into ``card``; returns ``ev``."""
    card.threshold, card.review_band = ev["threshold"], tuple(ev["review_band"])
    card.temperature = ev["temperature"]
    card.upsample_calibration = tuple(ev["upsample_calibration"])
    card.metrics = ev["metrics"]
    return ev


def trained_fractions(card: ModelCard) -> tuple[float, float]:
    """The (val, test) fractions of the split ``card``'s model was trained with."""
    trained = card.training.get("config", {})
    return trained.get("val_fraction", 0.1), trained.get("test_fraction", 0.1)


def _fit_upsampling(logits: dict, upscale: dict, y: np.ndarray, temperature: float):
    """``fit_upsample_calibration`` on the ``UPSAMPLE_VIEWS`` of ``view_logits``, pooled."""
    return fit_upsample_calibration(
        np.tile(y, len(UPSAMPLE_VIEWS)),
        np.concatenate([logits[v] for v in UPSAMPLE_VIEWS]),
        np.concatenate([upscale[v] for v in UPSAMPLE_VIEWS]),
        temperature,
    )


def split_rows(real: list[str], fake: list[str], split: str, fractions=(0.1, 0.1)) -> list[dict]:
    """``{"data", "label"}`` for the records of ``real`` and ``fake`` sources that fall in the
    training job's ``split`` (``data.split_of``: sha256 of the bytes, val and test fractions)."""
    import hashlib

    from deepfake_scan.sources import iter_records, list_inputs
    from deepfake_scan.train.data import split_of

    rows = []
    for label, sources in ((0, real), (1, fake)):
        for source in sources:
            for inp in list_inputs(source):
                for rec in iter_records(inp):
                    if rec.data is None:
                        continue
                    if split_of(hashlib.sha256(rec.data).hexdigest(), *fractions) == split:
                        rows.append({"data": rec.data, "label": label})
    return rows


def recalibrate_upsampling(
    model: str | None, real: list[str], fake: list[str], out: str, version: str | None = None
):
    """Fit ``model``'s upsample calibration on the validation split of labelled images (the
    training job's split and views) and write the model with it to ``out``; weights, temperature,
    threshold and review band stay as they are. Returns the new card."""
    from deepfake_scan.models.artifact import load_model, save_model

    net, card = load_model(model)
    detector = Detector(net, card, device="cpu", precision="fp32")
    fractions = trained_fractions(card)
    size, faces = card.preprocessing.input_size, card.face_geometry
    images = iter_eval_images(split_rows(real, fake, "val", fractions), size, faces)
    quality = card.metrics.get("eval_quality", 90)
    logits, y, _, upscale = view_logits(detector, images, UPSAMPLE_VIEWS, quality)
    if len(np.unique(y)) < 2:
        raise ValueError("the validation split of --real and --fake needs images of both classes")
    card.upsample_calibration = _fit_upsampling(logits, upscale, y, card.temperature)
    card.metrics.setdefault("calibration", {}).update(
        upsample_calibration=list(card.upsample_calibration),
        upsample_fitted_on=f"val of {len(y)} images, {', '.join(UPSAMPLE_VIEWS)} fitted back up",
    )
    card.version = version or card.version
    return save_model(net, out, card)


def build_ensemble(
    models: list[str],
    real: list[str],
    fake: list[str],
    out: str,
    name: str,
    version: str,
    command: str = "",
) -> ModelCard:
    """One model of ``models`` (each a model directory or URI) scoring together: the logit is
    the sum of each member's logit over its temperature, each member at its own input size
    (``archs.Ensemble``). Calibrated and measured on the members' validation and test splits
    of ``real`` and ``fake`` exactly as the training job measures a model it trained; written
    to ``out`` with its model card and report. The members' weights are not changed."""
    from deepfake_scan.models.artifact import load_model, save_model
    from deepfake_scan.models.registry import create_model
    from deepfake_scan.train.config import TrainConfig
    from deepfake_scan.train.report import write_model_card, write_report

    loaded = [load_model(m) for m in models]
    cards = [card for _, card in loaded]
    if len(cards) < 2:
        raise ValueError("an ensemble needs at least two models")
    pre = max((c.preprocessing for c in cards), key=lambda p: p.input_size)
    for c in cards:
        p = c.preprocessing
        same_fit = (p.mean, p.std, p.resize) == (pre.mean, pre.std, pre.resize)
        if not same_fit or c.faces != cards[0].faces:
            raise ValueError(f"{c.model_id} does not normalise, fit or crop faces as the others")
    members = [
        {
            "architecture": c.architecture,
            "arch_kwargs": c.arch_kwargs,
            "scale": c.preprocessing.input_size / pre.input_size,
            "weight": 1.0 / c.temperature,
            "model_id": c.model_id,
        }
        for c in cards
    ]
    net = create_model("ensemble", members=members)
    for member, (weights, _) in zip(net.members, loaded, strict=True):
        member.load_state_dict(weights.state_dict())
    fractions = trained_fractions(cards[0])
    cfg = TrainConfig(
        real=real, fake=fake, out=out, val_fraction=fractions[0], test_fraction=fractions[1]
    )
    val_rows, test_rows = (split_rows(real, fake, s, fractions) for s in ("val", "test"))
    if len({r["label"] for r in val_rows}) < 2:
        raise ValueError("the validation split of --real and --fake needs images of both classes")
    card = ModelCard(
        name=name,
        architecture="ensemble",
        version=version,
        arch_kwargs={"members": members},
        preprocessing=pre,
        faces=cards[0].faces,
    )
    detector = Detector(net.eval(), card, device="cpu", precision="fp32")
    ev = apply_evaluation(card, evaluate(detector, val_rows, test_rows, cfg))
    counts = {
        s: {k: sum(r["label"] == v for r in rows) for k, v in (("real", 0), ("fake", 1))}
        for s, rows in (("val", val_rows), ("test", test_rows))
    }
    card.training = {
        "members": [c.model_id for c in cards],
        "data": {"real": real, "fake": fake, "counts": counts},
        "split": cfg.split_rule,
        "config": {"val_fraction": cfg.val_fraction, "test_fraction": cfg.test_fraction},
    }
    card.command = command
    card = save_model(net, out, card)
    write_report(out, [], ev, [])
    write_model_card(out, card)
    return card
