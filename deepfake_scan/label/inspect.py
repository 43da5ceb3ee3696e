"""The inspect pass: perceptual hashes (for near-duplicates) and review thumbnails.

Both depend on the image bytes alone, so they are cached by sha256 under ``DEST/_state`` and a
rerun (or an incremental run) only reads images it has never seen.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from deepfake_scan.label.dedup import perceptual_hash
from deepfake_scan.label.files import put_atomic, write_atomic
from deepfake_scan.label.items import Item
from deepfake_scan.label.reading import rows_of, unit_dataset, unit_records, work_units
from deepfake_scan.label.review import THUMBS, thumbnail_bytes
from deepfake_scan.sources import Input
from deepfake_scan.storage import get_fs, join

HASHES = "_state/hashes"
SAVE_EVERY = 10_000  # cached hashes a crash may lose at most


def inspect_step(
    batch: dict[str, np.ndarray],
    dest: str,
    image_column: str = "image",
    max_bytes: int = 256 * 1024 * 1024,
    max_pixels: int = 100_000_000,
) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data step over work units: yields (uri, sha256, phash) and writes thumbnails."""
    fs, root = get_fs(dest)
    out: dict[str, list] = {"uri": [], "sha256": [], "phash": []}
    for unit in rows_of(batch):
        for rec, meta in unit_records(unit, image_column, max_bytes):
            sha = hashlib.sha256(rec.data).hexdigest() if rec.data is not None else None
            if sha is None or sha != meta["sha256"]:
                continue  # changed since it was scored: the next scan will pick it up
            phash = perceptual_hash(rec.data, max_pixels) if meta["phash"] else None
            if meta["thumb"]:
                _write_thumb(fs, join(root, THUMBS, f"{sha}.jpg"), rec.data, max_pixels)
            out["uri"].append(rec.uri)
            out["sha256"].append(sha)
            out["phash"].append(phash or "")
            if len(out["uri"]) >= 256:
                yield {k: np.array(v, dtype=object) for k, v in out.items()}
                out = {k: [] for k in out}
    if out["uri"]:
        yield {k: np.array(v, dtype=object) for k, v in out.items()}


def _write_thumb(fs, path: str, data: bytes, max_pixels: int) -> None:
    thumb = thumbnail_bytes(data, max_pixels)
    if thumb is not None:
        put_atomic(fs, path, thumb)  # a torn thumbnail would count as made and never be redone


def load_hashes(dest: str) -> dict[str, str]:
    """sha256 -> pHash hex ("" when the image could not be hashed) from earlier runs."""
    fs, root = get_fs(dest)
    try:
        files = sorted(fs.glob(join(root, HASHES, "*.parquet")))
    except FileNotFoundError:
        return {}
    cache: dict[str, str] = {}
    for path in files:
        with fs.open(path, "rb") as f:
            t = pq.read_table(f)
        cache.update(zip(t["sha256"].to_pylist(), t["phash"].to_pylist(), strict=True))
    return cache


def _save_hashes(dest: str, found: dict[str, str]) -> None:
    if not found:
        return
    fs, root = get_fs(dest)
    table = pa.table({"sha256": list(found), "phash": list(found.values())})
    path = join(root, HASHES, f"{uuid.uuid4().hex}.parquet")
    write_atomic(fs, path, lambda f: pq.write_table(table, f))


def existing_thumbs(dest: str) -> set[str]:
    fs, root = get_fs(dest)
    try:
        return {p.rsplit("/", 1)[-1][:-4] for p in fs.glob(join(root, THUMBS, "*.jpg"))}
    except FileNotFoundError:
        return set()


def inspect(
    items: list[Item],
    inputs: dict[str, Input],
    dest: str,
    want_phash: bool,
    read_options: dict,
    report: Callable[[str, int, int | None], None],
) -> int:
    """Fill ``phash`` on the items (when wanted) and make thumbnails for the uncertain ones.
    Returns how many images were read."""
    cache = load_hashes(dest) if want_phash else {}
    thumbs = existing_thumbs(dest)
    hashing: set[str] = set()
    need: dict[str, dict] = {}
    for it in items:
        if it.error or not it.sha256:
            continue
        # Both depend on the bytes alone: ask once per sha256, whatever the number of copies.
        ph = want_phash and it.sha256 not in cache and it.sha256 not in hashing
        th = it.label == "uncertain" and it.sha256 not in thumbs
        if ph or th:
            need[it.uri] = {"phash": ph, "thumb": th, "sha256": it.sha256}
            hashing.update([it.sha256] if ph else [])
            thumbs.update([it.sha256] if th else [])
    todo = [it for it in items if it.uri in need]
    report("inspect", 0, len(todo))
    if todo:
        _run(todo, inputs, dest, need, read_options, cache, report)
    for it in items:
        it.phash = cache.get(it.sha256 or "") or None
    return len(todo)


def _run(todo, inputs, dest, need, read_options, cache, report) -> None:
    units = work_units(todo, inputs, lambda it: need[it.uri])
    ds = unit_dataset(units, inspect_step, {"dest": dest, **read_options})
    found: dict[str, str] = {}
    done = 0
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for sha, phash, uri in zip(batch["sha256"], batch["phash"], batch["uri"], strict=True):
            if need[uri]["phash"]:
                found[sha] = phash
        done += len(batch["uri"])
        report("inspect", done, len(todo))
        if len(found) >= SAVE_EVERY:
            _save_hashes(dest, found)
            cache.update(found)
            found = {}
    _save_hashes(dest, found)
    cache.update(found)
