"""Filesystems for local paths and URIs (s3://, gs://, abfs://, memory://, ...) through fsspec."""

from __future__ import annotations

import os

import fsspec
from fsspec import AbstractFileSystem


def _s3_options() -> dict:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    opts: dict = {"config_kwargs": {"retries": {"max_attempts": 8, "mode": "adaptive"}}}
    if endpoint:
        opts["endpoint_url"] = endpoint
    return opts


def get_fs(uri: str) -> tuple[AbstractFileSystem, str]:
    """The filesystem for ``uri`` and the path inside it (no network I/O happens here)."""
    protocol = uri.split("://", 1)[0] if "://" in uri else "file"
    options = _s3_options() if protocol in ("s3", "s3a") else {}
    fs, path = fsspec.core.url_to_fs(uri, **options)
    return fs, path


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


def unstrip(fs: AbstractFileSystem, path: str) -> str:
    """The URI a user would write for a path returned by ``fs`` (local paths stay plain paths)."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return path
    return fs.unstrip_protocol(path)
