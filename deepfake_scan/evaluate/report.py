"""The evaluation report: ``summary.json``, ``scores.parquet``, PNG plots and ``report.html``.

Everything is written under ``OUT`` (a folder or URI); the page links its PNGs by relative name,
so the folder can be copied, served or attached as it is. Plots: ROC and precision-recall curves
for every view, score histograms per class, robustness and adversarial charts, and contact sheets
of the clean view's worst mistakes.
"""

from __future__ import annotations

import html
import io
import json
import posixpath

import numpy as np

from deepfake_scan.evaluate.results import OVERALL, Scored
from deepfake_scan.storage import get_fs, join

METRIC_COLUMNS = (
    "n_real",
    "n_fake",
    "auc",
    "ap",
    "acc",
    "real_acc",
    "fake_acc",
    "eer",
    "ece",
    "review_rate",
)
ADV_COLUMNS = (
    "attack",
    "epsilon",
    "n",
    "fake_acc_before",
    "fake_acc_after",
    "turned_real",
    "turned_real_rate",
    "mean_score_before",
    "mean_score_after",
)
SHEETS = {"missed_fakes": "worst_missed_fakes.png", "false_alarms": "worst_false_alarms.png"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def curves_png(data: Scored, kind: str) -> bytes | None:
    """ROC (``kind="roc"``, legend: AUC) or precision-recall (``"pr"``, legend: AP) curves, one
    line per view; the clean view drawn thicker."""
    from sklearn.metrics import (
        average_precision_score,
        precision_recall_curve,
        roc_auc_score,
        roc_curve,
    )

    ok = data.ok
    y = data.label[ok]
    if len(np.unique(y)) < 2:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for i, view in enumerate(data.views):
        s = data.scores[ok, i]
        if kind == "roc":
            (x, yy, _), area = roc_curve(y, s), roc_auc_score(y, s)
        else:
            (yy, x, _), area = precision_recall_curve(y, s), average_precision_score(y, s)
        ax.plot(x, yy, lw=2.2 if i == 0 else 1.0, label=f"{view} ({area:.3f})")
    if kind == "roc":
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        ax.set(xlabel="false positive rate (real called fake)", ylabel="true positive rate")
        ax.set_title("ROC per laundering (AUC)")
    else:
        ax.axhline(y.mean(), color="k", ls=":", lw=1)
        ax.set(xlabel="recall (fakes found)", ylabel="precision")
        ax.set_title("Precision-recall per laundering (AP)")
    ax.legend(fontsize=7, loc="lower right" if kind == "roc" else "lower left")
    ax.grid(alpha=0.3)
    return _png(fig)


def histogram_png(data: Scored, threshold: float, band: tuple[float, float]) -> bytes:
    """Clean-view scores per class, with the threshold and the review band."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3))
    ok = data.ok
    for cls, name, colour in ((0, "real", "#2e86c1"), (1, "fake", "#c0392b")):
        s = data.scores[ok & (data.label == cls), 0]
        ax.hist(s, bins=40, range=(0, 1), alpha=0.6, color=colour, label=f"{name} ({len(s)})")
    if band[1] > band[0]:
        ax.axvspan(band[0], band[1], color="#f1c40f", alpha=0.2, label="review band")
    ax.axvline(threshold, color="k", lw=1, label=f"threshold {threshold:.3f}")
    ax.set(xlabel="score (probability fake)", ylabel="images", title="Score histogram per class")
    ax.legend(fontsize=8)
    return _png(fig)


def robustness_png(rows: list[dict]) -> bytes:
    """AUC and per-class accuracy under every laundering."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    x = np.arange(len(rows))
    for k, (key, label) in enumerate(
        (("auc", "AUC"), ("real_acc", "real accuracy"), ("fake_acc", "fake accuracy"))
    ):
        vals = [np.nan if r.get(key) is None else r[key] for r in rows]
        ax.bar(x + (k - 1) * 0.27, vals, width=0.27, label=label)
    ax.set_xticks(x, [r["view"] for r in rows], rotation=30, ha="right")
    ax.set(ylim=(0, 1.05), title="Robustness to laundering (both classes alike)")
    ax.legend(fontsize=8, ncol=3, loc="lower left")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def adversarial_png(rows: list[dict]) -> bytes:
    """Fake accuracy against epsilon for every attack (epsilon 0 = before the attack)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for attack in dict.fromkeys(r["attack"] for r in rows):
        mine = [r for r in rows if r["attack"] == attack]
        eps = [0.0] + [float(r["epsilon"].split("/")[0]) for r in mine]
        acc = [mine[0]["fake_acc_before"]] + [r["fake_acc_after"] for r in mine]
        ax.plot(eps, [np.nan if a is None else a for a in acc], marker="o", label=attack)
    ax.set(xlabel="epsilon (/255)", ylabel="fakes detected", ylim=(0, 1.05))
    ax.set_title("White-box attacks on fakes")
    ax.legend()
    ax.grid(alpha=0.3)
    return _png(fig)


def _thumbnail(uri: str, image_column: str, side: int = 128) -> np.ndarray | None:
    from deepfake_scan.decode import DecodeError, open_image
    from deepfake_scan.sources import read_record

    rec = read_record(uri, image_column)
    if rec.data is None:
        return None
    try:
        img, _, _ = open_image(rec.data, draft=side)
    except DecodeError:
        return None
    img.thumbnail((side, side))
    return np.asarray(img)


def contact_sheet_png(items: list[dict], truth: str, image_column: str) -> bytes | None:
    """A grid of mistakes, captioned with score and file name (all wrong, so all red)."""
    if not items:
        return None
    plt = _plt()
    cols = min(6, len(items))
    rows = -(-len(items) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, item in zip(axes.ravel(), items, strict=False):
        thumb = _thumbnail(item["uri"], image_column)
        if thumb is not None:
            ax.imshow(thumb)
        name = posixpath.basename(item["uri"].replace("#", "/"))[-22:]
        caption = f"true {truth}, score {item['score']:.3f}\n{name}"
        ax.set_title(caption, fontsize=7, color="#c0392b")
    return _png(fig)


def plots(summary: dict, data: Scored) -> dict[str, bytes]:
    """Every PNG of the report, by file name (plots that have no data are left out)."""
    m = summary["model"]
    threshold, band = m["threshold"], tuple(m["review_band"])
    column = summary["run"]["options"]["image_column"]
    files = {
        "roc.png": curves_png(data, "roc"),
        "pr.png": curves_png(data, "pr"),
        "scores.png": histogram_png(data, threshold, band),
        "robustness.png": robustness_png(summary["robustness"]),
        "adversarial.png": adversarial_png(summary["adversarial"])
        if summary["adversarial"]
        else None,
    }
    for key, name in SHEETS.items():
        truth = "fake" if key == "missed_fakes" else "real"
        files[name] = contact_sheet_png(summary["worst_mistakes"][key], truth, column)
    return {k: v for k, v in files.items() if v is not None}


def scores_table(data: Scored):
    """Per-record scores as Arrow: every view and attack, for comparing models record by record."""
    import pyarrow as pa

    cols = {
        "uri": pa.array(data.uri.astype(str)),
        "source": pa.array(data.source.astype(str)),
        "label": pa.array(np.where(data.label == 1, "fake", "real")),
        "error": pa.array([e or None for e in data.error], pa.string()),
    }
    for i, view in enumerate(data.views):
        s = data.scores[:, i]
        cols[f"score_{view}"] = pa.array(s, pa.float32(), mask=np.isnan(s))
    for j, name in enumerate(data.attack_columns):
        a = data.adv[:, j]
        cols[f"score_{name}"] = pa.array(a, pa.float32(), mask=np.isnan(a))
    return pa.table(cols)


def write_report(out: str, summary: dict, data: Scored) -> dict[str, str]:
    """Write every report file under ``out``; returns file name -> uri."""
    import pyarrow.parquet as pq

    fs, path = get_fs(out)
    fs.makedirs(path, exist_ok=True)
    files = plots(summary, data)
    files["report.html"] = render_html(summary, files).encode()
    files["summary.json"] = json.dumps(summary, indent=2).encode()
    buf = io.BytesIO()
    pq.write_table(scores_table(data), buf)
    files["scores.parquet"] = buf.getvalue()
    for name, blob in files.items():
        with fs.open(join(path, name), "wb") as f:
            f.write(blob)
    return {name: join(out, name) for name in files}


def _fmt(v, signed: bool = False) -> str:
    if v is None:
        return "–"  # undefined (one class only, nothing attacked): null in summary.json
    if isinstance(v, float):
        return f"{v:+.4f}" if signed else f"{v:.4f}"
    return str(v)


def _table(header: list[str], rows: list[list], table_id: str, signed: bool = False) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v, signed))}</td>" for v in row) + "</tr>"
        for row in rows
    )
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _metric_rows(by_group: dict) -> list[list]:
    return [[g] + [m.get(k) for k in METRIC_COLUMNS] for g, m in by_group.items()]


def _sections(summary: dict, files: dict) -> list[str]:
    views = summary["views"]
    rob = [
        [r["view"], views.get(r["view"], "")] + [r.get(k) for k in METRIC_COLUMNS + ("auc_change",)]
        for r in summary["robustness"]
    ]
    parts = [
        "<h2>Files as they are, per source</h2>",
        "<p>Each source (and sub-folder) is measured against every image of the other class.</p>",
        _table(["group", *METRIC_COLUMNS], _metric_rows(summary["metrics"]), "metrics"),
        "<h2>Robustness: every image of both classes laundered alike</h2>",
        _table(["view", "laundering", *METRIC_COLUMNS, "AUC change"], rob, "robustness"),
    ]
    parts += _images(files, ("roc.png", "pr.png", "scores.png", "robustness.png"))
    parts.append("<h2>Adversarial: white-box attacks on fakes</h2>")
    if summary["adversarial"]:
        adv = [[r.get(k) for k in ADV_COLUMNS] for r in summary["adversarial"]]
        parts.append(_table(list(ADV_COLUMNS), adv, "adversarial"))
        parts += _images(files, ("adversarial.png",))
    else:
        parts.append("<p>No attacks were run.</p>")
    if summary.get("difference"):
        parts += _difference(summary["difference"])
    parts.append("<h2>Worst mistakes (files as they are)</h2>")
    parts += _images(files, tuple(SHEETS.values())) or ["<p>No mistakes at the threshold.</p>"]
    errors = summary["counts"]["errors"]
    if errors:
        parts.append("<h2>Unreadable records</h2>")
        parts.append(_table(["code", "records"], list(errors.items()), "errors"))
    return parts


def _difference(diff: dict) -> list[str]:
    rob = diff["robustness"]
    keys = [k for k in (rob[0] if rob else {}) if k != "view"]
    adv = diff["adversarial"]
    adv_keys = [k for k in (adv[0] if adv else {}) if k not in ("attack", "epsilon")]
    return [
        f"<h2>Difference: this model minus {html.escape(diff['baseline'] or 'the baseline')}</h2>",
        _table(
            ["view", *keys], [[r["view"], *(r[k] for k in keys)] for r in rob], "diff-rob", True
        ),
        _table(
            ["attack", "epsilon", *adv_keys],
            [[r["attack"], r["epsilon"], *(r[k] for k in adv_keys)] for r in adv],
            "diff-adv",
            True,
        ),
    ]


def _images(files: dict, names: tuple[str, ...]) -> list[str]:
    return [
        f'<figure><img src="{n}" alt="{n}"><figcaption>{n}</figcaption></figure>'
        for n in names
        if n in files
    ]


def render_html(summary: dict, files: dict) -> str:
    m, c = summary["model"], summary["counts"]
    overall = summary["metrics"][OVERALL]
    head = (
        f"<p>Model <code>{html.escape(m['model_id'])}</code> ({html.escape(m['uri'])}), threshold "
        f"{m['threshold']:.4f}, review band [{m['review_band'][0]:.4f}, {m['review_band'][1]:.4f})."
        f" {c['scored']['real']} real and {c['scored']['fake']} fake images scored, "
        f"{c['unreadable']} unreadable; {c['attacked_fakes']} fakes attacked. "
        f"AUC <b id='auc'>{_fmt(overall['auc'])}</b>, accuracy {_fmt(overall['acc'])}.</p>"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>evaluation: "
        f"{html.escape(m['model_id'])}</title><style>body{{font-family:sans-serif;margin:2em}}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;"
        "font-size:13px}figure{display:inline-block;vertical-align:top}</style></head><body>"
        f"<h1>Evaluation</h1>{head}{''.join(_sections(summary, files))}</body></html>"
    )
