"""A report a person reads: runs over time, fake rates, scores, errors, the most suspicious images.

``build_report`` returns a JSON-able summary and writes a self-contained HTML page (plots and
thumbnails inlined), so it can be mailed, attached to an alert or served as a static file.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from datetime import datetime, timezone

import pyarrow.compute as pc

from deepfake_scan.store import VerdictStore

SCORED = ("real", "fake", "uncertain")


def fake_rate(labels: dict[str, int]) -> float:
    """Fakes among scored images (errors excluded)."""
    scored = sum(labels.get(k, 0) for k in SCORED)
    return labels.get("fake", 0) / scored if scored else 0.0


def summarise(out: str, top: int = 24) -> dict:
    store = VerdictStore(out)
    commits = store.commits()
    rows = store.read(all_runs=True, commits=commits)
    runs: dict[str, dict] = {}
    for c in commits:
        if c.final and isinstance(c.record.get("summary"), dict):
            s = c.record["summary"]
            runs[c.run_id] = {
                "run_id": c.run_id,
                "started_at": s.get("started_at", ""),
                "ended_at": s.get("ended_at", ""),
                "inputs": s.get("inputs", 0),
                "skipped": s.get("skipped", 0),
                "model_id": s.get("model_id", ""),
            }
    by_run: dict[str, Counter] = {}
    for run_id, label in zip(rows["run_id"].to_pylist(), rows["label"].to_pylist(), strict=True):
        by_run.setdefault(run_id, Counter())[label] += 1
    for run_id, labels in by_run.items():
        run = runs.setdefault(run_id, {"run_id": run_id, "started_at": "", "ended_at": ""})
        run["labels"] = dict(labels)
    for run in runs.values():
        run.setdefault("labels", {})
        run["rows"] = sum(run["labels"].values())
        run["fake_rate"] = round(fake_rate(run["labels"]), 4)
    ordered = sorted(runs.values(), key=lambda r: (r["started_at"] or "", r["run_id"]))
    latest = store.read(commits=commits) if rows.num_rows else rows
    errors = Counter(e.split(":", 1)[0] for e in latest["error"].to_pylist() if e)
    labels = Counter(latest["label"].to_pylist())
    scored = latest.filter(pc.is_valid(latest["score"]))
    suspicious = scored.sort_by([("score", "descending")]).slice(0, top)
    return {
        "store": out,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "images": latest.num_rows,
        "labels": dict(labels),
        "fake_rate": round(fake_rate(labels), 4),
        "errors": dict(errors),
        "runs": ordered,
        "last_run": ordered[-1] if ordered else None,
        "suspicious": [
            {"uri": u, "score": round(s, 4)}
            for u, s in zip(
                suspicious["uri"].to_pylist(), suspicious["score"].to_pylist(), strict=True
            )
        ],
        "_scores": scored["score"].to_numpy(),
    }


def build_report(out: str, html_path: str | None = None, top: int = 24) -> dict:
    summary = summarise(out, top)
    scores = summary.pop("_scores")
    if html_path:
        page = _html(summary, scores)
        with open(html_path, "w", encoding="utf-8") as f:
            f.write(page)
    return summary


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _plots(summary: dict, scores) -> tuple[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in summary["runs"] if r["rows"]]
    fig, ax = plt.subplots(figsize=(7, 2.8))
    ax.plot(range(len(runs)), [r["fake_rate"] for r in runs], marker="o")
    ax.set_xticks(range(len(runs)), [r["run_id"][:15] for r in runs], rotation=30, ha="right")
    ax.set_ylim(0, max([0.05] + [r["fake_rate"] * 1.3 for r in runs]))
    ax.set_ylabel("fake rate")
    ax.set_title("Fake rate per run")
    trend = _png(fig)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 2.8))
    ax.hist(scores, bins=20, range=(0, 1), color="#c0392b")
    ax.set_xlabel("score (probability fake)")
    ax.set_ylabel("images")
    ax.set_title("Score histogram (latest verdict per image)")
    hist = _png(fig)
    plt.close(fig)
    return trend, hist


def _thumbnail(uri: str) -> str | None:
    from deepfake_scan.decode import DecodeError, open_image
    from deepfake_scan.sources import read_record

    rec = read_record(uri)
    if rec.data is None:
        return None
    try:
        img, _, _ = open_image(rec.data, draft=160)
    except DecodeError:
        return None
    img.thumbnail((160, 160))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _table(header: list[str], rows: list[list[object]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _html(summary: dict, scores) -> str:
    trend, hist = _plots(summary, scores)
    cards = []
    for item in summary["suspicious"]:
        src = _thumbnail(item["uri"])
        img = f'<img src="{src}" alt="">' if src else '<div class="missing">unreadable</div>'
        cards.append(
            f"<figure>{img}<figcaption>{item['score']:.3f}<br>"
            f"<small>{html.escape(item['uri'])}</small></figcaption></figure>"
        )
    runs = [
        [
            r["run_id"],
            r["started_at"],
            r.get("inputs", ""),
            r.get("skipped", ""),
            r["rows"],
            r["labels"].get("fake", 0),
            r["labels"].get("error", 0),
            f"{r['fake_rate']:.2%}",
        ]
        for r in reversed(summary["runs"])
    ]
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>deepfake-scan report: {html.escape(summary["store"])}</title>
<style>body{{font-family:sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}} figure{{display:inline-block;
width:170px;margin:6px;vertical-align:top}} figure img{{max-width:160px}}
figcaption{{font-size:12px;word-break:break-all}} .missing{{width:160px;height:100px;
background:#eee}}</style></head><body>
<h1>deepfake-scan report</h1>
<p>Store <code>{html.escape(summary["store"])}</code>, generated {summary["generated_at"]}:
<b id="images">{summary["images"]}</b> images, fake rate
<b id="fake-rate">{summary["fake_rate"]:.2%}</b>.</p>
<h2>Labels</h2>{_table(["label", "images"], sorted(summary["labels"].items()), "labels")}
<h2>Trend</h2><img id="trend" src="{trend}" alt="fake rate per run">
<h2>Scores</h2><img id="histogram" src="{hist}" alt="score histogram">
<h2>Errors by code</h2>{_table(["code", "images"], sorted(summary["errors"].items()), "errors")}
<h2>Most suspicious images</h2><div id="contact-sheet">{"".join(cards)}</div>
<h2>Runs</h2>{
        _table(
            ["run", "started", "listed", "skipped", "verdicts", "fake", "errors", "fake rate"],
            runs,
            "runs",
        )
    }
<script>/* how many pictures really rendered: read by the report's browser test */
addEventListener("load", () => {{ document.body.dataset.imagesLoaded =
  [...document.images].filter(i => i.complete && i.naturalWidth > 0).length; }});</script>
</body></html>"""


def last_run_rate(summary: dict) -> float:
    run = summary.get("last_run") or {}
    return float(run.get("fake_rate", 0.0))
