"""Listing object stores at scale, and manifests that replace listing.

A listing streams: pages of (at most) 1000 keys flow on as they arrive, and the prefixes under the
source are listed in parallel on a small thread pool, each a little ahead of where the consumer
is, so memory holds a bounded window of the listing rather than all of it. Output stays sorted
by key, as S3 lists keys, whatever the parallelism.

A manifest (``--manifest``) is a file of object URIs that stands in for the listing: Parquet or
CSV with a ``uri`` column (or ``bucket`` + ``key``), optionally ``size`` and ``etag``; a headerless
CSV of URIs; or an S3 Inventory report (its ``manifest.json``, whose CSV or Parquet files are read
with the schema it names).
"""

from __future__ import annotations

import csv
import io
import json
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote_plus

from fsspec import AbstractFileSystem

from deepfake_scan.errors import ScanError
from deepfake_scan.storage import S3_PROTOCOLS, get_fs, protocol_of, storage_errors

LIST_THREADS = 8  # prefixes listed at once
PAGE_KEYS = 1000  # keys per LIST request (S3's maximum)
PAGE_QUEUE = 16  # pages a prefix may list ahead of the consumer
WINDOW = 10_000  # top-level entries held while waiting on a prefix's listing
Entry = tuple[str, dict]  # (path inside the filesystem, info with size and ETag or mtime)
_DONE = object()


# -- listing ----------------------------------------------------------------------------------
def walk(fs: AbstractFileSystem, root: str, threads: int | None = None) -> Iterator[Entry]:
    """Every file under ``root``, sorted by path, streamed; sub-prefixes listed in parallel.
    (Other filesystems than S3 list each sub-folder whole, with ``fs.find``.)"""
    if protocol_of(fs) in S3_PROTOCOLS:
        bucket, _, key = root.strip("/").partition("/")
        prefix = f"{key}/" if key else ""
        top = _s3_level(fs, bucket, prefix)

        def below(p: str) -> Iterator[list[Entry]]:  # p is "bucket/key/of/prefix"
            return _s3_pages(fs, bucket, p.split("/", 1)[1] + "/", delimiter=False)

    else:
        top = _fs_level(fs, root)

        def below(p: str) -> Iterator[list[Entry]]:
            found = fs.find(p, detail=True)
            yield sorted((k, v) for k, v in found.items() if v.get("type") != "directory")

    return _expand(top, below, threads or LIST_THREADS)


def _s3_pages(
    fs: AbstractFileSystem, bucket: str, prefix: str, delimiter: bool
) -> Iterator[list[Entry]]:
    """ListObjectsV2 page by page: files as entries, sub-prefixes (with a delimiter) as dirs."""
    token = None
    while True:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": PAGE_KEYS}
        if delimiter:
            kwargs["Delimiter"] = "/"
        if token:
            kwargs["ContinuationToken"] = token
        page = fs.call_s3("list_objects_v2", **kwargs)
        entries = [
            (f"{bucket}/{o['Key']}", {"type": "file", "size": o.get("Size", 0), **o})
            for o in page.get("Contents", [])
            if not o["Key"].endswith("/")  # folder markers made by consoles are not content
        ]
        entries += [
            (f"{bucket}/{p['Prefix']}".rstrip("/"), {"type": "directory"})
            for p in page.get("CommonPrefixes", [])
        ]
        yield sorted(entries, key=_sort_key)  # a page covers one key range: merging it suffices
        if not page.get("IsTruncated"):
            return
        token = page["NextContinuationToken"]


def _s3_level(fs: AbstractFileSystem, bucket: str, prefix: str) -> Iterator[Entry]:
    for page in _s3_pages(fs, bucket, prefix, delimiter=True):
        yield from page


def _fs_level(fs: AbstractFileSystem, root: str) -> Iterator[Entry]:
    entries = [(e["name"], e) for e in fs.ls(root, detail=True)]
    yield from sorted(entries, key=_sort_key)


def _sort_key(entry: Entry) -> str:
    # A folder sorts where its contents' paths sort: "a.jpg" < "a/x.jpg" < "a0.jpg".
    path, info = entry
    return path + "/" if info.get("type") == "directory" else path


class _Prefetch:
    """Lists one prefix on a pool thread into a bounded queue, ahead of the consumer."""

    def __init__(self, pool: ThreadPoolExecutor, pages: Iterator[list[Entry]], stop):
        self.queue: queue.Queue = queue.Queue(PAGE_QUEUE)
        self.stop = stop
        pool.submit(self._run, pages)

    def _run(self, pages: Iterator[list[Entry]]) -> None:
        try:
            for page in pages:
                if not self._put(page):
                    return
            self._put(_DONE)
        except BaseException as e:  # handed to the consumer, raised there
            self._put(e)

    def _put(self, item: object) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Entry]:
        while (item := self.queue.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield from item


def _expand(
    top: Iterator[Entry], below: Callable[[str], Iterator[list[Entry]]], threads: int
) -> Iterator[Entry]:
    """Top-level entries in order, each directory replaced by its (prefetched) contents."""
    stop = threading.Event()
    pool = ThreadPoolExecutor(threads, thread_name_prefix="deepfake-scan-list")
    window: deque = deque()  # Entry | _Prefetch, in output order
    running = 0  # prefetches in the window; never more than the pool's threads

    def pop() -> Iterator[Entry]:
        nonlocal running
        head = window.popleft()
        if isinstance(head, _Prefetch):
            running -= 1
            yield from head
        else:
            yield head

    try:
        for path, info in top:
            if info.get("type") == "directory":
                while running >= threads:
                    yield from pop()
                window.append(_Prefetch(pool, below(path), stop))
                running += 1
            else:
                window.append((path, info))
                while len(window) > WINDOW:
                    yield from pop()
        while window:
            yield from pop()
    finally:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)


