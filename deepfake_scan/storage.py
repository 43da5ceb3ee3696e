"""Filesystems for local paths and URIs (s3://, gs://, abfs://, memory://, ...) through fsspec.

S3 settings come from the standard AWS chain and variables, so the same command works on a laptop,
an EC2 instance role, EKS (IRSA / Pod Identity) and S3-compatible stores:

- credentials: env, profile, instance or pod role (botocore's chain; never read or logged here);
- ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (or ``--s3-endpoint``): MinIO, Ceph, R2, ...;
- ``AWS_REQUEST_CHECKSUM_CALCULATION=WHEN_REQUIRED``: for stores that reject recent botocore's
  default checksums (also ``AWS_RESPONSE_CHECKSUM_VALIDATION``);
- ``AWS_MAX_ATTEMPTS`` / ``AWS_RETRY_MODE``: retries with exponential backoff and jitter on
  throttling (SlowDown, 503) and transient errors (default: 10 attempts, ``adaptive``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

import fsspec
from fsspec import AbstractFileSystem

from deepfake_scan.errors import ScanError

S3_PROTOCOLS = ("s3", "s3a")
# Non-secret S3 settings that Ray workers need as much as the driver does (see worker_env).
S3_SETTINGS = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_REQUEST_CHECKSUM_CALCULATION",
    "AWS_RESPONSE_CHECKSUM_VALIDATION",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
)
SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
}
_DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "AccountProblem", "403"}


def set_s3_endpoint(endpoint: str | None) -> None:
    """``--s3-endpoint``: the same as ``AWS_ENDPOINT_URL_S3`` (and passed on to Ray workers)."""
    if endpoint:
        os.environ["AWS_ENDPOINT_URL_S3"] = endpoint


def s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_options() -> dict:
    """fsspec/s3fs options from the environment; credentials are left to botocore's chain."""
    config: dict = {
        "retries": {
            "max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS") or 10),
            "mode": os.environ.get("AWS_RETRY_MODE") or "adaptive",
        },
        "connect_timeout": 10,
        "read_timeout": 120,
    }
    for var, key in (
        ("AWS_REQUEST_CHECKSUM_CALCULATION", "request_checksum_calculation"),
        ("AWS_RESPONSE_CHECKSUM_VALIDATION", "response_checksum_validation"),
    ):
        if os.environ.get(var):
            config[key] = os.environ[var].lower()
    opts: dict = {"config_kwargs": config}
    endpoint = s3_endpoint()
    if endpoint:
        opts["endpoint_url"] = endpoint
        # MinIO, Ceph and most S3-compatible stores serve buckets by path, not by host name.
        config["s3"] = {"addressing_style": "path"}
    return opts


def worker_env() -> dict[str, str]:
    """The non-secret S3 settings of this process, for Ray workers (credentials never travel)."""
    return {k: os.environ[k] for k in S3_SETTINGS if os.environ.get(k)}


def get_fs(uri: str) -> tuple[AbstractFileSystem, str]:
    """The filesystem for ``uri`` and the path inside it (no network I/O happens here)."""
    protocol = uri.split("://", 1)[0] if "://" in uri else "file"
    options = s3_options() if protocol in S3_PROTOCOLS else {}
    fs, path = fsspec.core.url_to_fs(uri, **options)
    return fs, path


def is_local(fs: AbstractFileSystem) -> bool:
    return protocol_of(fs) in ("file", "local")


def protocol_of(fs: AbstractFileSystem) -> str:
    return fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


def unstrip(fs: AbstractFileSystem, path: str) -> str:
    """The URI a user would write for a path returned by ``fs`` (local paths stay plain paths)."""
    if is_local(fs):
        return path
    return fs.unstrip_protocol(path)


# -- errors -----------------------------------------------------------------------------------
def redact(text: str) -> str:
    """``text`` without credential values or the userinfo of URLs (``http://user:pw@host``)."""
    for var in SECRET_VARIABLES:
        value = os.environ.get(var)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    text = re.sub(r"(?<=://)[^/@\s]+@", "***@", text)
    # Signed-request fragments some servers echo back in error messages.
    return re.sub(r"(?i)(signature|credential|x-amz-security-token)=[^&\s]+", r"\1=***", text)


def error_code(e: BaseException) -> str | None:
    """The S3 error code behind ``e`` (s3fs keeps botocore's ClientError as the cause)."""
    for err in (e, e.__cause__, e.__context__):
        response = getattr(err, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            if code:
                return str(code)
    return None


def describe_error(e: BaseException) -> str:
    """One line saying why a storage call failed, with no credentials in it."""
    code = error_code(e)
    name = type(e).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        return (
            "no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
            "AWS_PROFILE, or run with an instance or pod role)"
        )
    if name == "ProfileNotFound":
        return f"AWS profile not found: {redact(_first_line(e))}"
    if code in _CREDENTIAL_CODES:
        return f"credentials rejected ({code}): check the access key, secret and session token"
    if code == "NoSuchBucket":
        return "bucket does not exist"
    if code in _DENIED_CODES or isinstance(e, PermissionError):
        return f"access denied ({code or name}): check the bucket policy and IAM permissions"
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError") or (
        isinstance(e, ConnectionError)
    ):
        return f"cannot connect to the storage endpoint ({s3_endpoint() or 'default'})"
    if isinstance(e, FileNotFoundError):
        return "not found"
    detail = _first_line(e)
    return redact(f"{code or name}: {detail}" if detail != name else name)


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:300] if lines else type(e).__name__


def missing_reason(fs: AbstractFileSystem, path: str) -> str:
    """Why ``path`` was not found: its bucket is missing, or nothing is at the key or prefix."""
    if is_local(fs) or protocol_of(fs) == "memory":
        return "no such file or folder"
    bucket = path.strip("/").split("/", 1)[0]
    try:
        if protocol_of(fs) in S3_PROTOCOLS:
            fs.call_s3("head_bucket", Bucket=bucket)
        elif not fs.exists(bucket):
            return f"bucket {bucket!r} does not exist"
    except FileNotFoundError:
        return f"bucket {bucket!r} does not exist"
    except Exception as e:  # noqa: BLE001 - the first error is the one to report
        return describe_error(e)
    return "no object or prefix there"


@contextmanager
def storage_errors(what: str, uri: str) -> Iterator[None]:
    """Turn storage failures into one ScanError line: ``{what}: {uri}: {why}``."""
    try:
        yield
    except ScanError:
        raise
    except Exception as e:
        if not is_storage_error(e):
            raise
        raise ScanError(f"{what}: {redact(uri)}: {describe_error(e)}") from None


def is_storage_error(e: BaseException) -> bool:
    """Whether ``e`` came from storage (I/O, botocore, aiohttp) rather than from a bug."""
    module = type(e).__module__ or ""
    return isinstance(e, OSError) or module.startswith(("botocore", "aiobotocore", "aiohttp"))
