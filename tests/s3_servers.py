"""A real S3-compatible server for the tests (``moto_server`` on 127.0.0.1), and the AWS settings
that talk to it and nothing else: no ``~/.aws``, no instance metadata, no proxy."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.services import free_port, start, stop, wait_for_port

BIN = Path(sys.executable).parent
KEY_ID = "AKIA" + uuid.uuid4().hex[:16].upper()
SECRET = "s3cr3t-" + uuid.uuid4().hex  # must never appear in any output
REGION = "us-east-1"
LOCAL = "127.0.0.1,localhost"


def isolated_env(endpoint: str | None, key_id: str = KEY_ID, secret: str = SECRET) -> dict:
    """This process's environment with only the test's AWS settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=key_id,
        AWS_SECRET_ACCESS_KEY=secret,
        AWS_DEFAULT_REGION=REGION,
        AWS_EC2_METADATA_DISABLED="true",  # never ask 169.254.169.254 for credentials
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        NO_PROXY=LOCAL,  # the servers are local, whatever proxy the machine has
        no_proxy=LOCAL,
    )
    if endpoint:
        env["AWS_ENDPOINT_URL_S3"] = endpoint
    return env


def use_aws_env(monkeypatch, env: dict) -> None:
    """Make this process's AWS settings exactly those of ``env`` (until the test ends)."""
    import s3fs

    for k in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        if k.startswith("AWS_") or k.lower() == "no_proxy":
            monkeypatch.setenv(k, v)
    s3fs.S3FileSystem.clear_instance_cache()  # credentials are read when a filesystem is made


def serve_moto(tmp: Path) -> Iterator[str]:
    """Run ``moto_server`` until the generator is closed; yields its endpoint URL."""
    port = free_port()
    proc = start([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], tmp / "moto.log")
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def make_bucket(s3, prefix: str = "b") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    return name


def upload(s3, folder: Path, bucket: str, prefix: str) -> None:
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder)}")


def all_bytes(s3, bucket: str) -> bytes:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return b"".join(s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys)
