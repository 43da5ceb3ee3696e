"""Training on face crops: the crops are the scan's own, and the card tells the scan about them."""

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter
from skimage import data

from deepfake_scan.faces import FaceGeometry, largest_face_crop
from deepfake_scan.train.commands import main
from deepfake_scan.train.data import decode_rgb
from tests.fixtures import tar_bytes

PATCH = Image.fromarray(data.astronaut()).crop((140, 30, 310, 200))  # face at (37, 36), 95 px


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92)
    return buf.getvalue()


def _face_photo(seed: int, fake: bool) -> bytes:
    """A 160 px picture with the face somewhere in it; fakes get a blurred blended patch."""
    rng = np.random.default_rng(seed)
    bg = np.clip(rng.normal(128, 25, (160, 160, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(bg)
    face = PATCH.resize((110, 110))
    if fake:
        noise = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
        face.paste(Image.fromarray(noise).filter(ImageFilter.GaussianBlur(2)), (40, 45))
    img.paste(face, tuple(int(v) for v in rng.integers(0, 50, 2)))
    return _jpeg(img)


def test_training_view_is_the_scans_largest_face_crop():
    blob = _face_photo(1, fake=False)
    img = Image.open(io.BytesIO(blob)).convert("RGB")
    geometry = FaceGeometry()
    expected = largest_face_crop(img, geometry)
    got = decode_rgb(blob, faces=geometry)
    assert expected is not None and got.size == expected.size
    assert np.array_equal(np.asarray(got), np.asarray(expected))
    faceless = _jpeg(Image.fromarray(np.full((120, 120, 3), 90, np.uint8)))
    assert decode_rgb(faceless, faces=geometry).size == (120, 120)  # used whole
    assert decode_rgb(faceless, faces=FaceGeometry(face_only=True)) is None  # left out


@pytest.mark.slow
def test_face_only_model_is_trained_on_crops_and_scans_faces(ray_local, tmp_path):
    from deepfake_scan import read_verdicts, scan
    from deepfake_scan.models.artifact import read_card

    real, fakes = tmp_path / "real", {}
    real.mkdir()
    for i in range(24):
        (real / f"r{i:02d}.jpg").write_bytes(_face_photo(i, fake=False))
        fakes[f"{i:06d}.jpg"] = _face_photo(100 + i, fake=True)
    (tmp_path / "fake.tar").write_bytes(tar_bytes(fakes))
    out = tmp_path / "model"
    args = [
        "train", "--real", str(real), "--fake", str(tmp_path / "fake.tar"), "--out", str(out),
        "--arch", "small_cnn", "--input-size", "32", "--batch-size", "8", "--epochs", "1",
        "--max-steps-per-epoch", "2", "--val-fraction", "0.25", "--test-fraction", "0.25",
        "--cpus-per-worker", "0.5", "--faces", "--face-only",
    ]  # fmt: skip
    assert main(args) == 0
    card = read_card(str(out))
    assert card.face_geometry == FaceGeometry(face_only=True)
    assert "--face-only" in card.command and "no_face" in (out / "MODEL_CARD.md").read_text()

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "face.jpg").write_bytes(_face_photo(999, fake=False))
    (photos / "wall.jpg").write_bytes(_jpeg(Image.fromarray(np.full((200, 200, 3), 90, np.uint8))))
    scan(str(photos), str(tmp_path / "v"), model=str(out), faces=True)
    rows = {r["uri"].rsplit("/", 1)[1]: r for r in read_verdicts(str(tmp_path / "v")).to_pylist()}
    assert rows["wall.jpg"]["label"] == "no_face" and rows["wall.jpg"]["score"] is None
    assert len(rows["face.jpg"]["faces"]) == 1 and rows["face.jpg"]["label"] in (
        "real",
        "uncertain",
        "fake",
    )
