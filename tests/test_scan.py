"""End to end on a real local Ray: a mixed archive in, one committed verdict per input out."""

from __future__ import annotations

import gc
import io
import json
import shutil
import subprocess
import sys

import duckdb
import numpy as np
import pytest
from PIL import Image

import deepfake_scan
from deepfake_scan.errors import ScanError
from deepfake_scan.store import VERDICT_SCHEMA, VerdictStore
from tests.fixtures import image_bytes, make_sample_archive, needs_cxx

pytestmark = pytest.mark.usefixtures("ray_local")
MAX_PIXELS = 5_000_000  # the archive's 9-megapixel PNG is a decompression bomb under this limit


@pytest.fixture
def archive(tmp_path):
    root = tmp_path / "archive"
    root.mkdir()
    return root, make_sample_archive(root)


def test_mixed_archive_gets_exactly_one_verdict_per_input(archive, tmp_path, tiny_model):
    root, expected = archive
    out = str(tmp_path / "verdicts")
    summary = deepfake_scan.scan(
        str(root), out, model=tiny_model, batch_size=8, max_pixels=MAX_PIXELS
    )
    assert summary.rows == len(expected)
    table = deepfake_scan.read_verdicts(out, all_runs=True)
    assert table.schema == VERDICT_SCHEMA  # no pixels or bytes, the documented columns only
    uris = table.column("uri").to_pylist()
    assert sorted(uris) == sorted(expected)  # each input exactly once
    by_uri = {r["uri"]: r for r in table.to_pylist()}
    for uri, code in expected.items():
        row = by_uri[uri]
        if code is None:
            assert row["error"] is None, (uri, row["error"])
            assert 0.0 <= row["score"] <= 1.0
            assert row["label"] in ("real", "fake", "uncertain")
            assert row["width"] > 0 and row["format"] and len(row["sha256"]) == 64
        else:
            assert row["label"] == "error" and row["score"] is None
            assert row["error"].split(":")[0] == code, (uri, row["error"])
    assert {r["model_id"] for r in by_uri.values()} == {summary.model_id}
    assert {r["run_id"] for r in by_uri.values()} == {summary.run_id}
    assert summary.labels["error"] == sum(c is not None for c in expected.values())
    assert summary.errors["not_an_image"] == 3


def test_verdicts_read_back_with_duckdb_from_committed_files(archive, tmp_path, tiny_model):
    root, expected = archive
    out = str(tmp_path / "v")
    deepfake_scan.scan(str(root), out, model=tiny_model, max_pixels=MAX_PIXELS)
    files = VerdictStore(out).committed_files()
    got = duckdb.sql(
        f"SELECT label, count(*) AS n FROM read_parquet({files!r}) GROUP BY label"
    ).fetchall()
    assert sum(n for _, n in got) == len(expected)
    assert dict(got)["error"] == sum(c is not None for c in expected.values())


def test_rerun_resumes_and_scans_only_new_or_changed_inputs(archive, tmp_path, tiny_model):
    root, expected = archive
    out = str(tmp_path / "v")
    first = deepfake_scan.scan(str(root), out, model=tiny_model, max_pixels=MAX_PIXELS)
    again = deepfake_scan.scan(str(root), out, model=tiny_model, max_pixels=MAX_PIXELS)
    assert again.rows == 0 and again.skipped > 0
    (root / "photos" / "new.jpg").write_bytes(image_bytes(seed=77))
    (root / "photos" / "0" / "img0.jpg").write_bytes(image_bytes(seed=78, size=(99, 99)))
    third = deepfake_scan.scan(str(root), out, model=tiny_model, max_pixels=MAX_PIXELS)
    assert third.rows == 2
    table = deepfake_scan.read_verdicts(out, all_runs=True)
    assert table.num_rows == first.rows + 2
    latest = {r["uri"]: r for r in deepfake_scan.read_verdicts(out).to_pylist()}
    assert len(latest) == len(expected) + 1
    assert latest[str(root / "photos" / "0" / "img0.jpg")]["width"] == 99
    full = deepfake_scan.scan(str(root), out, model=tiny_model, max_pixels=MAX_PIXELS, full=True)
    assert full.rows == len(expected) + 1


