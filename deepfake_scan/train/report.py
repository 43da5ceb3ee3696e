"""The training report: curves (train vs val), ROC, a captioned test grid and GAN samples.

Everything is a small PNG plus an ``index.html`` that shows them with the final metrics, written
next to the model (local or URI) so it travels with the artifact it describes.
"""

from __future__ import annotations

import html
import io
import json

import numpy as np

from deepfake_scan.storage import get_fs, join

REPORT_DIR = "report"


def _figure_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _series(history: list[dict], key: str) -> list[float]:
    return [np.nan if h.get(key) is None else h[key] for h in history]


def curves_png(history: list[dict]) -> bytes:
    """Loss, accuracy and AUC per epoch, train against validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    panels = [
        ("loss", [("train_loss", "train"), ("val_loss", "val")]),
        ("accuracy", [("train_acc", "train"), ("val_acc", "val")]),
        ("AUC", [("train_auc", "train"), ("val_auc", "val"), ("val_reencoded_auc", "val re-enc")]),
    ]
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for key, label in keys:
            ax.plot(epochs, _series(history, key), marker="o", label=label)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    return _figure_png(fig)


def roc_png(y: np.ndarray, probs: dict[str, np.ndarray]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for view, p in probs.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{view} (AUC {roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_xlabel("false positive rate (real called fake)")
    ax.set_ylabel("true positive rate")
    ax.set_title("test ROC")
    ax.legend(loc="lower right", fontsize=8)
    return _figure_png(fig)


def test_grid_png(
    kept: list[tuple[int, np.ndarray]],
    y: np.ndarray,
    probs: np.ndarray,
    threshold: float,
    n: int = 16,
) -> bytes:
    """A 4x4 grid of test images (half real, half fake): prediction vs truth, green if right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pixels = dict(kept)  # test index -> as-is pixels, for the first images of each class
    real = [i for i in pixels if y[i] == 0]
    fake = [i for i in pixels if y[i] == 1]
    pick = (real[: n // 2] + fake[: n - min(len(real), n // 2)])[:n]
    side = int(np.ceil(np.sqrt(max(1, len(pick)))))
    fig, axes = plt.subplots(side, side, figsize=(1.6 * side, 1.8 * side))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, i in zip(np.ravel(axes)[: len(pick)], pick, strict=True):
        pred = "fake" if probs[i] >= threshold else "real"
        truth = "fake" if y[i] else "real"
        ax.imshow(pixels[i])
        colour = "green" if pred == truth else "red"
        ax.set_title(f"pred {pred} {probs[i]:.2f}\ntrue {truth}", color=colour, fontsize=7)
    return _figure_png(fig)


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def write_report(out: str, history: list[dict], result: dict, gan_grids: list[np.ndarray]) -> str:
    """Write the report files under ``out/report``; returns the report directory."""
    fs, path = get_fs(out)
    rdir = join(path, REPORT_DIR)
    fs.makedirs(rdir, exist_ok=True)
    files: dict[str, bytes] = {}
    if history:
        files["curves.png"] = curves_png(history)
    ex = result["extras"]
    if len(ex["y_test"]) and len(np.unique(ex["y_test"])) == 2:
        files["roc.png"] = roc_png(ex["y_test"], ex["test_probs"])
        files["test_grid.png"] = test_grid_png(
            ex["test_pixels"], ex["y_test"], ex["test_probs"]["as_is"], result["threshold"]
        )
    for i, grid in enumerate(gan_grids):
        files[f"gan_epoch_{i:03d}.png"] = _png(grid)
    files["index.html"] = _html(files, history, result["metrics"]).encode()
    for name, blob in files.items():
        with fs.open(join(rdir, name), "wb") as f:
            f.write(blob)
    return join(out, REPORT_DIR)


def _html(files: dict, history: list[dict], metrics: dict) -> str:
    images = "".join(
        f'<figure><img src="{n}"><figcaption>{html.escape(n)}</figcaption></figure>'
        for n in files
        if n.endswith(".png")
    )
    rows = "".join(
        "<tr>" + "".join(f"<td>{_fmt(h.get(k))}</td>" for k in _COLUMNS) + "</tr>" for h in history
    )
    head = "".join(f"<th>{k}</th>" for k in _COLUMNS)
    return (
        "<!doctype html><meta charset=utf-8><title>training report</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px}figure{display:inline-block}"
        "</style><h1>Training report</h1>"
        f"<h2>Epochs</h2><table><tr>{head}</tr>{rows}</table>"
        f"<h2>Final metrics</h2><pre>{html.escape(json.dumps(metrics, indent=1))}</pre>"
        f"{images}"
    )


_COLUMNS = (
    "epoch",
    "train_loss",
    "val_loss",
    "train_auc",
    "val_auc",
    "val_reencoded_auc",
    "val_acc",
    "val_eer",
    "seconds",
)


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))


_VIEW_TEXT = {
    "as_is": "files as they are",
    "reencoded": "all re-encoded identically (JPEG q{q})",
    "jpeg50": "all re-encoded at JPEG q50",
    "down0.5": "halved in size, then JPEG q{q}",
}
_METRIC_KEYS = ("auc", "ap", "acc", "real_acc", "fake_acc", "eer", "ece", "n")


