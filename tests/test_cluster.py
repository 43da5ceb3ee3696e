"""Scans as Ray jobs on a real two-node Ray cluster on this machine, reading and writing S3.

A head (``ray start --head``) and a worker node (``ray start --address``) run on 127.0.0.1 with
ports and a temp dir of their own, token authentication on (Ray 2.60's default for new clusters)
and the token passed in the environment, never written to ``~/.ray``. Jobs go through the real
``ray job submit --working-dir .`` client. The nodes have S3 credentials in their environment,
as an instance role would give them; the S3 endpoint (a ``moto_server`` the tests start) is
named only by the job's ``--s3-endpoint``. The cluster is stopped by its own process ids (its
process groups, then any process naming its temp dir), never by ``ray stop``, which would stop
every Ray on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

import deepfake_scan
from tests.fixtures import image_bytes, tar_bytes
from tests.s3_servers import (
    KEY_ID,
    REGION,
    SECRET,
    all_bytes,
    isolated_env,
    make_bucket,
    serve_moto,
    upload,
    use_aws_env,
)
from tests.services import HOST, free_ports, start, stop_pids, wait_for_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CPUS_PER_NODE = 2


@dataclass
class RayCluster:
    address: str  # GCS address, for ray start --address
    dashboard: str  # http address, for ray job submit
    env: dict  # what a client needs: the token, and this venv's python first on PATH
    temp_dir: str
    logs: Path

    def submit(
        self, *args: str, env_vars: dict | None = None, timeout: float = 420
    ) -> subprocess.CompletedProcess:
        cmd = [str(BIN / "ray"), "job", "submit", "--address", self.dashboard]
        if env_vars:
            cmd += ["--runtime-env-json", json.dumps({"env_vars": env_vars})]
        cmd += ["--working-dir", ".", "--", "python", "-m", *args]
        return subprocess.run(
            cmd, capture_output=True, text=True, cwd=ROOT, env=self.env, timeout=timeout
        )

    def api(self, path: str) -> object:
        req = urllib.request.Request(
            self.dashboard + path, headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def alive_nodes(self) -> list[dict]:
        nodes = self.api("/api/v0/nodes?limit=100")["data"]["result"]["result"]
        return [n for n in nodes if n["state"] == "ALIVE"]


def _node_args(ports: list[int]) -> list[str]:
    names = [
        "--node-manager-port",
        "--object-manager-port",
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--runtime-env-agent-port",
        "--metrics-export-port",
    ]
    args = [a for name, port in zip(names, ports, strict=True) for a in (name, str(port))]
    # Worker processes on ports the OS picks: no range to collide with another Ray here.
    args += ["--min-worker-port", "0", "--max-worker-port", "0"]
    return args + ["--num-cpus", str(CPUS_PER_NODE), "--num-gpus", "0"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    logs = tmp_path_factory.mktemp("ray-cluster")
    # Ray's socket paths must stay short: a temp dir of our own directly under /tmp.
    temp_dir = tempfile.mkdtemp(prefix="dfs-ray-", dir="/tmp")
    gcs, dash, *node_ports = free_ports(14)
    env = {k: v for k, v in isolated_env(None).items() if not k.startswith("RAY_")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # `python` in the job is this venv's
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=uuid.uuid4().hex + uuid.uuid4().hex,
        RAY_USAGE_STATS_ENABLED="0",
    )
    common = [str(BIN / "ray"), "start", "--node-ip-address", HOST, "--block"]
    common += ["--object-store-memory", str(200 * 1024 * 1024), "--disable-usage-stats"]
    head = start(
        [
            *common,
            "--head",
            "--port",
            str(gcs),
            "--temp-dir",
            temp_dir,
            "--include-dashboard",
            "true",
            "--dashboard-host",
            HOST,
            "--dashboard-port",
            str(dash),
            *_node_args(node_ports[:6]),
        ],
        logs / "head.log",
        env,
    )
    procs = [head]
    c = RayCluster(f"{HOST}:{gcs}", f"http://{HOST}:{dash}", env, temp_dir, logs)
    try:
        wait_for_port(dash, head, timeout=180)
        worker = start(
            [
                *common,
                "--address",
                c.address,
                *_node_args(node_ports[6:12]),
            ],
            logs / "worker.log",
            env,
        )
        procs.append(worker)
        deadline = time.monotonic() + 400  # a loaded 2-core machine joins nodes slowly
        while len(_try(c.alive_nodes) or []) < 2:
            assert time.monotonic() < deadline, (logs / "worker.log").read_text()[-3000:]
            assert worker.poll() is None, (logs / "worker.log").read_text()[-3000:]
            time.sleep(1)
        yield c
    finally:
        stop_pids([p.pid for p in procs], grace=8, group=True)  # both nodes at once
        for proc in procs:
            proc.wait(timeout=10)
        stop_pids(_pids_naming(temp_dir), grace=10)  # anything that outlived its group
        shutil.rmtree(temp_dir, ignore_errors=True)


def _try(fn):
    try:
        return fn()
    except OSError:
        return None


def _pids_naming(text: str) -> list[int]:
    """Processes whose command line names ``text`` (this cluster's own temp dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(entry.name))
    return pids


def _summary(log: str) -> dict:
    """The scan's JSON summary, as the job printed it to its log."""
    start = log.index('{\n  "run_id"')
    return json.JSONDecoder().raw_decode(log[start:])[0]


def test_token_is_required_to_submit(cluster):
    env = {k: v for k, v in cluster.env.items() if k != "RAY_AUTH_TOKEN"}
    env["HOME"] = str(cluster.logs)  # no ~/.ray/auth_token to fall back on either
    r = subprocess.run(
        [str(BIN / "ray"), "job", "list", "--address", cluster.dashboard],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode != 0
    assert "token" in (r.stdout + r.stderr).lower()


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    yield from serve_moto(tmp_path_factory.mktemp("moto"))


def test_s3_scan_job_spreads_over_both_nodes(cluster, moto, monkeypatch, tmp_path, tiny_model):
    use_aws_env(monkeypatch, isolated_env(moto))
    s3 = boto3.client("s3", endpoint_url=moto, region_name=REGION)
    src, out, models = make_bucket(s3, "src"), make_bucket(s3, "out"), make_bucket(s3, "models")
    for i in range(24):
        s3.put_object(Bucket=src, Key=f"photos/{i % 4}/{i:02d}.jpg", Body=image_bytes(seed=i))
    s3.put_object(Bucket=src, Key="photos/broken.jpg", Body=b"\xff\xd8\xff\xe0 truncated")
    shard = tar_bytes({"a.jpg": image_bytes(seed=90), "b.png": image_bytes("PNG", seed=91)})
    s3.put_object(Bucket=src, Key="photos/shard-000.tar", Body=shard)
    upload(s3, Path(tiny_model), models, "tiny")

    r = cluster.submit(
        "jobs.scan",
        f"s3://{src}/photos",
        "--out",
        f"s3://{out}/verdicts",
        "--model",
        f"s3://{models}/tiny",
        "--s3-endpoint",
        moto,
        "--concurrency",
        "2",
        "--batch-size",
        "4",
        "--json",
        env_vars={  # as MinIO and others need; reaches the driver and, from it, every worker
            "AWS_REQUEST_CHECKSUM_CALCULATION": "WHEN_REQUIRED",
            "AWS_RESPONSE_CHECKSUM_VALIDATION": "WHEN_REQUIRED",
        },
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "succeeded" in r.stdout
    summary = _summary(r.stdout)
    assert summary["rows"] == 27 and summary["errors"] == {"decode_error": 1}
    table = deepfake_scan.read_verdicts(f"s3://{out}/verdicts")
    assert table.num_rows == 27
    assert f"s3://{src}/photos/shard-000.tar#b.png" in table.column("uri").to_pylist()
    for secret in (SECRET, KEY_ID):  # in no log line, no verdict, no commit record
        assert secret not in r.stdout + r.stderr
        assert secret.encode() not in all_bytes(s3, out)

    # Where the work ran, from the cluster's own task records (the state API).
    nodes = {n["node_id"] for n in cluster.alive_nodes()}
    tasks = cluster.api("/api/v0/tasks?limit=10000&detail=1")["data"]["result"]["result"]
    decode = {t["node_id"] for t in tasks if t["name"] == "MapBatches(read_decode)"}
    scored = [t for t in tasks if t["name"] == "MapWorker(MapBatches(Scorer)).submit"]
    assert decode == nodes  # Ray Data spreads the reading and decoding over both nodes
    assert scored and all(t["state"] == "FINISHED" for t in scored)


def test_failed_job_exits_nonzero_with_one_line_in_its_log(cluster, tmp_path):
    r = cluster.submit(
        "jobs.scan", str(tmp_path / "missing"), "--out", str(tmp_path / "v"), timeout=300
    )
    assert r.returncode != 0
    assert "failed" in (r.stdout + r.stderr).lower()
    assert "source not found" in r.stdout and "Traceback" not in r.stdout