def test_threshold_and_band_overrides(tmp_path, tiny_model):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"{i}.png").write_bytes(image_bytes("PNG", seed=i))
    s = deepfake_scan.scan(
        str(src), str(tmp_path / "a"), model=tiny_model, threshold=0.0, review_band=(0.0, 0.0)
    )
    assert s.labels == {"fake": 5}
    s = deepfake_scan.scan(str(src), str(tmp_path / "b"), model=tiny_model, review_band=(0.0, 1.0))
    assert s.labels == {"uncertain": 5}


def test_scan_scores_match_the_python_api(tmp_path, tiny_model):
    src = tmp_path / "src"
    src.mkdir()
    images = [image_bytes("PNG", (80, 60), seed=i) for i in range(4)]
    for i, data in enumerate(images):
        (src / f"{i}.png").write_bytes(data)
    deepfake_scan.scan(str(src), str(tmp_path / "v"), model=tiny_model)
    table = deepfake_scan.read_verdicts(str(tmp_path / "v")).sort_by("uri")
    detector = deepfake_scan.load_detector(tiny_model)
    expected = detector.predict([Image.open(io.BytesIO(d)) for d in images])
    np.testing.assert_allclose(table.column("score").to_numpy(), expected, rtol=1e-4, atol=1e-5)


