"""Whole-or-nothing file writes on local disks and object stores."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import BinaryIO

from fsspec import AbstractFileSystem


def is_local(fs: AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def write_atomic(fs: AbstractFileSystem, path: str, write: Callable[[BinaryIO], None]) -> None:
    """Readers see the old file or the whole new one, never a torn one. Locally: a temporary
    file renamed over ``path``; on object stores one upload is visible only once complete."""
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    if not is_local(fs):
        with fs.open(path, "wb") as f:
            write(f)
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def put_atomic(fs: AbstractFileSystem, path: str, data: bytes) -> None:
    write_atomic(fs, path, lambda f: f.write(data))
