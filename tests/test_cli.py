"""The command line and the job entrypoint, run as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import deepfake_scan
from tests.fixtures import image_bytes

CLI = [sys.executable, "-c", "from deepfake_scan.cli import entrypoint; entrypoint()"]
ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "COLUMNS": "200"}
    return subprocess.run(
        args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300, **kw
    )


@pytest.fixture
def source(tmp_path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"{i}.jpg").write_bytes(image_bytes(seed=i))
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return src


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_source", "source not found"),
        ("bad_model", "model_error"),
        ("unwritable_out", "output not writable"),
        ("bad_precision", "precision must be one of"),
        ("bad_review_band", "need 0 <= LOW <= HIGH <= 1"),
    ],
)
def test_commands_that_cannot_run_exit_nonzero_with_one_clear_line(
    case, message, source, tmp_path, tiny_model
):
    src, out, model, extra = str(source), str(tmp_path / "out"), tiny_model, []
    if case == "bad_precision":
        extra = ["--precision", "int4"]
    elif case == "bad_review_band":
        extra = ["--review-band", "0.6,0.4"]
    elif case == "missing_source":
        src = str(tmp_path / "missing")
    elif case == "bad_model":
        model = str(source)  # a folder of images is not a model
    else:
        blocker = tmp_path / "file"
        blocker.write_text("x")
        out = str(blocker / "out")
    r = run([*CLI, "scan", src, "--out", out, "--model", model, *extra])
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert deepfake_scan.read_verdicts(str(tmp_path / "out")).num_rows == 0


def test_help_says_what_an_option_left_out_means():
    """Defaults written in the help (bundled model, local Ray) must reach the user, not be eaten
    as rich markup."""
    r = run([*CLI, "scan", "--help"])
    assert r.returncode == 0, r.stderr
    assert "(default: bundled)" in r.stdout and "(default: local)" in r.stdout


def test_models_show_prints_the_card(tiny_model):
    r = run([*CLI, "models", "show", tiny_model])
    assert r.returncode == 0, r.stderr
    card = json.loads(r.stdout)
    assert card["architecture"] == "small_cnn" and card["model_id"].startswith("tiny@")


@pytest.mark.slow
def test_job_entrypoint_scans_and_prints_its_summary(source, tmp_path, tiny_model):
    out = tmp_path / "verdicts"
    r = run(
        [
            sys.executable,
            "-m",
            "jobs.scan",
            str(source),
            "--out",
            str(out),
            "--model",
            tiny_model,
            "--precision",
            "bf16",
            "--json",
        ]
    )
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout[r.stdout.index("{") :])
    assert summary["rows"] == 7 and summary["errors"] == {"decode_error": 1}
    table = deepfake_scan.read_verdicts(str(out))
    assert table.num_rows == 7
    assert sorted(table.column("label").to_pylist()).count("error") == 1
