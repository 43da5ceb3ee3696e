"""The manifest ``DEST/labels.parquet`` (one row per input, optionally also as JSON lines or CSV)
and ``DEST/errors.parquet`` (the inputs that could not be read, which no shard holds)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from deepfake_scan.label.files import write_atomic
from deepfake_scan.label.items import Item
from deepfake_scan.storage import get_fs, join

MANIFEST = "labels"
ERRORS = "errors.parquet"
FORMATS = ("jsonl", "csv")

MANIFEST_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("key", pa.string()),  # the sample's WebDataset __key__
        ("shard", pa.string()),  # relative to DEST; null: error, dropped duplicate or changed
        ("label", pa.string()),  # real | fake | uncertain | error
        ("label_source", pa.string()),  # model | human | error
        ("reviewer", pa.string()),
        ("score", pa.float32()),
        ("model_label", pa.string()),
        ("model_id", pa.string()),
        ("threshold", pa.float64()),
        ("sha256", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("format", pa.string()),
        ("phash", pa.string()),
        ("exact_group", pa.string()),  # the shared sha256 when other inputs have these bytes
        ("near_group", pa.int64()),  # perceptual group id (includes exact copies)
        ("duplicate_of", pa.string()),  # the member kept for this one's group and label
        ("source_key", pa.string()),
        ("source_etag", pa.string()),
        ("error", pa.string()),
    ]
)
ERRORS_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("code", pa.string()),
        ("error", pa.string()),
        ("source_etag", pa.string()),
        ("sha256", pa.string()),
        ("model_id", pa.string()),
    ]
)


def manifest_table(items: list[Item], threshold: float) -> pa.Table:
    rows = [
        {
            **{f.name: getattr(it, f.name, None) for f in MANIFEST_SCHEMA},
            "key": it.key,
            "label_source": it.label_source,
            "threshold": threshold,
        }
        for it in items
    ]
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)


def errors_table(items: list[Item]) -> pa.Table:
    rows = [
        {
            "uri": it.uri,
            "code": (it.error or "").split(":", 1)[0],
            "error": it.error,
            "source_etag": it.source_etag,
            "sha256": it.sha256,
            "model_id": it.model_id,
        }
        for it in items
        if it.error
    ]
    return pa.Table.from_pylist(rows, schema=ERRORS_SCHEMA)


def write_manifest(
    dest: str, items: list[Item], threshold: float, formats: tuple[str, ...] = ()
) -> list[str]:
    """Write the manifest (+ each extra format) and the errors table; returns their paths."""
    fs, root = get_fs(dest)
    table = manifest_table(items, threshold)
    written = [join(root, f"{MANIFEST}.parquet"), join(root, ERRORS)]
    write_atomic(fs, written[0], lambda f: pq.write_table(table, f))
    errors = errors_table(items)
    write_atomic(fs, written[1], lambda f: pq.write_table(errors, f))
    for fmt in formats:
        path = join(root, f"{MANIFEST}.{fmt}")
        write_atomic(fs, path, lambda f, fmt=fmt: _write_as(table, fmt, f))
        written.append(path)
    return written


def _write_as(table: pa.Table, fmt: str, f) -> None:
    if fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, f)
    elif fmt == "jsonl":
        for row in table.to_pylist():
            f.write(json.dumps(row, ensure_ascii=False).encode() + b"\n")
    else:
        raise ValueError(f"unknown manifest format {fmt!r}; choose from {', '.join(FORMATS)}")
