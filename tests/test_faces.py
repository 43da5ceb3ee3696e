"""Face search, crop geometry, per-face scoring, and ``scan --faces`` end to end.

Faces come from a photo that scikit-image ships (``astronaut``: one frontal face at x=177,
y=66, 95x95 px), pasted at known places into generated pictures.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from skimage import data

from deepfake_scan.decode import decode
from deepfake_scan.faces import Face, FaceGeometry, crop_face, find_faces, largest_face_crop
from deepfake_scan.pipeline import Scorer, read_decode
from deepfake_scan.preprocess import Preprocessing

GEOMETRY = FaceGeometry()
# The astronaut's face sits at (37, 36) in this 170 px patch, 95 px wide.
PATCH = Image.fromarray(data.astronaut()).crop((140, 30, 310, 200))


def background(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(np.clip(rng.normal(128, 20, (h, w, 3)), 0, 255).astype(np.uint8))


def with_faces(w: int, h: int, places: list[tuple[int, int, int]]) -> Image.Image:
    """A ``w`` x ``h`` picture with the face patch pasted at each (x, y, patch side)."""
    img = background(w, h)
    for x, y, side in places:
        img.paste(PATCH.resize((side, side)), (x, y))
    return img


def jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92, **kw)
    return buf.getvalue()


def face_centre(x: int, y: int, side: int) -> tuple[float, float]:
    """Where the face's centre is when the patch is pasted at (x, y) with this side."""
    k = side / 170
    return x + (37 + 47.5) * k, y + (36 + 47.5) * k


def near(face: Face, centre: tuple[float, float], tol: float) -> bool:
    return abs(face.x + face.w / 2 - centre[0]) < tol and abs(face.y + face.h / 2 - centre[1]) < tol


def test_the_one_face_of_a_real_photo():
    faces = find_faces(Image.fromarray(data.astronaut()), GEOMETRY)
    assert len(faces) == 1
    assert near(faces[0], (177 + 47.5, 66 + 47.5), 10) and 80 < faces[0].w < 115


def test_many_faces_are_found_largest_first():
    places = [(20, 100, 170), (320, 60, 250), (640, 100, 130)]
    faces = find_faces(with_faces(900, 400, places), GEOMETRY)
    assert len(faces) == 3
    assert [f.w for f in faces] == sorted((f.w for f in faces), reverse=True)
    for face, place in zip(faces, [places[1], places[0], places[2]], strict=True):
        assert near(face, face_centre(*place), 12)


def test_max_faces_keeps_the_largest():
    img = with_faces(900, 400, [(20, 100, 170), (320, 60, 250), (640, 100, 130)])
    faces = find_faces(img, FaceGeometry(max_faces=1))
    assert len(faces) == 1 and near(faces[0], face_centre(320, 60, 250), 12)


def test_a_tiny_face_is_found():
    face = find_faces(with_faces(400, 400, [(200, 150, 60)]), GEOMETRY)
    assert len(face) == 1 and near(face[0], face_centre(200, 150, 60), 6) and face[0].w < 45


def test_no_face_in_pictures_without_one():
    assert find_faces(background(800, 600, seed=3), GEOMETRY) == []
    assert find_faces(Image.fromarray(data.coffee()), GEOMETRY) == []


