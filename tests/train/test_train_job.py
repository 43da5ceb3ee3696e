"""End-to-end: real local Ray, Ray Data and Ray Train on tiny generated images."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake_scan.train.commands import main
from tests.train.conftest import tiny_args

pytestmark = pytest.mark.slow


def _history(out: Path) -> list[dict]:
    return json.loads((out / "model.json").read_text())["training"]["history"]


def test_two_workers_with_gan_sbi_and_adversarial_make_a_model_the_scan_loads(
    ray_local, tiny_faces, tmp_path
):
    from deepfake_scan.detector import load_detector
    from deepfake_scan.models.artifact import read_card
    from tests.fixtures import image_bytes

    out = tmp_path / "model"
    args = tiny_args(
        tiny_faces,
        out,
        "--num-workers",
        "2",
        "--gan",
        "--sbi",
        "--adversarial",
        "--epochs",
        "2",
        "--train-crop",
        "24",
        "--rescale",
        "0.5,0.9",
    )
    assert main(args) == 0

    card = read_card(str(out))
    assert card.training["config"]["augment"]["rescale"] == [0.5, 0.9]
    assert card.architecture == "small_cnn" and card.preprocessing.input_size == 32
    lo, hi = card.review_band
    assert 0 <= lo <= card.threshold <= hi <= 1 and card.temperature > 0
    # Fitted on shrunk validation copies, for images the scan enlarges to the input size.
    assert len(card.upsample_calibration) == 2
    assert card.metrics["calibration"]["upsample_calibration"] == list(card.upsample_calibration)
    assert "fitted on shrunk validation copies" in (out / "MODEL_CARD.md").read_text()
    assert {"as_is", "reencoded", "jpeg50", "down0.5", "auc_drop"} <= set(card.metrics["test"])
    assert card.command.startswith("deepfake-scan train --real ") and "--gan" in card.command
    assert "--adversarial" in card.command
    counts = card.training["data"]["counts"]
    assert sum(counts[s][c] for s in ("train", "val", "test") for c in ("real", "fake")) == 64
    history = _history(out)
    assert [h["epoch"] for h in history] == [0, 1]
    assert all(h["gan_d_loss"] is not None and "val_auc" in h for h in history)

    detector = load_detector(str(out))
    images = [Image.open(io.BytesIO(image_bytes(size=(40, 40), seed=s))) for s in range(3)]
    probs = detector.predict(images)
    assert probs.shape == (3,) and np.all((probs >= 0) & (probs <= 1))

    report = out / "report"
    for name in ("index.html", "curves.png", "roc.png", "test_grid.png", "gan_epoch_001.png"):
        assert (report / name).stat().st_size > 0, name
    assert (out / "generator" / "model.safetensors").exists()
    assert main(["synth", "--generator", str(out), "--n", "3", "--out", str(tmp_path / "s")]) == 0
    assert len(list((tmp_path / "s").glob("*.png"))) == 3


def test_resume_continues_from_the_saved_epoch(ray_local, tiny_faces, tmp_path):
    out = tmp_path / "model"
    assert main(tiny_args(tiny_faces, out, "--epochs", "1")) == 0
    first = _history(out)
    assert [h["epoch"] for h in first] == [0]

    # The run is extended (as after a kill): epoch 0 is restored, not retrained.
    assert main(tiny_args(tiny_faces, out, "--epochs", "2", "--resume")) == 0
    resumed = _history(out)
    assert [h["epoch"] for h in resumed] == [0, 1]
    assert resumed[0] == first[0]

    # Without --resume the same output starts over from epoch 0.
    assert main(tiny_args(tiny_faces, out, "--epochs", "1")) == 0
    fresh = _history(out)
    assert [h["epoch"] for h in fresh] == [0]


@pytest.mark.parametrize(
    "bad",
    [["--epochs", "0"], ["--rescale", "0.9,0.5"], ["--rescale", "x"], ["--precision", "fp16"]],
)
def test_bad_arguments_exit_non_zero(tmp_path, bad):
    assert main(["train", "--real", str(tmp_path), "--fake", str(tmp_path), "--out",
                 str(tmp_path / "m"), *bad]) != 0  # fmt: skip


def test_job_entrypoints_run_as_modules(tmp_path):
    """``python -m jobs.synth`` / ``jobs.train`` as ``ray job submit`` runs them: exit codes."""
    import subprocess
    import sys

    from deepfake_scan.train.gan import GanConfig, Generator, save_generator

    repo = Path(__file__).resolve().parents[2]
    gen, out, missing = str(tmp_path / "m"), str(tmp_path / "s"), str(tmp_path / "nope")
    save_generator(Generator(GanConfig(size=32, z_dim=8, width=8)), gen)

    def run(job: str, *args: str) -> int:
        cmd = [sys.executable, "-m", f"jobs.{job}", *args]
        return subprocess.run(cmd, cwd=repo, capture_output=True, timeout=120).returncode

    assert run("synth", "--generator", gen, "--n", "2", "--out", out) == 0
    assert len(list((tmp_path / "s").glob("*.png"))) == 2
    assert run("synth", "--generator", missing, "--n", "2", "--out", out) == 2
    # A missing source fails before any Ray work starts.
    assert run("train", "--real", missing, "--fake", missing, "--out", out) == 2


def test_use_gpu_without_gpus_fails_at_once_with_a_clear_message(
    ray_local, tiny_faces, tmp_path, capfd
):
    if ray_local.cluster_resources().get("GPU"):
        pytest.skip("this machine has a GPU")
    assert main(tiny_args(tiny_faces, tmp_path / "m", "--use-gpu")) == 2
    assert "--use-gpu needs one GPU per worker (1); the Ray cluster has 0" in capfd.readouterr().err


def test_init_weights_from_a_relative_model_dir(
    ray_local, tiny_faces, tiny_model, tmp_path, monkeypatch
):
    """Ray workers run elsewhere: a relative --init-weights must still be found."""
    import shutil

    from deepfake_scan.models.artifact import read_card

    shutil.copytree(tiny_model, tmp_path / "start")
    monkeypatch.chdir(tmp_path)
    args = tiny_args(tiny_faces, Path("trained"), "--epochs", "1", "--init-weights", "start")
    assert main(args) == 0
    assert read_card(str(tmp_path / "trained")).architecture == "small_cnn"