def _what(card) -> str:
    """The model card's first paragraph: what the model is and where it came from."""
    pre, t = card.preprocessing, card.training
    fit = f"input {pre.input_size} px ({pre.resize}, {pre.interpolation})"
    if card.architecture == "ensemble":
        members = ", ".join(
            f"`{m.get('model_id', m['architecture'])}` (at {round(m['scale'] * pre.input_size)} "
            f"px, weight {m['weight']:.3f})"
            for m in card.arch_kwargs.get("members", [])
        )
        return (
            f"`{card.model_id}`: an ensemble of {members}; {fit}. Its logit is the sum of each "
            "member's logit over its temperature (`deepfake-scan models ensemble`); the members "
            "were trained by the project's own training job and are unchanged. Calibrated and "
            "measured below as the training job measures the models it trains."
        )
    kwargs = f" {json.dumps(card.arch_kwargs)}" if card.arch_kwargs else ""
    crop = t.get("config", {}).get("train_crop") or pre.input_size
    return (
        f"`{card.model_id}`: architecture `{card.architecture}`{kwargs}, {fit}; trained on "
        f"random {crop} px windows of the fitted input. Trained by the project's own training job."
    )


def model_card_markdown(card) -> str:
    """MODEL_CARD.md for a trained ``ModelCard``: the command, the data, the numbers, the limits."""
    m, t = card.metrics, card.training
    q = m.get("eval_quality", 90)
    lines = [f"# {card.name} {card.version}", "", _what(card), "", _faces_line(card), ""]
    lines += [
        "## Command",
        "",
        "```",
        card.command or "(not recorded)",
        "```",
        "",
        "## Data",
        "",
        f"Real: {', '.join(t.get('data', {}).get('real', []))}; "
        f"fake: {', '.join(t.get('data', {}).get('fake', []))}.",
        f"Split: {t.get('split', '')}.",
        "",
        "| split | real | fake |",
        "|---|---|---|",
    ]
    counts = t.get("data", {}).get("counts", {})
    lines += [
        f"| {s} | {c['real']} | {c['fake']} |" for s, c in counts.items() if s != "unreadable"
    ]
    lines += [
        "",
        "## Decision",
        "",
        f"Threshold {card.threshold:.4f} on calibrated probability (temperature "
        f"{card.temperature:.3f}, fitted on validation); review band [{card.review_band[0]:.4f}, "
        f"{card.review_band[1]:.4f}) is labelled `uncertain`.",
        *_upsample_line(card),
        "",
        "## Metrics",
        "",
    ]
    lines += _metrics_table(m, q)
    drops = m.get("test", {}).get("auc_drop", {})
    if drops:
        lines += ["", "Test AUC drop against the identically re-encoded test set: "
                  + ", ".join(f"{k} {v:+.4f}" for k, v in drops.items()) + "."]  # fmt: skip
    if t.get("history"):
        lines += ["", "## Epochs", "", "| epoch | train loss | val loss | train AUC | val AUC | "
                  "val AUC re-encoded | seconds |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for h in t.get("history", []):
        cells = [h.get(k) for k in ("train_loss", "val_loss", "train_auc", "val_auc",
                                    "val_reencoded_auc", "seconds")]  # fmt: skip
        lines.append(f"| {h['epoch']} | " + " | ".join(_cell(c) for c in cells[:-1]) + " | "
                     f"{cells[-1]:.0f} |")  # fmt: skip
    lines += ["", "## Limits", "", _LIMITS, ""]
    return "\n".join(lines)


def _metrics_table(m: dict, q: int) -> list[str]:
    head = "| split | view | " + " | ".join(_METRIC_KEYS) + " |"
    rows = [head, "|" + "---|" * (len(_METRIC_KEYS) + 2)]
    for split in ("val", "test"):
        for view, vals in m.get(split, {}).items():
            if view == "auc_drop":
                continue
            text = _VIEW_TEXT.get(view, view).format(q=q)
            rows.append(
                f"| {split} | {text} | "
                + " | ".join(_cell(vals.get(k)) for k in _METRIC_KEYS)
                + " |"
            )
    return rows


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "" if v is None else str(v)


_LIMITS = (
    "All figures are in-domain: validation and test images come from the same sources and the "
    "same manipulation tool as the training images (split by content hash, not by identity, so "
    "a person can appear on both sides). They say little about other manipulation methods, GAN "
    "or diffusion images; measure those on data the model never trained on before relying on "
    "it. The 're-encoded' rows are the honest in-domain numbers when the classes of a data set "
    "differ in JPEG quality, as they do in the shared training data."
)


def _upsample_line(card) -> list[str]:
    if not card.upsample_calibration:
        return []
    a, b = card.upsample_calibration
    return [
        "",
        f"Images the scan enlarges to the input size by 2^u are scored sigmoid(logit / T * "
        f"max(0, 1 + a u) + b u) with (a, b) = ({a:.3f}, {b:.3f}), fitted on shrunk validation "
        "copies: where the model cannot tell small images apart, their scores move into the "
        "review band.",
    ]


def write_model_card(out: str, card) -> None:
    fs, path = get_fs(out)
    with fs.open(join(path, "MODEL_CARD.md"), "w") as f:
        f.write(model_card_markdown(card))


def _faces_line(card) -> str:
    g = card.face_geometry
    if g is None:
        return (
            "Trained on whole images. `scan --faces` crops faces with the default geometry; "
            "an image without a face is scored whole."
        )
    return (
        f"Trained on face crops: {g.detector} face search, square crops {g.scale}x the face "
        "(`deepfake_scan.faces`, the scan's own code). Scanning with `--faces`, an image without "
        + (
            "a face is labelled `no_face` (face-only model)."
            if g.face_only
            else "a face is scored whole."
        )
    )