def test_a_face_at_the_border_is_cropped_with_black_outside():
    img = background(400, 300)
    img.paste(PATCH.crop((30, 0, 170, 170)), (0, 60))  # face now 7 px from the left edge
    (face,) = find_faces(img, GEOMETRY)
    crop = crop_face(img, face, GEOMETRY)
    side = round(max(face.w, face.h) * GEOMETRY.scale)
    assert crop.size == (side, side)
    left_strip = np.asarray(crop)[:, : side // 5]
    assert left_strip.max() == 0  # outside the picture: black, not stretched or wrapped


def test_crop_is_centred_on_the_face_with_the_fixed_scale():
    img = Image.fromarray(data.astronaut())
    face = Face(177, 66, 95, 95, 1.0)
    crop = crop_face(img, face, FaceGeometry(scale=2.0))
    assert crop.size == (190, 190)
    # The crop's centre 95x95 is exactly the face box.
    inner = np.asarray(crop)[47:142, 47:142]
    assert np.array_equal(inner, np.asarray(img)[66:161, 177:272])
    assert largest_face_crop(img, FaceGeometry()).size[0] == round(
        find_faces(img, GEOMETRY)[0].w * 2.2
    )
    assert largest_face_crop(background(300, 300), GEOMETRY) is None


def test_decode_reports_boxes_in_the_original_pixels_of_a_large_photo():
    # 3000x2000: decoded at a reduced JPEG scale for the search, boxes mapped back.
    pre = Preprocessing(input_size=64)
    d = decode(jpeg(with_faces(3000, 2000, [(1500, 900, 680)])), pre, faces=GEOMETRY)
    assert d.error is None and (d.width, d.height) == (3000, 2000)
    (face,) = d.faces
    assert near(face, face_centre(1500, 900, 680), 40) and 300 < face.w < 480
    assert d.face_pixels.shape == (1, 64, 64, 3) and d.pixels.shape == (64, 64, 3)


def test_decode_applies_exif_rotation_before_the_search():
    img = with_faces(600, 400, [(100, 100, 200)])
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: viewers turn it 90 degrees clockwise
    d = decode(
        jpeg(img.transpose(Image.Transpose.ROTATE_90), exif=exif), Preprocessing(64), faces=GEOMETRY
    )
    (face,) = d.faces
    assert (d.width, d.height) == (600, 400) and near(face, face_centre(100, 100, 200), 12)


def test_geometry_is_validated():
    with pytest.raises(ValueError, match="unknown face detector"):
        FaceGeometry(detector="nope")
    with pytest.raises(ValueError, match="scale"):
        FaceGeometry(scale=0.5)


def _score(tmp_path, model: str, images: dict[str, bytes], geometry):
    from deepfake_scan.models.artifact import read_card

    for name, blob in images.items():
        (tmp_path / name).write_bytes(blob)
    names = sorted(images)
    listed = {
        "uri": np.array([str(tmp_path / n) for n in names], dtype=object),
        "kind": np.array(["file"] * len(names), dtype=object),
        "size": np.array([len(images[n]) for n in names]),
        "etag": np.array(["e"] * len(names), dtype=object),
    }
    pre = read_card(model).preprocessing.to_dict()
    (batch,) = read_decode(listed, pre, faces=geometry.to_dict())
    scorer = Scorer(model, threshold=0.5, review_band=(0.5, 0.5))
    out = scorer(batch)
    return {n: (out["score"][i], out["label"][i], out["faces"][i]) for i, n in enumerate(names)}


def test_scorer_gives_each_face_a_score_and_the_image_the_highest(tmp_path, tiny_model):
    import json

    from deepfake_scan.detector import load_detector

    images = {
        "group.jpg": jpeg(with_faces(900, 400, [(20, 100, 170), (320, 60, 250)])),
        "empty.jpg": jpeg(background(300, 300)),
        "broken.jpg": b"\xff\xd8\xff\xe0 truncated",
    }
    got = _score(tmp_path, tiny_model, images, GEOMETRY)
    score, label, faces = got["group.jpg"]
    faces = json.loads(faces)
    assert len(faces) == 2 and score == pytest.approx(max(f["score"] for f in faces))
    assert {f["label"] for f in faces} <= {"real", "fake"} and label in ("real", "fake")
    # Each face's score is the model's score of that face's crop, cropped as documented.
    detector = load_detector(tiny_model)
    img = Image.open(io.BytesIO(images["group.jpg"])).convert("RGB")
    box = Face(*(faces[0][k] for k in ("x", "y", "w", "h")), 0.0)
    expected = detector.predict([crop_face(img, box, GEOMETRY)])[0]
    assert faces[0]["score"] == pytest.approx(float(expected), abs=0.02)
    # No face: scored as a whole image by a whole-image model, with an empty face list.
    score, label, faces = got["empty.jpg"]
    assert json.loads(faces) == [] and label in ("real", "fake") and not np.isnan(score)
    score, label, faces = got["broken.jpg"]
    assert label == "error" and np.isnan(score) and faces == ""


def test_face_only_model_labels_images_without_a_face_no_face(tmp_path, tiny_model):
    import json
    import shutil

    face_only = tmp_path / "face-only-model"  # the tiny model, its card saying face-only
    shutil.copytree(tiny_model, face_only)
    card = json.loads((face_only / "model.json").read_text())
    card["faces"] = FaceGeometry(face_only=True).to_dict()
    (face_only / "model.json").write_text(json.dumps(card))
    images = {
        "empty.jpg": jpeg(background(300, 300)),
        "one.jpg": jpeg(with_faces(400, 400, [(100, 100, 200)])),
    }
    got = _score(tmp_path, str(face_only), images, FaceGeometry(face_only=True))
    score, label, _ = got["empty.jpg"]
    assert label == "no_face" and np.isnan(score)
    assert got["one.jpg"][1] in ("real", "fake")


@pytest.mark.slow
def test_scan_with_faces_writes_per_face_verdicts(ray_local, tmp_path, tiny_model):
    from deepfake_scan import read_verdicts, scan

    src = tmp_path / "photos"
    (src / "sub").mkdir(parents=True)
    (src / "group.jpg").write_bytes(
        jpeg(with_faces(900, 400, [(20, 100, 170), (320, 60, 250), (640, 100, 130)]))
    )
    (src / "sub" / "portrait.png").write_bytes(_png(Image.fromarray(data.astronaut())))
    (src / "landscape.jpg").write_bytes(jpeg(Image.fromarray(data.coffee())))
    (src / "empty.jpg").write_bytes(b"")
    out = tmp_path / "verdicts"
    summary = scan(str(src), str(out), model=tiny_model, faces=True)
    assert summary.rows == 4
    rows = {r["uri"].rsplit("/", 1)[1]: r for r in read_verdicts(str(out)).to_pylist()}
    assert len(rows["group.jpg"]["faces"]) == 3
    assert rows["group.jpg"]["score"] == pytest.approx(
        max(f["score"] for f in rows["group.jpg"]["faces"])
    )
    (face,) = rows["portrait.png"]["faces"]
    assert near(Face(face["x"], face["y"], face["w"], face["h"], 0), (224.5, 113.5), 10)
    assert rows["landscape.jpg"]["faces"] == [] and rows["landscape.jpg"]["label"] != "error"
    assert rows["empty.jpg"]["faces"] is None and rows["empty.jpg"]["error"].startswith(
        "empty_file"
    )
    # The command line (scan, and nightly) takes the same switch.
    from deepfake_scan.cli import main

    assert (
        main(["scan", str(src), "--out", str(tmp_path / "cli"), "--model", tiny_model, "--faces"])
        == 0
    )
    assert (
        main(
            [
                "nightly",
                str(src),
                "--out",
                str(tmp_path / "nightly"),
                "--model",
                tiny_model,
                "--faces",
            ]
        )
        == 0
    )
    for store in ("cli", "nightly"):
        got = {
            r["uri"].rsplit("/", 1)[1]: r["faces"]
            for r in read_verdicts(str(tmp_path / store)).to_pylist()
        }
        assert (
            len(got["group.jpg"]) == 3 and got["landscape.jpg"] == [] and got["empty.jpg"] is None
        )
    # The Parquet parts themselves carry the nested column (DuckDB/pandas read it as a list).
    part = next(out.glob("data/*/*.parquet"))
    assert pq.read_schema(part).field("faces").type.value_type.names[:4] == ["x", "y", "w", "h"]


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_small_face_crops_get_the_models_upsample_calibration(tmp_path, tiny_model):
    """A face crop the fit enlarges is scored with the card's upsample calibration, exactly as
    ``Detector.predict`` scores that crop."""
    import json
    import shutil

    from deepfake_scan.detector import load_detector

    models = {}
    for name, coef in (("plain", None), ("calibrated", [-0.5, -2.0])):
        models[name] = tmp_path / name  # the tiny model at 256 px input (it pools globally)
        shutil.copytree(tiny_model, models[name])
        card = json.loads((models[name] / "model.json").read_text())
        card["preprocessing"]["input_size"] = 256
        card["upsample_calibration"] = coef
        (models[name] / "model.json").write_text(json.dumps(card))
    blob = jpeg(with_faces(400, 400, [(100, 100, 120)]))  # crop side < 256: enlarged
    scores = {}
    for name, model in models.items():
        (tmp_path / name / "src").mkdir()
        got = _score(tmp_path / name / "src", str(model), {"one.jpg": blob}, GEOMETRY)
        (face,) = json.loads(got["one.jpg"][2])
        scores[name] = face["score"]
        img = Image.open(io.BytesIO(blob)).convert("RGB")
        box = Face(*(face[k] for k in ("x", "y", "w", "h")), 0.0)
        crop = crop_face(img, box, GEOMETRY)
        assert crop.width < 256
        expected = load_detector(str(model)).predict([crop])[0]
        assert face["score"] == pytest.approx(float(expected), abs=0.005)
    assert abs(scores["calibrated"] - scores["plain"]) > 0.05


def test_scan_faces_without_a_usable_opencv_fails_before_reading(tmp_path, monkeypatch, capsys):
    # OpenCV 5 has no CascadeClassifier: seen on a GPU machine whose own OpenCV shadowed ours,
    # where every image became a decode_error row. Now the scan stops at once and says why.
    import cv2

    from deepfake_scan import faces
    from deepfake_scan.cli import main

    monkeypatch.delattr(cv2, "CascadeClassifier")
    monkeypatch.setattr(faces, "_cache", {})
    src = tmp_path / "photos"
    src.mkdir()
    (src / "portrait.jpg").write_bytes(jpeg(Image.fromarray(data.astronaut())))
    out = tmp_path / "verdicts"
    assert main(["scan", str(src), "--out", str(out), "--faces"]) != 0
    err = capsys.readouterr().err
    assert "--faces" in err and "opencv-python-headless" in err and "CascadeClassifier" in err
    assert not out.exists() or not any(out.rglob("*.parquet"))
