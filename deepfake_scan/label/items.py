"""The labelled dataset's rows: one ``Item`` per listed record, built from committed verdicts.

An item's label is the model's (recomputed from its score with this run's threshold and review
band, so a new threshold relabels without rescoring) unless a reviewer decided otherwise: the
latest human correction for the same image bytes wins.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from deepfake_scan.sources import Input
from deepfake_scan.store import VerdictStore

HUMAN = "human"  # corrections are verdict rows whose model_id is "human@<reviewer>"
LABELS = ("real", "fake", "uncertain")
_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif"}


def is_human(model_id: str | None) -> bool:
    return (model_id or "").startswith(HUMAN + "@")


def model_name(model_id: str | None) -> str:
    return (model_id or "").split("@", 1)[0]


@dataclass
class Item:
    uri: str
    input_uri: str  # the listed object holding it (itself, or its tar or Parquet file)
    source_etag: str | None
    sha256: str | None
    width: int | None
    height: int | None
    format: str | None
    score: float | None
    model_id: str
    error: str | None
    source_key: str | None  # the Parquet source's key column
    model_label: str  # from the score with this run's threshold; "error" when unreadable
    label: str  # model_label, or a reviewer's decision
    reviewer: str | None = None
    phash: str | None = None
    exact_group: str | None = None  # the shared sha256, when other inputs have the same bytes
    near_group: int | None = None  # perceptual-hash group id, when it has other members
    duplicate_of: str | None = None  # the group member kept in its place (uri)
    shard: str | None = None  # relative to DEST, once written

    @property
    def key(self) -> str:
        """The WebDataset ``__key__``: stable per uri, unique, and free of dots (which
        WebDataset reads as the start of the extension)."""
        return hashlib.sha256(self.uri.encode()).hexdigest()[:24]

    @property
    def ext(self) -> str:
        fmt = (self.format or "").upper()
        return _EXTENSIONS.get(fmt, fmt.lower() or "bin")

    @property
    def label_source(self) -> str:
        return "error" if self.error else (HUMAN if self.reviewer else "model")


def sidecar(item: Item, threshold: float, band: tuple[float, float]) -> bytes:
    """The sample's ``.json``. Deterministic bytes: their hash tells whether a written shard is
    still current. Duplicate flags are left out on purpose: a new near-duplicate elsewhere in
    the archive must not force shards that hold its group to be rewritten."""
    body = {
        "uri": item.uri,
        "key": item.key,
        "sha256": item.sha256,
        "score": None if item.score is None else round(float(item.score), 6),
        "label": item.label,
        "label_source": item.label_source,
        "reviewer": item.reviewer,
        "model_label": item.model_label,
        "model_id": item.model_id,
        "threshold": threshold,
        "review_band": list(band),
        "width": item.width,
        "height": item.height,
        "format": item.format,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def input_for(uri: str, by_uri: dict[str, Input]) -> Input | None:
    """The listed input a record uri belongs to (a file, ``<tar>#member``, ``<parquet>#row``).
    Tries every ``#``, since file and member names may contain one."""
    if uri in by_uri:
        return by_uri[uri]
    at = uri.find("#")
    while at != -1:
        inp = by_uri.get(uri[:at])
        if inp is not None and inp.kind != "file":
            return inp
        at = uri.find("#", at + 1)
    return None


def load_items(
    store: VerdictStore,
    inputs: Iterable[Input],
    model: str,
    threshold: float,
    band: tuple[float, float],
) -> list[Item]:
    """One item per record of ``inputs``: its latest verdict from model ``model`` (by name) for
    the input's current etag, with the latest human correction applied. Sorted by uri."""
    from deepfake_scan.detector import label_for

    by_uri = {inp.uri: inp for inp in inputs}
    scored: dict[str, tuple[dict, Input]] = {}
    human: dict[str, dict] = {}
    rows = store.read(all_runs=True).to_pylist()
    for row in sorted(rows, key=lambda r: r["scanned_at"]):  # stable: later commits win ties
        inp = input_for(row["uri"], by_uri)
        if inp is None:
            continue
        if is_human(row["model_id"]):
            human[row["uri"]] = row
        elif model_name(row["model_id"]) == model and row["source_etag"] == inp.etag:
            scored[row["uri"]] = (row, inp)  # an older etag is a record that is gone or changed
    items = []
    for uri in sorted(scored):
        row, inp = scored[uri]
        ok = row["error"] is None and row["score"] is not None
        model_label = label_for(row["score"], threshold, band) if ok else "error"
        item = _item(row, inp, model_label)
        fix = human.get(uri)
        if ok and fix and fix["sha256"] in (None, row["sha256"]):  # reviewed these very bytes
            item.label, item.reviewer = fix["label"], fix["model_id"].split("@", 1)[1]
        items.append(item)
    return items


def _item(row: dict, inp: Input, model_label: str) -> Item:
    return Item(
        uri=row["uri"],
        input_uri=inp.uri,
        source_etag=row["source_etag"],
        sha256=row["sha256"],
        width=row["width"],
        height=row["height"],
        format=row["format"],
        score=row["score"],
        model_id=row["model_id"],
        error=row["error"] or (None if model_label != "error" else _no_score(row)),
        source_key=row.get("key"),
        model_label=model_label,
        label=model_label,
    )


def _no_score(row: dict) -> str:
    """Why a row without an error has no score: a face-only model found no face, or unknown."""
    if row.get("label") == "no_face":
        return "no_face: no face found (face-only model)"
    return "error: no score"
