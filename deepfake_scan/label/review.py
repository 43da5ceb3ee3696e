"""The review queue: one static HTML page of the ``uncertain`` band, with thumbnails.

The page needs no server: open ``DEST/review/index.html``, pick real or fake per image, and
download the decisions as CSV (uri,label,reviewer) for ``deepfake-scan corrections import``.
Choices are kept in the browser's local storage, so a long review survives a reload. Every uri
is escaped: archive member names are untrusted text.
"""

from __future__ import annotations

import io
from html import escape

from deepfake_scan.decode import DEFAULT_MAX_PIXELS
from deepfake_scan.label.files import put_atomic
from deepfake_scan.label.items import Item
from deepfake_scan.storage import get_fs, join

THUMBS = "review/thumbs"  # <sha256>.jpg, shared by every copy of the same bytes
PAGE = "review/index.html"
THUMB_SIZE = 160


def thumbnail_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes | None:
    """A JPEG at most THUMB_SIZE on its longer side; None when the bytes do not decode."""
    from deepfake_scan.decode import DecodeError, open_image

    try:
        img, _, _ = open_image(data, max_pixels=max_pixels, draft=THUMB_SIZE)
        img.thumbnail((THUMB_SIZE, THUMB_SIZE))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=80)
        return buf.getvalue()
    except DecodeError:
        return None
    except Exception:  # a codec bug on one image must not stop the run: the page says so
        return None


def review_items(items: list[Item]) -> list[Item]:
    """What still needs a human: the uncertain band, decided ones excluded, by score."""
    todo = [it for it in items if it.label == "uncertain"]
    return sorted(todo, key=lambda it: (it.score if it.score is not None else 0.0, it.uri))


def write_page(
    dest: str, items: list[Item], store: str, threshold: float, band: tuple[float, float]
) -> int:
    """Write ``DEST/review/index.html``; returns how many images it lists."""
    todo = review_items(items)
    fs, root = get_fs(dest)
    put_atomic(fs, join(root, PAGE), render_page(todo, store, threshold, band).encode())
    return len(todo)


def render_page(todo: list[Item], store: str, threshold: float, band: tuple[float, float]) -> str:
    cards = "\n".join(_card(i, it) for i, it in enumerate(todo))
    command = f"deepfake-scan corrections import decisions.csv --store {store}"
    return _PAGE.format(
        count=len(todo),
        low=band[0],
        high=band[1],
        threshold=threshold,
        store=escape(store, quote=True),
        command=escape(command),
        cards=cards or '<p class="empty">Nothing to review: no image is in the band.</p>',
        script=_SCRIPT,
    )


def _card(i: int, it: Item) -> str:
    uri = escape(it.uri, quote=True)
    score = f"{it.score:.4f}" if it.score is not None else "n/a"
    dup = (
        f'<div class="dup">duplicate of {escape(it.duplicate_of)}</div>' if it.duplicate_of else ""
    )
    choices = "".join(
        f'<label><input type="radio" name="d{i}" value="{v}"{" checked" if v == "" else ""}>'
        f"{text}</label>"
        for v, text in (("real", "real"), ("fake", "fake"), ("", "skip"))
    )
    return (
        f'<li class="item" data-uri="{uri}" data-score="{score}">'
        f'<img src="thumbs/{escape(it.sha256 or "")}.jpg" alt="no thumbnail" loading="lazy">'
        f'<div class="meta"><div class="uri">{escape(it.uri)}</div>'
        f'<div>score <b class="score">{score}</b> · {escape(it.format or "")} '
        f"{it.width or '?'}×{it.height or '?'}</div>{dup}"
        f'<div class="choices">{choices}</div></div></li>'
    )


_SCRIPT = """
const KEY = "deepfake-scan-review:" + document.body.dataset.store;
const saved = JSON.parse(localStorage.getItem(KEY) || "{}");
const items = [...document.querySelectorAll("li.item")];
const reviewer = document.getElementById("reviewer");
reviewer.value = saved["\\u0000reviewer"] || "";
for (const li of items) {
  const v = saved[li.dataset.uri];
  if (v) li.querySelector(`input[value="${v}"]`).checked = true;
}
function choice(li) { return li.querySelector("input:checked").value; }
function update() {
  const state = {"\\u0000reviewer": reviewer.value};
  let n = 0;
  for (const li of items) { const v = choice(li); if (v) { state[li.dataset.uri] = v; n++; } }
  localStorage.setItem(KEY, JSON.stringify(state));
  document.getElementById("decided").textContent = n;
}
document.addEventListener("change", update);
reviewer.addEventListener("input", update);
const csv = (v) => '"' + String(v).replace(/"/g, '""') + '"';
function download() {
  const who = reviewer.value.trim();
  if (!who) { alert("Enter your name as reviewer first."); reviewer.focus(); return; }
  const rows = ["uri,label,reviewer"];
  for (const li of items) {
    const v = choice(li);
    if (v) rows.push([li.dataset.uri, v, who].map(csv).join(","));
  }
  const blob = new Blob([rows.join("\\n") + "\\n"], {type: "text/csv"});
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "decisions.csv";
  a.click();
}
document.getElementById("download").addEventListener("click", download);
update();
"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>deepfake-scan review ({count})</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; }}
header {{ position: sticky; top: 0; background: #fff; padding: .5em 0;
         border-bottom: 1px solid #ccc; }}
ul {{ list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 1em; }}
li.item {{ width: 180px; border: 1px solid #ddd; padding: 8px; }}
li.item img {{ max-width: 160px; max-height: 160px; display: block; margin: auto; }}
.uri {{ font-size: 11px; word-break: break-all; color: #444; }}
.dup {{ font-size: 11px; color: #a60; }}
.choices label {{ margin-right: .5em; }}
code {{ background: #eee; padding: 0 .3em; }}
</style></head>
<body data-store="{store}">
<header>
<h1>Review: {count} uncertain images</h1>
<p>Scores in [{low}, {high}) need a human (threshold {threshold}). Pick real or fake, then
<button id="download">Download decisions (CSV)</button> as
<input id="reviewer" placeholder="your name" size="14"> · <span id="decided">0</span> decided.</p>
<p>Import them with <code>{command}</code></p>
</header>
<ul id="queue">
{cards}
</ul>
<script>{script}</script>
</body></html>
"""
