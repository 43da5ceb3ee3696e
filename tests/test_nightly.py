"""Nightly scans: exactly-once under faults and concurrency, store upkeep, reports, the job."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pyarrow as pa
import pytest

import deepfake_scan
from deepfake_scan.errors import ScanError
from deepfake_scan.store import VERDICT_SCHEMA, CommittedKeys, VerdictStore
from deepfake_scan.upkeep import compact, gc
from tests.fixtures import image_bytes

ROOT = Path(__file__).resolve().parents[1]


def make_source(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{i:04d}.png").write_bytes(image_bytes("PNG", (48, 40), seed=i))
    return sorted(str(p) for p in folder.iterdir())


def assert_exactly_once(out: str, expected: list[str]) -> None:
    uris = deepfake_scan.read_verdicts(out, all_runs=True).column("uri").to_pylist()
    dupes = [u for u, n in Counter(uris).items() if n > 1]
    assert not dupes, dupes[:5]
    assert sorted(uris) == sorted(expected)


def full_rows(uris: list[str]) -> pa.Table:
    n = len(uris)
    given = {
        "uri": uris,
        "source_etag": ["e"] * n,
        "label": ["real"] * n,
        "model_id": ["m@1+abc"] * n,
    }
    return pa.table(
        {
            f.name: pa.array(given[f.name], f.type) if f.name in given else pa.nulls(n, f.type)
            for f in VERDICT_SCHEMA
        }
    )


def test_racing_writers_commit_each_key_exactly_once(tmp_path):
    out = str(tmp_path / "store")
    VerdictStore(out).check_writable()
    errors = []

    def writer(name: str) -> None:
        store = VerdictStore(out)
        keys = CommittedKeys(store)
        try:
            for i in range(15):  # overlapping keys: both writers try to commit u0..u29
                store.commit_rows(name, i, full_rows([f"u{2 * i}", f"u{2 * i + 1}"]), keys)
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(f"w{k}",)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert_exactly_once(out, [f"u{i}" for i in range(30)])
    numbers = [c.number for c in VerdictStore(out).commits()]
    assert numbers == list(range(len(numbers)))  # no commit number was ever taken twice


# A slow store (each commit takes 0.2 s more), so the kill lands mid-scan however fast the
# scoring is: with a tiny model all 24 commits could otherwise land between two polls.
SCAN_SCRIPT = """
import sys, time, deepfake_scan
from deepfake_scan import scanning
flush = scanning._flush
scanning._flush = lambda *a, **k: (time.sleep(0.2), flush(*a, **k))
deepfake_scan.scan(sys.argv[1], sys.argv[2], model=sys.argv[3], commit_every=10,
                   batch_size=10, concurrency=1)