@needs_cxx
def test_a_compiled_scan_scores_as_the_eager_one(tmp_path, tiny_model):
    """``compile="on"``: the actors score with the compiled model, the same scores as eager ones
    (7 images: batches of 4 and of 3, padded to the compiled shape)."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(7):
        (src / f"{i}.png").write_bytes(image_bytes("PNG", (80, 60), seed=i))
    scores, compiled = {}, {}
    for choice in ("off", "on"):
        out = str(tmp_path / choice)
        summary = deepfake_scan.scan(
            str(src), out, model=tiny_model, precision="fp32", compile=choice
        )
        scores[choice] = deepfake_scan.read_verdicts(out).sort_by("uri").column("score").to_numpy()
        compiled[choice] = summary.compiled
    assert compiled == {"off": 0, "on": 7}
    np.testing.assert_allclose(scores["on"], scores["off"], rtol=1e-4, atol=1e-5)


def test_auto_compiles_large_cpu_scans_only(tmp_path):
    """``--compile auto`` compiles where the compile pays for itself: at least
    ``COMPILE_MIN_IMAGES_PER_ACTOR`` images an actor, containers counted by size; never beside a
    GPU."""
    from deepfake_scan.scanning import COMPILE_MIN_IMAGES_PER_ACTOR, compile_forward

    photo = [{"kind": "file", "size": 100_000}]
    enough = photo * (2 * COMPILE_MIN_IMAGES_PER_ACTOR)
    assert compile_forward("auto", enough, n_actors=2, on_gpu=False)
    assert not compile_forward("auto", enough[:-1], n_actors=2, on_gpu=False)
    assert not compile_forward("auto", enough, n_actors=16, on_gpu=False)
    shard = [{"kind": "tar", "size": 2 * 10**9}]  # some 20,000 photos
    assert compile_forward("auto", shard, n_actors=2, on_gpu=False)
    assert not compile_forward("auto", shard, n_actors=1, on_gpu=True)
    assert not compile_forward("off", shard, n_actors=2, on_gpu=False)
    assert compile_forward("on", photo, n_actors=2, on_gpu=False)
    with pytest.raises(ScanError, match="compile must be one of auto, on, off"):
        deepfake_scan.scan(str(tmp_path), str(tmp_path / "out"), compile="yes")


def test_small_images_are_scored_with_the_models_upsample_calibration(tmp_path, tiny_model):
    """Images smaller than the model's input get the card's upsample calibration, the same in a
    scan and in ``Detector.predict``; images the fit does not enlarge are scored as before."""
    import shutil

    from deepfake_scan.models.artifact import CARD

    calibrated_model = tmp_path / "calibrated"
    shutil.copytree(tiny_model, calibrated_model)
    card = json.loads((calibrated_model / CARD).read_text())
    card["upsample_calibration"] = [-0.5, -2.0]
    (calibrated_model / CARD).write_text(json.dumps(card))
    src = tmp_path / "src"
    src.mkdir()
    images = {"small.png": image_bytes("PNG", (32, 24), seed=1)}  # enlarged 64/24 = 2.7x
    images["large.png"] = image_bytes("PNG", (128, 96), seed=2)  # reduced: no calibration
    for name, data in images.items():
        (src / name).write_bytes(data)
    deepfake_scan.scan(str(src), str(tmp_path / "v"), model=str(calibrated_model))
    table = deepfake_scan.read_verdicts(str(tmp_path / "v")).to_pydict()
    scores = dict(zip(table["uri"], table["score"], strict=True))
    pil = {name: Image.open(io.BytesIO(data)) for name, data in images.items()}
    with_cal = deepfake_scan.load_detector(str(calibrated_model))
    without = deepfake_scan.load_detector(tiny_model)
    for name, img in pil.items():
        score = scores[str(src / name)]
        assert score == pytest.approx(float(with_cal.predict([img])[0]), abs=1e-5)
        if name == "large.png":
            assert score == pytest.approx(float(without.predict([img])[0]), abs=1e-5)
        else:
            assert abs(score - float(without.predict([img])[0])) > 0.01


def test_weights_that_do_not_fit_the_architecture_stop_the_scan(archive, tmp_path, tiny_model):
    """The driver builds the model beside Ray's start: weights that do not fit still stop the
    scan with one clear error and nothing written, and the caller's garbage collector is left
    as it was (paused during start-up, never frozen in a user's process)."""
    wrong = tmp_path / "wrong"
    shutil.copytree(tiny_model, wrong)
    card = json.loads((wrong / "model.json").read_text())
    card["arch_kwargs"] = {"width": 16}  # the weights are for width 8
    (wrong / "model.json").write_text(json.dumps(card))
    root, _ = archive
    out = str(tmp_path / "out")
    frozen = gc.get_freeze_count()
    with pytest.raises(ScanError, match="model_error: cannot load .* as small_cnn"):
        deepfake_scan.scan(str(root), out, model=str(wrong))
    assert deepfake_scan.read_verdicts(out).num_rows == 0
    assert gc.isenabled() and gc.get_freeze_count() == frozen
    deepfake_scan.scan(str(root), out, model=tiny_model, max_pixels=MAX_PIXELS)
    assert gc.isenabled() and gc.get_freeze_count() == frozen


def test_the_scan_command_starts_without_importing_torch():
    """The scan's driver imports torch in its model check, which runs beside ray.init: importing
    the command and the scan module must not import it first (1 s here, 2.5-4 s on a GPU
    machine, in series with ray.init)."""
    code = (
        "import sys, deepfake_scan.cli, deepfake_scan.scanning, deepfake_scan.models.artifact; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_blocks_feed_every_decode_task_and_keep_containers_apart():
    """How the listed inputs are cut into decode tasks' blocks: plain files a block's worth at a
    time; each container may have a block of its own; a small scan beside a GPU (one actor, 15
    decode tasks) still gives every decode task a block; never an empty block."""
    from deepfake_scan.scanning import block_count

    files = [{"kind": "file"}] * 1000
    assert block_count(files, n_actors=2, files_per_block=128, decode_tasks=1) == 8
    assert block_count(files, n_actors=1, files_per_block=128, decode_tasks=15) == 15
    assert block_count(files * 30, n_actors=2, files_per_block=128, decode_tasks=1) == 235
    shards = [{"kind": "tar"}] * 20 + [{"kind": "file"}] * 10
    assert block_count(shards, n_actors=2, files_per_block=128, decode_tasks=1) == 20
    assert block_count(files[:3], n_actors=2, files_per_block=128, decode_tasks=15) == 3


def test_two_scans_actors_leave_cpus_for_decoding():
    """Two scans on one cluster: their actors' reservations together still leave room for
    decode tasks, or both scans wait for input forever."""
    import ray

    from deepfake_scan.scanning import DECODE_CPUS, ScanOptions, actor_resources

    n, res = actor_resources(ScanOptions())
    assert n >= 1 and res["threads"] >= 1
    assert 2 * n * res["num_cpus"] + DECODE_CPUS <= ray.cluster_resources()["CPU"] - 0.5
