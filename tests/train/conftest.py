"""Tiny labelled image sets made in the test (never the shared data): reals as a folder of
JPEGs, fakes as a WebDataset tar shard, so training reads both through the scan's readers."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tests.fixtures import image_bytes, tar_bytes


def _fake_bytes(seed: int) -> bytes:
    """A picture with a blended-in, blurred patch: a crude stand-in for a manipulated face."""
    img = Image.open(io.BytesIO(image_bytes(size=(48, 48), seed=seed))).convert("RGB")
    rng = np.random.default_rng(10_000 + seed)
    patch = Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))
    img.paste(patch.filter(ImageFilter.GaussianBlur(2)), (14, 14))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="session")
def tiny_faces(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("faces")
    real = root / "real"
    real.mkdir()
    for i in range(32):
        (real / f"real_{i:03d}.jpg").write_bytes(image_bytes(size=(48, 48), seed=i, quality=90))
    fake = root / "fake-000000.tar"
    fake.write_bytes(tar_bytes({f"{i:06d}.jpg": _fake_bytes(i) for i in range(32)}))
    return {"real": str(real), "fake": str(fake)}


def tiny_args(faces: dict[str, str], out: Path, *extra: str) -> list[str]:
    """CLI arguments for a few-step training run on ``tiny_faces`` (small CNN, 32 px)."""
    return [
        "train", "--real", faces["real"], "--fake", faces["fake"], "--out", str(out),
        "--arch", "small_cnn", "--input-size", "32", "--batch-size", "8",
        "--max-steps-per-epoch", "2", "--val-fraction", "0.25", "--test-fraction", "0.25",
        "--cpus-per-worker", "0.5", *extra,
    ]  # fmt: skip