"""


@pytest.mark.slow
def test_driver_killed_mid_scan_then_rerun_resumes_exactly_once(tmp_path, tiny_model, ray_local):
    expected = make_source(tmp_path / "src", 240)
    out = tmp_path / "store"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(
        [sys.executable, "-c", SCAN_SCRIPT, str(tmp_path / "src"), str(out), tiny_model],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline and len(list((out / "_commits").glob("*.json"))) < 2:
            assert proc.poll() is None, "scan finished before it could be killed"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        proc.wait()
    committed = deepfake_scan.read_verdicts(str(out), all_runs=True).num_rows
    assert 0 < committed < len(expected)
    summary = deepfake_scan.scan(str(tmp_path / "src"), str(out), model=tiny_model)
    assert summary.skipped == committed and summary.rows == len(expected) - committed
    assert_exactly_once(str(out), expected)


@pytest.mark.slow
def test_ray_worker_killed_mid_scan_the_run_completes_exactly_once(tmp_path, tiny_model, ray_local):
    expected = make_source(tmp_path / "src", 240)
    out = str(tmp_path / "store")
    killed = []

    def kill_a_worker() -> None:
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            if len(list((tmp_path / "store" / "_commits").glob("*.json"))) >= 1:
                for p in psutil.process_iter(["cmdline"]):
                    cmd = " ".join(p.info["cmdline"] or [])
                    if "MapWorker" in cmd or "ReadDecode" in cmd or "read_decode" in cmd:
                        p.kill()
                        killed.append(cmd)
                        return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_worker)
    killer.start()
    summary = deepfake_scan.scan(
        str(tmp_path / "src"), out, model=tiny_model, commit_every=10, batch_size=10
    )
    killer.join()
    assert killed, "no Ray worker was found to kill"
    assert summary.rows == len(expected)
    assert_exactly_once(out, expected)


def test_failed_part_write_stops_cleanly_and_rerun_completes(tmp_path, tiny_model, ray_local):
    expected = make_source(tmp_path / "src", 12)
    out = tmp_path / "store"
    (out / "data").mkdir(parents=True)
    (out / "data" / "run-x").write_text("a file where the run's folder must go")
    with pytest.raises(ScanError, match="cannot write verdicts"):
        deepfake_scan.scan(str(tmp_path / "src"), str(out), model=tiny_model, run_id="run-x")
    assert deepfake_scan.read_verdicts(str(out)).num_rows == 0
    deepfake_scan.scan(str(tmp_path / "src"), str(out), model=tiny_model)
    assert_exactly_once(str(out), expected)


@pytest.mark.slow
def test_two_scans_into_one_store_at_once(tmp_path, tiny_model, ray_local):
    expected = make_source(tmp_path / "src", 60)
    out = str(tmp_path / "store")
    results, errors = [], []

    def run() -> None:
        try:
            results.append(
                deepfake_scan.scan(
                    str(tmp_path / "src"), out, model=tiny_model, commit_every=5, batch_size=5
                )
            )
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 2
    assert sum(r.rows for r in results) == len(expected)  # together, each image once
    assert_exactly_once(out, expected)
    finals = [c for c in VerdictStore(out).commits() if c.final]
    assert {c.run_id for c in finals} == {r.run_id for r in results}


def test_half_written_part_is_ignored_then_collected(tmp_path, tiny_model, ray_local):
    expected = make_source(tmp_path / "src", 8)
    out = tmp_path / "store"
    deepfake_scan.scan(str(tmp_path / "src"), str(out), model=tiny_model)
    crashed = out / "data" / "crashed-run" / "part-000000-abcdef.parquet"
    crashed.parent.mkdir(parents=True)
    crashed.write_bytes(b"PAR1\x00\x00 torn write")
    assert_exactly_once(str(out), expected)  # readers never see it
    assert gc(str(out), grace_seconds=3600).removed == []  # too young: may be a live writer's
    result = gc(str(out), grace_seconds=0)
    assert [Path(p).name for p in result.removed] == [crashed.name]
    assert_exactly_once(str(out), expected)


def test_compact_merges_parts_without_changing_what_readers_see(tmp_path, tiny_model, ray_local):
    make_source(tmp_path / "src", 40)
    out = str(tmp_path / "store")
    deepfake_scan.scan(str(tmp_path / "src"), out, model=tiny_model, commit_every=5, batch_size=5)
    store = VerdictStore(out)
    before_files = store.committed_files()
    before = deepfake_scan.read_verdicts(out, all_runs=True).sort_by("uri")
    result = compact(out, target_rows=1000)
    assert result.merged == len(before_files) > 1 and result.written == 1
    after = deepfake_scan.read_verdicts(out, all_runs=True).sort_by("uri")
    assert after.equals(before)
    assert len(store.committed_files()) == 1
    assert len(gc(out, grace_seconds=0).removed) == len(before_files)
    assert deepfake_scan.read_verdicts(out, all_runs=True).sort_by("uri").equals(before)


def _alerting_model(tmp_path: Path, tiny_model: str) -> str:
    """The tiny model with threshold 0: everything it scores is fake."""
    model = tmp_path / "alerting"
    shutil.copytree(tiny_model, model)
    card = json.loads((model / "model.json").read_text())
    card.update(threshold=0.0, review_band=[0.0, 0.0])
    (model / "model.json").write_text(json.dumps(card))
    return str(model)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_nightly_job_scans_reports_and_alerts(tmp_path, tiny_model):
    make_source(tmp_path / "src", 6)
    (tmp_path / "src" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "store"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    cmd = [
        sys.executable,
        "-m",
        "jobs.nightly",
        str(tmp_path / "src"),
        "--out",
        str(out),
        "--model",
        _alerting_model(tmp_path, tiny_model),
        "--fail-above",
        "0.5",
    ]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr[-2000:]  # every image is "fake": the alert fires
    assert "above" in r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 7 and summary["errors"] == {"decode_error": 1}
    assert summary["last_run"]["fake_rate"] == 1.0
    # the next night has nothing new: an empty run, fake rate 0, no alert
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [run["rows"] for run in summary["runs"]] == [7, 0]
    html = (out / "report.html").read_text()
    assert "Most suspicious images" in html and "decode_error" in html


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium (installed by .ci/run)")
def test_report_renders_in_a_real_browser(tmp_path, tiny_model, ray_local):
    make_source(tmp_path / "src", 5)
    out = str(tmp_path / "store")
    deepfake_scan.scan(str(tmp_path / "src"), out, model=tiny_model)
    from deepfake_scan.report import build_report

    page = tmp_path / "report.html"
    summary = build_report(out, str(page))
    r = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chrome'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    # two plots plus one thumbnail per suspicious image actually decoded and laid out
    assert f'data-images-loaded="{2 + len(summary["suspicious"])}"' in r.stdout
    assert len(summary["suspicious"]) == 5
