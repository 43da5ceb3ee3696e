"""Listing a source and reading its records: image files, WebDataset tar shards, Parquet tables.

A *record* is one image candidate with its uri: a plain file (``/data/x.jpg``), a tar member
(``s3://b/shard.tar#dir/x.jpg``) or a Parquet row (``/t/part.parquet#17``). Reading never raises
for bad data: a record that cannot be read carries an ``error`` (``code: message``) instead.
Tar members are read from the stream only: nothing is ever extracted to disk or followed.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain, islice

from deepfake_scan.errors import ScanError
from deepfake_scan.listing import Row, read_manifest, walk
from deepfake_scan.storage import (
    S3_PROTOCOLS,
    describe_error,
    error_code,
    get_fs,
    is_storage_error,
    missing_reason,
    protocol_of,
    storage_errors,
    unstrip,
)

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
PARQUET_SUFFIXES = (".parquet", ".pq")
# WebDataset sidecars: skipped inside tar shards unless their bytes are an image.
SIDECAR_SUFFIXES = {
    "json",
    "cls",
    "cls2",
    "txt",
    "text",
    "id",
    "idx",
    "index",
    "npy",
    "pyd",
    "pickle",
    "pth",
    "caption",
    "meta",
    "xml",
    "csv",
    "yaml",
    "yml",
}
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Input:
    """One listed object: a plain file, or a container of records."""

    uri: str
    kind: str  # "file" | "tar" | "parquet"
    size: int
    etag: str


@dataclass
class Record:
    uri: str
    data: bytes | None = None
    error: str | None = None
    key: str | None = None


def kind_of(path: str) -> str:
    lower = path.lower()
    if lower.endswith(TAR_SUFFIXES):
        return "tar"
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return "file"


def _etag(info: dict) -> str:
    tag = info.get("ETag") or info.get("etag")
    if tag:
        return str(tag).strip('"')
    mtime = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or ""
    if hasattr(mtime, "timestamp"):
        mtime = f"{mtime.timestamp():.6f}"
    return f"{mtime}-{info.get('size', 0)}"


def list_inputs(source: str, manifest: str | None = None) -> Iterator[Input]:
    """Every object under ``source`` (a file, folder or prefix), sorted by uri; with a
    ``manifest``, the objects it names under ``source``, in its order.

    The source is checked here, before any work: a missing bucket or prefix, denied access or
    rejected credentials raise one ScanError line. The objects themselves are streamed: listed
    page by page, prefixes in parallel (see ``deepfake_scan.listing``).
    """
    if manifest:
        return _manifest_inputs(source, read_manifest(manifest))
    fs, path = get_fs(source)
    try:
        info = _s3_probe(fs, path) if protocol_of(fs) in S3_PROTOCOLS else fs.info(path)
    except FileNotFoundError as e:
        why = "bucket does not exist" if error_code(e) == "NoSuchBucket" else None
        raise ScanError(f"source not found: {source}: {why or missing_reason(fs, path)}") from None
    except Exception as e:
        if not is_storage_error(e):
            raise
        raise ScanError(f"source not readable: {source}: {describe_error(e)}") from None
    entries = walk(fs, path) if info["type"] == "directory" else iter([(path, info)])
    return _visible(fs, path, entries)


def _visible(fs, root: str, entries: Iterator[tuple[str, dict]]) -> Iterator[Input]:
    with storage_errors("source not readable while listing", unstrip(fs, root)):
        for p, i in entries:
            if posixpath.basename(p).startswith(".") or "/." in p[len(root) :]:
                continue  # hidden files and folders (.DS_Store, .git) are not archive content
            yield Input(unstrip(fs, p), kind_of(p), int(i.get("size") or 0), _etag(i))


def _s3_probe(fs, path: str) -> dict:
    """The object's info, or ``{"type": "directory"}`` for a prefix. A LIST goes first: unlike a
    HEAD, its errors say why (NoSuchBucket, AccessDenied, InvalidAccessKeyId, ...)."""
    bucket, _, key = path.partition("/")
    listing_error = None
    try:
        prefix = f"{key.rstrip('/')}/" if key else ""
        page = fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix, MaxKeys=1)
        if not key or page.get("KeyCount") or page.get("Contents"):
            return {"type": "directory"}
    except Exception as e:
        if not key or error_code(e) == "NoSuchBucket" or not is_storage_error(e):
            raise
        listing_error = e  # a reader without s3:ListBucket may still read a single object
    try:
        info = fs.info(path)
    except Exception:
        if listing_error is not None:
            raise listing_error from listing_error.__cause__  # the cause holds the S3 code
        raise
    return info if info.get("type") != "directory" else {"type": "directory"}


def _manifest_inputs(source: str, rows: Iterator[Row]) -> Iterator[Input]:
    """Manifest rows under ``source`` as inputs; rows without size or ETag get them by HEAD."""
    base = source.rstrip("/")
    seen: set[str] = set()

    def wanted() -> Iterator[Row]:
        for uri, size, etag in rows:
            if uri in seen or uri.endswith("/") or not (uri == base or uri.startswith(base + "/")):
                continue
            seen.add(uri)
            yield uri, size, etag

    first = list(islice(wanted(), 1))
    if first:  # fail fast on storage that cannot be read at all, not row by row
        uri = first[0][0]
        fs, path = get_fs(uri)
        try:
            fs.info(path)
        except FileNotFoundError:
            pass  # one missing object is a verdict row with an error, not a failed scan
        except Exception as e:
            if not is_storage_error(e):
                raise
            raise ScanError(f"source not readable: {uri}: {describe_error(e)}") from None
    return _complete(chain(first, wanted()))


def _complete(rows: Iterator[Row], chunk: int = 512) -> Iterator[Input]:
    """Inputs in manifest order; HEADs (only for rows that need them) run 16 at a time."""
    with ThreadPoolExecutor(16, thread_name_prefix="deepfake-scan-head") as pool:
        while batch := list(islice(rows, chunk)):
            if all(size is not None and etag is not None for _, size, etag in batch):
                yield from map(_manifest_input, batch)
            else:
                yield from pool.map(_manifest_input, batch)


def _manifest_input(row: Row) -> Input:
    uri, size, etag = row
    if size is None or etag is None:
        fs, path = get_fs(uri)
        try:
            info = fs.info(path)
            size, etag = int(info.get("size") or 0) if size is None else size, _etag(info)
        except Exception:  # read again (and reported) when the scan reads it
            size, etag = size or 0, ""
    return Input(uri, kind_of(uri), size, etag.strip('"'))


def iter_records(
    inp: Input,
    image_column: str = "image",
    key_column: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Iterator[Record]:
    if inp.kind == "tar":
        yield from _tar_records(inp, max_bytes)
    elif inp.kind == "parquet":
        yield from _parquet_records(inp, image_column, key_column)
    else:
        yield _file_record(inp, max_bytes)


def batch_inputs(batch: dict) -> list[Input]:
    """The listed inputs of a Ray batch (columns uri, kind, size, etag)."""
    cols = zip(batch["uri"], batch["kind"], batch["size"], batch["etag"], strict=True)
    return [Input(uri, kind, int(size), etag) for uri, kind, size, etag in cols]


def read_inputs(
    inputs: list[Input],
    image_column: str = "image",
    key_column: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    threads: int = 8,
    ahead_bytes: int = 64 * 2**20,
) -> Iterator[tuple[int, Record]]:
    """Every record of ``inputs``, in order, with its input's index. Plain files are read
    ``threads`` at a time, ahead of the caller: on object storage each read waits on the network,
    and a decode task reading one file at a time would wait longer than it decodes. Files read
    ahead hold at most ``ahead_bytes`` (or one file, whatever its size)."""
    files = [i for i, inp in enumerate(inputs) if inp.kind == "file"]
    ahead: dict[int, Future[Record]] = {}
    held, nxt = 0, 0
    with ThreadPoolExecutor(threads, thread_name_prefix="deepfake-scan-read") as pool:
        for i, inp in enumerate(inputs):
            while nxt < len(files) and len(ahead) < 2 * threads:
                j = files[nxt]
                if ahead and held + inputs[j].size > ahead_bytes:
                    break
                ahead[j] = pool.submit(_file_record, inputs[j], max_bytes)
                held, nxt = held + inputs[j].size, nxt + 1
            if i in ahead:
                held -= inp.size
                yield i, ahead.pop(i).result()
            else:
                for rec in iter_records(inp, image_column, key_column, max_bytes):
                    yield i, rec


def _file_record(inp: Input, max_bytes: int) -> Record:
    if inp.size > max_bytes:
        return Record(inp.uri, error=f"too_large: {inp.size} bytes exceeds {max_bytes}")
    fs, path = get_fs(inp.uri)
    try:
        with fs.open(path, "rb") as f:
            return Record(inp.uri, data=f.read())
    except Exception as e:  # vanished, permission, network: the row says so, the scan goes on
        return Record(inp.uri, error=f"read_error: {type(e).__name__}: {_first_line(e)}")


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:300] if lines else type(e).__name__


def _is_image(data: bytes) -> bool:
    from PIL import Image

    try:
        Image.open(io.BytesIO(data))
        return True
    except Exception:
        return False


def _tar_records(inp: Input, max_bytes: int) -> Iterator[Record]:
    fs, path = get_fs(inp.uri)
    try:
        with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
            for member in tar:
                yield from _tar_member(inp.uri, tar, member, max_bytes)
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        yield Record(inp.uri, error=f"tar_error: {_first_line(e)}")


def _tar_member(
    tar_uri: str, tar: tarfile.TarFile, member: tarfile.TarInfo, max_bytes: int
) -> Iterator[Record]:
    uri = f"{tar_uri}#{member.name}"
    suffix = member.name.rsplit(".", 1)[-1].lower() if "." in member.name else ""
    if member.isdir():
        return
    if not member.isfile():
        kind = "link" if (member.issym() or member.islnk()) else "device or fifo"
        if suffix not in SIDECAR_SUFFIXES:
            yield Record(uri, error=f"unsupported_member: tar member is a {kind}; not followed")
        return
    if member.size > max_bytes:
        yield Record(uri, error=f"too_large: {member.size} bytes exceeds {max_bytes}")
        return
    extracted = tar.extractfile(member)  # a stream over the archive; nothing touches the disk
    data = extracted.read() if extracted else b""
    if len(data) != member.size:
        yield Record(uri, error=f"truncated: tar member has {len(data)} of {member.size} bytes")
        return
    if suffix in SIDECAR_SUFFIXES and not _is_image(data):
        return
    yield Record(uri, data=data)


def _parquet_records(inp: Input, image_column: str, key_column: str | None) -> Iterator[Record]:
    import pyarrow.parquet as pq

    fs, path = get_fs(inp.uri)
    try:
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            names = pf.schema_arrow.names
            if image_column not in names:
                known = ", ".join(names)
                yield Record(inp.uri, error=f"parquet_error: no column {image_column!r} ({known})")
                return
            columns = [image_column] + ([key_column] if key_column in names else [])
            row = 0
            for batch in pf.iter_batches(batch_size=256, columns=columns):
                images = batch.column(image_column).to_pylist()
                keys = batch.column(key_column).to_pylist() if len(columns) > 1 else None
                for i, value in enumerate(images):
                    key = None if keys is None or keys[i] is None else str(keys[i])
                    yield _parquet_cell(f"{inp.uri}#{row}", value, key)
                    row += 1
    except Exception as e:
        yield Record(inp.uri, error=f"parquet_error: {_first_line(e)}")


def _parquet_cell(uri: str, value: object, key: str | None) -> Record:
    if isinstance(value, dict):  # Hugging Face datasets' Image feature: {"bytes", "path"}
        value = value.get("bytes")
    if value is None:
        return Record(uri, error="null_image: the row has no image bytes", key=key)
    if isinstance(value, str):
        return Record(uri, error="not_an_image: the column holds text, not bytes", key=key)
    return Record(uri, data=bytes(value), key=key)


def read_record(
    uri: str, image_column: str = "image", max_bytes: int = DEFAULT_MAX_BYTES
) -> Record:
    """Read one record by the uri its verdict carries: a file, ``<tar>#<member>`` or
    ``<parquet>#<row>`` (for thumbnails, labelled shards and reviews)."""
    base, _, fragment = uri.partition("#")
    kind = kind_of(base) if fragment else "file"
    if kind == "file":
        fs, path = get_fs(uri)
        try:
            size = fs.size(path) or 0
        except Exception as e:
            return Record(uri, error=f"read_error: {type(e).__name__}: {_first_line(e)}")
        return _file_record(Input(uri, "file", size, ""), max_bytes)
    inp = Input(base, kind, 0, "")
    if kind == "parquet":
        if not fragment.isdigit():
            return Record(uri, error=f"read_error: {fragment!r} is not a row index")
        for i, rec in enumerate(_parquet_records(inp, image_column, None)):
            if i == int(fragment) or rec.uri == base:
                return rec
    else:
        for rec in _tar_records(inp, max_bytes):
            if rec.uri in (uri, base):
                return rec
    return Record(uri, error=f"read_error: {fragment!r} not found in {base}")