# -- manifests --------------------------------------------------------------------------------
Row = tuple[str, int | None, str | None]  # (uri, size, etag); None where the manifest says nothing
_URI = ("uri", "url", "path")
_ETAG = ("etag",)


def read_manifest(manifest: str) -> Iterator[Row]:
    """The objects a manifest names, in its order (checked eagerly: a missing or unreadable
    manifest fails here, before any work)."""
    fs, path = get_fs(manifest)
    with storage_errors("manifest not readable", manifest):
        try:
            fs.info(path)
        except FileNotFoundError:
            raise ScanError(f"manifest not found: {manifest}") from None
        lower = path.lower()
        if lower.endswith(".json"):
            files, fmt, columns = _inventory(fs.cat_file(path), manifest)
            return _rows_from_files(files, fmt, columns, manifest)
        fmt = "parquet" if lower.endswith((".parquet", ".pq")) else "csv"
        return _rows_from_files([manifest], fmt, None, manifest)


def _inventory(blob: bytes, manifest: str) -> tuple[list[str], str, list[str] | None]:
    """An S3 Inventory ``manifest.json``: its data files, their format and column names."""
    try:
        doc = json.loads(blob)
        dest = doc["destinationBucket"].rsplit(":", 1)[-1]
        files = [f"s3://{dest}/{f['key']}" for f in doc["files"]]
        fmt = doc["fileFormat"].lower()
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        why = f"not an S3 Inventory manifest: {e}"
        raise ScanError(f"manifest not readable: {manifest}: {why}") from None
    if fmt not in ("csv", "parquet"):
        raise ScanError(f"manifest not readable: {manifest}: {fmt} inventories are not supported")
    columns = None
    if fmt == "csv":  # "Bucket, Key, Size, LastModifiedDate, ETag, ..." for headerless files
        columns = [_column(c) for c in doc.get("fileSchema", "Bucket, Key").split(",")]
    return files, fmt, columns


def _rows_from_files(
    files: list[str], fmt: str, columns: list[str] | None, manifest: str
) -> Iterator[Row]:
    for uri in files:
        with storage_errors("manifest not readable", uri):
            fs, path = get_fs(uri)
            with fs.open(path, "rb", compression="infer") as f:
                rows = _parquet_rows(f) if fmt == "parquet" else _csv_rows(f, columns)
                try:
                    yield from rows
                except (KeyError, ValueError, TypeError) as e:
                    raise ScanError(f"manifest not readable: {manifest}: {e}") from None


def _parquet_rows(f) -> Iterator[Row]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(f).iter_batches(batch_size=10_000):
        for rec in batch.to_pylist():
            row = _row({_column(k): v for k, v in rec.items()}, encoded=False)
            if row:
                yield row


def _csv_rows(f, columns: list[str] | None) -> Iterator[Row]:
    reader = csv.reader(io.TextIOWrapper(f, encoding="utf-8", newline=""))
    encoded = columns is not None  # S3 Inventory CSVs URL-encode their keys
    for values in reader:
        if not values or not values[0].strip():
            continue
        if columns is None:
            header = [_column(v) for v in values]
            if set(header) & {*_URI, "key"}:
                columns = header
                continue
            # no header: one URI per line, or bucket,key,... as an Inventory data file has
            columns = ["uri"] if len(values) == 1 or "://" in values[0] else ["bucket", "key"]
            encoded = columns != ["uri"]
        row = _row(dict(zip(columns, values, strict=False)), encoded)
        if row:
            yield row


def _column(name: str) -> str:
    # "ETag" (Inventory CSV schema), "e_tag" (Inventory Parquet) and "etag" are one column.
    return name.strip().lower().replace("_", "")


def _row(rec: dict, encoded: bool) -> Row | None:
    """One manifest record as (uri, size, etag); None for delete markers and old versions."""
    if _truthy(rec.get("isdeletemarker")) or str(rec.get("islatest", "")).lower() == "false":
        return None
    uri = next((rec[c] for c in _URI if rec.get(c)), None)
    if uri is None:
        if not rec.get("bucket") or not rec.get("key"):
            raise KeyError(f"a row has no uri (or bucket and key) column: {sorted(rec)}")
        key = unquote_plus(rec["key"]) if encoded else rec["key"]
        uri = f"s3://{rec['bucket']}/{key}"
    size = rec.get("size")
    etag = next((rec[c] for c in _ETAG if rec.get(c)), None)
    return str(uri), int(size) if size not in (None, "") else None, str(etag) if etag else None


def _truthy(value: object) -> bool:
    return value is True or str(value).lower() == "true"
